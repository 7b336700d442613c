// The agent's Prometheus metrics. Everything is observed from the outside: the job manager's
// job.changed / agent.connection events, one observer at RPC dispatch, the transports'
// refusals and the group switches. Per-job series (bytes, rate, state) are rebuilt from the job
// list at every scrape and kept only for running jobs and jobs that ended a short while ago,
// so the number of series stays bounded by the jobs actually running.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ERRORS } from '../errors.js';
import type { AgentConnectionParams, AnyJob, ListJobsParams, ListJobsResult } from '../generated/api.js';
import { isBlockJob } from '../job-types.js';
import { STATES, TERMINAL } from '../jobs/state-machine.js';
import { JOB_KINDS } from '../jobs/kinds/index.js';
import { BACKUP_NEXT } from '../jobs/kinds/backup/record.js';
import { REFUSAL_KINDS, type RefusalKind, type RefusalObserver, type RpcObserver } from './observer.js';

type Listener = (...args: any[]) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

/** What the metrics need of the job manager (a structural type: no import of the manager). */
export interface JobSource {
  on(event: 'job.changed' | 'agent.connection', fn: Listener): unknown;
  off(event: 'job.changed' | 'agent.connection', fn: Listener): unknown;
  listJobs(params: ListJobsParams): Promise<ListJobsResult>;
  /** The connection in use (replaced after a reconnect); its versions label build_info. */
  readonly connection?: VersionSource;
}

export interface MetricsOptions {
  /** Seconds an ended job keeps its per-job series. */
  endedJobSeconds: number;
  /** The agent's version (package.json), for blockcopy_agent_build_info. */
  version: string;
  /** Clock (ms since the epoch), for tests. */
  now?: () => number;
}

/** Error names a label may take; anything else is counted as 'other' (labels stay bounded). */
const ERROR_NAMES = new Set<string>([...Object.keys(ERRORS), 'invalidParams', 'invalidRequest', 'internal']);
const errorLabel = (name: string | undefined) => (name && ERROR_NAMES.has(name) ? name : 'other');
/** Every kind with its states: the jobs-by-state series exist (at 0) for each pair from the start. */
const KIND_STATES: Array<[string, readonly string[]]> = [
  ...JOB_KINDS.map((k) => [k, STATES] as [string, readonly string[]]),
  ['backup', Object.keys(BACKUP_NEXT)],
];
/** Terminal jobs remembered so that a repeated notification is not counted twice. */
const ENDED_MEMORY = 4096;

/**
 * Per-job labels. Not `job` nor `instance`: Prometheus sets those on every series of a target
 * (an exposed `job` would become `exported_job`). `group_id` only on a job of a group: absent
 * and empty are the same to PromQL, so `group_id=""` selects the jobs of their own.
 */
const PER_JOB = ['domain', 'disk', 'job_id', 'kind', 'group_id'] as const;

/** The libvirt connection's versions, as the build_info gauge needs them. */
export interface VersionSource {
  versions(): Promise<{ libvirt: string; hypervisor: string }>;
}

export class AgentMetrics implements RpcObserver, RefusalObserver {
  readonly registry = new Registry();
  private readonly now: () => number;
  private readonly tracked = new Map<string, { state: AnyJob['state']; since: number }>();
  private readonly ended = new Set<string>();
  private readonly detach: Array<() => void> = [];
  private jobs: JobSource | null = null;
  private versions = { libvirt: '', qemu: '' };
  private libvirtUp = true;

  private readonly r = this.registry;
  /** A gauge with one series per job (PER_JOB labels). */
  private perJobGauge(name: string, help: string): Gauge {
    return new Gauge({ name, help, labelNames: PER_JOB, registers: [this.r] });
  }
  private readonly buildInfo = new Gauge({
    name: 'blockcopy_agent_build_info',
    help: "Always 1: the agent's version and the libvirt and QEMU versions of its connection (empty until read).",
    labelNames: ['version', 'libvirt', 'qemu'],
    registers: [this.r],
  });
  private readonly jobsByState = new Gauge({
    name: 'blockcopy_jobs',
    help: 'Jobs the agent knows, by kind and state (ended jobs until they are pruned from the job list).',
    labelNames: ['kind', 'state'],
    registers: [this.r],
  });
  private readonly jobState = new Gauge({
    name: 'blockcopy_job_state',
    help: 'Current state of a running or recently ended job (always 1; the state is the label).',
    labelNames: [...PER_JOB, 'state'],
    registers: [this.r],
  });
  private readonly copied = this.perJobGauge('blockcopy_job_bytes_copied', 'Bytes copied so far (libvirt cur).');
  private readonly remaining = this.perJobGauge(
    'blockcopy_job_bytes_remaining',
    'Bytes still to copy (libvirt end - cur); grows again in the ready phase while the guest writes.',
  );
  private readonly total = this.perJobGauge('blockcopy_job_size_bytes', 'Bytes of the copy (libvirt end; 0 while unknown).');
  private readonly rate = this.perJobGauge(
    'blockcopy_job_copy_rate_bytes_per_second',
    'Copy rate measured by the agent over its recent samples (absent until two samples exist).',
  );
  private readonly dirtyRate = this.perJobGauge(
    'blockcopy_job_dirty_rate_bytes_per_second',
    "Estimate of the guest's writes the job must copy again (convergence.dirtyRateBytesPerSecond; absent while unknown).",
  );
  private readonly convergeEta = this.perJobGauge(
    'blockcopy_job_convergence_eta_seconds',
    'Seconds until the job is ready at the rate its bytes left shrink (convergence.etaSeconds; absent unless converging or ready).',
  );
  private readonly converging = this.perJobGauge(
    'blockcopy_job_converging',
    '1 while the job converges or is ready, 0 while notConverging or stalled (absent while unknown); see docs/jobs.md.',
  );
  private readonly timeToReady = new Histogram({
    name: 'blockcopy_job_time_to_ready_seconds',
    help: 'From the start of a copy this agent saw start to its ready phase.',
    buckets: [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600],
    registers: [this.r],
  });
  private readonly switchDuration = new Histogram({
    name: 'blockcopy_job_switch_duration_seconds',
    help: 'From a pivot (or finish) request taking effect to the verified end (pivoting → pivoted, finishing → finished).',
    labelNames: ['operation'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.r],
  });
  private readonly groupPause = new Histogram({
    name: 'blockcopy_group_pause_seconds',
    help: 'How long a group switch kept the guest paused.',
    labelNames: ['operation'],
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.r],
  });
  private readonly failures = new Counter({
    name: 'blockcopy_job_failures_total',
    help: 'Jobs that ended failed, by the error name.',
    labelNames: ['reason'],
    registers: [this.r],
  });
  private readonly ends = new Counter({
    name: 'blockcopy_job_ends_total',
    help: 'Jobs that reached a terminal state while this agent ran, by kind and state.',
    labelNames: ['kind', 'state'],
    registers: [this.r],
  });
  private readonly connected = new Gauge({
    name: 'blockcopy_libvirt_connected',
    help: '1 while the agent is connected to libvirtd, 0 while it reconnects.',
    registers: [this.r],
  });
  private readonly losses = new Counter({
    name: 'blockcopy_libvirt_connection_losses_total',
    help: 'Times the libvirt connection was lost.',
    registers: [this.r],
  });
  private readonly calls = new Counter({
    name: 'blockcopy_rpc_calls_total',
    help: 'JSON-RPC method calls, by method.',
    labelNames: ['method'],
    registers: [this.r],
  });
  private readonly errors = new Counter({
    name: 'blockcopy_rpc_errors_total',
    help: 'JSON-RPC method calls answered with an error, by method and error name.',
    labelNames: ['method', 'error'],
    registers: [this.r],
  });
  private readonly callSeconds = new Histogram({
    name: 'blockcopy_rpc_duration_seconds',
    help: 'Time to answer a method call (wait and blockCopy with a wait include the wait).',
    labelNames: ['method'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300],
    registers: [this.r],
  });
  private readonly refusals = new Counter({
    name: 'blockcopy_refusals_total',
    help: 'Connections and requests refused, by kind (see docs/metrics.md).',
    labelNames: ['kind'],
    registers: [this.r],
  });

  private get convergenceGauges() {
    return [this.dirtyRate, this.convergeEta, this.converging];
  }

  constructor(private readonly opts: MetricsOptions) {
    this.now = opts.now ?? Date.now;
    collectDefaultMetrics({ register: this.registry });
    // Gauges named like counters: promtool's lint (and Prometheus' naming rules) reject them.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
      this.registry.removeSingleMetric(name);
    // Series that exist from the start read 0 instead of being absent.
    for (const kind of REFUSAL_KINDS) this.refusals.inc({ kind }, 0);
    for (const [kind, states] of KIND_STATES) for (const state of states) this.jobsByState.set({ kind, state }, 0);
    this.buildInfo.set({ version: opts.version, ...this.versions }, 1);
  }

  /** Follows a job manager from now on (attach before it starts, to see its reconcile too). */
  observeJobs(jobs: JobSource): void {
    this.jobs = jobs;
    this.connected.set(1);
    const onJob = (job: AnyJob) => this.onJob(job);
    const onConnection = (p: AgentConnectionParams) => {
      if (p.state === 'lost') this.losses.inc();
      this.libvirtUp = p.state !== 'lost';
      this.connected.set(this.libvirtUp ? 1 : 0);
    };
    jobs.on('job.changed', onJob);
    jobs.on('agent.connection', onConnection);
    this.detach.push(() => {
      jobs.off('job.changed', onJob);
      jobs.off('agent.connection', onConnection);
    });
  }

  /** A group switch paused the guest this long. */
  groupSwitched(operation: 'pivot' | 'finish', pausedMs: number): void {
    this.groupPause.observe({ operation }, pausedMs / 1000);
  }

  call(method: string, seconds: number, error?: string): void {
    this.calls.inc({ method });
    this.callSeconds.observe({ method }, seconds);
    if (error === undefined) return;
    this.errors.inc({ method, error: errorLabel(error) });
    if (error === 'unauthorized' || error === 'destinationRejected') this.refused(error);
  }

  refused(kind: RefusalKind): void {
    this.refusals.inc({ kind });
  }

  /** The exposition text, with the per-job series rebuilt from the current job list. */
  async render(): Promise<string> {
    if (this.jobs) this.refreshJobs((await this.jobs.listJobs({})).jobs);
    await this.refreshVersions();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    for (const d of this.detach.splice(0)) d();
  }

  private onJob(job: AnyJob): void {
    const now = this.now();
    const before = this.tracked.get(job.jobId);
    if (before?.state === job.state) return;
    if ((TERMINAL as ReadonlySet<string>).has(job.state)) {
      this.tracked.delete(job.jobId);
      if (this.ended.has(job.jobId)) return;
      this.remember(job.jobId);
      this.ends.inc({ kind: job.kind, state: job.state });
      if (job.state === 'failed') this.failures.inc({ reason: errorLabel(job.error?.name) });
    } else {
      this.tracked.set(job.jobId, { state: job.state, since: now });
    }
    // Durations only from starts this agent saw itself (a journaled job's start may be hours old).
    if (!isBlockJob(job)) return;
    if (job.state === 'ready' && before?.state === 'copying' && job.readyAt && job.owner === 'agent') {
      this.timeToReady.observe(Math.max(0, Date.parse(job.readyAt) - Date.parse(job.createdAt)) / 1000);
    }
    if ((job.state === 'pivoted' && before?.state === 'pivoting') || (job.state === 'finished' && before?.state === 'finishing')) {
      this.switchDuration.observe({ operation: job.state === 'pivoted' ? 'pivot' : 'finish' }, (now - before.since) / 1000);
    }
  }

  /** Read at every scrape: a reconnect may reach an upgraded libvirtd (the connection caches them). */
  private async refreshVersions(): Promise<void> {
    const conn = this.jobs?.connection;
    // Not while it reconnects: a call on the lost connection would only wait for its timeout.
    if (!conn || !this.libvirtUp) return;
    const v = await conn.versions().catch(() => null);
    // A failed read (libvirtd away) keeps the last versions known.
    if (!v || (v.libvirt === this.versions.libvirt && v.hypervisor === this.versions.qemu)) return;
    this.versions = { libvirt: v.libvirt, qemu: v.hypervisor };
    this.buildInfo.reset();
    this.buildInfo.set({ version: this.opts.version, ...this.versions }, 1);
  }

  private remember(jobId: string): void {
    this.ended.add(jobId);
    if (this.ended.size > ENDED_MEMORY) this.ended.delete(this.ended.values().next().value!);
  }

  private refreshJobs(jobs: AnyJob[]): void {
    const now = this.now();
    const counts = new Map<string, number>(KIND_STATES.flatMap(([k, states]) => states.map((s) => [`${k}/${s}`, 0] as const)));
    for (const m of [this.jobState, this.copied, this.remaining, this.total, this.rate, ...this.convergenceGauges]) m.reset();
    const known = new Set<string>();
    for (const job of jobs) {
      known.add(job.jobId);
      const key = `${job.kind}/${job.state}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      const endedAt = job.endedAt ? Date.parse(job.endedAt) : null;
      if (endedAt !== null && now - endedAt > this.opts.endedJobSeconds * 1000) continue;
      // A backup's series carry its disks as one label value (vda,vdb): libvirt counts its bytes for all of them.
      const block = isBlockJob(job);
      const labels = {
        domain: job.domain.name,
        disk: block ? job.disk : job.disks.map((d) => d.disk).join(','),
        job_id: job.jobId,
        kind: job.kind,
        ...(block && job.groupId ? { group_id: job.groupId } : {}),
      };
      const cur = Number(block ? job.progress.cur : job.progress.processed);
      const end = Number(block ? job.progress.end : job.progress.total);
      this.jobState.set({ ...labels, state: job.state }, 1);
      this.copied.set(labels, cur);
      this.total.set(labels, end);
      this.remaining.set(labels, Math.max(0, end - cur));
      if (!block) continue;
      if (job.progress.rate !== null) this.rate.set(labels, job.progress.rate);
      const c = job.convergence;
      if (c?.dirtyRateBytesPerSecond != null) this.dirtyRate.set(labels, c.dirtyRateBytesPerSecond);
      if (c?.etaSeconds != null) this.convergeEta.set(labels, c.etaSeconds);
      if (c && c.state !== 'unknown') this.converging.set(labels, c.state === 'converging' || c.state === 'ready' ? 1 : 0);
    }
    for (const [key, n] of counts) {
      const [kind, state] = key.split('/') as [string, string];
      this.jobsByState.set({ kind, state }, n);
    }
    // A job that left the list without a terminal notification is not followed any more.
    for (const id of this.tracked.keys()) if (!known.has(id)) this.tracked.delete(id);
  }
}
