// The job manager: one job per (domain, disk), driven by libvirt's BLOCK_JOB_2 events first
// and a slow poll as a safety net; journaled before every libvirt side effect; reconciled
// with what libvirt really runs at start-up and after a reconnect. This file is the facade:
// one method per API call and the lifecycle, over modules sharing one context (context.ts):
//   registry    find, list, admission, retention
//   recorder    the only code that changes state, journals and notifies
//   start       idempotency, validation, admission, virDomainBlockCopy
//   completion  pivot, finish, abort, whenReady, deadlines
//   watch       events and the poll
//   verify      live XML → conclude; whether a copy is the job's own
//   reconcile   start-up, reconnect, adoption
import { EventEmitter } from 'node:events';
import { AgentError } from '../errors.js';
import type { Connection, DomainRef } from '../libvirt/index.js';
import type {
  AbortParams,
  BlockCopyParams,
  BlockCopyResult,
  BlockCommitParams,
  BlockCommitResult,
  BlockPullParams,
  BlockPullResult,
  CapabilitiesResult,
  DiskInfoParams,
  DiskInfoResult,
  FinishParams,
  FinishResult,
  Job,
  JobInfoParams,
  JobChange,
  JobState,
  ListJobsParams,
  PivotParams,
  PivotResult,
  SetSpeedParams,
  SetSpeedResult,
  WaitParams,
  JobResult,
} from '../generated/api.js';
import { DEFAULTS } from '../generated/api.js';
import { Completion } from './completion.js';
import { JobContext, type JobManagerOptions } from './context.js';
import { diskKey, publicJob, track, type JobEntry } from './job.js';
import { kindOf, type JobRequest } from './kinds/index.js';
import type { CleanupOption } from './kinds/kind.js';
import type { Journal } from './journal.js';
import { Cleanup, cleaned, DEFAULT_CLEANUP_POLICY, promiseCleanup } from './cleanup.js';
import { isUnanswered, toAgentError } from './libvirt-errors.js';
import { fromByteCount, toByteCount } from './numbers.js';
import { Reconciler } from './reconcile.js';
import { READ_WAIT_MS } from './read-bound.js';
import { readDisk } from './disk-info.js';
import { Recorder } from './recorder.js';
import { Registry } from './registry.js';
import { Starter, type StartParams, type StartSpec } from './start.js';
import { commitSpec } from './kinds/commit/start.js';
import { pullSpec } from './kinds/pull/start.js';
import { copySpec, runningSpace } from './kinds/copy/start.js';
import { isTerminal, reachedReady } from './state-machine.js';
import { Verify } from './verify.js';
import { Watch } from './watch.js';
import type { SpaceNeed } from './space.js';

export type { JobManagerOptions } from './context.js';

/** A request the job's kind does not take is refused by name, with nothing read or sent. */
function applies(entry: JobEntry, request: JobRequest): JobEntry {
  const kind = kindOf(entry.rec.job);
  if (!kind.requests.has(request))
    throw new AgentError('unsupported', `${request} does not apply to job ${entry.rec.job.jobId}: it is a ${kind.noun}`, {
      job: publicJob(entry),
    });
  return entry;
}

export class JobManager extends EventEmitter {
  private readonly ctx: JobContext;
  private unsubscribe: (() => Promise<void>) | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** Wall-clock ms when the libvirt connection was lost; null while connected. */
  private lostAt: number | null = null;

  constructor(opts: JobManagerOptions) {
    super();
    const ctx = new JobContext(opts, this);
    ctx.registry = new Registry(ctx);
    ctx.recorder = new Recorder(ctx);
    ctx.starter = new Starter(ctx);
    ctx.completion = new Completion(ctx);
    ctx.watch = new Watch(ctx);
    ctx.verify = new Verify(ctx);
    ctx.reconciler = new Reconciler(ctx);
    ctx.cleanup = new Cleanup(ctx, opts.cleanupPolicy ?? DEFAULT_CLEANUP_POLICY);
    this.ctx = ctx;
  }

  /** Subscribes to events, then reconciles the journal and live copies before serving. */
  async start(): Promise<void> {
    await this.ctx.journal.open();
    // Subscribe first and buffer, so nothing that happens during reconcile is missed.
    this.unsubscribe = await this.ctx.conn.onEvent((e) => this.ctx.watch.onDomainEvent(e));
    const records = await this.ctx.journal.load((file, err) => this.ctx.log.error('unreadable journal file skipped', { file, error: err }));
    for (const rec of records) this.ctx.entries.set(rec.job.jobId, track(rec));
    await this.ctx.reconciler.reconcile('start-up');
    // Deletions of merged layers a crash interrupted (or whose end it left unjournaled) go on.
    this.ctx.cleanup.resumeAll();
    this.serve();
  }

  /** The one store of the state directory (job and group records); the group layer writes through it. */
  get store(): Journal {
    return this.ctx.journal;
  }

  /** The clock of job timestamps, as ISO text (the group layer's too). */
  now(): string {
    return this.ctx.iso();
  }

  get isStopped(): boolean {
    return this.ctx.stopped;
  }

  /** Whether a domain (by name) is this agent's to act on (config domains). */
  get manages(): (name: string) => boolean {
    return this.ctx.manages;
  }

  /** The connection libvirt calls go through (replaced by reconnect). */
  get connection(): Connection {
    return this.ctx.raw;
  }

  /** The connection dropped: until reconnect() has reconciled, mutating calls get `recovering`
   *  and reads answer from what the agent knew. */
  connectionLost(reason: string): void {
    if (this.ctx.stopped || this.lostAt !== null) return;
    this.lostAt = this.ctx.realNow();
    this.ctx.recovering = true;
    this.ctx.buffered = [];
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.unsubscribe = null; // died with the connection
    this.ctx.log.warn('libvirt connection lost: jobs are kept, reconciling once it is back', { reason });
    this.emit('agent.connection', { state: 'lost', at: this.ctx.iso(), reason });
  }

  /** A new connection after a loss: subscribe again, reconcile every job and live copy, then serve. */
  async reconnect(conn: Connection): Promise<void> {
    if (this.ctx.stopped) return;
    if (this.lostAt === null) this.connectionLost('replaced');
    this.ctx.conn = conn;
    this.unsubscribe = await conn.onEvent((e) => this.ctx.watch.onDomainEvent(e));
    await this.ctx.reconciler.reconcile('reconnect');
    this.ctx.cleanup.resumeAll();
    if (this.ctx.stopped) return;
    const downMs = this.ctx.realNow() - (this.lostAt ?? this.ctx.realNow());
    this.lostAt = null;
    this.serve();
    this.ctx.log.info('libvirt connection restored and jobs reconciled', { downMs });
    this.emit('agent.connection', { state: 'restored', at: this.ctx.iso(), downMs });
  }

  /** After a reconcile: replay buffered events, let ready jobs complete by themselves, poll. */
  private serve(): void {
    const pending = this.ctx.buffered ?? [];
    this.ctx.buffered = null;
    this.ctx.recovering = false;
    for (const e of pending) this.ctx.watch.onDomainEvent(e);
    // Ready jobs that should pivot/finish by themselves (found so at start-up) do it now.
    for (const t of this.ctx.entries.values()) if (t.rec.job.state === 'ready') this.ctx.completion.completeWhenReady(t);
    this.timer = setInterval(() => void this.ctx.watch.tick(), this.ctx.sampleMs);
    this.timer.unref();
  }

  /** Stops watching. Running copies are left alone: QEMU keeps them; the next start adopts them. */
  async stop(): Promise<void> {
    this.ctx.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const t of this.ctx.entries.values()) this.ctx.time.clearTimer(t.timeoutTimer);
    // Stopping: the connection closes next, which ends the subscription anyway.
    if (this.unsubscribe) await this.unsubscribe().catch(() => {});
    this.unsubscribe = null;
    await Promise.all([...this.ctx.entries.values()].map((t) => t.writes.catch(() => {})));
  }

  /** `by.principal`: who asks (a jobId is its creator's); `by.groupId`: the copy is one disk of
   *  a group (set by the group layer, not by callers). */
  async blockCopy(
    params: BlockCopyParams,
    signal?: AbortSignal,
    by: { principal?: string; groupId?: string } = {},
  ): Promise<BlockCopyResult> {
    return this.startJob(params, (dom) => copySpec(this.ctx, params, dom), signal, by);
  }

  /** A commit (blockCommit): an active commit without `top`, else one that completes on its own. */
  async blockCommit(params: BlockCommitParams, signal?: AbortSignal, by: { principal?: string } = {}): Promise<BlockCommitResult> {
    return this.startJob(params, (dom) => commitSpec(this.ctx, params, dom), signal, by);
  }

  /** A pull (blockPull) into the active layer, down to `base` (or the whole chain). */
  async blockPull(params: BlockPullParams, signal?: AbortSignal, by: { principal?: string } = {}): Promise<BlockPullResult> {
    return this.startJob(params, (dom) => pullSpec(this.ctx, params, dom), signal, by);
  }

  /** Every kind's start: under the disk's lock, then the deadline armed and the caller's wait. */
  private async startJob(
    params: StartParams,
    specOf: (dom: DomainRef) => StartSpec,
    signal: AbortSignal | undefined,
    by: { principal?: string; groupId?: string },
  ): Promise<{ job: Job; changed: boolean }> {
    this.assertServing();
    const dom = await this.ctx.starter.lookup(params.domain);
    const spec = specOf(dom);
    const { entry, changed } = await this.ctx.locks.run(diskKey(dom.uuid, params.disk), () => this.ctx.starter.start(spec, signal, by));
    if (changed && entry.rec.timeoutAt !== undefined) this.ctx.completion.armTimeout(entry, entry.rec.timeoutAt);
    return this.ctx.starter.awaitGoal(entry, params, changed, signal);
  }

  /** A read: answers from what the agent knows when libvirtd is slow (registry.find). */
  async jobInfo(params: JobInfoParams): Promise<JobResult> {
    return { job: publicJob(await this.ctx.registry.find(params, READ_WAIT_MS)) };
  }

  /** The block job of that id, now (all-jobs.ts: one id space for every kind). */
  job(jobId: string): Job | undefined {
    const t = this.ctx.entries.get(jobId);
    return t && publicJob(t);
  }

  /** A read of one disk's chain and <mirror> from the live XML, within the read bound. */
  diskInfo(params: DiskInfoParams): Promise<DiskInfoResult> {
    return readDisk(this.ctx, params);
  }

  async listJobs(params: ListJobsParams): Promise<{ jobs: Job[]; incomplete?: true }> {
    const includeEnded = params.includeEnded ?? DEFAULTS.ListJobsParams.includeEnded;
    let uuid: string | undefined;
    if (params.domain) {
      // The domain the name names now (registry.resolveDomain). Unless libvirtd cannot say now
      // which domain that is, notFound and the like are answered.
      const resolved = await this.ctx.registry.resolveDomain(params.domain, READ_WAIT_MS).catch((e: unknown) => {
        if (isUnanswered(e)) return undefined;
        throw e;
      });
      uuid = resolved?.uuid;
      if (uuid === undefined) return { jobs: [], incomplete: true };
    }
    // A copy started outside the agent is listed from its first moment, not from its READY,
    // when libvirtd answers the scan within the read bound; else the answer says it may miss one.
    const complete = !this.ctx.recovering && (await this.ctx.reconciler.scanWithin(uuid, READ_WAIT_MS));
    const jobs = [...this.ctx.entries.values()]
      .filter(
        (t) =>
          (uuid === undefined || t.rec.job.domain.uuid === uuid) &&
          (includeEnded || !isTerminal(t.rec.job.state)) &&
          (!params.state || params.state.includes(t.rec.job.state)) &&
          (!params.kind || params.kind.includes(t.rec.job.kind)),
      )
      .sort((a, b) => a.rec.job.createdAt.localeCompare(b.rec.job.createdAt))
      .map(publicJob);
    return complete ? { jobs } : { jobs, incomplete: true };
  }

  async pivot(params: PivotParams): Promise<PivotResult> {
    this.assertServing();
    const entry = applies(await this.ctx.registry.find(params), 'pivot');
    if (params.deleteMerged) await promiseCleanup(this.ctx, entry, 'deleteMerged', 'pivot');
    if (params.removeSource) await promiseCleanup(this.ctx, entry, 'removeSource', 'pivot');
    return this.ctx.completion.complete(entry, 'pivot', (params.timeout ?? DEFAULTS.PivotParams.timeout) * 1000);
  }

  async finish(params: FinishParams): Promise<FinishResult> {
    this.assertServing();
    return this.ctx.completion.complete(
      applies(await this.ctx.registry.find(params), 'finish'),
      'finish',
      (params.timeout ?? DEFAULTS.FinishParams.timeout) * 1000,
    );
  }

  async abort(params: AbortParams): Promise<JobChange> {
    this.assertServing();
    return this.ctx.completion.cancel(applies(await this.ctx.registry.find(params), 'abort'));
  }

  async setSpeed(params: SetSpeedParams): Promise<SetSpeedResult> {
    this.assertServing();
    const entry = applies(await this.ctx.registry.find(params), 'setSpeed');
    const job = entry.rec.job;
    return this.ctx.locks.run(diskKey(job.domain.uuid, job.disk), async () => {
      if (isTerminal(job.state))
        throw new AgentError('invalidState', `job ${job.jobId} has ended (${job.state})`, { job: publicJob(entry) });
      const bw = fromByteCount(params.bandwidth)!;
      await this.ctx.verify.assertOwnJob(entry, 'setSpeed');
      const r = await this.ctx.recorder.journaledCall(entry, { op: 'setSpeed', at: this.ctx.iso(), bandwidth: bw.toString() }, () =>
        this.ctx.conn.blockJobSetSpeed(job.domain.uuid, job.disk, bw),
      );
      // Unknown too: the next poll reads the bandwidth in force from libvirt.
      if (r.status !== 'done') throw toAgentError(r.error, 'cannot set the speed');
      job.bandwidth = toByteCount(bw);
      // The answer promises this bandwidth: journaled before it is sent.
      await this.ctx.recorder
        .persist(entry)
        .catch((e) => this.ctx.log.error('journal write failed after setSpeed', { jobId: job.jobId, error: e }));
      this.ctx.recorder.touch(entry, false);
      return { job: publicJob(entry) };
    });
  }

  async wait(params: WaitParams, signal?: AbortSignal): Promise<JobResult> {
    const entry = await this.ctx.registry.find(params, READ_WAIT_MS);
    const pred = params.until === 'ready' ? (s: JobState) => reachedReady(s) || isTerminal(s) : isTerminal;
    await this.ctx.registry.waitFor(entry, pred, params.timeout !== undefined ? params.timeout * 1000 : undefined, signal);
    if (isTerminal(entry.rec.job.state)) await cleaned(entry);
    return { job: publicJob(entry) };
  }

  /** Everything but `methods`, which the RPC layer knows. */
  async capabilities(): Promise<Omit<CapabilitiesResult, 'methods'>> {
    const v = await this.ctx.conn.versions().catch((e) => {
      throw toAgentError(e, 'cannot read versions');
    });
    const [maj = 0, min = 0] = v.libvirt.split('.').map(Number);
    const atLeast = (a: number, b: number) => maj > a || (maj === a && min >= b);
    return {
      agent: { name: 'blockcopy-agent', version: this.ctx.opts.agentVersion ?? '0.0.0', mode: this.ctx.opts.agentMode ?? 'daemon' },
      libvirt: { version: v.libvirt },
      hypervisor: { type: v.hypervisorType, version: v.hypervisor },
      // virDomainBlockCopy and its SHALLOW/REUSE_EXT flags: 1.2.8; TRANSIENT_JOB: 4.5.0; SYNCHRONOUS_WRITES: 8.0.0.
      flags: { shallow: atLeast(1, 2), reuseExternal: atLeast(1, 2), transientJob: atLeast(4, 5), synchronousWrites: atLeast(8, 0) },
    };
  }

  /**
   * Everything blockCopy checks before its first side effect, without making one: the existing
   * job this call would return (idempotent re-run), or undefined when it would start a new copy
   * that passes validation. Throws what blockCopy would throw. The group layer checks every
   * disk this way before it starts any; `needs` collects each new copy's space figure, which
   * the group sums per filesystem (jobs/space.ts).
   */
  async checkCopy(params: BlockCopyParams, needs?: Array<SpaceNeed | null>): Promise<Job | undefined> {
    this.assertServing();
    const dom = await this.ctx.starter.lookup(params.domain);
    const spec = copySpec(this.ctx, params, dom);
    return this.ctx.locks.run(diskKey(dom.uuid, params.disk), async () => {
      const existing = this.ctx.starter.existingFor(spec);
      if (existing) return publicJob(existing);
      const prepared = await spec.prepare();
      needs?.push(prepared.space ?? null);
      return undefined;
    });
  }

  /** What the agent's running copies may still write, per destination (space.ts): a group reserves it too. */
  runningSpace(): Promise<SpaceNeed[]> {
    return runningSpace(this.ctx);
  }

  /** The jobs of a group, in creation order. */
  /** pivotGroup's removeSource: each running member's promise journaled before the guest is paused. */
  async promiseGroupCleanup(groupId: string, option: CleanupOption, request: string): Promise<void> {
    for (const t of this.ctx.entries.values())
      if (t.rec.job.groupId === groupId && !isTerminal(t.rec.job.state)) await promiseCleanup(this.ctx, t, option, request);
  }

  /** While a group switch pauses the guest its jobs' cleanups wait (cleanup.ts hold); released, they start. */
  holdCleanups(uuid: string): void {
    this.ctx.cleanup.hold(uuid);
  }

  releaseCleanups(uuid: string): void {
    this.ctx.cleanup.release(uuid);
  }

  /** Resolves once the cleanups of a group's ended members are done (answers that report the end wait). */
  async groupCleaned(groupId: string): Promise<void> {
    for (const t of this.ctx.entries.values()) if (t.rec.job.groupId === groupId) await cleaned(t);
  }

  groupJobs(groupId: string): Job[] {
    return [...this.ctx.entries.values()]
      .filter((t) => t.rec.job.groupId === groupId)
      .sort((a, b) => a.rec.job.createdAt.localeCompare(b.rec.job.createdAt))
      .map(publicJob);
  }

  get serving(): boolean {
    return !this.ctx.recovering && !this.ctx.stopped;
  }

  assertServing(): void {
    if (this.ctx.recovering) throw new AgentError('recovering', 'the agent is reconciling jobs with libvirt; retry shortly');
  }
}
