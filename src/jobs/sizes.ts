// Sizes a raw copy onto a block device depends on. QEMU mirrors a disk only onto a target of
// the same size; a raw block device of another size fails mid-copy with nothing more than "an
// I/O error". Both sizes can be read before starting: a block device's from sysfs, a qcow2
// image's virtual size from its header, a raw file's from stat.
import { promises as fs } from 'node:fs';
import { majorMinor } from '../destination/identity.js';
import { readImageHeader } from '../destination/image-header.js';

/** The size in bytes of a block device, or null if `path` is not one or it cannot be read.
 *  (No libvirt here, and no safety gate: an unknown size lets QEMU refuse or fail the copy,
 *  which the agent then diagnoses the same way; it never lets a wrong copy through.) */
export async function blockDeviceBytes(path: string): Promise<number | null> {
  try {
    const st = await fs.stat(path);
    if (!st.isBlockDevice()) return null;
    const sectors = Number((await fs.readFile(`/sys/dev/block/${majorMinor(st.rdev)}/size`, 'utf8')).trim());
    return Number.isFinite(sectors) ? sectors * 512 : null;
  } catch {
    return null;
  }
}

/** The size the guest sees of an image or device (qcow2: the header's virtual size), or null if unknown. */
export async function virtualBytes(path: string, format: string | null): Promise<number | null> {
  const dev = await blockDeviceBytes(path);
  if (dev !== null || format === 'qcow2') {
    if (format !== 'qcow2') return dev;
    try {
      // The one header parser (never blocks on a FIFO); the name the domain uses may be a link.
      const h = await readImageHeader(await fs.realpath(path));
      return h.detected === 'qcow2' && h.virtualSize !== null ? Number(h.virtualSize) : null;
    } catch {
      return null;
    }
  }
  if (format !== 'raw' && format !== null) return null;
  try {
    const st = await fs.stat(path);
    return st.isFile() ? st.size : null;
  } catch {
    return null;
  }
}

/**
 * Why a raw copy of the disk onto this block device cannot work (its size differs from the
 * disk's), or null when it can or the sizes cannot be known.
 */
export async function rawDeviceSizeMismatch(
  source: { path: string | null; format: string | null },
  dest: { path: string; format: string | null },
): Promise<string | null> {
  if ((dest.format ?? source.format) !== 'raw' || !source.path) return null;
  const devBytes = await blockDeviceBytes(dest.path);
  if (devBytes === null) return null;
  const diskBytes = await virtualBytes(source.path, source.format);
  if (diskBytes === null || diskBytes === devBytes) return null;
  return `block device ${dest.path} holds ${devBytes} bytes but the disk is ${diskBytes} bytes: QEMU copies a disk raw only onto a device of exactly its size`;
}
