// Where a copy may write. Every rule here runs before libvirt is asked anything, so a
// rejected destination changes nothing on disk.
import { promises as fs } from 'node:fs';
import { dirname, resolve, sep } from 'node:path';
import { AgentError } from '../errors.js';
import type { Destination } from '../generated/api.js';
import type { DiskInfo } from './disk-xml.js';

export interface DestinationContext {
  reuseExternal: boolean;
  /** The disk being copied. */
  disk: DiskInfo;
  /** Every source, mirror and backing path of every defined or running domain (resolved). */
  domainDisks: Set<string>;
}

export type DestinationCheck = (dest: Destination, ctx: DestinationContext) => Promise<void>;

export interface DestinationPolicy {
  /** Directories under which file destinations may live; empty = anywhere. */
  allowedRoots: string[];
  /** Block devices that may be destinations; empty = none. */
  allowedDevices: string[];
}

const reject = (reason: string): never => {
  throw new AgentError('destinationRejected', `destination rejected: ${reason}`, { reason });
};

async function lstatOrNull(p: string) {
  try {
    return await fs.lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

const under = (p: string, root: string) => p === root || p.startsWith(root.endsWith(sep) ? root : root + sep);

export function makeDestinationCheck(policy: DestinationPolicy): DestinationCheck {
  return async (dest, ctx) => {
    const path = dest.path;
    if (resolve(path) !== path) reject(`path '${path}' must be absolute and normalized (no '..', '.', '//' or trailing '/')`);
    if (ctx.reuseExternal && !dest.format) reject('reuseExternal needs an explicit format (libvirt would otherwise probe the image)');
    if (ctx.disk.sourcePath && resolve(ctx.disk.sourcePath) === path) reject('the destination is the disk\'s own source');
    if (ctx.disk.backingPaths.some((b) => resolve(b) === path)) reject('the destination is a backing file of the disk');
    if (ctx.domainDisks.has(path)) reject('the destination is a disk (or backing file) of a defined domain');

    const st = await lstatOrNull(path);
    if ((dest.type ?? 'file') === 'block') {
      if (!policy.allowedDevices.includes(path)) reject(`block device '${path}' is not in allowedDevices`);
      if (!st || !st.isBlockDevice()) reject(`'${path}' is not a block device`);
      return;
    }
    // The parent's real path decides where the file lands; the last component must not be a
    // symlink (it could point anywhere once libvirt opens it).
    let parent: string;
    try {
      parent = await fs.realpath(dirname(path));
    } catch {
      return reject(`the parent directory of '${path}' does not exist`);
    }
    if (policy.allowedRoots.length > 0) {
      const roots = await Promise.all(policy.allowedRoots.map((r) => fs.realpath(r).catch(() => resolve(r))));
      if (!roots.some((r) => under(parent, r))) reject(`'${path}' is not under an allowed root`);
    }
    if (st?.isSymbolicLink()) reject(`'${path}' is a symbolic link`);
    if (st && !ctx.reuseExternal) reject(`'${path}' already exists (use reuseExternal to reuse it)`);
    if (!st && ctx.reuseExternal) reject(`'${path}' does not exist, so it cannot be reused`);
    if (st && !st.isFile()) reject(`'${path}' is not a regular file`);
  };
}

/** No roots, no devices: any normalized file path that passes the safety rules. */
export const checkDestination: DestinationCheck = makeDestinationCheck({ allowedRoots: [], allowedDevices: [] });
