// "Is this another domain's disk?" decided by what the file is, not how it is spelled:
// (st_dev, st_ino) for files, st_rdev (major:minor) for block devices, plus the canonical path
// for images that do not exist yet (a defined domain whose disk is still to be created).
import { promises as fs, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export interface DiskIdentities {
  /** "dev:ino" of every existing image file → the path a domain names it by. */
  files: Map<string, string>;
  /** "major:minor" of every block device → the path. */
  devices: Map<string, string>;
  /** Canonical path (parent resolved) of every local image, existing or not → the path. */
  paths: Map<string, string>;
  /** Network sources as the agent's URLs. */
  urls: Set<string>;
  /** st_dev of the file system each image file lives on → the path: a device holding one is in use. */
  hosts: Map<number, string>;
}

export const fileKey = (st: Stats) => `${st.dev}:${st.ino}`;
/** Linux dev_t → "major:minor", decoded as glibc's major()/minor() do (the one decoder of device numbers). */
export function majorMinor(rdev: number | bigint): string {
  const d = BigInt(rdev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & 0xfffff000n);
  const minor = (d & 0xffn) | ((d >> 12n) & 0xffffff00n);
  return `${major}:${minor}`;
}
export const deviceKey = (st: Stats) => majorMinor(st.rdev);

/** realpath of the parent + the last component: where a file of that name is or would be. */
export async function canonicalOf(p: string): Promise<string> {
  try {
    return await fs.realpath(p);
  } catch {
    try {
      return join(await fs.realpath(dirname(p)), basename(p));
    } catch {
      return p;
    }
  }
}

/** Identities of every path in `paths` (sources, backing files, mirrors of every domain). */
export async function identitiesOf(paths: Iterable<string>): Promise<DiskIdentities> {
  const ids: DiskIdentities = { files: new Map(), devices: new Map(), paths: new Map(), urls: new Set(), hosts: new Map() };
  await Promise.all(
    [...new Set(paths)].map(async (p) => {
      if (!p.startsWith('/')) {
        ids.urls.add(p);
        return;
      }
      ids.paths.set(await canonicalOf(p), p);
      // stat follows symlinks, as QEMU's open does.
      const st = await fs.stat(p).catch(() => null);
      if (st?.isBlockDevice()) ids.devices.set(deviceKey(st), p);
      else if (st) {
        ids.files.set(fileKey(st), p);
        ids.hosts.set(Number(st.dev), p);
      }
    }),
  );
  return ids;
}

/**
 * The domain disk path `st` (the destination's lstat) or `canonical` is, if any; for a block
 * device also an image on the file system the device holds (writing the device would destroy it).
 */
export function clash(ids: DiskIdentities, canonical: string, st: Stats | null): string | undefined {
  if (st?.isBlockDevice()) return ids.devices.get(deviceKey(st)) ?? ids.hosts.get(Number(st.rdev));
  if (st) {
    const f = ids.files.get(fileKey(st));
    if (f) return f;
  }
  return ids.paths.get(canonical);
}
