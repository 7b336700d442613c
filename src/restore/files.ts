// The restore's inputs, read as untrusted: the manifest (bounded, validated by its schema) and
// each backup file of the chain, opened once, read-only, without following a symbolic link,
// in the manifest's own directory (by identity), its header read (src/destination/image-header.ts)
// and its SHA-256 computed from the very descriptor that qemu-img is later given.
import { constants, promises as fs, type Stats } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { ManifestError, readManifestFrom, type Manifest as BackupManifest } from '../backup-manifest.js';
import { ImageHeaderError, readImageHeader } from '../destination/image-header.js';
import { plainName, RestoreError, type Layer } from './plan.js';

/** Each read of the checksum: the memory a file's hash takes, whatever its size. */
const CHUNK = 1024 * 1024;

export interface Manifest {
  /** The manifest's real path (symbolic links resolved). */
  path: string;
  /** Its real directory: every file it lists is a plain name in here. */
  dir: string;
  dirStat: Stats;
  data: BackupManifest;
}

const errno = (e: unknown) => (e as NodeJS.ErrnoException).code ?? (e as Error).message;

/** Reads and validates the manifest (src/backup-manifest.ts), by the real path of the name given. */
export async function readManifest(path: string): Promise<Manifest> {
  let real: string;
  try {
    real = await fs.realpath(path);
  } catch (e) {
    throw new RestoreError('manifestInvalid', `cannot open the manifest '${path}' (${errno(e)})`);
  }
  const fh = await fs.open(real, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY).catch((e: unknown) => {
    throw new RestoreError('manifestInvalid', `cannot open the manifest '${path}' (${errno(e)})`);
  });
  let data: BackupManifest;
  try {
    data = await readManifestFrom(fh, path);
  } catch (e) {
    throw e instanceof ManifestError ? new RestoreError('manifestInvalid', e.message) : e;
  } finally {
    await fh.close();
  }
  const dir = dirname(real);
  return { path: real, dir, dirStat: await fs.stat(dir), data };
}

/** A backup file opened for the restore: qemu-img reads it through this descriptor (/dev/fd/N). */
export interface OpenLayer {
  layer: Layer;
  path: string;
  fh: fs.FileHandle;
  stat: Stats;
  /** Computed from fh, equal to the manifest's. */
  sha256: string | null;
  /** The backing name an incremental's header holds (libvirt writes the disk's image there): never opened. */
  ignoredBacking: string | null;
}

const same = (a: Stats, b: Stats) => a.dev === b.dev && a.ino === b.ino;

/**
 * Opens `layer`'s file in the manifest's directory: a plain name, no symbolic link, a regular
 * file, the same file by identity as the header read; its header as the manifest says (format,
 * virtual size), with no backing for a full, no external data file, no encryption.
 */
export async function openLayer(m: Manifest, layer: Layer): Promise<OpenLayer> {
  if (!plainName(layer.file)) throw new RestoreError('unsafePath', `'${layer.file}' is not a plain file name`);
  const path = join(m.dir, layer.file);
  const where = `backup '${layer.id}' file '${path}'`;
  let lst: Stats;
  try {
    lst = await fs.lstat(path);
  } catch (e) {
    throw new RestoreError('imageRejected', `${where}: ${errno(e) === 'ENOENT' ? 'missing' : errno(e)}`);
  }
  if (lst.isSymbolicLink()) throw new RestoreError('unsafePath', `${where} is a symbolic link: backup files are read only as themselves`);
  if (!lst.isFile()) throw new RestoreError('unsafePath', `${where} is not a regular file`);
  const fh = await fs
    .open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY)
    .catch((e: unknown) => {
      throw new RestoreError(errno(e) === 'ELOOP' ? 'unsafePath' : 'imageRejected', `${where}: cannot open (${errno(e)})`);
    });
  try {
    const stat = await fh.stat();
    if (!stat.isFile() || !same(stat, lst)) throw new RestoreError('unsafePath', `${where} changed while it was opened`);
    if (stat.dev !== m.dirStat.dev) throw new RestoreError('unsafePath', `${where} is not on the manifest directory's filesystem`);
    let header;
    try {
      header = await readImageHeader(path);
    } catch (e) {
      if (e instanceof ImageHeaderError) throw new RestoreError('imageRejected', `${where}: ${e.message}`);
      throw e;
    }
    if (!same(header.stat, stat)) throw new RestoreError('unsafePath', `${where} changed while its header was read`);
    let ignoredBacking: string | null = null;
    if (layer.format === 'qcow2') {
      if (header.detected !== 'qcow2')
        throw new RestoreError(
          'formatMismatch',
          `${where}: the manifest says qcow2, the file is ${header.detected ?? 'not an image (raw data)'}`,
        );
      if (header.needsDataFile || header.dataFile !== null)
        throw new RestoreError(
          'imageRejected',
          `${where}: its header names an external data file${header.dataFile ? ` '${header.dataFile}'` : ''}`,
        );
      if (header.encrypted) throw new RestoreError('imageRejected', `${where}: encrypted images are not restored`);
      if (header.backing !== null) {
        if (layer.kind === 'full')
          throw new RestoreError(
            'imageRejected',
            `${where}: a full backup's header names a backing file '${header.backing}'; it would not hold the whole disk`,
          );
        ignoredBacking = header.backing;
      }
      if (header.virtualSize !== BigInt(layer.virtualSize))
        throw new RestoreError('sizeMismatch', `${where}: its header says ${header.virtualSize} bytes, the manifest ${layer.virtualSize}`);
    } else if (stat.size !== layer.virtualSize) {
      throw new RestoreError('sizeMismatch', `${where}: a raw file of ${stat.size} bytes, the manifest says ${layer.virtualSize}`);
    }
    return { layer, path, fh, stat, sha256: null, ignoredBacking };
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/**
 * SHA-256 of the file's bytes from its descriptor, CHUNK at a time, exactly its size at open,
 * against the manifest's. false: the manifest records none (checksum none), nothing to verify.
 */
export async function verifyChecksum(o: OpenLayer, signal?: AbortSignal): Promise<boolean> {
  if (o.layer.sha256 === null) return false;
  const hash = createHash('sha256');
  const buf = Buffer.alloc(CHUNK);
  let pos = 0;
  for (;;) {
    if (signal?.aborted) throw new RestoreError('interrupted', 'interrupted');
    const { bytesRead } = await o.fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
    if (pos > o.stat.size) break;
  }
  const after = await o.fh.stat();
  if (pos !== o.stat.size || after.size !== o.stat.size || after.mtimeMs !== o.stat.mtimeMs)
    throw new RestoreError('checksumMismatch', `backup '${o.layer.id}' file '${o.path}' changed while it was read`);
  const got = hash.digest('hex');
  if (got !== o.layer.sha256)
    throw new RestoreError(
      'checksumMismatch',
      `backup '${o.layer.id}' file '${o.path}': sha256 ${got}, the manifest says ${o.layer.sha256}: the file is damaged or not the one backed up`,
    );
  o.sha256 = got;
  return true;
}

/** The manifest's directory is still the one the files were opened in. */
export async function checkDirUnchanged(m: Manifest): Promise<void> {
  const now = await fs.stat(m.dir).catch(() => null);
  if (!now || !same(now, m.dirStat))
    throw new RestoreError('unsafePath', `the manifest's directory '${m.dir}' was replaced during the restore`);
}
