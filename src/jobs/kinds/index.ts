// Every kind of job, and the one mapping from libvirt's job types (and <mirror job=…>) to them.
// A new kind is registered here; the compiler then names every place its absence breaks.
import { AgentError } from '../../errors.js';
import type { Job, JobState } from '../../generated/api.js';
import type { BlockJobType } from '../../libvirt/index.js';
import { copyKind } from './copy/kind.js';
import { activeCommitKind, commitKind } from './commit/kind.js';
import { pullKind } from './pull/kind.js';
import type { JobKind, JobKindName } from './kind.js';

export type { JobKind, JobKindName, JobRequest } from './kind.js';

export const KINDS: Readonly<Record<JobKindName, JobKind>> = {
  copy: copyKind,
  activeCommit: activeCommitKind,
  commit: commitKind,
  pull: pullKind,
};

/** Every kind's name, in the schema's order. */
export const JOB_KINDS: readonly JobKindName[] = ['copy', 'activeCommit', 'commit', 'pull'];

/** The job's kind; a record written before kinds existed is a copy. */
export function kindOf(job: Pick<Job, 'kind'>): JobKind {
  const k = KINDS[job.kind ?? 'copy'] as JobKind | undefined;
  // A record of a kind this agent does not know (written by a newer one): refused by name.
  if (!k) throw new AgentError('unsupported', `this agent does not run ${String(job.kind)} jobs`);
  return k;
}

/** Whether the job's kind allows the transition (the recorder's only gate on state changes). */
export function canTransition(job: Pick<Job, 'kind'>, from: JobState, to: JobState): boolean {
  return kindOf(job).next[from].includes(to);
}

/** The kind of a block job libvirt reports, or null for one the agent does not run (backup, unknown). */
export function kindOfBlockJob(type: BlockJobType): JobKind | null {
  return Object.values(KINDS).find((k) => k.blockJobType === type) ?? null;
}

/** The kind a <mirror job=…> belongs to, or null (libvirt shows job='' while it ends a job: the caller knows which). */
export function kindOfMirror(mirrorJob: string): JobKind | null {
  return Object.values(KINDS).find((k) => k.mirrorJob === mirrorJob) ?? null;
}
