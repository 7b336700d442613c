// The backup manifest, the contract between the agent that appends to it and the offline restore
// that reads it (schemas/backup-manifest.schema.json: its types are generated from there). Both
// read it as untrusted input the same way: one open file, a regular file of bounded size, JSON,
// the schema.
import type { promises as fs } from 'node:fs';
import type { BackupManifest } from './generated/api.js';
import type { SchemaSet } from './schemas.js';

export type Manifest = BackupManifest;
export type ManifestEntry = Manifest['backups'][number];
export type ManifestDisk = ManifestEntry['disks'][string];

/** A manifest larger than this is refused (about 50,000 backups of two disks). */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

export class ManifestError extends Error {}

let validator: ReturnType<SchemaSet['validator']> | undefined;

/** Reads and validates the manifest open at `fh` (`path` only names it in errors). */
export async function readManifestFrom(fh: fs.FileHandle, path: string): Promise<Manifest> {
  const st = await fh.stat();
  if (!st.isFile()) throw new ManifestError(`the manifest '${path}' is not a regular file`);
  if (st.size > MAX_MANIFEST_BYTES) throw new ManifestError(`the manifest '${path}' is ${st.size} bytes, more than ${MAX_MANIFEST_BYTES}`);
  const buf = Buffer.alloc(Math.min(st.size + 1, MAX_MANIFEST_BYTES + 1));
  let n = 0;
  while (n < buf.length) {
    const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
    if (bytesRead === 0) break;
    n += bytesRead;
  }
  if (n > MAX_MANIFEST_BYTES) throw new ManifestError(`the manifest '${path}' grew beyond ${MAX_MANIFEST_BYTES} bytes`);
  let data: unknown;
  try {
    data = JSON.parse(buf.toString('utf8', 0, n));
  } catch (e) {
    throw new ManifestError(`the manifest '${path}' is not JSON: ${(e as Error).message}`);
  }
  // The schema set is loaded only when a manifest is read: restore's usage errors never pay for it.
  validator ??= new (await import('./schemas.js')).SchemaSet().validator('backup-manifest.schema.json');
  if (!validator(data)) {
    const errors = (validator.errors ?? []).slice(0, 10).map((e) => `${e.instancePath || '/'} ${e.message}`);
    throw new ManifestError(`the manifest '${path}' breaks schemas/backup-manifest.schema.json: ${errors.join('; ')}`);
  }
  return data as Manifest;
}
