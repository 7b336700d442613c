// An image's header is input: before the agent hands an existing image to libvirt (a reused
// destination, an overlay, a layer it inventories), it reads the header itself and learns every
// other file or endpoint QEMU would open because of it: the backing file, the external data file.
// Read without following anything: the file is opened O_NOFOLLOW|O_NONBLOCK (a FIFO must not
// hang the agent), checked to be a regular file or block device, and only its first bytes read.
import { constants, promises as fs, type Stats } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';

/** At most this much of an image is read: qcow2 keeps its header and extensions in the first cluster. */
export const HEADER_READ_BYTES = 64 * 1024;

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
const EXT_END = 0x00000000;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_DATA_FILE = 0x44415441;
const INCOMPAT_DATA_FILE = 1n << 2n;
const MAX_BACKING_NAME = 1023; // QEMU's own limit

/** Formats recognised by their magic, so that a mislabelled image is refused by name. */
const MAGICS: Array<[string, (b: Buffer) => boolean]> = [
  ['qcow2', (b) => b.length >= 8 && b.readUInt32BE(0) === QCOW2_MAGIC && b.readUInt32BE(4) >= 2],
  ['qcow', (b) => b.length >= 8 && b.readUInt32BE(0) === QCOW2_MAGIC && b.readUInt32BE(4) === 1],
  ['qed', (b) => b.length >= 4 && b.readUInt32LE(0) === 0x00444551],
  ['vmdk', (b) => b.length >= 4 && (b.toString('latin1', 0, 4) === 'KDMV' || b.toString('latin1', 0, 4) === 'COWD')],
  ['vdi', (b) => b.length >= 0x44 && b.readUInt32LE(0x40) === 0xbeda107f],
  ['vhdx', (b) => b.length >= 8 && b.toString('latin1', 0, 8) === 'vhdxfile'],
  ['luks', (b) => b.length >= 6 && b.toString('latin1', 0, 6) === 'LUKS\xba\xbe'],
];

export class ImageHeaderError extends Error {}

export interface ImageHeader {
  /** The format the first bytes announce (qcow2, qed, vmdk, …), or null: no known header (raw data). */
  detected: string | null;
  /** qcow2: the backing file name exactly as stored, or null. */
  backing: string | null;
  /** qcow2: the backing format extension, or null when absent. */
  backingFormat: string | null;
  /** qcow2: the external data file name, or null. */
  dataFile: string | null;
  /** qcow2: the header says the guest data lives in an external data file. */
  needsDataFile: boolean;
  /** qcow2: encrypted (legacy AES or LUKS). */
  encrypted: boolean;
  /** qcow2: the disk's size in bytes as the header states it (as a bigint: up to 2^64-1), or null. */
  virtualSize: bigint | null;
  /** The opened file's identity (fstat of the descriptor read). */
  stat: Stats;
}

/**
 * What a name stored in an image makes QEMU open: a local file (resolved as QEMU resolves a
 * relative name: against the image's directory), or something else (a protocol, a `json:`
 * description), which the caller's policy must name or refuse.
 */
export type ImageReference = { kind: 'file'; path: string } | { kind: 'protocol'; protocol: string; name: string };

export function referenceOf(name: string, imagePath: string): ImageReference {
  // QEMU's path_has_protocol(): a ':' before any '/' makes the name a protocol (nbd:, json:, file:…).
  const colon = name.indexOf(':');
  const slash = name.indexOf('/');
  if (colon >= 0 && (slash < 0 || colon < slash)) {
    const protocol = name.slice(0, colon);
    if (protocol === 'file') {
      const rest = name.slice(colon + 1);
      return { kind: 'file', path: isAbsolute(rest) ? resolve(rest) : resolve(dirname(imagePath), rest) };
    }
    return { kind: 'protocol', protocol, name };
  }
  return { kind: 'file', path: isAbsolute(name) ? resolve(name) : resolve(dirname(imagePath), name) };
}

function text(b: Buffer, start: number, len: number, what: string): string {
  if (start + len > b.length) throw new ImageHeaderError(`the ${what} lies beyond the first ${HEADER_READ_BYTES} bytes`);
  const s = b.toString('utf8', start, start + len);
  // eslint-disable-next-line no-control-regex
  if (s.includes('\u0000') || /[\u0000-\u001f\u007f]/.test(s)) throw new ImageHeaderError(`the ${what} contains a control character`);
  if (Buffer.byteLength(s) !== len) throw new ImageHeaderError(`the ${what} is not valid UTF-8`);
  return s;
}

/** Parses a qcow2 header (version 2 or 3) and its extensions from the image's first bytes. */
export function parseQcow2(b: Buffer): Omit<ImageHeader, 'detected' | 'stat'> {
  if (b.length < 72) throw new ImageHeaderError('the qcow2 header is truncated');
  const version = b.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new ImageHeaderError(`qcow2 version ${version} is not supported`);
  const backingOffset = b.readBigUInt64BE(8);
  const backingSize = b.readUInt32BE(16);
  const virtualSize = b.readBigUInt64BE(24);
  const encrypted = b.readUInt32BE(32) !== 0;
  let headerLength = 72;
  let incompatible = 0n;
  if (version === 3) {
    if (b.length < 104) throw new ImageHeaderError('the qcow2 v3 header is truncated');
    incompatible = b.readBigUInt64BE(72);
    headerLength = b.readUInt32BE(100);
    if (headerLength < 104 || headerLength % 8 !== 0) throw new ImageHeaderError(`qcow2 header_length ${headerLength} is invalid`);
  }
  let backing: string | null = null;
  if (backingOffset !== 0n) {
    if (backingSize === 0 || backingSize > MAX_BACKING_NAME)
      throw new ImageHeaderError(`the backing file name length ${backingSize} is invalid`);
    if (backingOffset > BigInt(HEADER_READ_BYTES))
      throw new ImageHeaderError(`the backing file name lies beyond the first ${HEADER_READ_BYTES} bytes`);
    backing = text(b, Number(backingOffset), backingSize, 'backing file name');
  }
  let backingFormat: string | null = null;
  let dataFile: string | null = null;
  for (let off = headerLength; ;) {
    if (off + 8 > b.length) throw new ImageHeaderError(`the header extensions run beyond the first ${HEADER_READ_BYTES} bytes`);
    const type = b.readUInt32BE(off);
    const len = b.readUInt32BE(off + 4);
    if (type === EXT_END) break;
    if (type === EXT_BACKING_FORMAT) backingFormat = text(b, off + 8, len, 'backing format');
    else if (type === EXT_DATA_FILE) dataFile = text(b, off + 8, len, 'data file name');
    off += 8 + Math.ceil(len / 8) * 8;
  }
  const needsDataFile = (incompatible & INCOMPAT_DATA_FILE) !== 0n;
  return { backing, backingFormat, dataFile, needsDataFile, encrypted, virtualSize };
}

/** Reads `path`'s header without following a symbolic link or blocking on a FIFO. */
export async function readImageHeader(path: string): Promise<ImageHeader> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ImageHeaderError(code === 'ELOOP' ? `'${path}' is a symbolic link` : `cannot open '${path}' (${code})`);
  }
  try {
    const stat = await fh.stat();
    if (!stat.isFile() && !stat.isBlockDevice()) throw new ImageHeaderError(`'${path}' is neither a regular file nor a block device`);
    const buf = Buffer.alloc(HEADER_READ_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const b = buf.subarray(0, bytesRead);
    const detected = MAGICS.find(([, is]) => is(b))?.[0] ?? null;
    const none = { backing: null, backingFormat: null, dataFile: null, needsDataFile: false, encrypted: false, virtualSize: null };
    return { detected, stat, ...(detected === 'qcow2' ? parseQcow2(b) : none) };
  } catch (e) {
    if (e instanceof ImageHeaderError) throw e;
    throw new ImageHeaderError(`cannot read '${path}' (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  } finally {
    await fh.close();
  }
}
