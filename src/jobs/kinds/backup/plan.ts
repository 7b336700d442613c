// What a backup call decides before anything is sent: the disks, the checkpoint it is relative
// to and the one it creates, and each disk's file in the target directory under the naming rule.
// Each file passes the destination policy exactly as a copy's file destination does (roots,
// directory trust, identity against every domain's storage); a name that exists is refused.
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentError } from '../../../errors.js';
import type { BackupParams } from '../../../generated/api.js';
import type { DestinationCheck } from '../../../destination/policy.js';
import { parseDomainXml, type DiskInfo } from '../../../libvirt/disk-xml.js';
import type { Connection, DomainRef } from '../../../libvirt/index.js';
import type { Logger } from '../../../log.js';
import { targetDir } from '../../groups/move.js';
import { domainStorage } from '../../inventory.js';
import { canonicalPath } from '../../job.js';
import { toAgentError } from '../../libvirt-errors.js';
import { safeName } from './manifest.js';
import { checkpointFacts, type BackupDiskPlan } from './xml.js';

export interface BackupPlan {
  dir: string;
  pool?: string;
  mode: 'full' | 'incremental';
  since: string | null;
  checkpoint: string | null;
  disks: BackupDiskPlan[];
  /** The domain's other disks (no bitmap in the new checkpoint). */
  others: string[];
}

const rejected = (reason: string) => new AgentError('destinationRejected', `backup target rejected: ${reason}`, { reason });

/** 2026-12-07T13:05:01.123Z → 20261207T130501.123Z (milliseconds kept: two backups in one second differ) */
export const compactTime = (iso: string): string => iso.replace(/[-:]/g, '');

/** A disk a backup copies: a device disk of type file or block with a source. */
const backupable = (d: DiskInfo) => d.device === 'disk' && (d.type === 'file' || d.type === 'block') && !!d.sourcePath;

function chosenDisks(all: DiskInfo[], params: BackupParams, domain: string): DiskInfo[] {
  if (params.disks === undefined) {
    const some = all.filter(backupable);
    if (some.length === 0) throw new AgentError('notFound', `domain '${domain}' has no disk a backup can copy`);
    return some;
  }
  return (params.disks as string[]).map((d) => {
    const info = all.find((x) => x.target === d);
    if (!info) throw new AgentError('notFound', `domain '${domain}' has no disk '${d}'`);
    if (!backupable(info))
      throw new AgentError(
        'unsupported',
        `disk ${d} of '${domain}' is a ${info.type} ${info.device}: only file and block disks can be backed up`,
      );
    return info;
  });
}

/** The checkpoint an incremental is relative to: the one named, or the domain's latest. */
async function sinceOf(conn: Connection, dom: DomainRef, incremental: BackupParams['incremental']): Promise<string | null> {
  if (incremental === undefined) return null;
  const list = await conn.listCheckpoints(dom.uuid).catch((e: unknown) => {
    throw toAgentError(e, "cannot list the domain's checkpoints");
  });
  if (incremental !== true) {
    if (!list.some((c) => c.name === incremental))
      throw new AgentError('notFound', `domain '${dom.name}' has no checkpoint '${incremental}'`);
    return incremental;
  }
  // The latest by creation time; parents come first, so the last of equal times is the newest.
  let best: { name: string; t: string } | null = null;
  for (const c of list) {
    const t = checkpointFacts(c.xml).createdAt ?? '';
    if (!best || t >= best.t) best = { name: c.name, t };
  }
  if (!best)
    throw new AgentError(
      'notFound',
      `domain '${dom.name}' has no checkpoint: an incremental backup needs a full one with a checkpoint first`,
    );
  return best.name;
}

export async function planBackup(
  conn: Connection,
  checkDestination: DestinationCheck,
  allowedPools: readonly string[],
  params: BackupParams,
  dom: DomainRef,
  startedAt: string,
  log?: Logger,
): Promise<BackupPlan> {
  if (!dom.active) throw new AgentError('invalidState', `domain '${dom.name}' is not running`);
  const { dir, pool } = await targetDir(conn, params.target, allowedPools);
  const xml = await conn.getXml(dom.uuid).catch((e: unknown) => {
    throw toAgentError(e, 'cannot read the domain');
  });
  const all = parseDomainXml(xml).disks;
  const disks = chosenDisks(all, params, dom.name);
  const since = await sinceOf(conn, dom, params.incremental);
  const checkpoint =
    params.checkpoint === undefined ? null : params.checkpoint === true ? `bc-${compactTime(startedAt)}` : params.checkpoint;
  const mode = since === null ? 'full' : 'incremental';
  // Incrementals are always qcow2: an unwritten cluster means "unchanged since `since`".
  const format = mode === 'incremental' ? 'qcow2' : (params.format ?? 'qcow2');
  const stamp = checkpoint ?? compactTime(startedAt);
  const domainDisks = await domainStorage(conn, log);
  const out: BackupDiskPlan[] = [];
  for (const d of disks) {
    const name = `${safeName(dom.name)}-${safeName(d.target)}-${safeName(stamp)}.${mode === 'full' ? 'full' : 'inc'}.${format}`;
    const path = join(dir, name);
    // Never overwritten, never renamed around: a file (or link) of that name refuses the backup.
    if (
      await lstat(path).then(
        () => true,
        () => false,
      )
    )
      throw rejected(`'${path}' already exists`);
    const checked = await checkDestination({ path, format, type: 'file' }, { reuseExternal: false, disk: d, domainDisks });
    out.push({ disk: d.target, file: canonicalPath(checked.destination.path), format });
  }
  const chosen = new Set(out.map((d) => d.disk));
  return {
    dir,
    ...(pool ? { pool: pool.name } : {}),
    mode,
    since,
    checkpoint,
    disks: out,
    others: all.filter((d) => d.device === 'disk' && !chosen.has(d.target)).map((d) => d.target),
  };
}
