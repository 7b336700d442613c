// Every job the agent runs, of every kind, behind one surface: the block jobs (the JobManager:
// copy, commit, pull, one disk each, libvirt's block jobs) and the domain jobs (backups, one
// per domain, libvirt's domain job). One id space (a jobId names one job of one kind, checked
// by both sides), one job.changed stream, one list, and jobInfo, wait and abort by jobId reach
// any kind. The RPC layer and the metrics see only this; the two trackers share the journal
// (one state directory, one atomic write), the connection and its supervision.
import { AgentError } from '../errors.js';
import type {
  AbortParams,
  AbortResult,
  AnyJob,
  AnyJobChange,
  BackupJob,
  FinishParams,
  JobInfoParams,
  JobInfoResult,
  ListJobsParams,
  ListJobsResult,
  PivotParams,
  SetSpeedParams,
  WaitParams,
  WaitResult,
} from '../generated/api.js';
import type { JobManager } from './manager.js';

/** What the domain-job kinds supply (BackupService satisfies it). */
export interface DomainJobs {
  get(jobId: string): BackupJob | undefined;
  list(filter: { domain?: string; states?: readonly string[]; includeEnded: boolean }): BackupJob[];
  wait(jobId: string, timeoutS?: number, signal?: AbortSignal): Promise<BackupJob>;
  abort(jobId: string): Promise<AnyJobChange>;
  on(event: 'job.changed', listener: (job: BackupJob) => void): unknown;
  off(event: 'job.changed', listener: (job: BackupJob) => void): unknown;
}

type BlockOnly = 'pivot' | 'finish' | 'setSpeed';
type Listener = (...args: any[]) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

export class AllJobs {
  constructor(
    private readonly blocks: JobManager,
    private readonly domainJobs: DomainJobs,
  ) {}

  /** The one id space, for the block side's start path (context.ts otherJob). */
  static otherJobOf(domainJobs: () => DomainJobs | undefined): (jobId: string) => AnyJob | undefined {
    return (jobId) => domainJobs()?.get(jobId);
  }

  // ---- block jobs: their own calls ----

  blockCopy(...a: Parameters<JobManager['blockCopy']>) {
    return this.blocks.blockCopy(...a);
  }

  blockCommit(...a: Parameters<JobManager['blockCommit']>) {
    return this.blocks.blockCommit(...a);
  }

  blockPull(...a: Parameters<JobManager['blockPull']>) {
    return this.blocks.blockPull(...a);
  }

  diskInfo(...a: Parameters<JobManager['diskInfo']>) {
    return this.blocks.diskInfo(...a);
  }

  capabilities() {
    return this.blocks.capabilities();
  }

  /** The connection in use (the metrics' versions). */
  get connection() {
    return this.blocks.connection;
  }

  async pivot(params: PivotParams) {
    this.refuseBackup('pivot', params.jobId);
    return this.blocks.pivot(params);
  }

  async finish(params: FinishParams) {
    this.refuseBackup('finish', params.jobId);
    return this.blocks.finish(params);
  }

  async setSpeed(params: SetSpeedParams) {
    this.refuseBackup('setSpeed', params.jobId);
    return this.blocks.setSpeed(params);
  }

  // ---- the calls every kind answers ----

  async jobInfo(params: JobInfoParams): Promise<JobInfoResult> {
    const b = params.jobId !== undefined ? this.domainJobs.get(params.jobId) : undefined;
    return b ? { job: b } : this.blocks.jobInfo(params);
  }

  async wait(params: WaitParams, signal?: AbortSignal): Promise<WaitResult> {
    if (params.jobId !== undefined && this.domainJobs.get(params.jobId))
      return { job: await this.domainJobs.wait(params.jobId, params.timeout, signal) };
    return this.blocks.wait(params, signal);
  }

  async abort(params: AbortParams): Promise<AbortResult> {
    if (params.jobId !== undefined && this.domainJobs.get(params.jobId)) return this.domainJobs.abort(params.jobId);
    return this.blocks.abort(params);
  }

  /** Both lists, filtered alike and merged oldest first; a kind filter skips the side it excludes. */
  async listJobs(params: ListJobsParams): Promise<ListJobsResult> {
    const kinds = params.kind;
    const wantsBackups = !kinds || kinds.includes('backup');
    const blockKinds = kinds?.filter((k) => k !== 'backup');
    const wantsBlocks = !blockKinds || blockKinds.length > 0;
    const blocks = wantsBlocks ? await this.blocks.listJobs({ ...params, ...(blockKinds ? { kind: blockKinds } : {}) }) : { jobs: [] };
    const backups = wantsBackups
      ? this.domainJobs.list({
          ...(params.domain !== undefined ? { domain: params.domain } : {}),
          ...(params.state ? { states: params.state } : {}),
          includeEnded: params.includeEnded ?? true,
        })
      : [];
    const jobs: AnyJob[] = [...blocks.jobs, ...backups].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    return blocks.incomplete ? { jobs, incomplete: true } : { jobs };
  }

  /** A block job's request named by a backup's id is refused by name, as a kind refuses one it does not take. */
  private refuseBackup(request: BlockOnly, jobId: string | undefined): void {
    const b = jobId !== undefined ? this.domainJobs.get(jobId) : undefined;
    if (b) throw new AgentError('unsupported', `${request} does not apply to job ${b.jobId}: it is a backup`, { job: b });
  }

  on(event: 'job.changed' | 'agent.connection', listener: Listener): this {
    this.blocks.on(event, listener);
    if (event === 'job.changed') this.domainJobs.on('job.changed', listener as (job: BackupJob) => void);
    return this;
  }

  off(event: 'job.changed' | 'agent.connection', listener: Listener): this {
    this.blocks.off(event, listener);
    if (event === 'job.changed') this.domainJobs.off('job.changed', listener as (job: BackupJob) => void);
    return this;
  }
}
