// One observation of a job against what libvirt shows, shared by the live poll and recovery
// (start-up, reconnect), so both decide a state from the same code. Where the moments must
// differ, the difference is a named entry of POLICY, not a second copy.
import { VirErrorCode, type BlockJobInfo } from '../libvirt/index.js';
import type { JobState } from '../generated/api.js';
import type { DiskInfo } from '../libvirt/disk-xml.js';
import { diskKey, type JobEntry } from './job.js';
import { isStartIntent } from './journal.js';
import { canTransition, kindOf } from './kinds/index.js';
import { isDomainGone } from './libvirt-errors.js';
import { toByteCount } from './numbers.js';
import { isTerminal, REQUEST_OF } from './state-machine.js';
import type { JobContext } from './context.js';

/** When a job is observed: by the safety-net poll, or by the reconcile at start-up or after a reconnect. */
export type Moment = 'poll' | 'start-up' | 'reconnect';
export type Recovery = Exclude<Moment, 'poll'>;

interface Policy {
  /** Jobs whose start is in flight are left to the start (libvirt shows nothing of them yet). */
  skipStarting: boolean;
  /**
   * A domain found gone or stopped: the poll gives the lifecycle event (which says why) one
   * sample round to arrive; recovery fails the job at once, as no event will come for what
   * happened while the agent was away.
   */
  goneGrace: boolean;
  /** No block job and a journaled blockCopy intent: tell "never started" from "ended". The intent
   *  outlives the call only when libvirt's answer never came: the agent stopped, the connection
   *  dropped, or the call timed out (then the poll, once libvirtd answers, finds it too). */
  neverStarted: boolean;
  /** No block job while a request of this agent is under way: wait for its end event a while
   *  (poll); recovery concludes at once, since missed events are never replayed. */
  requestGrace: boolean;
  /** Wait for the verification: recovery serves only once every job is decided; the poll must
   *  not hold the other jobs' samples behind a verification that may take seconds. */
  awaitSettle: boolean;
  /** Read the live XML every time (recovery), or every poll interval and when cur reaches end (poll). */
  xmlEveryTime: boolean;
  /**
   * Supersede under the disk's lock (the poll runs beside requests). Recovery runs while
   * mutating calls are refused, and must not wait on a request stuck on a dropped connection.
   */
  lockSupersede: boolean;
  /**
   * Which differences from libvirt's view become transitions. Recovery: all, since a request
   * journaled before the stop or the drop either reached libvirt (which shows it) or did not.
   * Poll: only copying → ready (a missed READY event); the agent's own requests change the state
   * before they are sent, so the XML lags them, and an outside request's end is concluded by
   * its event or by verify.settle when the block job goes.
   */
  follow: 'all' | 'ready';
  /**
   * Recovery resumes what was under way: an abort libvirt does not show is sent again, the
   * grace of requests under way restarts now, the journaled deadline is armed again. (Live,
   * the request set requestedAt and the deadline's timer runs.)
   */
  resume: boolean;
  /** Notify progress (throttled); recovery's transitions notify, and progress alone waits for the poll. */
  emitProgress: boolean;
}

const RECOVERY: Policy = {
  skipStarting: false,
  goneGrace: false,
  neverStarted: true,
  requestGrace: false,
  awaitSettle: true,
  xmlEveryTime: true,
  lockSupersede: false,
  follow: 'all',
  resume: true,
  emitProgress: false,
};

export const POLICY: Readonly<Record<Moment, Policy>> = {
  poll: {
    skipStarting: true,
    goneGrace: true,
    neverStarted: true,
    requestGrace: true,
    awaitSettle: false,
    xmlEveryTime: false,
    lockSupersede: true,
    follow: 'ready',
    resume: false,
    emitProgress: true,
  },
  'start-up': RECOVERY,
  reconnect: RECOVERY,
};

/** At most one progress notification per job per this many ms (state changes are never held back). */
const PROGRESS_EMIT_MS = 1000;

export class Observer {
  constructor(private readonly ctx: JobContext) {}

  async observe(entry: JobEntry, moment: Moment): Promise<void> {
    const p = POLICY[moment];
    if (p.skipStarting && entry.starting) return;
    try {
      await this.look(entry, moment, p);
    } finally {
      // Whatever the path (even one that could not read libvirt), a journaled deadline is armed.
      const at = entry.rec.timeoutAt;
      if (p.resume && at !== undefined && !isTerminal(entry.rec.job.state)) this.ctx.completion.armTimeout(entry, at);
    }
  }

  private async look(entry: JobEntry, moment: Moment, p: Policy): Promise<void> {
    const job = entry.rec.job;
    let info: BlockJobInfo | null;
    try {
      info = await this.ctx.conn.getBlockJobInfo(job.domain.uuid, job.disk);
    } catch (e) {
      this.unreadable(entry, e, moment, p);
      return;
    }
    delete entry.goneSince;
    const kind = kindOf(job);
    if (!info || info.type !== kind.blockJobType) return this.noBlockJob(entry, moment, p);
    delete entry.mirrorWithoutJobSince;
    const moved = this.progress(entry, info);
    const real = this.ctx.realNow();
    // Ready comes from the event; the poll's XML cross-check only catches a missed one. cur == end
    // alone proves nothing (0/1 means "not known yet"), so it only makes the check earlier.
    const due =
      p.xmlEveryTime || (job.state === 'copying' && info.end > 1n && info.cur === info.end) || real - entry.lastXmlCheck >= this.ctx.pollMs;
    if (due) {
      entry.lastXmlCheck = real;
      const disk = await this.ctx.verify.liveDisk(entry);
      if (await this.supersededBy(entry, disk, info, moment, p)) return;
      const mirrorReady = disk?.mirror?.ready ?? null;
      const shown = disk ? kind.stateFromLive(job.state, disk) : job.state;
      const changed = this.follow(entry, shown, mirrorReady, moment, p);
      if (p.resume) await this.resume(entry, shown, mirrorReady);
      // The job's own block job runs: a start intent left by a start whose answer was lost is
      // resolved (else a later restart would read it as "never started").
      if (disk && (disk.mirror || kind.mirrorJob === null) && isStartIntent(entry.rec.intent) && !entry.starting) {
        delete entry.rec.intent;
        this.ctx.recorder.persistLater(entry);
      }
      if (changed) return;
    }
    if (p.emitProgress && moved && real - entry.lastEmit >= PROGRESS_EMIT_MS) this.ctx.recorder.emitChanged(entry);
  }

  private unreadable(entry: JobEntry, e: unknown, moment: Moment, p: Policy): void {
    const job = entry.rec.job;
    if (!isDomainGone(e)) {
      if (!p.goneGrace) this.ctx.log.error(`cannot read a journaled job at ${moment}; the poll will retry`, { jobId: job.jobId, error: e });
      return;
    }
    if (p.goneGrace) {
      const real = this.ctx.realNow();
      entry.goneSince ??= real;
      if (real - entry.goneSince >= this.ctx.sampleMs) {
        this.ctx.recorder.fail(
          entry,
          'invalidState',
          'the domain is gone or no longer running',
          `no lifecycle event received; the poll got: ${e.message}`,
        );
      }
      return;
    }
    // libvirt 9.0, restarted while it had a pivot to process, can fail to reload its own
    // status of the domain and forget it while its QEMU runs on: worth saying to an operator.
    const request = REQUEST_OF[job.state];
    const lost =
      moment === 'reconnect' && e.code === VirErrorCode.NO_DOMAIN && request
        ? `; libvirt no longer knows the domain after its restart, although ${request === 'abort' ? 'an' : 'a'} ${request} was under way: if its QEMU process still runs, libvirtd lost track of it (libvirt 9.0 can, when restarted during a pivot; see libvirtd's log)`
        : '';
    this.ctx.recorder.fail(entry, 'invalidState', `the domain is gone or no longer running${lost}`, `found at ${moment}: ${e.message}`);
  }

  private async noBlockJob(entry: JobEntry, moment: Moment, p: Policy): Promise<void> {
    const job = entry.rec.job;
    const intent = entry.rec.intent;
    if (p.neverStarted && isStartIntent(intent) && job.state === 'copying') {
      // Fails closed: a live XML libvirt did not give is no evidence the copy never started (the
      // next poll or reconcile looks again); a domain gone has no copy running.
      let disk: DiskInfo | undefined;
      try {
        disk = await this.ctx.verify.liveDisk(entry);
      } catch (e) {
        if (!isDomainGone(e)) {
          this.ctx.log.warn('cannot read the live XML to tell whether a copy started; will look again', { jobId: job.jobId, error: e });
          return;
        }
      }
      // Never started when the disk shows nothing of the job (its kind would conclude an
      // unchanged disk as cancelled); a disk the job changed (a copy pivoted by someone, a
      // shortened chain) is concluded by settle, which says so.
      const unchanged = !disk || (!disk.mirror && kindOf(job).conclude(job, { disk, sawEnd: false, why: '' }, 0).state === 'cancelled');
      if (unchanged) {
        this.ctx.recorder.fail(
          entry,
          'libvirtError',
          `the ${kindOf(job).noun} was never started (${moment === 'start-up' ? 'the agent stopped while starting it' : 'libvirtd did not answer the request: it timed out or the connection dropped'})`,
          `journal intent ${intent.op} at ${intent.at}; no block job at ${moment}`,
        );
        return;
      }
    }
    // Give the event a moment: libvirt may still be delivering the end of a request.
    if (p.requestGrace && REQUEST_OF[job.state] && this.ctx.realNow() - entry.requestedAt <= Math.max(5000, 2 * this.ctx.pollMs)) return;
    const why =
      moment === 'poll'
        ? `the block job disappeared without an event (seen by the ${this.ctx.pollMs} ms poll)`
        : `the block job ended while the agent was not running${intent ? ` (last request: ${intent.op})` : ''}`;
    const settling = this.ctx.verify.settle(entry, why, { jobGone: true });
    if (p.awaitSettle) await settling;
    else
      void settling.catch((err) =>
        this.ctx.log.warn('cannot conclude a vanished block job; the poll will retry', { jobId: job.jobId, error: err }),
      );
  }

  /** Feeds the rate sampler and the job's counters; whether they moved. */
  private progress(entry: JobEntry, info: BlockJobInfo): boolean {
    const job = entry.rec.job;
    entry.sampler.add(this.ctx.clock(), Number(info.cur));
    entry.convergence.add(this.ctx.clock(), Number(info.cur), Number(info.end), Number(info.bandwidth));
    const moved = toByteCount(info.cur) !== job.progress.cur || toByteCount(info.end) !== job.progress.end;
    job.progress.cur = toByteCount(info.cur);
    job.progress.end = toByteCount(info.end);
    job.bandwidth = toByteCount(info.bandwidth);
    return moved;
  }

  /** The block job libvirt reports may be another job on the same disk (see verify.supersede). */
  private async supersededBy(entry: JobEntry, disk: DiskInfo | undefined, info: BlockJobInfo, moment: Moment, p: Policy): Promise<boolean> {
    const job = entry.rec.job;
    const other = disk ? kindOf(job).mismatch(job, disk, info) : null;
    if (!disk || !other) return false;
    const when = moment === 'poll' ? `by the ${this.ctx.pollMs} ms poll` : `at ${moment}`;
    if (!p.lockSupersede) await this.ctx.verify.supersede(entry, disk, other, when);
    else {
      await this.ctx.locks.run(diskKey(job.domain.uuid, job.disk), async () => {
        if (!isTerminal(job.state) && !entry.starting) await this.ctx.verify.supersede(entry, disk, other, when);
      });
    }
    return true;
  }

  /** Moves the job to the state libvirt shows, as far as the moment's policy follows; whether it changed. */
  private follow(entry: JobEntry, shown: JobState, mirrorReady: string | null, moment: Moment, p: Policy): boolean {
    const job = entry.rec.job;
    if (shown === job.state) return false;
    const missedReady = job.state === 'copying' && shown === 'ready';
    if (p.follow === 'ready' && !missedReady) return false;
    if (!canTransition(job, job.state, shown)) {
      this.ctx.log.warn('journal and live XML disagree in a way the state table does not allow', {
        jobId: job.jobId,
        journal: job.state,
        live: shown,
      });
      return false;
    }
    const intent = entry.rec.intent;
    const evidence =
      moment === 'poll'
        ? undefined
        : `reconciled at ${moment} from the live XML (mirror ready='${mirrorReady ?? 'no'}'${intent ? `; last request: ${intent.op}` : ''})`;
    // Ready by the same routine as a READY event: whenReady pivot|finish follows (once serving;
    // after recovery, the manager's serve() starts it for every ready job).
    if (shown === 'ready') {
      if (moment === 'poll') this.ctx.log.warn('ready seen in the live XML before any event', { jobId: job.jobId });
      this.ctx.watch.becomeReady(entry, `live XML shows <mirror ready='yes'> (${moment})`, evidence);
    } else {
      this.ctx.recorder.transition(entry, shown, evidence ? { evidence } : {});
    }
    return true;
  }

  /** Recovery only: what was under way goes on (see Policy.resume). */
  private async resume(entry: JobEntry, shown: JobState, mirrorReady: string | null): Promise<void> {
    const job = entry.rec.job;
    if (shown === 'cancelling' && mirrorReady !== 'abort') {
      // The abort may never have reached libvirt: ask again.
      entry.requestedAt = this.ctx.realNow();
      const r = await this.ctx.recorder.journaledCall(entry, { op: 'abort', at: this.ctx.iso() }, () =>
        this.ctx.conn.blockJobAbort(job.domain.uuid, job.disk, { async: true }),
      );
      if (r.status === 'refused') this.ctx.log.warn('abort at recovery failed', { jobId: job.jobId, error: r.error });
    }
    if (shown === 'pivoting' || shown === 'finishing' || shown === 'cancelling') entry.requestedAt = this.ctx.realNow();
  }
}
