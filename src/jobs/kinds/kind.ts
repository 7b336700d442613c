// The seam between the job kernel and the kinds of job (copy, commit, pull): what a kind
// supplies, and the one place that maps libvirt's job types to kinds. The kernel (entry,
// registry, recorder, state machine, observe/watch, reconcile/adopt) asks the job's kind and
// never tests a kind by name; a new kind is a folder under kinds/ and one line in KINDS.
import type { Job, JobKind as JobKindName, JobState } from '../../generated/api.js';
import type { BlockJobInfo, BlockJobType } from '../../libvirt/index.js';
import type { DiskInfo } from '../../libvirt/disk-xml.js';
import type { Decision, Facts } from './decision.js';

export type { JobKindName };

export type CleanupOption = 'deleteMerged' | 'removeSource';

/** The requests a caller can make of a running job; each kind says which apply. */
export type JobRequest = 'pivot' | 'finish' | 'abort' | 'setSpeed';

export interface JobKind {
  readonly name: JobKindName;
  /** What the kind is called in messages ("copy", "active commit", …). */
  readonly noun: string;
  /** libvirt's block job type of this kind (virDomainGetBlockJobInfo, BLOCK_JOB_2). */
  readonly blockJobType: BlockJobType;
  /** The `job` attribute of the <mirror> libvirt shows on the disk while the kind runs; null: none. */
  readonly mirrorJob: string | null;
  /** The kind's state table: the only transitions allowed (see state-machine.ts). */
  readonly next: Readonly<Record<JobState, readonly JobState[]>>;
  /** Which requests apply; any other is refused by name before anything is read or sent. */
  readonly requests: ReadonlySet<JobRequest>;
  /**
   * Why what libvirt shows on the job's disk is not this job's own (another kind of job,
   * another destination or other layers), or null when it is. `info`: the disk's block job, if read.
   */
  mismatch(job: Job, disk: DiskInfo, info?: BlockJobInfo | null): string | null;
  /** The state the live XML implies while libvirt's block job runs, given the journaled state. */
  stateFromLive(journaled: JobState, disk: DiskInfo): JobState;
  /** How the job ended, decided from the live XML, never from the request alone. */
  conclude(job: Job, facts: Facts, staleMirrorMs: number): Decision;
  /**
   * The files that left the disk's chain when the job ended in `ended` ([] for an end that
   * leaves none; null when the job's layers are not known): the kernel's deleteMerged step
   * (cleanup.ts) deletes them after the end is verified. Absent: the kind merges nothing away.
   */
  mergedPaths?(job: Job, ended: JobState): Array<string | null> | null;
  /** The request option that promises the mergedPaths step for this kind (deleteMerged for
   *  commits and pulls, removeSource for copies); absent with mergedPaths. */
  readonly cleanupOption?: CleanupOption;
  /** What that step keeps instead, and why, when this end leaves nothing to delete (a copy that
   *  ended without a pivot keeps its source); absent or []: nothing to say. */
  keptOnEnd?(job: Job, ended: JobState): Array<{ path: string; reason: string }>;
  /** The step deletes only once the domain's persistent definition matches live: a pivot
   *  changes the live disk only, and a definition still naming the old files would boot them. */
  readonly deleteAfterDefinitionMatches?: boolean;
  /** A job for one of this kind found running that this agent did not start. */
  adopted(dom: { name: string; uuid: string }, disk: DiskInfo, info: BlockJobInfo | null, nowIso: string): Job;
}
