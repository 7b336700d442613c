// What libvirt tells (BLOCK_JOB_2 and lifecycle events) and the safety-net poll: progress,
// ready, ends, domains that go away, and copies started outside the agent.
import type { DomainEvent } from '../libvirt/index.js';
import { diagnoseFailure, domainGoneReason } from './diagnose.js';
import { diskKey, type JobEntry } from './job.js';
import { toByteCount } from './numbers.js';
import { Observer } from './observe.js';
import { kindOf, kindOfBlockJob } from './kinds/index.js';
import { isTerminal, REQUEST_OF } from './state-machine.js';
import type { JobContext } from './context.js';

export class Watch {
  private ticking = false;
  private lastScan = 0;
  private readonly observer: Observer;

  constructor(private readonly ctx: JobContext) {
    this.observer = new Observer(ctx);
  }

  onDomainEvent(e: DomainEvent): void {
    if (this.ctx.stopped) return;
    if (this.ctx.buffered) {
      this.ctx.buffered.push(e);
      return;
    }
    if (e.kind === 'lifecycle') {
      if (e.event === 'stopped' || e.event === 'crashed') {
        for (const entry of this.ctx.entries.values()) {
          if (entry.rec.job.domain.uuid === e.domain.uuid && !isTerminal(entry.rec.job.state)) {
            const d = domainGoneReason(e.event, e.detail);
            this.ctx.recorder.fail(entry, 'invalidState', d.message, d.evidence);
          }
        }
      }
      return;
    }
    // A domain job ended (a backup's end comes this way, not as a block job event).
    if (e.kind === 'jobCompleted') return;
    // Block jobs of kinds the agent does not run (a backup) are not its business.
    if (!kindOfBlockJob(e.type)) return;
    const entry = this.ctx.registry.activeFor(e.domain.uuid, e.disk);
    if (!entry) {
      if (e.status === 'ready') {
        // (A block job announces nothing when it starts: the poll and lookups adopt it before this.)
        void this.ctx.locks
          .run(diskKey(e.domain.uuid, e.disk), () =>
            this.ctx.reconciler.adoptIfRunning(
              { name: e.domain.name, uuid: e.domain.uuid, id: 0, active: true, persistent: false },
              e.disk,
            ),
          )
          .catch((err) =>
            this.ctx.log.warn('cannot adopt a copy announced by an event', { domain: e.domain.name, disk: e.disk, error: err }),
          );
      }
      return;
    }
    switch (e.status) {
      case 'ready':
        if (entry.rec.job.state === 'copying') {
          void this.refreshProgress(entry)
            .then(() => this.ctx.verify.ownsJob(entry, 'at a READY event'))
            .then(
              (own) => {
                if (own && entry.rec.job.state === 'copying') this.becomeReady(entry, 'BLOCK_JOB_2 ready event');
              },
              (err) =>
                this.ctx.log.warn('cannot check a READY event against the live XML; the poll will', {
                  jobId: entry.rec.job.jobId,
                  error: err,
                }),
            );
        }
        break;
      case 'completed':
      case 'canceled':
        // Events name a disk, not a job: one that comes while this copy is being started ended
        // the disk's previous job (concluded from the XML before its event arrived). Read now,
        // the XML would show no <mirror> yet and this copy would be taken for ended.
        if (entry.starting) {
          this.ctx.log.info('ignored a late end event of the previous job on this disk', { jobId: entry.rec.job.jobId, status: e.status });
          break;
        }
        entry.sawEnd = true;
        void this.ctx.verify.settle(
          entry,
          `BLOCK_JOB_2 ${e.status} event${REQUEST_OF[entry.rec.job.state] ? '' : ' without a request from this agent'}`,
        );
        break;
      case 'failed': {
        const job = entry.rec.job;
        const name = job.state === 'pivoting' ? 'pivotFailed' : 'libvirtError';
        void diagnoseFailure(job.destination, job.state, job.source, kindOf(job).noun).then((d) =>
          this.ctx.recorder.fail(entry, name, d.message, d.evidence),
        );
        break;
      }
    }
  }

  /**
   * The one way a copy becomes ready, from an event, the poll or a reconcile: readyAt keeps the
   * first time (a request recovery found lost returns the job to ready), whenReady follows.
   */
  becomeReady(entry: JobEntry, why: string, evidence?: string): void {
    const job = entry.rec.job;
    this.ctx.log.info('job ready', { jobId: job.jobId, why });
    this.ctx.recorder.transition(entry, 'ready', { readyAt: job.readyAt ?? this.ctx.iso(), ...(evidence ? { evidence } : {}) });
    // A no-op while recovering: the manager's serve() starts it for every ready job once serving.
    this.ctx.completion.completeWhenReady(entry);
  }

  async tick(): Promise<void> {
    if (this.ticking || this.ctx.stopped) return;
    this.ticking = true;
    try {
      for (const entry of [...this.ctx.entries.values()]) {
        if (isTerminal(entry.rec.job.state)) continue;
        await this.sample(entry).catch((err) => this.ctx.log.debug('poll failed', { jobId: entry.rec.job.jobId, error: err }));
      }
      if (this.ctx.realNow() - this.lastScan >= this.ctx.pollMs) {
        this.lastScan = this.ctx.realNow();
        await this.ctx.reconciler.adoptionScan();
        // A promised cleanup that failed (libvirtd did not tell every domain's storage) is tried again.
        this.ctx.cleanup.resumeAll();
      }
    } finally {
      this.ticking = false;
    }
  }

  /** One progress sample without side effects on the state (used right before announcing ready). */
  async refreshProgress(entry: JobEntry): Promise<void> {
    const job = entry.rec.job;
    // Progress only (no decision): an unread sample leaves the last one.
    const info = await this.ctx.conn.getBlockJobInfo(job.domain.uuid, job.disk).catch(() => null);
    if (!info || info.type !== kindOf(job).blockJobType) return;
    entry.sampler.add(this.ctx.clock(), Number(info.cur));
    entry.convergence.add(this.ctx.clock(), Number(info.cur), Number(info.end), Number(info.bandwidth));
    job.progress.cur = toByteCount(info.cur);
    job.progress.end = toByteCount(info.end);
  }

  /** One poll of a job: the same observation recovery makes, with the poll's policy (observe.ts). */
  sample(entry: JobEntry): Promise<void> {
    return this.observer.observe(entry, 'poll');
  }
}
