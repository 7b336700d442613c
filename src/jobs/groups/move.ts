// A whole-VM move (blockCopyGroup with target): the disks to move, each one's new file in the
// target directory or storage pool under the naming rule, in its source's format unless the
// caller asks for another. What this decides becomes per-disk destinations: from there on a
// move is an ordinary group, and each destination passes the same policy as one a caller names.
import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AgentError } from '../../errors.js';
import type { BlockCopyGroupParams, BlockCopyGroupResult, GroupDisk } from '../../generated/api.js';
import { parseDisks, type DiskInfo } from '../../libvirt/disk-xml.js';
import { DIRECTORY_POOL_TYPES, parsePoolXml } from '../../libvirt/pool-xml.js';
import type { Connection } from '../../libvirt/types.js';
import { LibvirtError, VirErrorCode } from '../../libvirt/errors.js';
import { libvirtData, toAgentError } from '../libvirt-errors.js';
import { READ_WAIT_MS, within } from '../read-bound.js';

type Target = Pick<NonNullable<BlockCopyGroupParams['target']>, 'dir' | 'pool'>;
export type MoveResultExtras = Pick<BlockCopyGroupResult, 'alreadyThere' | 'pool' | 'plan'>;

export interface MovePlan extends Required<Pick<MoveResultExtras, 'alreadyThere' | 'plan'>> {
  /** The per-disk group disks (destination set) of the disks that move. */
  disks: GroupDisk[];
  /** The directory the files go to (the pool's target path for a pool). */
  dir: string;
  pool?: { name: string; path: string };
}

const FORMATS = ['raw', 'qcow2'] as const;

/**
 * The naming rule: `<domain>-<disk>.<format>` (`vm1-vda.qcow2`, `vm1-vdb.raw`), each character
 * other than a letter, digit, '.', '_', '+' or '-' replaced by '_', and a leading '.' by '_'.
 */
export function moveFileName(domain: string, disk: string, format: string): string {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9._+-]/g, '_');
  return `${safe(domain)}-${safe(disk)}.${format}`.replace(/^\./, '_');
}

/** A disk a move copies: a device disk of type file, block or volume with a source (no cdrom, floppy, lun, empty or network disk). */
export function isMovable(d: DiskInfo): boolean {
  if (d.device !== 'disk') return false;
  return d.type === 'volume' ? !!d.volume : ['file', 'block'].includes(d.type) && !!d.sourcePath;
}

const rejected = (reason: string) => new AgentError('destinationRejected', reason, { reason });

/** The directory a target names: the dir itself, or the target path of an allowed directory pool. */
export async function targetDir(
  conn: Connection,
  target: Target,
  allowedPools: readonly string[],
): Promise<{ dir: string; pool?: { name: string; path: string } }> {
  if (target.dir !== undefined) return { dir: target.dir };
  const name = target.pool!;
  if (!allowedPools.includes(name)) throw rejected(`storage pool '${name}' is not listed in allowedPools`);
  const read = await within(
    conn.storagePoolXml(name).catch((e: unknown) => {
      if (e instanceof LibvirtError && e.code === VirErrorCode.NO_STORAGE_POOL)
        throw new AgentError('notFound', `no storage pool '${name}'`, { libvirt: libvirtData(e) });
      throw toAgentError(e, `cannot read storage pool '${name}'`);
    }),
    READ_WAIT_MS * 10,
  );
  if (!read) throw new AgentError('libvirtTimeout', `libvirtd has not answered the read of storage pool '${name}'; retry`);
  const info = parsePoolXml(read.value);
  if (!DIRECTORY_POOL_TYPES.includes(info.type) || !info.path?.startsWith('/'))
    throw rejected(
      `storage pool '${name}' is of type '${info.type}': only pools of type ${DIRECTORY_POOL_TYPES.join(', ')} (a directory of files) can be move targets`,
    );
  return { dir: info.path, pool: { name, path: info.path } };
}

async function volumePath(conn: Connection, d: DiskInfo): Promise<string> {
  const v = d.volume!;
  return conn.storageVolPath(v.pool, v.volume).catch((e: unknown) => {
    throw toAgentError(e, `cannot resolve disk ${d.target}'s volume ${v.pool}/${v.volume}`);
  });
}

/** dev:ino of a directory, or undefined when it cannot be read. */
async function identity(path: string): Promise<string | undefined> {
  const st = await stat(path).catch(() => undefined);
  return st ? `${st.dev}:${st.ino}` : undefined;
}

/** The disks `params.disks` names (targets), or every movable disk of the domain. */
function chosenDisks(all: DiskInfo[], params: BlockCopyGroupParams, domain: string): DiskInfo[] {
  if (params.disks === undefined) {
    const movable = all.filter(isMovable);
    if (movable.length === 0) throw new AgentError('notFound', `domain '${domain}' has no disk a move can copy`);
    return movable;
  }
  const seen = new Set<string>();
  return (params.disks as string[]).map((d) => {
    if (seen.has(d)) throw rejected(`disk ${d} is listed twice`);
    seen.add(d);
    const info = all.find((x) => x.target === d);
    if (!info) throw new AgentError('notFound', `domain '${domain}' has no disk '${d}' (or is not running)`);
    if (!isMovable(info))
      throw rejected(
        `disk ${d} is a ${info.device} of type ${info.type}${info.sourcePath || info.volume ? '' : ' without a source'}: only disks of type file, block or volume with a source can be moved`,
      );
    return info;
  });
}

/** Plans a whole-VM move of the running domain `domain` (uuid) to `params.target`. */
export async function planMove(
  conn: Connection,
  params: BlockCopyGroupParams,
  domain: { name: string; uuid: string },
  allowedPools: readonly string[],
): Promise<MovePlan> {
  const target = params.target!;
  const { dir, pool } = await targetDir(conn, target, allowedPools);
  const read = await within(
    conn.getXml(domain.uuid).catch((e: unknown) => {
      throw toAgentError(e, 'cannot read the domain');
    }),
    READ_WAIT_MS * 10,
  );
  if (!read) throw new AgentError('libvirtTimeout', `libvirtd has not answered the read of domain '${domain.name}'; retry`);
  const disks = chosenDisks(parseDisks(read.value), params, domain.name);
  const here = await identity(dir);
  const plan: MovePlan = { disks: [], dir, alreadyThere: [], plan: [], ...(pool ? { pool } : {}) };
  for (const d of disks) {
    // A volume disk's file is the pool's to tell (virStorageVolGetPath).
    const source = d.sourcePath ?? (await volumePath(conn, d));
    // Already there: the source's directory is the target directory (by identity, not by spelling).
    if (here !== undefined && d.type !== 'block' && (await identity(dirname(source))) === here) {
      plan.alreadyThere.push({ disk: d.target, path: source });
      continue;
    }
    const format = target.format ?? d.format;
    if (!format || !(FORMATS as readonly string[]).includes(format))
      throw rejected(`disk ${d.target} is in format '${format ?? 'unknown'}': a move keeps raw or qcow2; give target.format to convert`);
    const path = join(dir, moveFileName(domain.name, d.target, format));
    plan.plan.push({ disk: d.target, source, destination: path, format: format as (typeof FORMATS)[number] });
    plan.disks.push({ disk: d.target, destination: { path, format: format as (typeof FORMATS)[number], type: 'file' } });
  }
  return plan;
}
