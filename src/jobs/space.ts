// Pre-flight space checks: before a copy starts, what it can need is compared with what its
// destination can hold, so a full destination is refused with the figures instead of found
// mid-copy. A function of the resolved destination only (a path, however it was named: a
// caller's path, a directory or a pool target), summed per filesystem for a group and with
// what the agent's running copies may still write.
//
// What a copy can need (the rule docs/jobs.md (Pre-flight) states):
//   raw destination:   the disk's virtual size (a raw file may end fully allocated);
//   qcow2 destination: the allocated bytes of what is copied (the top image for a shallow copy,
//                      the whole chain for a full one), at most the virtual size, plus qcow2
//                      metadata (1/8192 of the virtual size for L2 tables, 1/32768 for refcounts,
//                      1 MiB for header, L1 and refcount tables);
//   then a margin of 1% of that figure, at least 16 MiB.
// A reused file already holds some of it: its allocated bytes are subtracted. A block device
// has its size, not free space: a raw copy needs exactly the virtual size (else
// destinationRejected with both sizes); a qcow2 one needs its figure to fit in the device.
// Network destinations are not checked (their free space is not the agent's to read).
import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { AgentError } from '../errors.js';
import type { Destination } from '../generated/api.js';
import type { DiskInfo } from '../libvirt/disk-xml.js';
import { deviceKey } from '../destination/identity.js';
import { blockDeviceBytes } from './sizes.js';

const MiB = 1024 * 1024;
/** The margin added to every figure: 1% of it, at least this. */
export const MIN_MARGIN_BYTES = 16 * MiB;

/** The sizes of the disk being copied: libvirt's (QEMU's) capacity and allocations, never a header's. */
export interface SourceSizes {
  /** The size the guest sees (virDomainGetBlockInfo capacity). */
  capacity: number;
  /** Allocated bytes of the top image (virDomainGetBlockInfo allocation). */
  top: number;
  /** Allocated bytes of the whole chain: the top's plus every backing layer's. */
  chain: number;
}

/** One copy's figure and where it lands. */
export interface SpaceNeed {
  disk: string;
  /** The destination as checked (canonical path). */
  path: string;
  /** Bytes the copy can need beyond what the destination already holds. */
  needed: number;
  /** Bytes the destination held when checked (a reused file's allocation; 0 for a new file or a device). */
  held: number;
  /** The filesystem (or device) the copy writes to. */
  store: Store;
  /** A copy already running: its job (its figure is what it may still write). */
  jobId?: string;
}

export interface Store {
  /** Same key, same storage: `fs:<st_dev>` or `dev:<major:minor>`. */
  key: string;
  /** The directory asked (statfs) or the device. */
  path: string;
  /** The mount point of that directory, or the device. */
  filesystem: string;
  /** Bytes available to an unprivileged writer (bavail × bsize), or the device's size. */
  available: number;
  device: boolean;
}

/** Allocated bytes of one backing layer: a file's blocks, a device's size; unknown counts as the capacity. */
async function layerBytes(path: string | null, capacity: number): Promise<number> {
  if (!path?.startsWith('/')) return capacity;
  try {
    const st = await fs.stat(path);
    if (st.isFile()) return st.blocks * 512;
    return (await blockDeviceBytes(path)) ?? capacity;
  } catch {
    return capacity;
  }
}

/** The source's sizes: capacity and the top's allocation from libvirt, the backing layers' from their files. */
export async function sourceSizes(info: { capacity: bigint; allocation: bigint }, disk: DiskInfo): Promise<SourceSizes> {
  const capacity = Number(info.capacity);
  const top = Number(info.allocation);
  const layers = disk.backing?.map((l) => l.path) ?? disk.backingPaths;
  let chain = top;
  for (const p of layers) chain += await layerBytes(p, capacity);
  return { capacity, top, chain };
}

/** What a copy in `format` can need, margin included (the rule at the top of this file). */
export function copyFigure(sizes: SourceSizes, format: string, shallow: boolean): number {
  let bytes: number;
  if (format === 'raw') bytes = sizes.capacity;
  else {
    const data = Math.min(shallow ? sizes.top : sizes.chain, sizes.capacity);
    bytes = data + Math.ceil(sizes.capacity / 8192) + Math.ceil(sizes.capacity / 32768) + MiB;
  }
  return bytes + Math.max(MIN_MARGIN_BYTES, Math.ceil(bytes / 100));
}

/** The mount point holding `dir`: the highest ancestor on the same st_dev. */
async function mountPointOf(dir: string, dev: number): Promise<string> {
  let cur = dir;
  for (;;) {
    const up = dirname(cur);
    if (up === cur) return cur;
    const st = await fs.stat(up).catch(() => null);
    if (!st || st.dev !== dev) return cur;
    cur = up;
  }
}

function refuse(reason: string): never {
  throw new AgentError('destinationRejected', `destination rejected: ${reason}`, { reason });
}

/**
 * The need of one copy to `dest` (already through the destination policy), or null when it is
 * not checked (a network destination). Refuses a raw block device of another size than the disk.
 */
export async function spaceNeed(
  dest: Destination,
  disk: DiskInfo,
  sizes: SourceSizes,
  opts: { shallow: boolean; reuseExternal: boolean },
): Promise<SpaceNeed | null> {
  const type = dest.type ?? 'file';
  if (type === 'network') return null;
  const format = dest.format ?? disk.format ?? 'raw';
  const shallow = opts.shallow && (disk.backing?.length ?? disk.backingPaths.length) > 0;
  const figure = copyFigure(sizes, format, shallow);
  if (type === 'block') {
    const st = await fs.stat(dest.path).catch((e: NodeJS.ErrnoException) => refuse(`cannot inspect '${dest.path}' (${e.code})`));
    const devBytes = await blockDeviceBytes(dest.path);
    if (devBytes === null) refuse(`cannot read the size of block device '${dest.path}'`);
    if (format === 'raw' && devBytes !== sizes.capacity) {
      const reason = `block device ${dest.path} holds ${devBytes} bytes but the disk is ${sizes.capacity} bytes: QEMU copies a disk raw only onto a device of exactly its size`;
      throw new AgentError('destinationRejected', `destination rejected: ${reason}`, {
        reason,
        path: dest.path,
        destinationBytes: devBytes,
        sourceBytes: sizes.capacity,
      });
    }
    const store = { key: `dev:${deviceKey(st)}`, path: dest.path, filesystem: dest.path, available: devBytes!, device: true };
    // A raw device of the right size holds the copy by definition.
    return { disk: disk.target, path: dest.path, needed: format === 'raw' ? 0 : figure, held: 0, store };
  }
  const dir = dirname(dest.path);
  let held = 0;
  let dst, sfs;
  try {
    // A reused file's allocation is already the copy's.
    if (opts.reuseExternal) held = (await fs.stat(dest.path)).blocks * 512;
    [dst, sfs] = await Promise.all([fs.stat(dir), fs.statfs(dir)]);
  } catch (e) {
    return refuse(`cannot read the free space of '${dir}' (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const store = {
    key: `fs:${dst.dev}`,
    path: dir,
    filesystem: await mountPointOf(dir, dst.dev),
    available: sfs.bavail * sfs.bsize,
    device: false,
  };
  return { disk: disk.target, path: dest.path, needed: Math.max(0, figure - held), held, store };
}

/**
 * Refuses with insufficientSpace when the copies together need more than a filesystem (or
 * device) has available. Summed per filesystem: disks that fit one by one may not fit together.
 */
export function assertRoom(needs: Array<SpaceNeed | null>, running: SpaceNeed[] = []): void {
  const byStore = new Map<string, SpaceNeed[]>();
  const mine = new Set(needs.filter((n) => n).map((n) => n!.store.key));
  // Running copies count only where this call writes.
  for (const n of [...needs, ...running.filter((r) => mine.has(r.store.key))])
    if (n) byStore.set(n.store.key, [...(byStore.get(n.store.key) ?? []), n]);
  for (const group of byStore.values()) {
    const { store } = group[0]!;
    const needed = group.reduce((s, n) => s + n.needed, 0);
    if (needed <= store.available) continue;
    const names = group.map((n) => (n.jobId ? `${n.disk} (running job ${n.jobId})` : n.disk));
    const what = group.length > 1 ? `the copies of ${names.join(', ')} together need` : `the copy needs`;
    const where = store.device
      ? `block device ${store.path} holds ${store.available} bytes`
      : `${store.path} (filesystem ${store.filesystem}) has ${store.available} bytes available`;
    throw new AgentError('insufficientSpace', `${what} up to ${needed} bytes but ${where}`, {
      needed,
      available: store.available,
      path: store.path,
      filesystem: store.filesystem,
      disks: group.map((n) => ({ disk: n.disk, path: n.path, needed: n.needed, ...(n.jobId ? { jobId: n.jobId } : {}) })),
    });
  }
}

/**
 * What copies still running (phase 1) may yet write: each one's figure less what its
 * destination file gained since its check. Reserved against the same filesystem, so copies
 * started one by one cannot together overcommit it as a group could not. A device's figure
 * stays reserved whole; a copy in phase 2 has written its share.
 */
export async function stillNeeded(running: Array<SpaceNeed & { jobId: string }>): Promise<SpaceNeed[]> {
  const out: SpaceNeed[] = [];
  for (const n of running) {
    let written = 0;
    if (!n.store.device) {
      const st = await fs.stat(n.path).catch(() => null);
      written = st ? Math.max(0, st.blocks * 512 - n.held) : 0;
    }
    const left = Math.max(0, n.needed - written);
    if (left > 0) out.push({ ...n, needed: left });
  }
  return out;
}
