// What the RPC layer needs from the layers below, as interfaces (ports): the RPC layer
// imports no job or group module. Each call's shape comes from the generated method types;
// the JobManager and GroupManager satisfy these structurally (checked where agent.ts wires them).
import type { AgentConnectionParams, AnyJob, CapabilitiesResult, MethodTypes } from '../generated/api.js';

type Params<M extends keyof MethodTypes> = MethodTypes[M][0];
type Result<M extends keyof MethodTypes> = MethodTypes[M][1];
type Call<M extends keyof MethodTypes> = (params: Params<M>) => Promise<Result<M>>;
/** A call that stops early when the caller's session closes. */
type Abortable<M extends keyof MethodTypes> = (params: Params<M>, signal?: AbortSignal) => Promise<Result<M>>;

export interface JobEvents {
  'job.changed': (job: AnyJob) => void;
  'agent.connection': (params: AgentConnectionParams) => void;
}

export interface JobPort {
  /** `by.principal`: who asks; a jobId belongs to the principal that created it. */
  blockCopy(params: Params<'blockCopy'>, signal?: AbortSignal, by?: { principal?: string }): Promise<Result<'blockCopy'>>;
  blockCommit(params: Params<'blockCommit'>, signal?: AbortSignal, by?: { principal?: string }): Promise<Result<'blockCommit'>>;
  blockPull(params: Params<'blockPull'>, signal?: AbortSignal, by?: { principal?: string }): Promise<Result<'blockPull'>>;
  jobInfo: Call<'jobInfo'>;
  diskInfo: Call<'diskInfo'>;
  pivot: Call<'pivot'>;
  finish: Call<'finish'>;
  abort: Call<'abort'>;
  setSpeed: Call<'setSpeed'>;
  listJobs: Call<'listJobs'>;
  wait: Abortable<'wait'>;
  /** The method list is the RPC layer's to add. */
  capabilities(): Promise<Omit<CapabilitiesResult, 'methods'>>;
  on<E extends keyof JobEvents>(event: E, listener: JobEvents[E]): unknown;
  off<E extends keyof JobEvents>(event: E, listener: JobEvents[E]): unknown;
}

export interface GroupPort {
  blockCopyGroup: Abortable<'blockCopyGroup'>;
  groupInfo: Call<'groupInfo'>;
  pivotGroup: Call<'pivotGroup'>;
  finishGroup: Call<'finishGroup'>;
  abortGroup: Call<'abortGroup'>;
}

export interface SnapshotPort {
  /** `by.principal`: who asks (kept in the operation's record, for the audit after a restart). */
  snapshotDisks(params: Params<'snapshotDisks'>, by?: { principal?: string }): Promise<Result<'snapshotDisks'>>;
}

/** Starting backups and their checkpoints; reading, waiting and aborting go through JobPort (every kind). */
export interface BackupPort {
  backup(params: Params<'backup'>, by?: { principal?: string }): Promise<Result<'backup'>>;
  checkpoints: Call<'checkpoints'>;
  deleteCheckpoints: Call<'deleteCheckpoints'>;
}
