// The manifest beside a domain's backup files (the contract with the offline restore verb:
// schemas/backup-manifest.schema.json, docs/backups.md): written atomically after a backup is verified
// complete; each file's size, virtual size and SHA-256 read here with a bounded streaming read.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { readManifestFrom, type Manifest, type ManifestDisk } from '../../../backup-manifest.js';
import { readImageHeader } from '../../../destination/image-header.js';
import { openOwnFileHandle } from '../../../own-files.js';
import type { BackupJob } from '../../../generated/api.js';
import { isLocked } from './held-open.js';

/** The read buffer of the checksum: memory stays bounded whatever the file's size (4 MiB reads:
 *  a third less time than 1 MiB ones on a 2 GiB file). */
const CHUNK = 4 * 1024 * 1024;

/** The naming rule of move targets: letters, digits, '.', '_', '+', '-' kept, the rest '_'. */
export const safeName = (s: string): string => s.replace(/[^A-Za-z0-9._+-]/g, '_').replace(/^\./, '_');

export const manifestPath = (dir: string, domain: string): string => join(dir, `${safeName(domain)}.backups.json`);

export async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: CHUNK })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The virtual size: a qcow2 header's size field (read as any image header is), a raw file's length. */
async function virtualSize(path: string, format: 'raw' | 'qcow2', length: number): Promise<number> {
  if (format === 'raw') return length;
  const h = await readImageHeader(path);
  if (h.detected !== 'qcow2' || h.virtualSize === null) throw new Error(`${path} is not a qcow2 image`);
  return Number(h.virtualSize);
}

/** How long a file must stay unchanged before it is described; the bound on waiting for that. */
export const SETTLE_MS = 1000;
const SETTLE_LIMIT_MS = 60_000;
const CLOSE_POLL_MS = 10;
const stamp = (st: { ctimeNs: bigint; size: bigint }) => `${st.ctimeNs}:${st.size}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Until no process holds a lock on the file (QEMU locks every image it has open): true once so;
 * false when it cannot be told (the lock table unreadable), and then the caller settles.
 */
async function untilUnlocked(path: string, deadline: number): Promise<boolean> {
  for (;;) {
    const locked = await isLocked(path);
    if (locked === null) return false;
    if (!locked) return true;
    if (Date.now() > deadline) throw new Error(`${path} was still open ${SETTLE_LIMIT_MS / 1000} s after the backup ended`);
    await sleep(CLOSE_POLL_MS);
  }
}

/**
 * The file's size, virtual size and checksum (unless `checksum` is none), read once the file is
 * final. libvirt announces the end of a backup before QEMU closes its targets (the close writes
 * the last metadata). `detached`: libvirt has since detached them, and no lock on the file is
 * left (held-open.ts): final now. Else: once the file stayed unchanged for SETTLE_MS. Either way
 * read again if it changed while it was read.
 */
export async function describeFile(
  path: string,
  format: 'raw' | 'qcow2',
  opts: { detached?: boolean; checksum?: 'sha256' | 'none' } = {},
): Promise<ManifestDisk & { path: string; final: 'closed' | 'settled' }> {
  const deadline = Date.now() + SETTLE_LIMIT_MS;
  let closed = opts.detached === true && (await untilUnlocked(path, deadline));
  let before = await fs.stat(path, { bigint: true });
  for (;;) {
    let now = before;
    if (!closed) {
      await sleep(SETTLE_MS);
      now = await fs.stat(path, { bigint: true });
      if (stamp(now) !== stamp(before) && Date.now() < deadline) {
        before = now;
        continue;
      }
    }
    const sum = opts.checksum === 'none' ? null : await sha256(path);
    const after = await fs.stat(path, { bigint: true });
    if (stamp(after) !== stamp(now) && Date.now() < deadline) {
      // Written to after its close: no longer known final, so it must settle.
      closed = false;
      before = after;
      continue;
    }
    if (stamp(after) !== stamp(now)) throw new Error(`${path} kept changing for ${SETTLE_LIMIT_MS / 1000} s after the backup ended`);
    return {
      path,
      file: basename(path),
      format,
      virtualSize: await virtualSize(path, format, Number(after.size)),
      size: Number(after.blocks) * 512,
      sha256: sum,
      final: closed ? 'closed' : 'settled',
    };
  }
}

/**
 * The domain's manifest so far (a new one if there is none), read as restore reads it: bounded,
 * validated. The agent writes it, so it is opened as the agent's own file (own-files.ts): a
 * symbolic link, a FIFO, another user's file or one with other hard links in its place is refused.
 */
async function readManifest(path: string, backup: BackupJob): Promise<Manifest> {
  let fh: fs.FileHandle;
  try {
    fh = await openOwnFileHandle(path, 'read');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      return { version: 1, domain: backup.domain.name, uuid: backup.domain.uuid, backups: [] };
    throw e;
  }
  let m: Manifest;
  try {
    m = await readManifestFrom(fh, path);
  } finally {
    await fh.close();
  }
  if (m.uuid !== backup.domain.uuid) throw new Error(`${path} is the manifest of another domain (${m.uuid})`);
  return m;
}

/** temp file in the same directory, fsync, rename, fsync the directory. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await fs.open(tmp, 'wx', 0o600).catch(async (e: NodeJS.ErrnoException) => {
    // A temp file a crash left: ours to replace (never followed: unlink does not follow links).
    if (e.code !== 'EEXIST') throw e;
    await fs.rm(tmp, { force: true });
    return fs.open(tmp, 'wx', 0o600);
  });
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, path);
  const d = await fs.open(dirname(path), 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** Appends the verified backup (its disks described) to the domain's manifest in its directory. */
export async function appendToManifest(backup: BackupJob, disks: Array<ManifestDisk & { disk: string }>): Promise<string> {
  const path = manifestPath(backup.dir, backup.domain.name);
  const m = await readManifest(path, backup);
  m.backups = m.backups.filter((b) => b.id !== backup.jobId);
  m.backups.push({
    id: backup.jobId,
    kind: backup.mode,
    checkpoint: backup.checkpoint,
    since: backup.since,
    startedAt: backup.createdAt,
    completedAt: backup.endedAt ?? new Date().toISOString(),
    disks: Object.fromEntries(disks.map(({ disk, ...d }) => [disk, d])),
  });
  await writeAtomically(path, `${JSON.stringify(m, null, 2)}\n`);
  return path;
}
