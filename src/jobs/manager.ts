// The job manager: one job per (domain, disk), driven by libvirt's BLOCK_JOB_2 events first
// and a slow poll as a safety net; journaled before every libvirt side effect; reconciled
// with what libvirt really runs at start-up. The pieces it composes:
//   disk-xml        what the live XML says about a disk (source, <mirror ready=...>)
//   ../destination  the destination's <disk> XML (parsed, then serialized by the agent) and its policy
//   state-machine   the only transitions allowed
//   conclude        how a copy ended, decided from the live XML
//   journal         one durable record per job, written before each side effect
//   job / sampler   construction, public view, rate and ETA
//   lock            per-disk serialization
import { EventEmitter } from 'node:events';
import { resolve as resolvePath } from 'node:path';
import { AgentError, ERRORS, type ErrorName } from '../errors.js';
import type { Logger } from '../log.js';
import type { Connection, DomainEvent, DomainRef } from '../libvirt/index.js';
import { LibvirtError, VirErrorCode } from '../libvirt/index.js';
import type {
  AbortParams, AbortResult, BlockCopyParams, BlockCopyResult, CapabilitiesResult, Destination, FinishParams,
  FinishResult, Job, JobInfoParams, JobInfoResult, JobState, ListJobsParams, ListJobsResult, PivotParams,
  PivotResult, SetSpeedParams, SetSpeedResult, WaitParams, WaitResult,
} from '../generated/api.js';
import { conclude, STALE_MIRROR_MS, type Decision } from './conclude.js';
import { defaultDestinationCheck, type CheckedDestination, type DestinationCheck } from '../destination/policy.js';
import { destinationFromXml } from '../destination/xml.js';
import { diagnoseCopyFailure, domainGoneReason } from './diagnose.js';
import { findDisk, parseDisks, type DiskInfo } from './disk-xml.js';
import { adoptedJob, diskKey, newJob, publicJob, samePath, track, type Tracked } from './job.js';
import { Journal, type Intent, type JobRecord } from './journal.js';
import { isConnectionLost, isNoJob, isNotReady, libvirtData, toAgentError } from './libvirt-errors.js';
import { KeyedMutex } from './lock.js';
import { faultPoint } from './fault-points.js';
import { until } from './until.js';
import { fromByteCount, toByteCount } from './numbers.js';
import { canTransition, COMPLETION, isTerminal, reachedReady, REQUEST_OF } from './state-machine.js';

export interface JobManagerOptions {
  connection: Connection;
  stateDir: string;
  log: Logger;
  /** Safety-net poll of running jobs: cross-checks the live XML this often (ms). Progress is sampled at least once a second. */
  pollIntervalMs?: number;
  /** Clock for the timestamps and progress samples of jobs (ms since the epoch). Timers use real time. */
  now?: () => number;
  maxConcurrentCopies?: number;
  /** Destination policy; defaults to the default roots (no devices, no network), without the start-up root checks. */
  checkDestination?: DestinationCheck;
  /** How many ended jobs to remember. */
  keepEnded?: number;
  /** How long a <mirror> may outlive its block job before the job is failed as lost by libvirt (ms). */
  staleMirrorMs?: number;
  agentVersion?: string;
}

type JobRef = { jobId?: string; domain?: string; disk?: string };
/** When a reconcile runs (goes into the evidence). */
type Moment = 'start-up' | 'reconnect';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** At most one progress notification per job per this many ms (state changes are never held back). */
const PROGRESS_EMIT_MS = 1000;
/** How long an abort may take to end the job before the call reports `timeout`. */
const ABORT_WAIT_MS = 120_000;

export class JobManager extends EventEmitter {
  private conn: Connection;
  private readonly log: Logger;
  private readonly journal: Journal;
  private readonly pollMs: number;
  private readonly staleMirrorMs: number;
  private readonly sampleMs: number;
  private readonly clock: () => number;
  private readonly maxCopies: number;
  private readonly keepEnded: number;
  private readonly checkDest: DestinationCheck;
  private readonly entries = new Map<string, Tracked>();
  /** Serializes creation and every side effect per (domain, disk). */
  private readonly locks = new KeyedMutex();
  /** Internal: fires on every job update, for waiters. */
  private readonly updates = new EventEmitter();
  private recovering = true;
  private buffered: DomainEvent[] | null = [];
  private unsubscribe: (() => Promise<void>) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private stopped = false;
  /** Wall-clock ms when the libvirt connection was lost; null while connected. */
  private lostAt: number | null = null;

  constructor(private readonly opts: JobManagerOptions) {
    super();
    this.conn = opts.connection;
    this.log = opts.log;
    this.journal = new Journal(opts.stateDir);
    this.pollMs = opts.pollIntervalMs ?? 2000;
    this.staleMirrorMs = opts.staleMirrorMs ?? STALE_MIRROR_MS;
    this.sampleMs = Math.min(1000, this.pollMs);
    this.clock = opts.now ?? Date.now;
    this.maxCopies = opts.maxConcurrentCopies ?? 32;
    this.keepEnded = opts.keepEnded ?? 1000;
    this.checkDest = opts.checkDestination ?? defaultDestinationCheck;
    this.updates.setMaxListeners(0);
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /** Subscribes to events, then reconciles the journal and live copies before serving. */
  async start(): Promise<void> {
    await this.journal.open();
    // Subscribe first and buffer, so nothing that happens during reconcile is missed.
    this.unsubscribe = await this.conn.onEvent((e) => this.onDomainEvent(e));
    const records = await this.journal.load((file, err) => this.log.error('unreadable journal file skipped', { file, error: err }));
    for (const rec of records) this.entries.set(rec.job.jobId, track(rec));
    await this.reconcile('start-up');
    this.serve();
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** The connection libvirt calls go through (replaced by reconnect). */
  get connection(): Connection {
    return this.conn;
  }

  /**
   * The libvirt connection dropped (libvirtd restarted, socket closed). Until reconnect() has
   * reconciled, mutating calls get `recovering` and reads answer from what the agent knew.
   */
  connectionLost(reason: string): void {
    if (this.stopped || this.lostAt !== null) return;
    this.lostAt = this.realNow();
    this.recovering = true;
    this.buffered = [];
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.unsubscribe = null; // died with the connection
    this.log.warn('libvirt connection lost: jobs are kept, reconciling once it is back', { reason });
    this.emit('agent.connection', { state: 'lost', at: this.iso(), reason });
  }

  /** A new connection after a loss: subscribe again, reconcile every job and live copy, then serve. */
  async reconnect(conn: Connection): Promise<void> {
    if (this.stopped) return;
    if (this.lostAt === null) this.connectionLost('replaced');
    this.conn = conn;
    this.unsubscribe = await conn.onEvent((e) => this.onDomainEvent(e));
    await this.reconcile('reconnect');
    if (this.stopped) return;
    const downMs = this.realNow() - (this.lostAt ?? this.realNow());
    this.lostAt = null;
    this.serve();
    this.log.info('libvirt connection restored and jobs reconciled', { downMs });
    this.emit('agent.connection', { state: 'restored', at: this.iso(), downMs });
  }

  /** After a reconcile: replay buffered events, let ready jobs complete by themselves, poll. */
  private serve(): void {
    const pending = this.buffered ?? [];
    this.buffered = null;
    this.recovering = false;
    for (const e of pending) this.onDomainEvent(e);
    // Ready jobs that should pivot/finish by themselves (found so at start-up) do it now.
    for (const t of this.entries.values()) if (t.rec.job.state === 'ready') this.completeWhenReady(t);
    this.timer = setInterval(() => void this.tick(), this.sampleMs);
    this.timer.unref();
  }

  /** Stops watching. Running copies are left alone: QEMU keeps them; the next start adopts them. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const t of this.entries.values()) if (t.timeoutTimer) clearTimeout(t.timeoutTimer);
    if (this.unsubscribe) await this.unsubscribe().catch(() => {});
    this.unsubscribe = null;
    await Promise.all([...this.entries.values()].map((t) => t.writes.catch(() => {})));
  }

  // ---- public methods (one per RPC method) ------------------------------------------------

  /** `member`: the copy is one disk of a group (set by the group layer, not by callers). */
  async blockCopy(params: BlockCopyParams, signal?: AbortSignal, member?: { groupId: string }): Promise<BlockCopyResult> {
    this.assertServing();
    const dom = await this.lookup(params.domain);
    const dest = this.destinationOf(params);
    const { entry, changed } = await this.locks.run(diskKey(dom.uuid, params.disk), () => this.startCopy(params, dom, dest, signal, member?.groupId));
    if (changed && params.timeout !== undefined) this.armTimeout(entry, this.realNow() + params.timeout * 1000);
    return this.awaitGoal(entry, params, changed, signal);
  }

  async jobInfo(params: JobInfoParams): Promise<JobInfoResult> {
    return { job: publicJob(await this.find(params)) };
  }

  async listJobs(params: ListJobsParams): Promise<ListJobsResult> {
    const includeEnded = params.includeEnded ?? true;
    let uuid: string | undefined;
    if (params.domain) {
      const known = [...this.entries.values()].find((t) => t.rec.job.domain.name === params.domain || t.rec.job.domain.uuid === params.domain);
      uuid = known?.rec.job.domain.uuid ?? (await this.lookup(params.domain)).uuid;
    }
    const jobs = [...this.entries.values()]
      .filter((t) => (uuid === undefined || t.rec.job.domain.uuid === uuid) &&
        (includeEnded || !isTerminal(t.rec.job.state)) &&
        (!params.state || params.state.includes(t.rec.job.state)))
      .sort((a, b) => a.rec.job.createdAt.localeCompare(b.rec.job.createdAt))
      .map(publicJob);
    return { jobs };
  }

  async pivot(params: PivotParams): Promise<PivotResult> {
    this.assertServing();
    return this.complete(await this.find(params), 'pivot', (params.timeout ?? 30) * 1000);
  }

  async finish(params: FinishParams): Promise<FinishResult> {
    this.assertServing();
    return this.complete(await this.find(params), 'finish', (params.timeout ?? 30) * 1000);
  }

  async abort(params: AbortParams): Promise<AbortResult> {
    this.assertServing();
    return this.cancel(await this.find(params));
  }

  async setSpeed(params: SetSpeedParams): Promise<SetSpeedResult> {
    this.assertServing();
    const entry = await this.find(params);
    const job = entry.rec.job;
    return this.locks.run(diskKey(job.domain.uuid, job.disk), async () => {
      if (isTerminal(job.state)) throw new AgentError('invalidState', `job ${job.jobId} has ended (${job.state})`, { job: publicJob(entry) });
      const bw = fromByteCount(params.bandwidth)!;
      await this.beforeSideEffect(entry, { op: 'setSpeed', at: this.iso(), bandwidth: bw.toString() });
      try {
        await this.conn.blockJobSetSpeed(job.domain.uuid, job.disk, bw);
      } catch (e) {
        this.afterSideEffect(entry);
        throw toAgentError(e, 'cannot set the speed');
      }
      job.bandwidth = toByteCount(bw);
      this.afterSideEffect(entry);
      this.touch(entry);
      return { job: publicJob(entry) };
    });
  }

  async wait(params: WaitParams, signal?: AbortSignal): Promise<WaitResult> {
    const entry = await this.find(params);
    const pred = params.until === 'ready' ? (s: JobState) => reachedReady(s) || isTerminal(s) : isTerminal;
    await this.waitFor(entry, pred, params.timeout !== undefined ? params.timeout * 1000 : undefined, signal);
    return { job: publicJob(entry) };
  }

  /** Everything but `methods`, which the RPC layer knows. */
  async capabilities(): Promise<Omit<CapabilitiesResult, 'methods'>> {
    const v = await this.conn.versions().catch((e) => { throw toAgentError(e, 'cannot read versions'); });
    const [maj = 0, min = 0] = v.libvirt.split('.').map(Number);
    const atLeast = (a: number, b: number) => maj > a || (maj === a && min >= b);
    return {
      agent: { name: 'blockcopy-agent', version: this.opts.agentVersion ?? '0.0.0' },
      libvirt: { version: v.libvirt },
      hypervisor: { type: v.hypervisorType, version: v.hypervisor },
      // virDomainBlockCopy and its SHALLOW/REUSE_EXT flags: 1.2.8; TRANSIENT_JOB: 4.5.0; SYNCHRONOUS_WRITES: 8.0.0.
      flags: { shallow: atLeast(1, 2), reuseExternal: atLeast(1, 2), transientJob: atLeast(4, 5), synchronousWrites: atLeast(8, 0) },
    };
  }

  // ---- starting a copy -----------------------------------------------------------------------

  /**
   * Everything blockCopy checks before its first side effect, without making one: the existing
   * job this call would return (idempotent re-run), or undefined when it would start a new copy
   * that passes validation. Throws what blockCopy would throw. The group layer checks every
   * disk this way before it starts any.
   */
  async checkCopy(params: BlockCopyParams): Promise<Job | undefined> {
    this.assertServing();
    const dom = await this.lookup(params.domain);
    const dest = this.destinationOf(params);
    return this.locks.run(diskKey(dom.uuid, params.disk), async () => {
      const existing = this.existingFor(params, dom, dest);
      if (existing) return publicJob(existing);
      await this.validateNew(params, dom, dest);
      return undefined;
    });
  }

  /** The jobs of a group, in creation order. */
  groupJobs(groupId: string): Job[] {
    return [...this.entries.values()].filter((t) => t.rec.job.groupId === groupId)
      .sort((a, b) => a.rec.job.createdAt.localeCompare(b.rec.job.createdAt)).map(publicJob);
  }

  get serving(): boolean {
    return !this.recovering && !this.stopped;
  }

  /** Runs under the disk's lock: idempotency, validation, journal, then libvirt. */
  private async startCopy(params: BlockCopyParams, dom: DomainRef, dest: Destination, signal?: AbortSignal, groupId?: string): Promise<{ entry: Tracked; changed: boolean }> {
    const existing = this.existingFor(params, dom, dest);
    if (existing) return { entry: existing, changed: false };
    const adopted = dom.active ? await this.adoptIfMirrored(dom, params.disk) : undefined;
    if (adopted) {
      if (samePath(adopted.rec.job.destination.path, dest.path)) return { entry: adopted, changed: false };
      throw new AgentError('jobExists', `disk ${params.disk} of '${dom.name}' already has a copy job to ${adopted.rec.job.destination.path}`, { job: publicJob(adopted) });
    }
    let { disk, checked } = await this.validateNew(params, dom, dest);
    const queued = this.activeCount() >= this.maxCopies;
    await this.awaitSlot(params, signal);
    // A queued copy may have waited long: check the destination again right before libvirt opens it.
    if (queued) ({ disk, checked } = await this.validateNew(params, dom, dest));

    // The job records the canonical destination the policy checked; libvirt gets its XML.
    const job = newJob(params, dom, disk, checked.destination, this.iso(), groupId);
    if (this.entries.has(job.jobId)) {
      // The same key raced in on another disk while this call was validating.
      throw new AgentError('jobExists', `jobId '${job.jobId}' already names another job`, { job: publicJob(this.entries.get(job.jobId)!) });
    }
    const entry = track({ job, destinationXml: checked.xml });
    // Until libvirt has answered there is nothing of this copy to see (poll, events).
    entry.starting = true;
    this.entries.set(job.jobId, entry);
    try {
      // Journal first: a crash right after libvirt starts the copy must still find the job.
      await this.beforeSideEffect(entry, { op: 'blockCopy', at: job.createdAt });
      await this.conn.blockCopy(dom.uuid, params.disk, checked.xml, {
        shallow: job.options.shallow, reuseExternal: job.options.reuseExternal, transientJob: job.options.transientJob,
        synchronousWrites: job.options.synchronousWrites,
        bandwidth: fromByteCount(params.bandwidth), granularity: params.granularity, bufSize: fromByteCount(params.bufSize),
      });
    } catch (e) {
      if (isConnectionLost(e) || this.conn.closed) {
        // The copy may have started: keep the job (intent blockCopy) for the reconcile to decide.
        this.log.warn('blockCopy: the libvirt connection dropped during the request', { jobId: job.jobId });
        throw new AgentError('unavailable', `the libvirt connection dropped while starting the copy; job ${job.jobId} shows whether it started once the agent has reconnected`, { job: publicJob(entry) });
      }
      if (this.entries.get(job.jobId) === entry) this.entries.delete(job.jobId);
      await entry.writes.catch(() => {});
      await this.journal.remove(job.jobId).catch(() => {});
      throw toAgentError(e, 'libvirt refused the copy');
    } finally {
      entry.starting = false;
    }
    this.afterSideEffect(entry);
    this.log.info('copy started', { jobId: job.jobId, domain: dom.name, disk: params.disk, destination: dest.path });
    this.emitChanged(entry);
    this.pruneEnded();
    return { entry, changed: true };
  }

  /**
   * The job an identical earlier call created (same jobId, or same disk and destination), which
   * a re-run returns unchanged; throws jobExists when the key or the disk is taken by another copy.
   */
  private existingFor(params: BlockCopyParams, dom: DomainRef, dest: Destination): Tracked | undefined {
    const byId = params.jobId ? this.entries.get(params.jobId) : undefined;
    if (byId && (byId.rec.job.domain.uuid !== dom.uuid || byId.rec.job.disk !== params.disk)) {
      throw new AgentError('jobExists', `jobId '${params.jobId}' already names a job on ${byId.rec.job.domain.name}/${byId.rec.job.disk}`, { job: publicJob(byId) });
    }
    const active = this.activeFor(dom.uuid, params.disk);
    if (active) {
      if (active === byId || samePath(active.rec.job.destination.path, dest.path)) return active;
      throw new AgentError('jobExists', `disk ${params.disk} of '${dom.name}' already has a copy job to ${active.rec.job.destination.path}`, { job: publicJob(active) });
    }
    // A re-run of a call that already completed: the same key, or the same destination the
    // disk was already pivoted or finished to.
    if (byId) return byId;
    const last = this.latestFor(dom.uuid, params.disk);
    if (last && samePath(last.rec.job.destination.path, dest.path) && (last.rec.job.state === 'pivoted' || last.rec.job.state === 'finished')) {
      return last;
    }
    return undefined;
  }

  /** The checks of a new copy; nothing here changes anything. Returns the disk as the live XML shows it. */
  private async validateNew(params: BlockCopyParams, dom: DomainRef, dest: Destination): Promise<{ disk: DiskInfo; checked: CheckedDestination }> {
    if (!dom.active) throw new AgentError('invalidState', `domain '${dom.name}' is not running`);
    const xml = await this.conn.getXml(dom.uuid).catch((e) => { throw toAgentError(e, 'cannot read the domain'); });
    const disk = findDisk(xml, params.disk);
    if (!disk) throw new AgentError('notFound', `domain '${dom.name}' has no disk '${params.disk}'`);
    if (disk.device !== 'disk' || (disk.type !== 'file' && disk.type !== 'block') || !disk.sourcePath) {
      throw new AgentError('unsupported', `disk ${params.disk} of '${dom.name}' is a ${disk.type} ${disk.device}; only file and block disks can be copied`);
    }
    if (disk.mirror) {
      throw new AgentError('jobExists', `disk ${params.disk} of '${dom.name}' already has a ${disk.mirror.job} job`);
    }
    const checked = await this.checkDest(dest, { reuseExternal: !!params.reuseExternal, disk, domainDisks: await this.allDefinedDiskPaths() });
    return { disk, checked };
  }

  /** blockCopy's answer: at once, at ready or at the end, as the caller asked. */
  private async awaitGoal(entry: Tracked, params: BlockCopyParams, changed: boolean, signal?: AbortSignal): Promise<BlockCopyResult> {
    const wait = params.wait ?? 'none';
    if (wait !== 'none') {
      const pred = wait === 'ready' ? (s: JobState) => reachedReady(s) || isTerminal(s) : isTerminal;
      // A re-run's timeout only bounds its own wait; the first call's timer owns the copy.
      const waitMs = !changed && params.timeout !== undefined ? params.timeout * 1000 : undefined;
      await this.waitFor(entry, pred, waitMs, signal);
      const job = entry.rec.job;
      if (job.error?.name === 'timeout') throw new AgentError('timeout', job.error.message, { job: publicJob(entry) });
      if (job.state === 'failed') {
        const name: ErrorName = job.error?.name && job.error.name in ERRORS ? job.error.name as ErrorName : 'libvirtError';
        throw new AgentError(name, job.error?.message ?? 'the copy failed',
          { job: publicJob(entry), ...(job.evidence ? { evidence: job.evidence } : {}), ...(job.error?.libvirt ? { libvirt: job.error.libvirt } : {}) });
      }
    }
    return { job: publicJob(entry), changed };
  }

  // ---- completing a job: pivot / finish / abort ------------------------------------------

  private async complete(entry: Tracked, how: 'pivot' | 'finish', budgetMs: number): Promise<PivotResult> {
    const { busy, goal } = COMPLETION[how];
    const job = entry.rec.job;
    const key = diskKey(job.domain.uuid, job.disk);
    const deadline = this.realNow() + budgetMs;
    let delay = 200;
    // Only the call that sends the request reports changed: true; one joining it does not.
    let sentByUs = false;
    for (;;) {
      const s = job.state;
      if (s === goal) return { job: publicJob(entry), changed: false };
      if (s === busy) break; // already asked (by another caller or whenReady): wait for its end
      if (s === 'copying') {
        // Not ready yet: wait for it until the deadline (without holding the disk's lock).
        const left = deadline - this.realNow();
        const ok = left > 0 && (await this.waitFor(entry, (x) => x !== 'copying', left).then(() => true, () => false));
        if (!ok) throw new AgentError('notReady', `job ${job.jobId} is not ready yet (${percentText(entry)} copied)`, { job: publicJob(entry) });
        continue;
      }
      if (s !== 'ready') {
        throw new AgentError('invalidState', `cannot ${how} job ${job.jobId}: it is ${s}`, { job: publicJob(entry) });
      }
      const sent = await this.locks.run(key, async (): Promise<'sent' | 'recheck' | LibvirtError> => {
        if (job.state !== 'ready') return 'recheck';
        this.transition(entry, busy, {}, { persist: false });
        await this.beforeSideEffect(entry, { op: how, at: this.iso() }, 'ready');
        entry.requestedAt = this.realNow();
        entry.sawEnd = false;
        try {
          await this.conn.blockJobAbort(job.domain.uuid, job.disk, { async: true, pivot: how === 'pivot' });
          this.afterSideEffect(entry);
          return 'sent';
        } catch (e) {
          if (isConnectionLost(e) || this.conn.closed) {
            // Whether libvirt got the request is unknown: the job stays `${busy}` with its intent
            // journaled, and the reconcile after the reconnect decides from the live XML.
            this.log.warn(`${how}: the libvirt connection dropped during the request`, { jobId: job.jobId });
            return 'sent';
          }
          this.afterSideEffect(entry);
          if (isNotReady(e)) {
            this.transition(entry, 'ready');
            return e as LibvirtError;
          }
          if (isNoJob(e)) {
            await this.settle(entry, `libvirt reported no block job when asked to ${how}`);
            return 'sent';
          }
          this.transition(entry, 'ready');
          throw toAgentError(e, `libvirt refused to ${how}`);
        }
      });
      if (sent === 'sent') {
        sentByUs = true;
        break;
      }
      if (sent === 'recheck') continue;
      // QEMU is not (or no longer) ready, e.g. under heavy guest writes: back off and retry.
      if (this.realNow() + delay > deadline) {
        throw new AgentError('notReady', `QEMU reports job ${job.jobId} not ready for ${how}`, { job: publicJob(entry), libvirt: libvirtData(sent) });
      }
      this.log.debug(`${how}: not ready yet, retrying`, { jobId: job.jobId, delayMs: delay });
      await sleep(delay);
      delay = Math.min(delay * 2, 2000);
    }
    // The end arrives as an event (or the poll notices); both are verified against the live XML.
    await this.waitFor(entry, (s) => s !== busy, Math.max(deadline - this.realNow(), 0) + 60_000).catch(() => {
      throw new AgentError('timeout', `${how} of job ${job.jobId} did not complete in time`, { job: publicJob(entry) });
    });
    const end = entry.rec.job;
    if (end.state === goal) return { job: publicJob(entry), changed: sentByUs };
    // Back to ready: the request was lost (a reconnect's reconcile found it never took effect). Again, within the budget.
    if (end.state === 'ready' && this.realNow() < deadline) return this.complete(entry, how, deadline - this.realNow());
    if (end.state === 'failed') {
      throw new AgentError(how === 'pivot' ? 'pivotFailed' : 'libvirtError', end.error?.message ?? `${how} failed`,
        { job: publicJob(entry), ...(end.evidence ? { evidence: end.evidence } : {}), ...(end.error?.libvirt ? { libvirt: end.error.libvirt } : {}) });
    }
    throw new AgentError('invalidState', `job ${job.jobId} ended as ${end.state} instead of ${goal}`, { job: publicJob(entry) });
  }

  /** `reason` (the caller's timeout) is recorded only if this call is the one that starts the cancel. */
  private async cancel(entry: Tracked, reason?: { name: string; message: string }): Promise<AbortResult> {
    const job = entry.rec.job;
    const key = diskKey(job.domain.uuid, job.disk);
    if (isTerminal(job.state)) return { job: publicJob(entry), changed: false };
    const ended = await this.locks.run(key, async () => {
      const s = job.state;
      if (isTerminal(s)) return true;
      if (s === 'pivoting' || s === 'finishing') {
        throw new AgentError('invalidState', `job ${job.jobId} is ${s}; it cannot be aborted now`, { job: publicJob(entry) });
      }
      if (s === 'cancelling') return false;
      this.transition(entry, 'cancelling', reason ? { error: reason } : {}, { persist: false });
      await this.beforeSideEffect(entry, { op: 'abort', at: this.iso() }, s);
      entry.requestedAt = this.realNow();
      entry.sawEnd = false;
      try {
        await this.conn.blockJobAbort(job.domain.uuid, job.disk, { async: true });
        this.afterSideEffect(entry);
      } catch (e) {
        if (isConnectionLost(e) || this.conn.closed) {
          // Stays cancelling with its intent: the reconcile after the reconnect asks again if needed.
          this.log.warn('abort: the libvirt connection dropped during the request', { jobId: job.jobId });
          return false;
        }
        this.afterSideEffect(entry);
        if (isNoJob(e)) {
          await this.settle(entry, 'libvirt reported no block job when asked to abort');
        } else {
          if (reason) delete job.error;
          this.transition(entry, s);
          throw toAgentError(e, 'libvirt refused to abort');
        }
      }
      return false;
    });
    if (ended) return { job: publicJob(entry), changed: false };
    await this.waitFor(entry, isTerminal, ABORT_WAIT_MS).catch(() => {
      throw new AgentError('timeout', `abort of job ${job.jobId} did not complete in time`, { job: publicJob(entry) });
    });
    return { job: publicJob(entry), changed: true };
  }

  /** whenReady: pivot|finish, once the job is ready. */
  private completeWhenReady(entry: Tracked): void {
    const how = entry.rec.job.whenReady;
    if (this.recovering || (how !== 'pivot' && how !== 'finish')) return;
    const id = entry.rec.job.jobId;
    void this.complete(entry, how, 30_000).catch((err) => this.log.warn(`automatic ${how} failed`, { jobId: id, error: err }));
  }

  // ---- events and the safety-net poll ------------------------------------------------------

  private onDomainEvent(e: DomainEvent): void {
    if (this.stopped) return;
    if (this.buffered) {
      this.buffered.push(e);
      return;
    }
    if (e.kind === 'lifecycle') {
      if (e.event === 'stopped' || e.event === 'crashed') {
        for (const entry of this.entries.values()) {
          if (entry.rec.job.domain.uuid === e.domain.uuid && !isTerminal(entry.rec.job.state)) {
            const d = domainGoneReason(e.event, e.detail);
            this.fail(entry, 'invalidState', d.message, d.evidence);
          }
        }
      }
      return;
    }
    if (e.type !== 'copy') return;
    const entry = this.activeFor(e.domain.uuid, e.disk);
    if (!entry) {
      if (e.status === 'ready') {
        void this.locks.run(diskKey(e.domain.uuid, e.disk), () =>
          this.adoptIfMirrored({ name: e.domain.name, uuid: e.domain.uuid, id: 0, active: true, persistent: false }, e.disk))
          .catch((err) => this.log.warn('cannot adopt a copy announced by an event', { domain: e.domain.name, disk: e.disk, error: err }));
      }
      return;
    }
    switch (e.status) {
      case 'ready':
        if (entry.rec.job.state === 'copying') {
          void this.refreshProgress(entry).finally(() => {
            if (entry.rec.job.state === 'copying') this.becomeReady(entry, 'BLOCK_JOB_2 ready event');
          });
        }
        break;
      case 'completed':
      case 'canceled':
        // Events name a disk, not a job: one that comes while this copy is being started ended
        // the disk's previous job (concluded from the XML before its event arrived). Read now,
        // the XML would show no <mirror> yet and this copy would be taken for ended.
        if (entry.starting) {
          this.log.info('ignored a late end event of the previous job on this disk', { jobId: entry.rec.job.jobId, status: e.status });
          break;
        }
        entry.sawEnd = true;
        void this.settle(entry, `BLOCK_JOB_2 ${e.status} event${REQUEST_OF[entry.rec.job.state] ? '' : ' without a request from this agent'}`);
        break;
      case 'failed': {
        const job = entry.rec.job;
        const name = job.state === 'pivoting' ? 'pivotFailed' : 'libvirtError';
        void diagnoseCopyFailure(job.destination, job.state).then((d) => this.fail(entry, name, d.message, d.evidence));
        break;
      }
    }
  }

  private becomeReady(entry: Tracked, why: string): void {
    this.log.info('job ready', { jobId: entry.rec.job.jobId, why });
    this.transition(entry, 'ready', { readyAt: this.iso() });
    this.completeWhenReady(entry);
  }

  private async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      for (const entry of [...this.entries.values()]) {
        if (isTerminal(entry.rec.job.state)) continue;
        await this.sample(entry).catch((err) => this.log.debug('poll failed', { jobId: entry.rec.job.jobId, error: err }));
      }
    } finally {
      this.ticking = false;
    }
  }

  /** One progress sample without side effects on the state (used right before announcing ready). */
  private async refreshProgress(entry: Tracked): Promise<void> {
    const job = entry.rec.job;
    const info = await this.conn.getBlockJobInfo(job.domain.uuid, job.disk).catch(() => null);
    if (!info || info.type !== 'copy') return;
    entry.sampler.add(this.clock(), Number(info.cur));
    job.progress.cur = toByteCount(info.cur);
    job.progress.end = toByteCount(info.end);
  }

  private async sample(entry: Tracked): Promise<void> {
    if (entry.starting) return;
    const job = entry.rec.job;
    let info;
    try {
      info = await this.conn.getBlockJobInfo(job.domain.uuid, job.disk);
    } catch (e) {
      if (e instanceof LibvirtError && (e.code === VirErrorCode.NO_DOMAIN || (e.code === VirErrorCode.OPERATION_INVALID && /not running/i.test(e.message)))) {
        // The lifecycle event (stopped/crashed) says why; give it one poll round to arrive.
        const real = this.realNow();
        entry.goneSince ??= real;
        if (real - entry.goneSince >= this.sampleMs) {
          this.fail(entry, 'invalidState', 'the domain is gone or no longer running', `no lifecycle event received; the poll got: ${e.message}`);
        }
      }
      return;
    }
    delete entry.goneSince;
    if (!info || info.type !== 'copy') {
      // Give the event a moment: libvirt may still be delivering the end of a request.
      const grace = Math.max(5000, 2 * this.pollMs);
      if (!REQUEST_OF[job.state] || this.realNow() - entry.requestedAt > grace) {
        // Not awaited: a verification may take seconds, and the other jobs' samples must not wait.
        void this.settle(entry, `the block job disappeared without an event (seen by the ${this.pollMs} ms poll)`, { jobGone: true });
      }
      return;
    }
    delete entry.mirrorWithoutJobSince;
    const now = this.clock();
    entry.sampler.add(now, Number(info.cur));
    const moved = toByteCount(info.cur) !== job.progress.cur || toByteCount(info.end) !== job.progress.end;
    job.progress.cur = toByteCount(info.cur);
    job.progress.end = toByteCount(info.end);
    job.bandwidth = toByteCount(info.bandwidth);
    // Ready comes from the event; the XML cross-check only catches a missed one. cur == end
    // alone proves nothing (0/1 means "not known yet"), so it only makes the check earlier.
    const real = this.realNow();
    if (job.state === 'copying' && ((info.end > 1n && info.cur === info.end) || real - entry.lastXmlCheck >= this.pollMs)) {
      entry.lastXmlCheck = real;
      const disk = await this.liveDisk(entry);
      if (disk?.mirror?.ready === 'yes' && entry.rec.job.state === 'copying') {
        this.log.warn('ready seen in the live XML before any event', { jobId: job.jobId });
        this.becomeReady(entry, "live XML shows <mirror ready='yes'>");
        return;
      }
    }
    if (moved && real - entry.lastEmit >= PROGRESS_EMIT_MS) this.emitChanged(entry);
  }

  // ---- verification against the live XML ----------------------------------------------

  private async liveDisk(entry: Tracked): Promise<DiskInfo | undefined> {
    const xml = await this.conn.getXml(entry.rec.job.domain.uuid);
    return findDisk(xml, entry.rec.job.disk);
  }

  /**
   * Reads the disk until libvirt has dropped the <mirror> (it updates the XML around the end
   * event), for up to 5 s, while an end is under way: an end event arrived or the mirror is in
   * its pivot/abort phase. A mirror simply still copying is returned at once.
   */
  private async settledDisk(entry: Tracked): Promise<DiskInfo | undefined> {
    let disk: DiskInfo | undefined;
    for (let i = 0; i < 25; i++) {
      disk = await this.liveDisk(entry);
      if (!disk?.mirror) return disk;
      const ending = entry.sawEnd || disk.mirror.ready === 'pivot' || disk.mirror.ready === 'abort';
      if (!ending) return disk;
      await sleep(200);
    }
    return disk;
  }

  /** Concludes how the copy ended from the live XML (one verification at a time per job). */
  /** `jobGone`: the caller found no block job (so a <mirror> still shown may be one libvirt dropped). */
  private settle(entry: Tracked, why: string, opts: { jobGone?: boolean } = {}): Promise<void> {
    if (isTerminal(entry.rec.job.state)) return Promise.resolve();
    if (entry.settling) return entry.settling;
    entry.settling = (async () => {
      let disk: DiskInfo | undefined;
      try {
        disk = await this.settledDisk(entry);
      } catch (e) {
        if (e instanceof LibvirtError && e.code === VirErrorCode.NO_DOMAIN) {
          this.fail(entry, 'invalidState', 'the domain is gone', `${why}; ${e.message}`);
        } else {
          this.log.warn('cannot read the live XML to conclude a job; will retry', { jobId: entry.rec.job.jobId, error: e });
        }
        return;
      }
      if (isTerminal(entry.rec.job.state)) return;
      let mirrorWithoutJobMs: number | undefined;
      if (opts.jobGone && disk?.mirror) {
        entry.mirrorWithoutJobSince ??= this.realNow();
        mirrorWithoutJobMs = this.realNow() - entry.mirrorWithoutJobSince;
      }
      const decision = conclude(entry.rec.job, { disk, sawEnd: entry.sawEnd, why, ...(mirrorWithoutJobMs !== undefined ? { mirrorWithoutJobMs } : {}) }, this.staleMirrorMs);
      // After a pivot, what the next cold boot will use (the persistent definition) is part of the answer.
      const persistent = decision.state === 'pivoted' ? await this.persistentView(entry) : undefined;
      if (isTerminal(entry.rec.job.state)) return;
      this.apply(entry, decision, persistent ? { persistent } : {});
    })().finally(() => { entry.settling = null; });
    return entry.settling;
  }

  private apply(entry: Tracked, d: Decision, patch: Partial<Job> = {}): void {
    if (d.state === null) return;
    if (d.state === 'failed') {
      this.fail(entry, d.error.name, d.error.message, d.evidence);
      return;
    }
    this.transition(entry, d.state, { ...patch, outcome: d.outcome, evidence: d.evidence });
  }

  private async persistentView(entry: Tracked): Promise<Job['persistent']> {
    const job = entry.rec.job;
    try {
      const dom = await this.conn.lookupDomain(job.domain.uuid);
      if (!dom.persistent) return { defined: false, source: null, matchesLive: false };
      const disk = findDisk(await this.conn.getXml(job.domain.uuid, { inactive: true }), job.disk);
      const source = disk?.sourcePath ?? null;
      const matchesLive = samePath(source, job.destination.path);
      if (!matchesLive) this.log.warn('persistent definition still points at the old disk', { jobId: job.jobId, source });
      return { defined: true, source, matchesLive };
    } catch (err) {
      this.log.warn('cannot read the persistent definition after a pivot', { jobId: job.jobId, error: err });
      return undefined;
    }
  }

  // ---- reconcile at start ------------------------------------------------------------------

  private async reconcile(when: Moment): Promise<void> {
    for (const entry of this.entries.values()) {
      if (isTerminal(entry.rec.job.state)) continue;
      await this.reconcileOne(entry, when).catch((err) => this.log.error('reconcile failed', { jobId: entry.rec.job.jobId, error: err }));
    }
    // Copies started elsewhere (virsh, another tool, an earlier agent that lost its journal).
    let domains: DomainRef[] = [];
    try {
      domains = await this.conn.listDomains({ activeOnly: true });
    } catch (err) {
      this.log.error('cannot list domains to adopt running copies', { error: err });
    }
    for (const dom of domains) {
      const xml = await this.conn.getXml(dom.uuid).catch(() => '');
      for (const d of parseDisks(xml)) {
        if (d.mirror?.job === 'copy' && !this.activeFor(dom.uuid, d.target)) await this.adopt(dom, d);
      }
    }
    this.pruneEnded();
  }

  private async reconcileOne(entry: Tracked, when: Moment): Promise<void> {
    const job = entry.rec.job;
    const intent = entry.rec.intent;
    let info;
    try {
      info = await this.conn.getBlockJobInfo(job.domain.uuid, job.disk);
    } catch (e) {
      if (e instanceof LibvirtError && (e.code === VirErrorCode.NO_DOMAIN || e.code === VirErrorCode.OPERATION_INVALID)) {
        // libvirt 9.0, restarted while it had a pivot to process, can fail to reload its own
        // status of the domain and forget it while its QEMU runs on: worth saying to an operator.
        const request = REQUEST_OF[job.state];
        const lost = when === 'reconnect' && e.code === VirErrorCode.NO_DOMAIN && request
          ? `; libvirt no longer knows the domain after its restart, although ${request === 'abort' ? 'an' : 'a'} ${request} was under way: if its QEMU process still runs, libvirtd lost track of it (libvirt 9.0 can, when restarted during a pivot; see libvirtd's log)`
          : '';
        this.fail(entry, 'invalidState', `the domain is gone or no longer running${lost}`, `found at ${when}: ${e.message}`);
      } else {
        this.log.error(`cannot read a journaled job at ${when}; the poll will retry`, { jobId: job.jobId, error: e });
      }
      return;
    }
    if (!info || info.type !== 'copy') {
      if (intent?.op === 'blockCopy' && job.state === 'copying') {
        // The agent stopped between journaling the copy and libvirt starting it (or libvirt refused).
        const disk = await this.liveDisk(entry).catch(() => undefined);
        if (!disk?.mirror) {
          this.fail(entry, 'libvirtError', `the copy was never started (${when === 'reconnect' ? 'the libvirt connection dropped' : 'the agent stopped'} while starting it)`, `journal intent blockCopy at ${intent.at}; no block job at ${when}`);
          return;
        }
      }
      await this.settle(entry, `the block job ended while the agent was not running${intent ? ` (last request: ${intent.op})` : ''}`, { jobGone: true });
      return;
    }
    job.progress.cur = toByteCount(info.cur);
    job.progress.end = toByteCount(info.end);
    const disk = await this.liveDisk(entry);
    const mirrorReady = disk?.mirror?.ready ?? null;
    // libvirt's own view of the mirror decides; the journal only says what was asked.
    let state: JobState;
    if (mirrorReady === 'pivot') state = 'pivoting';
    else if (mirrorReady === 'abort') state = job.state === 'finishing' ? 'finishing' : 'cancelling';
    else if (job.state === 'cancelling') state = 'cancelling';
    else state = mirrorReady === 'yes' ? 'ready' : 'copying';
    if (job.state !== state) {
      const evidence = `reconciled at ${when} from the live XML (mirror ready='${mirrorReady ?? 'no'}'${intent ? `; last request: ${intent.op}` : ''})`;
      if (canTransition(job.state, state)) this.transition(entry, state, { evidence, ...(state === 'ready' && !job.readyAt ? { readyAt: this.iso() } : {}) });
      else this.log.warn('journal and live XML disagree in a way the state table does not allow', { jobId: job.jobId, journal: job.state, live: state });
    }
    if (state === 'cancelling' && mirrorReady !== 'abort') {
      // The abort may never have reached libvirt: ask again.
      await this.beforeSideEffect(entry, { op: 'abort', at: this.iso() });
      entry.requestedAt = this.realNow();
      await this.conn.blockJobAbort(job.domain.uuid, job.disk, { async: true }).catch((e) => this.log.warn('abort at start-up failed', { jobId: job.jobId, error: e }));
      this.afterSideEffect(entry);
    }
    if (state === 'pivoting' || state === 'finishing' || state === 'cancelling') entry.requestedAt = this.realNow();
    if (entry.rec.timeoutAt !== undefined && !isTerminal(entry.rec.job.state)) this.armTimeout(entry, entry.rec.timeoutAt);
  }

  /** Runs under the disk's lock. */
  private async adoptIfMirrored(dom: DomainRef, target: string): Promise<Tracked | undefined> {
    const active = this.activeFor(dom.uuid, target);
    if (active) return active;
    const xml = await this.conn.getXml(dom.uuid).catch(() => '');
    const d = findDisk(xml, target);
    if (d?.mirror?.job !== 'copy') return undefined;
    return this.adopt(dom, d);
  }

  private async adopt(dom: { name: string; uuid: string }, d: DiskInfo): Promise<Tracked> {
    const info = await this.conn.getBlockJobInfo(dom.uuid, d.target).catch(() => null);
    const job = adoptedJob(dom, d, info, this.iso());
    const entry = track({ job, destinationXml: '' });
    this.entries.set(job.jobId, entry);
    await this.persist(entry);
    this.log.info('adopted a running copy', { jobId: job.jobId, domain: dom.name, disk: d.target, destination: job.destination.path });
    this.emitChanged(entry);
    return entry;
  }

  // ---- state, journal, notifications --------------------------------------------------

  /** The only way a job's state changes. `persist: false` when the caller writes the journal itself (before a side effect). */
  private transition(entry: Tracked, to: JobState, patch: Partial<Job> = {}, opts: { persist?: boolean } = {}): void {
    const job = entry.rec.job;
    if (job.state === to) return;
    if (!canTransition(job.state, to)) {
      this.log.error('refused an impossible transition', { jobId: job.jobId, from: job.state, to });
      return;
    }
    this.log.info('job state', { jobId: job.jobId, from: job.state, to });
    Object.assign(job, patch, { state: to });
    if (isTerminal(to)) {
      job.endedAt = this.iso();
      if (entry.timeoutTimer) clearTimeout(entry.timeoutTimer);
      delete entry.rec.timeoutAt;
      faultPoint(`decided:${to}`);
    }
    this.touch(entry, opts.persist ?? true);
  }

  private fail(entry: Tracked, name: string, message: string, evidence: string, libvirt?: { code: number; domain: number; message: string }): void {
    if (isTerminal(entry.rec.job.state)) return;
    this.transition(entry, 'failed', { error: { name, message, ...(libvirt ? { libvirt } : {}) }, evidence, outcome: 'observed' });
  }

  /** Records a change: journal (in order, in the background) and notify. */
  private touch(entry: Tracked, persist = true): void {
    entry.rec.job.updatedAt = this.iso();
    if (persist) this.persistLater(entry);
    this.emitChanged(entry);
  }

  /**
   * The journal write that must land before a libvirt side effect: the record with its intent,
   * durably. If it cannot be written, the side effect is not attempted (state restored to `revertTo`).
   */
  private async beforeSideEffect(entry: Tracked, intent: Intent, revertTo?: JobState): Promise<void> {
    entry.rec.intent = intent;
    try {
      await this.persist(entry);
      faultPoint(`${intent.op}:journaled`);
    } catch (e) {
      delete entry.rec.intent;
      if (revertTo) this.transition(entry, revertTo);
      this.log.error('journal write failed; the libvirt call was not made', { jobId: entry.rec.job.jobId, op: intent.op, error: e });
      throw e;
    }
  }

  private afterSideEffect(entry: Tracked): void {
    if (!entry.rec.intent) return;
    faultPoint(`${entry.rec.intent.op}:sent`);
    delete entry.rec.intent;
    this.persistLater(entry);
  }

  /** A journal write nobody waits for (in order with the job's other writes). */
  private persistLater(entry: Tracked): void {
    void this.persist(entry).catch((err) => {
      if (!this.stopped) this.log.error('journal write failed', { jobId: entry.rec.job.jobId, error: err });
    });
  }

  private persist(entry: Tracked): Promise<void> {
    // After stop() the state directory may already belong to the next agent: nothing more is
    // written, and so (journal first) no libvirt call is made either.
    if (this.stopped) return Promise.reject(new AgentError('unavailable', 'the agent is stopping; nothing was journaled or sent to libvirt'));
    const snapshot: JobRecord = structuredClone(entry.rec);
    const write = entry.writes.catch(() => {}).then(() => this.journal.save(snapshot))
      .then(() => faultPoint(`journaled:${snapshot.job.state}`));
    entry.writes = write;
    return write;
  }

  private emitChanged(entry: Tracked): void {
    entry.lastEmit = this.realNow();
    this.updates.emit('update', entry);
    this.emit('job.changed', publicJob(entry));
  }

  // ---- helpers -----------------------------------------------------------------------------

  private iso(): string {
    return new Date(this.clock()).toISOString();
  }

  private realNow(): number {
    return Date.now();
  }

  assertServing(): void {
    if (this.recovering) throw new AgentError('recovering', 'the agent is reconciling jobs with libvirt; retry shortly');
  }

  /** Resolves when pred(state) holds; rejects with `timeout` or when the signal aborts. */
  private async waitFor(entry: Tracked, pred: (s: JobState) => boolean, timeoutMs?: number, signal?: AbortSignal): Promise<void> {
    if (!(await until(this.updates, 'update', () => pred(entry.rec.job.state), timeoutMs, signal))) {
      throw new AgentError('timeout', `job ${entry.rec.job.jobId} is still ${entry.rec.job.state}`, { job: publicJob(entry) });
    }
  }

  /**
   * Copies that count toward the host's limit: the ones this agent started. Adopted copies were
   * admitted by whoever started them; counting them would let any outside tool (or another
   * agent's domains on a shared test host) make this agent refuse its own callers.
   */
  private activeCount(): number {
    return [...this.entries.values()].filter((t) => t.rec.job.owner === 'agent' && !isTerminal(t.rec.job.state)).length;
  }

  /** At the host's limit: tooManyJobs, or with `queue`, wait (up to `timeout`) for a copy to end. */
  private async awaitSlot(params: BlockCopyParams, signal?: AbortSignal): Promise<void> {
    if (this.activeCount() < this.maxCopies) return;
    if (!params.queue) {
      throw new AgentError('tooManyJobs', `this host already runs ${this.activeCount()} copies (maximum ${this.maxCopies})`);
    }
    this.log.info('copy queued: the host is at its limit', { domain: params.domain, disk: params.disk, limit: this.maxCopies });
    const timeoutMs = params.timeout !== undefined ? params.timeout * 1000 : undefined;
    if (!(await until(this.updates, 'update', () => this.activeCount() < this.maxCopies, timeoutMs, signal))) {
      throw new AgentError('timeout', `no copy slot became free within ${params.timeout} s`);
    }
  }

  /**
   * Like virsh --timeout: at `at` (ms since the epoch), cancel the copy if it has not got where
   * it was asked to go (ready, or the end with whenReady pivot|finish). Journaled, so a restart re-arms it.
   */
  private armTimeout(entry: Tracked, at: number): void {
    const job = entry.rec.job;
    if (entry.timeoutTimer) clearTimeout(entry.timeoutTimer);
    if (entry.rec.timeoutAt !== at) {
      entry.rec.timeoutAt = at;
      this.persistLater(entry);
    }
    const goalReached = () => isTerminal(job.state) || (job.whenReady === 'none' && reachedReady(job.state));
    entry.timeoutTimer = setTimeout(() => {
      // A pivot or finish under way is about to reach the goal: let it.
      if (goalReached() || this.stopped || job.state === 'pivoting' || job.state === 'finishing') return;
      const seconds = Math.round((at - Date.parse(job.createdAt)) / 1000);
      this.log.warn('copy timed out: cancelling', { jobId: job.jobId, seconds });
      const reason = { name: 'timeout', message: `the copy did not get ${job.whenReady === 'none' ? 'ready' : 'done'} within its timeout (${seconds} s) and was cancelled` };
      void this.cancel(entry, reason).catch((err) => this.log.error('cancel on timeout failed', { jobId: job.jobId, error: err }));
    }, Math.max(0, at - this.realNow()));
    // Deliberately not unref'd: the cancel must happen even if nothing else keeps the process up; stop() clears it.
  }

  private async lookup(key: string): Promise<DomainRef> {
    try {
      return await this.conn.lookupDomain(key);
    } catch (e) {
      if (e instanceof LibvirtError && e.code === VirErrorCode.NO_DOMAIN) throw new AgentError('notFound', `no domain '${key}'`, { libvirt: libvirtData(e) });
      throw toAgentError(e, 'cannot look up the domain');
    }
  }

  /** The caller's destination; destinationXml is parsed (whitelisted shape) or refused here. */
  private destinationOf(params: BlockCopyParams): Destination {
    return params.destination ?? destinationFromXml(params.destinationXml ?? '');
  }

  private activeFor(uuid: string, disk: string): Tracked | undefined {
    for (const t of this.entries.values()) {
      if (t.rec.job.domain.uuid === uuid && t.rec.job.disk === disk && !isTerminal(t.rec.job.state)) return t;
    }
    return undefined;
  }

  private latestFor(uuid: string, disk: string): Tracked | undefined {
    let best: Tracked | undefined;
    for (const t of this.entries.values()) {
      if (t.rec.job.domain.uuid === uuid && t.rec.job.disk === disk && (!best || t.rec.job.createdAt >= best.rec.job.createdAt)) best = t;
    }
    return best;
  }

  /** A job by id, or the disk's active job (else its most recent one). */
  private async find(ref: JobRef): Promise<Tracked> {
    if (ref.jobId) {
      const t = this.entries.get(ref.jobId);
      if (!t) throw new AgentError('noJob', `no job '${ref.jobId}'`);
      return t;
    }
    if (!ref.domain || !ref.disk) throw new AgentError('noJob', 'name the job by jobId, or by domain and disk');
    const known = [...this.entries.values()].find((t) => t.rec.job.domain.name === ref.domain || t.rec.job.domain.uuid === ref.domain);
    const uuid = known?.rec.job.domain.uuid ?? (await this.lookup(ref.domain)).uuid;
    const t = this.activeFor(uuid, ref.disk) ?? this.latestFor(uuid, ref.disk);
    if (!t) throw new AgentError('noJob', `no copy job on disk ${ref.disk} of '${ref.domain}'`);
    return t;
  }

  private async allDefinedDiskPaths(): Promise<Set<string>> {
    const paths = new Set<string>();
    const doms = await this.conn.listDomains().catch(() => [] as DomainRef[]);
    for (const d of doms) {
      for (const inactive of [false, true]) {
        if (!inactive && !d.active) continue;
        if (inactive && !d.persistent) continue;
        const xml = await this.conn.getXml(d.uuid, { inactive }).catch(() => '');
        for (const disk of parseDisks(xml)) {
          for (const p of [disk.sourcePath, disk.mirror?.path ?? null, ...disk.backingPaths]) if (p) paths.add(p.startsWith('/') ? resolvePath(p) : p);
        }
      }
    }
    return paths;
  }

  private pruneEnded(): void {
    const ended = [...this.entries.values()].filter((t) => isTerminal(t.rec.job.state))
      .sort((a, b) => a.rec.job.createdAt.localeCompare(b.rec.job.createdAt));
    for (const t of ended.slice(0, Math.max(0, ended.length - this.keepEnded))) {
      this.entries.delete(t.rec.job.jobId);
      void t.writes.catch(() => {}).then(() => this.journal.remove(t.rec.job.jobId));
    }
  }
}

function percentText(entry: Tracked): string {
  const p = publicJob(entry).progress.percent;
  return p === null ? 'unknown' : `${p}%`;
}
