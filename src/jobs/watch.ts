// What libvirt tells (BLOCK_JOB_2 and lifecycle events) and the safety-net poll: progress,
// ready, ends, domains that go away, and copies started outside the agent.
import type { DomainEvent } from '../libvirt/index.js';
import { LibvirtError, VirErrorCode } from '../libvirt/index.js';
import { diagnoseCopyFailure, domainGoneReason } from './diagnose.js';
import { diskKey, mirrorMismatch, type Tracked } from './job.js';
import { toByteCount } from './numbers.js';
import { isTerminal, REQUEST_OF } from './state-machine.js';
import type { JobContext } from './context.js';

/** At most one progress notification per job per this many ms (state changes are never held back). */
const PROGRESS_EMIT_MS = 1000;

export class Watch {
  private ticking = false;
  private lastScan = 0;

  constructor(private readonly ctx: JobContext) {}

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
    if (e.type !== 'copy') return;
    const entry = this.ctx.registry.activeFor(e.domain.uuid, e.disk);
    if (!entry) {
      if (e.status === 'ready') {
        // (A copy announces nothing when it starts: the poll and lookups adopt it before this.)
        void this.ctx.locks.run(diskKey(e.domain.uuid, e.disk), () =>
          this.ctx.reconciler.adoptIfMirrored({ name: e.domain.name, uuid: e.domain.uuid, id: 0, active: true, persistent: false }, e.disk))
          .catch((err) => this.ctx.log.warn('cannot adopt a copy announced by an event', { domain: e.domain.name, disk: e.disk, error: err }));
      }
      return;
    }
    switch (e.status) {
      case 'ready':
        if (entry.rec.job.state === 'copying') {
          void this.refreshProgress(entry).then(() => this.ctx.verify.ownsMirror(entry, 'at a READY event')).then((own) => {
            if (own && entry.rec.job.state === 'copying') this.becomeReady(entry, 'BLOCK_JOB_2 ready event');
          }, (err) => this.ctx.log.warn('cannot check a READY event against the live XML; the poll will', { jobId: entry.rec.job.jobId, error: err }));
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
        void this.ctx.verify.settle(entry, `BLOCK_JOB_2 ${e.status} event${REQUEST_OF[entry.rec.job.state] ? '' : ' without a request from this agent'}`);
        break;
      case 'failed': {
        const job = entry.rec.job;
        const name = job.state === 'pivoting' ? 'pivotFailed' : 'libvirtError';
        void diagnoseCopyFailure(job.destination, job.state, job.source).then((d) => this.ctx.recorder.fail(entry, name, d.message, d.evidence));
        break;
      }
    }
  }

  becomeReady(entry: Tracked, why: string): void {
    this.ctx.log.info('job ready', { jobId: entry.rec.job.jobId, why });
    this.ctx.recorder.transition(entry, 'ready', { readyAt: this.ctx.iso() });
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
      }
    } finally {
      this.ticking = false;
    }
  }

  /** One progress sample without side effects on the state (used right before announcing ready). */
  async refreshProgress(entry: Tracked): Promise<void> {
    const job = entry.rec.job;
    const info = await this.ctx.conn.getBlockJobInfo(job.domain.uuid, job.disk).catch(() => null);
    if (!info || info.type !== 'copy') return;
    entry.sampler.add(this.ctx.clock(), Number(info.cur));
    job.progress.cur = toByteCount(info.cur);
    job.progress.end = toByteCount(info.end);
  }

  async sample(entry: Tracked): Promise<void> {
    if (entry.starting) return;
    const job = entry.rec.job;
    let info;
    try {
      info = await this.ctx.conn.getBlockJobInfo(job.domain.uuid, job.disk);
    } catch (e) {
      if (e instanceof LibvirtError && (e.code === VirErrorCode.NO_DOMAIN || (e.code === VirErrorCode.OPERATION_INVALID && /not running/i.test(e.message)))) {
        // The lifecycle event (stopped/crashed) says why; give it one poll round to arrive.
        const real = this.ctx.realNow();
        entry.goneSince ??= real;
        if (real - entry.goneSince >= this.ctx.sampleMs) {
          this.ctx.recorder.fail(entry, 'invalidState', 'the domain is gone or no longer running', `no lifecycle event received; the poll got: ${e.message}`);
        }
      }
      return;
    }
    delete entry.goneSince;
    if (!info || info.type !== 'copy') {
      // Give the event a moment: libvirt may still be delivering the end of a request.
      const grace = Math.max(5000, 2 * this.ctx.pollMs);
      if (!REQUEST_OF[job.state] || this.ctx.realNow() - entry.requestedAt > grace) {
        // Not awaited: a verification may take seconds, and the other jobs' samples must not wait.
        void this.ctx.verify.settle(entry, `the block job disappeared without an event (seen by the ${this.ctx.pollMs} ms poll)`, { jobGone: true });
      }
      return;
    }
    delete entry.mirrorWithoutJobSince;
    const now = this.ctx.clock();
    entry.sampler.add(now, Number(info.cur));
    const moved = toByteCount(info.cur) !== job.progress.cur || toByteCount(info.end) !== job.progress.end;
    job.progress.cur = toByteCount(info.cur);
    job.progress.end = toByteCount(info.end);
    job.bandwidth = toByteCount(info.bandwidth);
    // Ready comes from the event; the XML cross-check only catches a missed one. cur == end
    // alone proves nothing (0/1 means "not known yet"), so it only makes the check earlier.
    const real = this.ctx.realNow();
    if ((job.state === 'copying' && info.end > 1n && info.cur === info.end) || real - entry.lastXmlCheck >= this.ctx.pollMs) {
      entry.lastXmlCheck = real;
      const disk = await this.ctx.verify.liveDisk(entry);
      // The block job libvirt reports may be another copy of the same disk (see supersede).
      const other = disk?.mirror ? mirrorMismatch(job, disk.mirror) : null;
      if (disk && other) {
        await this.ctx.locks.run(diskKey(job.domain.uuid, job.disk), async () => {
          if (!isTerminal(job.state) && !entry.starting) await this.ctx.verify.supersede(entry, disk, other, `by the ${this.ctx.pollMs} ms poll`);
        });
        return;
      }
      if (disk?.mirror?.ready === 'yes' && entry.rec.job.state === 'copying') {
        this.ctx.log.warn('ready seen in the live XML before any event', { jobId: job.jobId });
        this.becomeReady(entry, "live XML shows <mirror ready='yes'>");
        return;
      }
    }
    if (moved && real - entry.lastEmit >= PROGRESS_EMIT_MS) this.ctx.recorder.emitChanged(entry);
  }
}
