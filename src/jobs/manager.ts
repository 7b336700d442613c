// The job manager: one job per (domain, disk), driven by libvirt's BLOCK_JOB_2 events first
// and a slow poll as a safety net; journaled before every libvirt side effect; reconciled
// with what libvirt really runs at start-up.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { resolve as resolvePath } from 'node:path';
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Connection, DomainEvent, DomainRef } from '../libvirt/index.js';
import { LibvirtError, VirErrorCode } from '../libvirt/index.js';
import type {
  AbortParams, AbortResult, BlockCopyParams, BlockCopyResult, CapabilitiesResult, Destination, FinishParams,
  FinishResult, Job, JobInfoParams, JobInfoResult, JobState, ListJobsParams, ListJobsResult, PivotParams,
  PivotResult, SetSpeedParams, SetSpeedResult, WaitParams, WaitResult,
} from '../generated/api.js';
import { destinationFromXml, destinationToXml } from './destination-xml.js';
import { findDisk, parseDisks, type DiskInfo } from './disk-xml.js';
import { checkDestination as basicDestinationCheck, type DestinationCheck } from './destination-check.js';
import { Journal, type JobRecord } from './journal.js';
import { isNoJob, isNotReady, libvirtData, toAgentError } from './libvirt-errors.js';
import { fromByteCount, toByteCount } from './numbers.js';
import { RateSampler } from './sampler.js';
import { canTransition, isTerminal, reachedReady } from './state-machine.js';

export interface JobManagerOptions {
  connection: Connection;
  stateDir: string;
  log: Logger;
  /** Safety-net poll of running jobs (ms). Progress is sampled at least once a second. */
  pollIntervalMs?: number;
  maxConcurrentCopies?: number;
  /** Destination policy; defaults to the built-in checks (not the source, no clobbering, …). */
  checkDestination?: DestinationCheck;
  /** How many ended jobs to remember. */
  keepEnded?: number;
  agentVersion?: string;
}

type JobRef = { jobId?: string; domain?: string; disk?: string };

interface Entry {
  rec: JobRecord;
  sampler: RateSampler;
  /** Serializes pivot/finish/abort/setSpeed on this job. */
  opLock: Promise<unknown>;
  /** Serializes journal writes so they land in order. */
  writes: Promise<void>;
  lastEmit: number;
  lastXmlCheck: number;
  timeoutTimer?: NodeJS.Timeout;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PROGRESS_EMIT_MS = 1000;

export class JobManager extends EventEmitter {
  private readonly conn: Connection;
  private readonly log: Logger;
  private readonly journal: Journal;
  private readonly pollMs: number;
  private readonly sampleMs: number;
  private readonly maxCopies: number;
  private readonly keepEnded: number;
  private readonly checkDest: DestinationCheck;
  private readonly entries = new Map<string, Entry>();
  /** Internal: fires on every job update, for waiters. */
  private readonly updates = new EventEmitter();
  private recovering = true;
  private buffered: DomainEvent[] | null = [];
  private unsubscribe: (() => Promise<void>) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private stopped = false;

  constructor(private readonly opts: JobManagerOptions) {
    super();
    this.conn = opts.connection;
    this.log = opts.log;
    this.journal = new Journal(opts.stateDir);
    this.pollMs = opts.pollIntervalMs ?? 2000;
    this.sampleMs = Math.min(1000, this.pollMs);
    this.maxCopies = opts.maxConcurrentCopies ?? 32;
    this.keepEnded = opts.keepEnded ?? 1000;
    this.checkDest = opts.checkDestination ?? basicDestinationCheck;
    this.updates.setMaxListeners(0);
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /** Subscribes to events, then reconciles the journal and live copies before serving. */
  async start(): Promise<void> {
    await this.journal.open();
    // Subscribe first and buffer, so nothing that happens during reconcile is missed.
    this.unsubscribe = await this.conn.onEvent((e) => this.onDomainEvent(e));
    await this.reconcile();
    const pending = this.buffered ?? [];
    this.buffered = null;
    this.recovering = false;
    for (const e of pending) this.onDomainEvent(e);
    this.timer = setInterval(() => void this.tick(), this.sampleMs);
    this.timer.unref();
  }

  /** Stops watching. Running copies are left alone: QEMU keeps them; the next start adopts them. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const e of this.entries.values()) if (e.timeoutTimer) clearTimeout(e.timeoutTimer);
    if (this.unsubscribe) await this.unsubscribe().catch(() => {});
    this.unsubscribe = null;
    await Promise.all([...this.entries.values()].map((e) => e.writes));
  }

  // ---- public methods (one per RPC method) ------------------------------------------------

  async blockCopy(params: BlockCopyParams, signal?: AbortSignal): Promise<BlockCopyResult> {
    this.assertServing();
    const dom = await this.lookup(params.domain);
    if (!dom.active) throw new AgentError('invalidState', `domain '${dom.name}' is not running`);
    const dest = this.destinationOf(params);

    const existing = this.activeFor(dom.uuid, params.disk) ?? (await this.adoptIfMirrored(dom, params.disk));
    const byId = params.jobId ? this.entries.get(params.jobId) : undefined;
    if (byId && (byId.rec.job.domain.uuid !== dom.uuid || byId.rec.job.disk !== params.disk)) {
      throw new AgentError('jobExists', `jobId '${params.jobId}' already names a job on ${byId.rec.job.domain.name}/${byId.rec.job.disk}`, { job: this.publicJob(byId) });
    }
    if (existing) {
      if (existing === byId || samePath(existing.rec.job.destination.path, dest.path)) {
        return this.awaitGoal(existing, params, false, signal);
      }
      throw new AgentError('jobExists', `disk ${params.disk} of '${dom.name}' already has a copy job to ${existing.rec.job.destination.path}`, { job: this.publicJob(existing) });
    }
    // A finished re-run (same key, or same destination that the job already completed to).
    const done = byId ?? this.latestFor(dom.uuid, params.disk);
    if (done && (done === byId || (samePath(done.rec.job.destination.path, dest.path) && ['pivoted', 'finished'].includes(done.rec.job.state)))) {
      return { job: this.publicJob(done), changed: false };
    }

    const xml = await this.conn.getXml(dom.uuid).catch((e) => { throw toAgentError(e, 'cannot read the domain'); });
    const disk = findDisk(xml, params.disk);
    if (!disk) throw new AgentError('notFound', `domain '${dom.name}' has no disk '${params.disk}'`);
    if (disk.device !== 'disk' || (disk.type !== 'file' && disk.type !== 'block') || !disk.sourcePath) {
      throw new AgentError('unsupported', `disk ${params.disk} of '${dom.name}' is a ${disk.type} ${disk.device}; only file and block disks can be copied`);
    }
    await this.checkDest(dest, { reuseExternal: !!params.reuseExternal, disk, domainDisks: await this.allDefinedDiskPaths() });
    await this.awaitSlot(params, signal);

    const now = new Date().toISOString();
    const transientJob = params.transientJob ?? dom.persistent;
    const job: Job = {
      jobId: params.jobId ?? randomUUID(),
      domain: { name: dom.name, uuid: dom.uuid },
      disk: params.disk,
      source: { path: disk.sourcePath, format: disk.format },
      destination: { path: dest.path, format: dest.format ?? null, type: dest.type ?? 'file' },
      state: 'copying',
      progress: { cur: 0, end: 0, percent: null, rate: null, eta: null },
      bandwidth: params.bandwidth ?? 0,
      options: {
        shallow: !!params.shallow, reuseExternal: !!params.reuseExternal, transientJob,
        synchronousWrites: !!params.synchronousWrites,
        ...(params.granularity !== undefined ? { granularity: params.granularity } : {}),
        ...(params.bufSize !== undefined ? { bufSize: params.bufSize } : {}),
      },
      whenReady: params.whenReady ?? 'none',
      owner: 'agent',
      createdAt: now,
      updatedAt: now,
    };
    const entry = this.newEntry({ job, destinationXml: params.destinationXml ?? destinationToXml(dest) });
    this.entries.set(job.jobId, entry);
    // Journal first: a crash right after libvirt starts the copy must still find the job.
    try {
      await this.persist(entry);
      await this.conn.blockCopy(dom.uuid, params.disk, entry.rec.destinationXml, {
        shallow: job.options.shallow, reuseExternal: job.options.reuseExternal, transientJob,
        synchronousWrites: job.options.synchronousWrites,
        bandwidth: fromByteCount(params.bandwidth), granularity: params.granularity, bufSize: fromByteCount(params.bufSize),
      });
    } catch (e) {
      this.entries.delete(job.jobId);
      await this.journal.remove(job.jobId).catch(() => {});
      throw toAgentError(e, 'libvirt refused the copy');
    }
    this.log.info('copy started', { jobId: job.jobId, domain: dom.name, disk: params.disk, destination: dest.path });
    this.emitChanged(entry);
    this.pruneEnded();
    if (params.timeout !== undefined) this.armTimeout(entry, params.timeout);
    return this.awaitGoal(entry, params, true, signal);
  }

  async jobInfo(params: JobInfoParams): Promise<JobInfoResult> {
    return { job: this.publicJob(await this.find(params)) };
  }

  async listJobs(params: ListJobsParams): Promise<ListJobsResult> {
    const includeEnded = params.includeEnded ?? true;
    let uuid: string | undefined;
    if (params.domain) {
      const known = [...this.entries.values()].find((e) => e.rec.job.domain.name === params.domain || e.rec.job.domain.uuid === params.domain);
      uuid = known?.rec.job.domain.uuid ?? (await this.lookup(params.domain)).uuid;
    }
    const jobs = [...this.entries.values()]
      .filter((e) => (uuid === undefined || e.rec.job.domain.uuid === uuid) &&
        (includeEnded || !isTerminal(e.rec.job.state)) &&
        (!params.state || params.state.includes(e.rec.job.state)))
      .sort((a, b) => a.rec.job.createdAt.localeCompare(b.rec.job.createdAt))
      .map((e) => this.publicJob(e));
    return { jobs };
  }

  async pivot(params: PivotParams): Promise<PivotResult> {
    this.assertServing();
    const entry = await this.find(params);
    return this.withOpLock(entry, () => this.complete(entry, 'pivot', (params.timeout ?? 30) * 1000));
  }

  async finish(params: FinishParams): Promise<FinishResult> {
    this.assertServing();
    const entry = await this.find(params);
    return this.withOpLock(entry, () => this.complete(entry, 'finish', (params.timeout ?? 30) * 1000));
  }

  async abort(params: AbortParams): Promise<AbortResult> {
    this.assertServing();
    const entry = await this.find(params);
    return this.withOpLock(entry, () => this.cancel(entry));
  }

  async setSpeed(params: SetSpeedParams): Promise<SetSpeedResult> {
    this.assertServing();
    const entry = await this.find(params);
    return this.withOpLock(entry, async () => {
      if (isTerminal(entry.rec.job.state)) throw new AgentError('invalidState', `job ${entry.rec.job.jobId} has ended (${entry.rec.job.state})`, { job: this.publicJob(entry) });
      const bw = fromByteCount(params.bandwidth)!;
      try {
        await this.conn.blockJobSetSpeed(entry.rec.job.domain.uuid, entry.rec.job.disk, bw);
      } catch (e) {
        throw toAgentError(e, 'cannot set the speed');
      }
      entry.rec.job.bandwidth = toByteCount(bw);
      this.touch(entry);
      return { job: this.publicJob(entry) };
    });
  }

  async wait(params: WaitParams, signal?: AbortSignal): Promise<WaitResult> {
    const entry = await this.find(params);
    const pred = params.until === 'ready' ? (s: JobState) => reachedReady(s) || isTerminal(s) : isTerminal;
    await this.waitFor(entry, pred, params.timeout !== undefined ? params.timeout * 1000 : undefined, signal);
    return { job: this.publicJob(entry) };
  }

  async capabilities(): Promise<Omit<CapabilitiesResult, 'methods'>> {
    const v = await this.conn.versions().catch((e) => { throw toAgentError(e, 'cannot read versions'); });
    const [maj, min] = v.libvirt.split('.').map(Number) as [number, number];
    const atLeast = (a: number, b: number) => maj > a || (maj === a && min >= b);
    return {
      agent: { name: 'blockcopy-agent', version: this.opts.agentVersion ?? '0.0.0' },
      libvirt: { version: v.libvirt },
      hypervisor: { type: v.hypervisorType, version: v.hypervisor },
      flags: { shallow: atLeast(1, 2), reuseExternal: atLeast(1, 2), transientJob: atLeast(4, 5), synchronousWrites: atLeast(8, 0) },
    };
  }

  // ---- completing a job: pivot / finish / abort ------------------------------------------

  private async complete(entry: Entry, how: 'pivot' | 'finish', budgetMs: number): Promise<PivotResult> {
    const goal: JobState = how === 'pivot' ? 'pivoted' : 'finished';
    const busy: JobState = how === 'pivot' ? 'pivoting' : 'finishing';
    const deadline = Date.now() + budgetMs;
    const job = entry.rec.job;
    if (job.state === goal) return { job: this.publicJob(entry), changed: false };
    if (isTerminal(job.state) || (job.state !== 'copying' && job.state !== 'ready' && job.state !== busy)) {
      throw new AgentError('invalidState', `cannot ${how} job ${job.jobId}: it is ${job.state}`, { job: this.publicJob(entry) });
    }
    let delay = 200;
    while (entry.rec.job.state !== busy) {
      if (entry.rec.job.state === 'copying') {
        const left = deadline - Date.now();
        const ok = left > 0 && (await this.waitFor(entry, (s) => s !== 'copying', left).then(() => true, () => false));
        if (!ok) throw new AgentError('notReady', `job ${job.jobId} is not ready yet (${this.percentText(entry)} copied)`, { job: this.publicJob(entry) });
        continue;
      }
      if (entry.rec.job.state !== 'ready') break;
      this.transition(entry, busy);
      await this.persist(entry);
      try {
        await this.conn.blockJobAbort(job.domain.uuid, job.disk, { async: true, pivot: how === 'pivot' });
        break;
      } catch (e) {
        if (isNotReady(e)) {
          // QEMU dropped out of ready (heavy guest writes): back off and retry until the deadline.
          this.transition(entry, 'ready');
          if (Date.now() + delay > deadline) {
            throw new AgentError('notReady', `QEMU reports job ${job.jobId} not ready for ${how}`, { job: this.publicJob(entry), libvirt: libvirtData(e as LibvirtError) });
          }
          await sleep(delay);
          delay = Math.min(delay * 2, 2000);
          continue;
        }
        if (isNoJob(e)) {
          await this.settleVanished(entry, `libvirt reported no block job when asked to ${how}`);
          break;
        }
        this.transition(entry, 'ready');
        throw toAgentError(e, `libvirt refused to ${how}`);
      }
    }
    // Completion arrives as an event (or the poll notices); both verify against the live XML.
    await this.waitFor(entry, (s) => s !== busy, Math.max(deadline - Date.now(), 0) + 60_000).catch(() => {
      throw new AgentError('timeout', `${how} of job ${job.jobId} did not complete in time`, { job: this.publicJob(entry) });
    });
    const end = entry.rec.job;
    if (end.state === goal) return { job: this.publicJob(entry), changed: true };
    if (end.state === 'failed') {
      throw new AgentError(how === 'pivot' ? 'pivotFailed' : 'libvirtError', end.error?.message ?? `${how} failed`,
        { job: this.publicJob(entry), ...(end.evidence ? { evidence: end.evidence } : {}), ...(end.error?.libvirt ? { libvirt: end.error.libvirt } : {}) });
    }
    throw new AgentError('invalidState', `job ${job.jobId} ended as ${end.state} instead of ${goal}`, { job: this.publicJob(entry) });
  }

  private async cancel(entry: Entry): Promise<AbortResult> {
    const job = entry.rec.job;
    if (isTerminal(job.state)) return { job: this.publicJob(entry), changed: false };
    if (job.state === 'pivoting' || job.state === 'finishing') {
      throw new AgentError('invalidState', `job ${job.jobId} is ${job.state}; it cannot be aborted now`, { job: this.publicJob(entry) });
    }
    if (job.state !== 'cancelling') {
      this.transition(entry, 'cancelling');
      await this.persist(entry);
      try {
        await this.conn.blockJobAbort(job.domain.uuid, job.disk, { async: true });
      } catch (e) {
        if (isNoJob(e)) await this.settleVanished(entry, 'libvirt reported no block job when asked to abort');
        else throw toAgentError(e, 'libvirt refused to abort');
      }
    }
    await this.waitFor(entry, isTerminal, 120_000).catch(() => {
      throw new AgentError('timeout', `abort of job ${job.jobId} did not complete in time`, { job: this.publicJob(entry) });
    });
    return { job: this.publicJob(entry), changed: true };
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
            this.fail(entry, 'invalidState', `the domain ${e.event === 'crashed' ? 'crashed' : 'stopped'} during the copy`, `lifecycle event ${e.event} (detail ${e.detail})`);
          }
        }
      }
      return;
    }
    if (e.type !== 'copy') return;
    const entry = this.activeFor(e.domain.uuid, e.disk);
    if (!entry) {
      if (e.status === 'ready') void this.adoptIfMirrored({ name: e.domain.name, uuid: e.domain.uuid, id: 0, active: true, persistent: false }, e.disk);
      return;
    }
    const state = entry.rec.job.state;
    switch (e.status) {
      case 'ready':
        if (state === 'copying') void this.refreshProgress(entry).finally(() => {
          if (entry.rec.job.state === 'copying') this.becomeReady(entry);
        });
        break;
      case 'completed':
      case 'canceled':
        if (state === 'pivoting') void this.verifyPivot(entry);
        else if (state === 'finishing') void this.verifyStayed(entry, 'finished');
        else if (state === 'cancelling') void this.verifyStayed(entry, 'cancelled');
        else this.settleOutside(entry, e.status);
        break;
      case 'failed':
        this.fail(entry, state === 'pivoting' ? 'pivotFailed' : 'libvirtError', `QEMU reported the copy job failed while ${state}`, 'BLOCK_JOB_2 event: failed');
        break;
    }
  }

  private becomeReady(entry: Entry): void {
    this.transition(entry, 'ready', { readyAt: new Date().toISOString() });
    const how = entry.rec.job.whenReady;
    if (how === 'pivot' || how === 'finish') {
      const id = entry.rec.job.jobId;
      void (how === 'pivot' ? this.pivot({ jobId: id }) : this.finish({ jobId: id })).catch((err) =>
        this.log.warn(`automatic ${how} failed`, { jobId: id, error: err }));
    }
  }

  /** An end we did not ask for (another tool, or QEMU). Verified against the live XML. */
  private settleOutside(entry: Entry, status: string): void {
    void this.settleVanished(entry, `BLOCK_JOB_2 ${status} event without a request from this agent`);
  }

  private async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      const now = Date.now();
      for (const entry of [...this.entries.values()]) {
        if (isTerminal(entry.rec.job.state)) continue;
        await this.sample(entry, now).catch((err) => this.log.debug('poll failed', { jobId: entry.rec.job.jobId, error: err }));
      }
    } finally {
      this.ticking = false;
    }
  }

  /** One progress sample without side effects on the state (used right before announcing ready). */
  private async refreshProgress(entry: Entry): Promise<void> {
    const job = entry.rec.job;
    const info = await this.conn.getBlockJobInfo(job.domain.uuid, job.disk).catch(() => null);
    if (!info) return;
    entry.sampler.add(Date.now(), Number(info.cur));
    job.progress.cur = toByteCount(info.cur);
    job.progress.end = toByteCount(info.end);
  }

  private async sample(entry: Entry, now: number): Promise<void> {
    const job = entry.rec.job;
    let info;
    try {
      info = await this.conn.getBlockJobInfo(job.domain.uuid, job.disk);
    } catch (e) {
      if (e instanceof LibvirtError && (e.code === VirErrorCode.NO_DOMAIN || e.code === VirErrorCode.OPERATION_INVALID)) {
        this.fail(entry, 'invalidState', 'the domain is gone or no longer running', e.message);
      }
      return;
    }
    if (!info) {
      // Give the event a moment: libvirt may still be delivering the completion.
      if (now - Date.parse(job.updatedAt) > this.sampleMs) await this.settleVanished(entry, 'the block job disappeared without an event');
      return;
    }
    const cur = Number(info.cur);
    const end = Number(info.end);
    entry.sampler.add(now, cur);
    const moved = toByteCount(info.cur) !== job.progress.cur || toByteCount(info.end) !== job.progress.end;
    job.progress.cur = toByteCount(info.cur);
    job.progress.end = toByteCount(info.end);
    job.bandwidth = toByteCount(info.bandwidth);
    // Ready comes from the event; the XML cross-check only catches a missed one. cur == end
    // alone proves nothing (0/1 means "not known yet"), so it only triggers the XML read.
    if (job.state === 'copying' && ((end > 0 && cur === end) || now - entry.lastXmlCheck >= this.pollMs)) {
      entry.lastXmlCheck = now;
      const disk = await this.liveDisk(entry);
      if (disk?.mirror?.ready === 'yes' && entry.rec.job.state === 'copying') {
        this.log.warn('ready seen in the live XML before any event', { jobId: job.jobId });
        this.becomeReady(entry);
        return;
      }
    }
    if (moved && now - entry.lastEmit >= PROGRESS_EMIT_MS) this.emitChanged(entry);
  }

  // ---- verification against the live XML ----------------------------------------------

  private async liveDisk(entry: Entry): Promise<DiskInfo | undefined> {
    const xml = await this.conn.getXml(entry.rec.job.domain.uuid);
    return findDisk(xml, entry.rec.job.disk);
  }

  /** Reads the disk until libvirt has dropped the <mirror> (it updates the XML around the event). */
  private async settledDisk(entry: Entry): Promise<DiskInfo | undefined> {
    let disk: DiskInfo | undefined;
    for (let i = 0; i < 25; i++) {
      disk = await this.liveDisk(entry);
      if (!disk?.mirror) return disk;
      await sleep(200);
    }
    return disk;
  }

  private async verifyPivot(entry: Entry): Promise<void> {
    const job = entry.rec.job;
    let disk: DiskInfo | undefined;
    try {
      disk = await this.settledDisk(entry);
    } catch (e) {
      this.fail(entry, 'pivotFailed', 'could not read the live XML to verify the pivot', String((e as Error).message));
      return;
    }
    if (disk && !disk.mirror && samePath(disk.sourcePath, job.destination.path)) {
      this.transition(entry, 'pivoted', { outcome: 'observed', persistent: await this.persistentView(entry) });
      return;
    }
    this.fail(entry, 'pivotFailed', 'the pivot could not be verified',
      `live XML shows source ${disk?.sourcePath ?? 'none'}${disk?.mirror ? ' with a mirror still present' : ''}, expected ${job.destination.path}`);
  }

  private async verifyStayed(entry: Entry, goal: 'finished' | 'cancelled'): Promise<void> {
    const job = entry.rec.job;
    const disk = await this.settledDisk(entry).catch(() => undefined);
    if (disk && !disk.mirror && samePath(disk.sourcePath, job.source.path)) {
      this.transition(entry, goal, { outcome: 'observed' });
      return;
    }
    this.fail(entry, 'libvirtError', `the ${goal === 'finished' ? 'finish' : 'abort'} could not be verified`,
      `live XML shows source ${disk?.sourcePath ?? 'none'}${disk?.mirror ? ' with a mirror still present' : ''}, expected ${job.source.path}`);
  }

  /** The job is gone without the event we expected: conclude from the live XML, and say so. */
  private async settleVanished(entry: Entry, why: string): Promise<void> {
    const job = entry.rec.job;
    if (isTerminal(job.state)) return;
    let disk: DiskInfo | undefined;
    try {
      disk = await this.settledDisk(entry);
    } catch (e) {
      this.fail(entry, 'invalidState', 'the domain is gone', `${why}; ${(e as Error).message}`);
      return;
    }
    if (isTerminal(entry.rec.job.state)) return;
    if (disk?.mirror) return; // still mirroring: nothing vanished after all
    const onDest = samePath(disk?.sourcePath ?? null, job.destination.path);
    const onSource = samePath(disk?.sourcePath ?? null, job.source.path);
    const evidence = `${why}; live XML shows source ${disk?.sourcePath ?? 'none'} and no mirror`;
    if (onDest) {
      this.transition(entry, 'pivoted', { outcome: 'inferred', evidence, persistent: await this.persistentView(entry) });
    } else if (onSource && job.state === 'finishing') {
      this.transition(entry, 'finished', { outcome: 'inferred', evidence });
    } else if (onSource) {
      this.transition(entry, 'cancelled', { outcome: 'inferred', evidence });
    } else {
      this.fail(entry, 'invalidState', 'the disk changed outside the agent', evidence);
    }
  }

  private async persistentView(entry: Entry): Promise<Job['persistent']> {
    const job = entry.rec.job;
    try {
      const dom = await this.conn.lookupDomain(job.domain.uuid);
      if (!dom.persistent) return { defined: false, source: null, matchesLive: false };
      const disk = findDisk(await this.conn.getXml(job.domain.uuid, { inactive: true }), job.disk);
      const source = disk?.sourcePath ?? null;
      const matchesLive = samePath(source, job.destination.path);
      if (!matchesLive) this.log.warn('persistent definition still points at the old disk', { jobId: job.jobId, source });
      return { defined: true, source, matchesLive };
    } catch {
      return undefined;
    }
  }

  // ---- reconcile at start ------------------------------------------------------------------

  private async reconcile(): Promise<void> {
    const records = await this.journal.load((file, err) => this.log.error('unreadable journal file skipped', { file, error: err }));
    for (const rec of records) this.entries.set(rec.job.jobId, this.newEntry(rec));
    for (const entry of this.entries.values()) {
      if (isTerminal(entry.rec.job.state)) continue;
      await this.reconcileOne(entry).catch((err) => this.log.error('reconcile failed', { jobId: entry.rec.job.jobId, error: err }));
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

  private async reconcileOne(entry: Entry): Promise<void> {
    const job = entry.rec.job;
    let info;
    try {
      info = await this.conn.getBlockJobInfo(job.domain.uuid, job.disk);
    } catch (e) {
      this.fail(entry, 'invalidState', 'the domain is gone or no longer running', `found at start-up: ${(e as Error).message}`);
      return;
    }
    if (!info) {
      await this.settleVanished(entry, 'the block job ended while the agent was not running');
      return;
    }
    const disk = await this.liveDisk(entry);
    const ready = disk?.mirror?.ready === 'yes';
    // An interrupted pivot/finish/abort may or may not have reached libvirt: the mirror is
    // still there, so the job is back where it was and the caller can ask again.
    const state: JobState = job.state === 'cancelling' ? 'cancelling' : ready ? 'ready' : 'copying';
    if (job.state !== state) {
      job.state = state;
      job.evidence = `reconciled at start-up from the live XML (mirror ready='${disk?.mirror?.ready ?? 'none'}')`;
      this.touch(entry);
    }
    if (state === 'cancelling') {
      await this.conn.blockJobAbort(job.domain.uuid, job.disk, { async: true }).catch(() => {});
    }
    if (state === 'ready' && !job.readyAt) job.readyAt = new Date().toISOString();
  }

  private async adoptIfMirrored(dom: DomainRef, target: string): Promise<Entry | undefined> {
    const xml = await this.conn.getXml(dom.uuid).catch(() => '');
    const d = findDisk(xml, target);
    if (d?.mirror?.job !== 'copy' || this.activeFor(dom.uuid, target)) return this.activeFor(dom.uuid, target);
    return this.adopt(dom, d);
  }

  private async adopt(dom: DomainRef, d: DiskInfo): Promise<Entry> {
    const now = new Date().toISOString();
    const info = await this.conn.getBlockJobInfo(dom.uuid, d.target).catch(() => null);
    const job: Job = {
      jobId: `adopted-${dom.uuid.slice(0, 8)}-${d.target}-${Date.now().toString(36)}`,
      domain: { name: dom.name, uuid: dom.uuid },
      disk: d.target,
      source: { path: d.sourcePath, format: d.format },
      destination: { path: d.mirror?.path ?? '', format: (d.mirror?.format === 'raw' || d.mirror?.format === 'qcow2') ? d.mirror.format : null, type: 'file' },
      state: d.mirror?.ready === 'yes' ? 'ready' : 'copying',
      progress: { cur: info ? toByteCount(info.cur) : 0, end: info ? toByteCount(info.end) : 0, percent: null, rate: null, eta: null },
      bandwidth: info ? toByteCount(info.bandwidth) : 0,
      options: { shallow: false, reuseExternal: false, transientJob: false, synchronousWrites: false },
      whenReady: 'none',
      owner: 'adopted',
      createdAt: now,
      updatedAt: now,
      ...(d.mirror?.ready === 'yes' ? { readyAt: now } : {}),
      evidence: 'found running in the live XML: started outside this agent; its options are unknown',
    };
    const entry = this.newEntry({ job, destinationXml: '' });
    this.entries.set(job.jobId, entry);
    await this.persist(entry);
    this.log.info('adopted a running copy', { jobId: job.jobId, domain: dom.name, disk: d.target });
    this.emitChanged(entry);
    return entry;
  }

  // ---- state, journal, notifications --------------------------------------------------

  private newEntry(rec: JobRecord): Entry {
    return { rec, sampler: new RateSampler(), opLock: Promise.resolve(), writes: Promise.resolve(), lastEmit: 0, lastXmlCheck: 0 };
  }

  private transition(entry: Entry, to: JobState, patch: Partial<Job> = {}): void {
    const job = entry.rec.job;
    if (job.state === to && Object.keys(patch).length === 0) return;
    if (job.state !== to && !canTransition(job.state, to)) {
      this.log.error('refused an impossible transition', { jobId: job.jobId, from: job.state, to });
      return;
    }
    this.log.info('job state', { jobId: job.jobId, from: job.state, to });
    Object.assign(job, patch, { state: to });
    if (isTerminal(to)) {
      job.endedAt = new Date().toISOString();
      if (entry.timeoutTimer) clearTimeout(entry.timeoutTimer);
    }
    this.touch(entry);
  }

  private fail(entry: Entry, name: string, message: string, evidence: string, libvirt?: { code: number; domain: number; message: string }): void {
    if (isTerminal(entry.rec.job.state)) return;
    this.transition(entry, 'failed', { error: { name, message, ...(libvirt ? { libvirt } : {}) }, evidence, outcome: 'observed' });
  }

  /** Records a change: journal (in order, in the background) and notify. */
  private touch(entry: Entry): void {
    entry.rec.job.updatedAt = new Date().toISOString();
    void this.persist(entry).catch((err) => this.log.error('journal write failed', { jobId: entry.rec.job.jobId, error: err }));
    this.emitChanged(entry);
  }

  private persist(entry: Entry): Promise<void> {
    const snapshot: JobRecord = JSON.parse(JSON.stringify(entry.rec));
    entry.writes = entry.writes.catch(() => {}).then(() => this.journal.save(snapshot));
    return entry.writes;
  }

  private emitChanged(entry: Entry): void {
    entry.lastEmit = Date.now();
    this.updates.emit('update', entry);
    this.emit('job.changed', this.publicJob(entry));
  }

  private publicJob(entry: Entry): Job {
    const job = entry.rec.job;
    const cur = Number(job.progress.cur);
    const end = Number(job.progress.end);
    const copying = job.state === 'copying';
    const progress = {
      cur: job.progress.cur,
      end: job.progress.end,
      percent: end > 0 ? Math.min(100, Math.round((cur / end) * 1000) / 10) : null,
      rate: isTerminal(job.state) ? null : entry.sampler.rate(),
      eta: copying && end > 0 ? entry.sampler.eta(end) : null,
    };
    return structuredClone({ ...job, progress });
  }

  private percentText(entry: Entry): string {
    const p = this.publicJob(entry).progress.percent;
    return p === null ? 'unknown' : `${p}%`;
  }

  // ---- helpers -----------------------------------------------------------------------------

  private assertServing(): void {
    if (this.recovering) throw new AgentError('recovering', 'the agent is reconciling jobs with libvirt; retry shortly');
  }

  private withOpLock<T>(entry: Entry, fn: () => Promise<T>): Promise<T> {
    const run = entry.opLock.catch(() => {}).then(fn);
    entry.opLock = run;
    return run;
  }

  /** Resolves when pred(state) holds; rejects with `timeout` or when the signal aborts. */
  private waitFor(entry: Entry, pred: (s: JobState) => boolean, timeoutMs?: number, signal?: AbortSignal): Promise<void> {
    if (pred(entry.rec.job.state)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        this.updates.off('update', onUpdate);
        signal?.removeEventListener('abort', onAbort);
        if (timer) clearTimeout(timer);
      };
      const onUpdate = (e: Entry) => {
        if (e === entry && pred(entry.rec.job.state)) { done(); resolve(); }
      };
      const onAbort = () => { done(); reject(new Error('the caller went away')); };
      this.updates.on('update', onUpdate);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          done();
          reject(new AgentError('timeout', `job ${entry.rec.job.jobId} is still ${entry.rec.job.state}`, { job: this.publicJob(entry) }));
        }, timeoutMs);
      }
    });
  }

  /** blockCopy's answer: at once, at ready or at the end, as the caller asked. */
  private async awaitGoal(entry: Entry, params: BlockCopyParams, changed: boolean, signal?: AbortSignal): Promise<BlockCopyResult> {
    const wait = params.wait ?? 'none';
    if (wait !== 'none') {
      const pred = wait === 'ready' ? (s: JobState) => reachedReady(s) || isTerminal(s) : isTerminal;
      await this.waitFor(entry, pred, undefined, signal);
      const job = entry.rec.job;
      if (job.error?.name === 'timeout') throw new AgentError('timeout', job.error.message, { job: this.publicJob(entry) });
      if (job.state === 'failed') {
        throw new AgentError(job.error?.name === 'pivotFailed' ? 'pivotFailed' : 'libvirtError', job.error?.message ?? 'the copy failed',
          { job: this.publicJob(entry), ...(job.evidence ? { evidence: job.evidence } : {}) });
      }
    }
    return { job: this.publicJob(entry), changed };
  }

  private activeCount(): number {
    return [...this.entries.values()].filter((e) => !isTerminal(e.rec.job.state)).length;
  }

  /** At the host's limit: tooManyJobs, or with `queue`, wait (up to `timeout`) for a copy to end. */
  private async awaitSlot(params: BlockCopyParams, signal?: AbortSignal): Promise<void> {
    if (this.activeCount() < this.maxCopies) return;
    if (!params.queue) {
      throw new AgentError('tooManyJobs', `this host already runs ${this.activeCount()} copies (maximum ${this.maxCopies})`);
    }
    this.log.info('copy queued: the host is at its limit', { domain: params.domain, disk: params.disk, limit: this.maxCopies });
    await new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        this.updates.off('update', check);
        signal?.removeEventListener('abort', onAbort);
        if (timer) clearTimeout(timer);
      };
      const check = () => { if (this.activeCount() < this.maxCopies) { done(); resolve(); } };
      const onAbort = () => { done(); reject(new Error('the caller went away')); };
      this.updates.on('update', check);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (params.timeout !== undefined) {
        timer = setTimeout(() => { done(); reject(new AgentError('timeout', `no copy slot became free within ${params.timeout} s`)); }, params.timeout * 1000);
      }
    });
  }

  /** Like virsh --timeout: cancel the copy if it has not got where it was asked to go in time. */
  private armTimeout(entry: Entry, seconds: number): void {
    const job = entry.rec.job;
    const goalReached = () => (job.whenReady === 'none' ? reachedReady(job.state) : isTerminal(job.state));
    entry.timeoutTimer = setTimeout(() => {
      if (goalReached() || isTerminal(job.state)) return;
      this.log.warn('copy timed out: cancelling', { jobId: job.jobId, seconds });
      job.error = { name: 'timeout', message: `the copy did not complete within ${seconds} s and was cancelled` };
      void this.abort({ jobId: job.jobId }).catch((err) => this.log.error('cancel on timeout failed', { jobId: job.jobId, error: err }));
    }, seconds * 1000);
    entry.timeoutTimer.unref();
  }

  private async lookup(key: string): Promise<DomainRef> {
    try {
      return await this.conn.lookupDomain(key);
    } catch (e) {
      if (e instanceof LibvirtError && e.code === VirErrorCode.NO_DOMAIN) throw new AgentError('notFound', `no domain '${key}'`, { libvirt: libvirtData(e) });
      throw toAgentError(e, 'cannot look up the domain');
    }
  }

  private destinationOf(params: BlockCopyParams): Destination {
    if (params.destination) return params.destination;
    const d = destinationFromXml(params.destinationXml ?? '');
    if ('error' in d) throw new AgentError('destinationRejected', d.error, { reason: d.error });
    return d;
  }

  private activeFor(uuid: string, disk: string): Entry | undefined {
    for (const e of this.entries.values()) {
      if (e.rec.job.domain.uuid === uuid && e.rec.job.disk === disk && !isTerminal(e.rec.job.state)) return e;
    }
    return undefined;
  }

  private latestFor(uuid: string, disk: string): Entry | undefined {
    let best: Entry | undefined;
    for (const e of this.entries.values()) {
      if (e.rec.job.domain.uuid === uuid && e.rec.job.disk === disk && (!best || e.rec.job.createdAt >= best.rec.job.createdAt)) best = e;
    }
    return best;
  }

  /** A job by id, or the disk's active job (else its most recent one). */
  private async find(ref: JobRef): Promise<Entry> {
    if (ref.jobId) {
      const e = this.entries.get(ref.jobId);
      if (!e) throw new AgentError('noJob', `no job '${ref.jobId}'`);
      return e;
    }
    const key = ref.domain!;
    const disk = ref.disk!;
    const known = [...this.entries.values()].find((e) => e.rec.job.domain.name === key || e.rec.job.domain.uuid === key);
    const uuid = known?.rec.job.domain.uuid ?? (await this.lookup(key)).uuid;
    const e = this.activeFor(uuid, disk) ?? this.latestFor(uuid, disk);
    if (!e) throw new AgentError('noJob', `no copy job on disk ${disk} of '${key}'`);
    return e;
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
          for (const p of [disk.sourcePath, disk.mirror?.path ?? null, ...disk.backingPaths]) if (p) paths.add(resolvePath(p));
        }
      }
    }
    return paths;
  }

  private pruneEnded(): void {
    const ended = [...this.entries.values()].filter((e) => isTerminal(e.rec.job.state))
      .sort((a, b) => a.rec.job.createdAt.localeCompare(b.rec.job.createdAt));
    for (const e of ended.slice(0, Math.max(0, ended.length - this.keepEnded))) {
      this.entries.delete(e.rec.job.jobId);
      void this.journal.remove(e.rec.job.jobId);
    }
  }
}

function samePath(a: string | null | undefined, b: string | null | undefined): boolean {
  return !!a && !!b && resolvePath(a) === resolvePath(b);
}
