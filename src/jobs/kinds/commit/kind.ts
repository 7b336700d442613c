// The commit kinds: an active commit (libvirt's ACTIVE_COMMIT, a <mirror job='active-commit'>
// into the base; ready, then pivot, finish or abort, like a copy) and a commit below the active
// layer (libvirt's COMMIT, no <mirror>; it completes on its own, verified by the chain).
import type { Job, JobState } from '../../../generated/api.js';
import type { JobKind } from '../kind.js';
import { MIRROR_NEXT, stateFromMirror } from '../copy/state.js';
import { asChainJob } from '../chain-job.js';
import { adopted } from './adopt.js';
import { conclude } from './conclude.js';
import { mismatch } from './mismatch.js';
import { mergedLayers } from './merged.js';

/** A job that ends on its own: working, then completed, or cancelled on request, or failed. */
export const SELF_ENDING_NEXT: Readonly<Record<JobState, readonly JobState[]>> = {
  copying: ['completed', 'cancelling', 'failed', /* outside */ 'cancelled'],
  ready: [],
  pivoting: [],
  finishing: [],
  // Completed: the job ended before the abort reached it (the chain says so).
  cancelling: ['cancelled', 'completed', 'failed', /* refused */ 'copying'],
  pivoted: [],
  finished: [],
  completed: [],
  cancelled: [],
  failed: [],
};

/** The kind's adoption: the chain kinds share one reader of what libvirt shows (adopt.ts). */
export const adoptAs =
  (kind: JobKind['name']): JobKind['adopted'] =>
  (dom, disk, info, nowIso) => {
    const job = adopted(dom, disk, info, nowIso);
    if (!job || job.kind !== kind) throw new Error(`adopted a ${job?.kind ?? 'no'} job as a ${kind}`);
    return job as Job;
  };

export const activeCommitKind: JobKind = {
  name: 'activeCommit',
  noun: 'active commit',
  blockJobType: 'activeCommit',
  mirrorJob: 'active-commit',
  next: MIRROR_NEXT,
  requests: new Set(['pivot', 'finish', 'abort', 'setSpeed']),
  mismatch: (job, disk, info) => mismatch(asChainJob(job), disk, info ?? null),
  stateFromLive: (journaled, disk) => stateFromMirror(journaled, disk.mirror?.ready ?? null),
  conclude: (job, facts, staleMs) => conclude(asChainJob(job), facts, staleMs),
  cleanupOption: 'deleteMerged',
  mergedPaths: (job, ended) => mergedLayers('activeCommit', ended, asChainJob(job).layers)?.map((l) => l.path) ?? null,
  adopted: adoptAs('activeCommit'),
};

export const commitKind: JobKind = {
  name: 'commit',
  noun: 'commit',
  blockJobType: 'commit',
  mirrorJob: null,
  next: SELF_ENDING_NEXT,
  requests: new Set(['abort', 'setSpeed']),
  mismatch: (job, disk, info) => mismatch(asChainJob(job), disk, info ?? null),
  // No <mirror> to read: an abort libvirt does not show yet is still wanted.
  stateFromLive: (journaled) => (journaled === 'cancelling' ? 'cancelling' : 'copying'),
  conclude: (job, facts, staleMs) => conclude(asChainJob(job), facts, staleMs),
  cleanupOption: 'deleteMerged',
  mergedPaths: (job, ended) => mergedLayers('commit', ended, asChainJob(job).layers)?.map((l) => l.path) ?? null,
  adopted: adoptAs('commit'),
};
