// Verification against the live XML: how a job ended (its kind concludes), whether what libvirt
// runs on the disk is the job's own (its kind's identity), and what the persistent definition
// says after a pivot.
import { AgentError } from '../errors.js';
import { LibvirtError, VirErrorCode } from '../libvirt/index.js';
import type { Job } from '../generated/api.js';
import type { Decision } from './kinds/decision.js';
import { findDisk, type DiskInfo } from '../libvirt/disk-xml.js';
import { diskKey, publicJob, samePath, type JobEntry } from './job.js';
import { kindOf, kindOfMirror } from './kinds/index.js';
import { toAgentError } from './libvirt-errors.js';
import { isTerminal, REQUEST_OF } from './state-machine.js';
import type { JobContext } from './context.js';

export class Verify {
  constructor(private readonly ctx: JobContext) {}

  async liveDisk(entry: JobEntry): Promise<DiskInfo | undefined> {
    const xml = await this.ctx.conn.getXml(entry.rec.job.domain.uuid);
    return findDisk(xml, entry.rec.job.disk);
  }

  /**
   * Reads the disk until libvirt has dropped the <mirror> (it updates the XML around the end
   * event), for up to 5 s, while an end is under way: an end event arrived or the mirror is in
   * its pivot/abort phase. A mirror simply still copying is returned at once.
   */
  async settledDisk(entry: JobEntry): Promise<DiskInfo | undefined> {
    let disk: DiskInfo | undefined;
    for (let i = 0; i < 25; i++) {
      disk = await this.liveDisk(entry);
      if (!disk?.mirror) return disk;
      const ending = entry.sawEnd || disk.mirror.ready === 'pivot' || disk.mirror.ready === 'abort';
      if (!ending) return disk;
      await this.ctx.time.sleep(200);
    }
    return disk;
  }

  /** Concludes how the copy ended from the live XML (one verification at a time per job). */
  /** `jobGone`: the caller found no block job (so a <mirror> still shown may be one libvirt dropped). */
  settle(entry: JobEntry, why: string, opts: { jobGone?: boolean } = {}): Promise<void> {
    if (isTerminal(entry.rec.job.state)) return Promise.resolve();
    if (entry.settling) return entry.settling;
    entry.settling = (async () => {
      let disk: DiskInfo | undefined;
      try {
        disk = await this.settledDisk(entry);
      } catch (e) {
        if (e instanceof LibvirtError && e.code === VirErrorCode.NO_DOMAIN) {
          this.ctx.recorder.fail(entry, 'invalidState', 'the domain is gone', `${why}; ${e.message}`);
        } else {
          this.ctx.log.warn('cannot read the live XML to conclude a job; will retry', { jobId: entry.rec.job.jobId, error: e });
        }
        return;
      }
      if (isTerminal(entry.rec.job.state)) return;
      const kind = kindOf(entry.rec.job);
      const other = disk ? kind.mismatch(entry.rec.job, disk) : null;
      if (disk && other) {
        await this.supersede(entry, disk, other, why);
        return;
      }
      let mirrorWithoutJobMs: number | undefined;
      if (opts.jobGone && disk?.mirror) {
        entry.mirrorWithoutJobSince ??= this.ctx.realNow();
        mirrorWithoutJobMs = this.ctx.realNow() - entry.mirrorWithoutJobSince;
      }
      const decision = kind.conclude(
        entry.rec.job,
        { disk, sawEnd: entry.sawEnd, why, ...(mirrorWithoutJobMs !== undefined ? { mirrorWithoutJobMs } : {}) },
        this.ctx.staleMirrorMs,
      );
      // After a pivot, what the next cold boot will use (the persistent definition) is part of the answer.
      const persistent = decision.state === 'pivoted' ? await this.persistentView(entry) : undefined;
      if (isTerminal(entry.rec.job.state)) return;
      this.apply(entry, decision, persistent ? { persistent } : {});
    })().finally(() => {
      entry.settling = null;
    });
    return entry.settling;
  }

  apply(entry: JobEntry, d: Decision, patch: Partial<Job> = {}): void {
    if (d.state === null) return;
    if (d.state === 'failed') {
      this.ctx.recorder.fail(entry, d.error.name, d.error.message, d.evidence);
      return;
    }
    this.ctx.recorder.transition(entry, d.state, { ...patch, outcome: d.outcome, evidence: d.evidence });
  }

  async persistentView(entry: JobEntry): Promise<Job['persistent']> {
    const job = entry.rec.job;
    try {
      const dom = await this.ctx.conn.lookupDomain(job.domain.uuid);
      if (!dom.persistent) return { defined: false, source: null, matchesLive: false };
      const disk = findDisk(await this.ctx.conn.getXml(job.domain.uuid, { inactive: true }), job.disk);
      const source = disk?.sourcePath ?? null;
      const matchesLive = samePath(source, job.destination.path);
      if (!matchesLive) this.ctx.log.warn('persistent definition still points at the old disk', { jobId: job.jobId, source });
      return { defined: true, source, matchesLive };
    } catch (err) {
      this.ctx.log.warn('cannot read the persistent definition after a pivot', { jobId: job.jobId, error: err });
      return undefined;
    }
  }

  /**
   * The job's copy was replaced by another on the same disk (an operator aborted it and started
   * `virsh blockcopy` elsewhere, while the agent was down or not): the job ends with what the live
   * XML shows (inferred, with the evidence) and the other copy is adopted as a new job. Nothing
   * is ever sent to libvirt for the old job from here on.
   */
  async supersede(entry: JobEntry, disk: DiskInfo, why: string, when: string): Promise<JobEntry | undefined> {
    const job = entry.rec.job;
    if (isTerminal(job.state)) return undefined;
    const evidence = `found ${when}: ${why}; live XML shows source ${disk.sourcePath ?? 'none'} and a <mirror ready='${disk.mirror?.ready ?? 'no'}'> to ${disk.mirror?.path ?? '?'}`;
    const onDest = samePath(disk.sourcePath, job.destination.path);
    const onSource = samePath(disk.sourcePath, job.source.path);
    this.ctx.log.warn("the copy on a job's disk is not the job's own: ending the job and adopting the other copy", {
      jobId: job.jobId,
      why,
    });
    const s = job.state;
    if (onDest && (s === 'copying' || s === 'ready' || s === 'pivoting')) {
      this.ctx.recorder.transition(entry, 'pivoted', { outcome: 'inferred', evidence });
    } else if (onSource && (s === 'copying' || s === 'ready' || s === 'cancelling')) {
      this.ctx.recorder.transition(entry, 'cancelled', { outcome: 'inferred', evidence });
    } else {
      const message =
        s === 'pivoting'
          ? 'the pivot did not happen: another copy replaced this one'
          : `this job's copy was replaced by another${REQUEST_OF[s] ? ` before its ${REQUEST_OF[s]} could be verified` : ''} (${why})`;
      this.ctx.recorder.transition(entry, 'failed', {
        error: { name: s === 'pivoting' ? 'pivotFailed' : 'invalidState', message },
        evidence,
        outcome: 'inferred',
      });
    }
    // Another job with a <mirror> is adopted here; one without (a pull, a commit below the top) by the next scan.
    const otherKind = disk.mirror ? kindOfMirror(disk.mirror.job) : null;
    if (!otherKind || this.ctx.registry.activeFor(job.domain.uuid, job.disk)) return undefined;
    return this.ctx.reconciler.adopt(job.domain, disk, otherKind);
  }

  /** The disk's block job, read only for kinds that show no <mirror> (their identity needs its type). */
  private async blockJobOf(entry: JobEntry, what: string) {
    const job = entry.rec.job;
    if (kindOf(job).mirrorJob !== null) return undefined;
    return this.ctx.conn.getBlockJobInfo(job.domain.uuid, job.disk).catch((e) => {
      throw toAgentError(e, `cannot read the block job before ${what}`);
    });
  }

  /**
   * Right before a side effect, under the disk's lock: the copy libvirt runs on the disk must be
   * this job's, else the job is superseded and the call refused with nothing sent. (libvirt's
   * calls name a disk, not a copy: this read-compare-send is as close as its API allows.)
   */
  async assertOwnJob(entry: JobEntry, what: string): Promise<void> {
    const job = entry.rec.job;
    const disk = await this.liveDisk(entry).catch((e) => {
      throw toAgentError(e, `cannot read the domain before ${what}`);
    });
    // No block job at all: libvirt answers "no block job" and the job is concluded from the XML.
    const other = disk ? kindOf(job).mismatch(job, disk, await this.blockJobOf(entry, what)) : null;
    if (!disk || !other) return;
    const adopted = await this.supersede(entry, disk, other, `before ${what}`);
    throw new AgentError(
      'invalidState',
      `${what} refused: job ${job.jobId} no longer owns the copy of disk ${job.disk}: ${other}; nothing was sent to libvirt${adopted ? ` (that copy is now job ${adopted.rec.job.jobId})` : ''}`,
      { job: publicJob(entry), ...(job.evidence ? { evidence: job.evidence } : {}) },
    );
  }

  /** Whether what libvirt shows on the job's disk is the job's own; supersedes the job when not. */
  async ownsJob(entry: JobEntry, when: string): Promise<boolean> {
    const disk = await this.liveDisk(entry);
    const other = disk ? kindOf(entry.rec.job).mismatch(entry.rec.job, disk) : null;
    if (!disk || !other) return true;
    const job = entry.rec.job;
    await this.ctx.locks.run(diskKey(job.domain.uuid, job.disk), () => this.supersede(entry, disk, other, when));
    return false;
  }
}
