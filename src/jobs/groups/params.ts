// What the group layer decides without state of its own: each disk once, each destination
// once, which earlier group a call repeats, the group's public view from its record and jobs,
// and an error as a group's per-disk outcome reports it.
import { destinationFromXml } from '../../destination/xml.js';
import { AgentError } from '../../errors.js';
import type { BlockCopyGroupParams, FreezeMode, Group, GroupDisk, Job } from '../../generated/api.js';
import { groupState } from './state.js';
import { canonicalPath } from '../job.js';
import { toByteCount } from '../numbers.js';
import type { GroupRecord } from '../journal.js';
import { toAgentError, type libvirtData } from '../libvirt-errors.js';

export type SwitchDisk = NonNullable<Group['lastSwitch']>['disks'][number];
export type Operation = 'pivot' | 'finish';
export interface SwitchOptions {
  timeoutMs: number;
  freeze: FreezeMode;
  maxPauseMs: number;
}
/** The state each disk of a group switch must reach. */
export const GOAL = { pivot: 'pivoted', finish: 'finished' } as const;

export function destPath(d: GroupDisk): string | undefined {
  // The same parser (and refusals) as a single blockCopy: a group names its destinations alike.
  const p = (d.destination ?? destinationFromXml(d.destinationXml ?? '')).path;
  return canonicalPath(p);
}

export function checkDistinct(params: { disks: GroupDisk[] }): void {
  const disks = new Set<string>();
  const dests = new Set<string>();
  for (const d of params.disks) {
    const path = destPath(d);
    if (disks.has(d.disk))
      throw new AgentError('destinationRejected', `disk ${d.disk} is listed twice`, { reason: `disk ${d.disk} is listed twice` });
    if (path && dests.has(path))
      throw new AgentError('destinationRejected', `two disks would be copied to ${path}`, {
        reason: `two disks would be copied to ${path}`,
      });
    disks.add(d.disk);
    if (path) dests.add(path);
  }
}

export function errorOf(e: unknown): NonNullable<SwitchDisk['error']> {
  const a = toAgentError(e, undefined, { other: 'libvirtError' });
  const lv = a.data.libvirt as ReturnType<typeof libvirtData> | undefined;
  return { name: a.errorName, message: a.message, ...(lv ? { libvirt: lv } : {}) };
}

/** The group's jobs in the order its record lists them (jobs known to the job manager only). */
export function groupMembers(jobs: Job[], rec: GroupRecord): Job[] {
  const byId = new Map(jobs.map((j) => [j.jobId, j]));
  return rec.jobIds.map((id) => byId.get(id)).filter((j): j is Job => !!j);
}

/** The group's overall progress: its jobs' cursors and ends summed; percent null while any end is unknown. */
export function groupProgress(jobs: Job[]): Group['progress'] {
  let cur = 0n;
  let end = 0n;
  let known = jobs.length > 0;
  for (const j of jobs) {
    cur += BigInt(j.progress.cur);
    end += BigInt(j.progress.end);
    if (BigInt(j.progress.end) === 0n) known = false;
  }
  const percent = known && end > 0n ? Math.min(100, Math.round((Number(cur) / Number(end)) * 10000) / 100) : null;
  return { cur: toByteCount(cur), end: toByteCount(end), percent };
}

export function groupView(rec: GroupRecord, jobs: Job[]): Group {
  const updatedAt = [rec.updatedAt, ...jobs.map((j) => j.updatedAt)].sort().at(-1)!;
  return {
    groupId: rec.groupId,
    domain: { ...rec.domain },
    state: groupState(jobs.map((j) => j.state)),
    whenReady: rec.whenReady,
    jobs,
    progress: groupProgress(jobs),
    createdAt: rec.createdAt,
    updatedAt,
    ...(rec.error ? { error: { ...rec.error } } : {}),
    lastSwitch: rec.lastSwitch ? structuredClone(rec.lastSwitch) : null,
  };
}

/**
 * The group an identical earlier call created, among `candidates` (with a groupId, only that
 * group): same domain, disks and destinations; a groupId naming other ones is jobExists.
 */
/** `uuid`: the domain `params.domain` names now (a name re-used by a new domain is not the old group's). */
export function sameGroup(
  params: Pick<BlockCopyGroupParams, 'groupId'> & { disks: GroupDisk[] },
  uuid: string,
  candidates: Array<{ rec: GroupRecord; members: Job[] }>,
): GroupRecord | undefined {
  const wanted = params.disks.map((d) => `${d.disk}=${destPath(d) ?? ''}`).join(',');
  const signature = (members: Job[]) => members.map((j) => `${j.disk}=${canonicalPath(j.destination.path)}`).join(',');
  const sameDomain = (rec: GroupRecord) => rec.domain.uuid === uuid;
  if (params.groupId) {
    const c = candidates[0];
    if (!c) return undefined;
    if (!sameDomain(c.rec) || signature(c.members) !== wanted) {
      throw new AgentError('jobExists', `groupId '${params.groupId}' already names a group of other disks or destinations`, {
        group: groupView(c.rec, c.members),
      });
    }
    return c.rec;
  }
  const ended = (members: Job[]) => ['cancelled', 'failed'].includes(groupState(members.map((j) => j.state)));
  return candidates.find(
    (c) => sameDomain(c.rec) && c.rec.jobIds.length === params.disks.length && signature(c.members) === wanted && !ended(c.members),
  )?.rec;
}

/** The group's error after a switch that failed on `disks` (the others switched). */
export function switchError(how: 'pivot' | 'finish', disks: string[]): NonNullable<Group['error']> {
  const names = disks.join(', ');
  return {
    name: how === 'pivot' ? 'pivotFailed' : 'libvirtError',
    message:
      how === 'pivot'
        ? `disk(s) ${names} could not be pivoted and stay on their sources, still mirroring (consistent with the rest at the pause); pivotGroup again to retry them`
        : `disk(s) ${names} could not be finished; the finished destinations are not a consistent set with them`,
  };
}
