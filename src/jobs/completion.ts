// Ending a copy on request: pivot, finish, abort, whenReady and the caller's deadline. Each
// checks right before its libvirt call that the copy is still the job's own.
import { AgentError, type ErrorName } from '../errors.js';
import { LibvirtError } from '../libvirt/index.js';
import type { JobChange, PivotResult } from '../generated/api.js';
import { DEFAULTS } from '../generated/api.js';
import { diskKey, publicJob, type JobEntry } from './job.js';
import { isNoJob, isNotReady, libvirtData, outcomeUnknown, toAgentError } from './libvirt-errors.js';
import { COMPLETION, isTerminal, reachedReady } from './state-machine.js';
import { kindOf } from './kinds/index.js';
import { cleaned } from './cleanup.js';
import type { JobContext } from './context.js';

/** How long an abort may take to end the job before the call reports `timeout`. */
const ABORT_WAIT_MS = 120_000;

export class Completion {
  constructor(private readonly ctx: JobContext) {}

  async complete(entry: JobEntry, how: 'pivot' | 'finish', budgetMs: number): Promise<PivotResult> {
    const { busy, goal } = COMPLETION[how];
    const job = entry.rec.job;
    const key = diskKey(job.domain.uuid, job.disk);
    const deadline = this.ctx.realNow() + budgetMs;
    let delay = 200;
    // Only the call that sends the request reports changed: true; one joining it does not.
    let sentByUs = false;
    // libvirtd left the request without an answer (timed out, connection dropped): named if the wait runs out.
    let unanswered: unknown;
    for (;;) {
      const s = job.state;
      if (s === goal) return { job: publicJob(entry), changed: false };
      if (s === busy) break; // already asked (by another caller or whenReady): wait for its end
      if (s === 'copying') {
        // Not ready yet: wait for it until the deadline (without holding the disk's lock).
        const left = deadline - this.ctx.realNow();
        const ok =
          left > 0 &&
          (await this.ctx.registry
            .waitFor(entry, (x) => x !== 'copying', left)
            .then(
              () => true,
              () => false,
            ));
        if (!ok)
          throw new AgentError('notReady', `job ${job.jobId} is not ready yet (${percentText(entry)} copied)`, { job: publicJob(entry) });
        continue;
      }
      if (s !== 'ready') {
        throw new AgentError('invalidState', `cannot ${how} job ${job.jobId}: it is ${s}`, { job: publicJob(entry) });
      }
      const sent = await this.ctx.locks.run(key, async (): Promise<'sent' | 'recheck' | LibvirtError> => {
        if (job.state !== 'ready') return 'recheck';
        await this.ctx.verify.assertOwnJob(entry, how);
        this.ctx.recorder.transition(entry, busy, {}, { persist: false });
        entry.requestedAt = this.ctx.realNow();
        entry.sawEnd = false;
        const r = await this.ctx.recorder.journaledCall(
          entry,
          { op: how, at: this.ctx.iso() },
          () => this.ctx.conn.blockJobAbort(job.domain.uuid, job.disk, { async: true, pivot: how === 'pivot' }),
          'ready',
        );
        if (r.status === 'done') return 'sent';
        // Unknown whether libvirt got it: the job stays `${busy}` and the poll (or the
        // reconcile after a reconnect) decides from the live XML.
        if (r.status === 'unknown') {
          unanswered = r.error;
          return 'sent';
        }
        if (isNotReady(r.error)) {
          this.ctx.recorder.transition(entry, 'ready');
          return r.error as LibvirtError;
        }
        if (isNoJob(r.error)) {
          await this.ctx.verify.settle(entry, `libvirt reported no block job when asked to ${how}`);
          return 'sent';
        }
        this.ctx.recorder.transition(entry, 'ready');
        throw toAgentError(r.error, `libvirt refused to ${how}`);
      });
      if (sent === 'sent') {
        sentByUs = true;
        break;
      }
      if (sent === 'recheck') continue;
      // QEMU is not (or no longer) ready, e.g. under heavy guest writes: back off and retry.
      if (this.ctx.realNow() + delay > deadline) {
        throw new AgentError('notReady', `QEMU reports job ${job.jobId} not ready for ${how}`, {
          job: publicJob(entry),
          libvirt: libvirtData(sent),
        });
      }
      this.ctx.log.debug(`${how}: not ready yet, retrying`, { jobId: job.jobId, delayMs: delay });
      await this.ctx.time.sleep(delay);
      delay = Math.min(delay * 2, 2000);
    }
    // The end arrives as an event (or the poll notices); both are verified against the live XML.
    await this.ctx.registry
      .waitFor(entry, (s) => s !== busy, Math.max(deadline - this.ctx.realNow(), 0) + 60_000)
      .catch(() => {
        if (unanswered)
          throw outcomeUnknown(
            unanswered,
            `${how} request`,
            `job ${job.jobId} stays ${busy} until the agent sees from libvirtd how it ended`,
            { job: publicJob(entry) },
          );
        throw new AgentError('timeout', `${how} of job ${job.jobId} did not complete in time`, { job: publicJob(entry) });
      });
    const end = entry.rec.job;
    if (end.state === goal) {
      await cleaned(entry);
      return { job: publicJob(entry), changed: sentByUs };
    }
    // Back to ready: the request was lost (a reconnect's reconcile found it never took effect). Again, within the budget.
    if (end.state === 'ready' && this.ctx.realNow() < deadline) return this.complete(entry, how, deadline - this.ctx.realNow());
    if (end.state === 'failed') {
      throw new AgentError(how === 'pivot' ? 'pivotFailed' : 'libvirtError', end.error?.message ?? `${how} failed`, {
        job: publicJob(entry),
        ...(end.evidence ? { evidence: end.evidence } : {}),
        ...(end.error?.libvirt ? { libvirt: end.error.libvirt } : {}),
      });
    }
    throw new AgentError('invalidState', `job ${job.jobId} ended as ${end.state} instead of ${goal}`, { job: publicJob(entry) });
  }

  /** `reason` (the caller's timeout) is recorded only if this call is the one that starts the cancel. */
  async cancel(entry: JobEntry, reason?: { name: ErrorName; message: string }): Promise<JobChange> {
    const job = entry.rec.job;
    const key = diskKey(job.domain.uuid, job.disk);
    if (isTerminal(job.state)) return { job: publicJob(entry), changed: false };
    let unanswered: unknown;
    const ended = await this.ctx.locks.run(key, async () => {
      const s = job.state;
      if (isTerminal(s)) return true;
      if (s === 'pivoting' || s === 'finishing') {
        throw new AgentError('invalidState', `job ${job.jobId} is ${s}; it cannot be aborted now`, { job: publicJob(entry) });
      }
      if (s === 'cancelling') return false;
      await this.ctx.verify.assertOwnJob(entry, reason ? "the deadline's abort" : 'abort');
      this.ctx.recorder.transition(entry, 'cancelling', reason ? { error: reason } : {}, { persist: false });
      entry.requestedAt = this.ctx.realNow();
      entry.sawEnd = false;
      const r = await this.ctx.recorder.journaledCall(
        entry,
        { op: 'abort', at: this.ctx.iso() },
        () => this.ctx.conn.blockJobAbort(job.domain.uuid, job.disk, { async: true }),
        s,
      );
      // Unknown: stays cancelling with its intent; the reconcile after a reconnect asks again if needed.
      if (r.status === 'unknown') unanswered = r.error;
      else if (r.status === 'refused') {
        if (isNoJob(r.error)) await this.ctx.verify.settle(entry, 'libvirt reported no block job when asked to abort');
        else {
          if (reason) delete job.error;
          this.ctx.recorder.transition(entry, s);
          throw toAgentError(r.error, 'libvirt refused to abort');
        }
      }
      return false;
    });
    if (ended) return { job: publicJob(entry), changed: false };
    await this.ctx.registry.waitFor(entry, isTerminal, ABORT_WAIT_MS).catch(() => {
      if (unanswered)
        throw outcomeUnknown(
          unanswered,
          'abort request',
          `job ${job.jobId} stays cancelling until the agent sees from libvirtd how it ended`,
          { job: publicJob(entry) },
        );
      throw new AgentError('timeout', `abort of job ${job.jobId} did not complete in time`, { job: publicJob(entry) });
    });
    return { job: publicJob(entry), changed: true };
  }

  /** whenReady: pivot|finish, once the job is ready. */
  completeWhenReady(entry: JobEntry): void {
    const how = entry.rec.job.whenReady;
    if (this.ctx.recovering || (how !== 'pivot' && how !== 'finish')) return;
    const id = entry.rec.job.jobId;
    // As if the caller had called pivot/finish without a timeout: the schema's default.
    const timeoutMs = (how === 'pivot' ? DEFAULTS.PivotParams.timeout : DEFAULTS.FinishParams.timeout) * 1000;
    void this.complete(entry, how, timeoutMs).catch((err) => this.ctx.log.warn(`automatic ${how} failed`, { jobId: id, error: err }));
  }

  /**
   * Like virsh --timeout: at `at` (ms since the epoch), cancel the copy if it has not got where
   * it was asked to go (ready, or the end with whenReady pivot|finish). Journaled, so a restart re-arms it.
   */
  armTimeout(entry: JobEntry, at: number): void {
    const job = entry.rec.job;
    this.ctx.time.clearTimer(entry.timeoutTimer);
    if (entry.rec.timeoutAt !== at) {
      entry.rec.timeoutAt = at;
      this.ctx.recorder.persistLater(entry);
    }
    // A kind without a ready phase (a commit below the top, a pull) has only its end as its goal.
    const kind = kindOf(job);
    const untilReady = job.whenReady === 'none' && kind.next.ready.length > 0;
    const goalReached = () => isTerminal(job.state) || (untilReady && reachedReady(job.state));
    entry.timeoutTimer = this.ctx.time.setTimer(
      () => {
        // A pivot or finish under way is about to reach the goal: let it.
        if (goalReached() || this.ctx.stopped || job.state === 'pivoting' || job.state === 'finishing') return;
        const seconds = Math.round((at - Date.parse(job.createdAt)) / 1000);
        this.ctx.log.warn('copy timed out: cancelling', { jobId: job.jobId, seconds });
        const reason: { name: ErrorName; message: string } = {
          name: 'timeout',
          message: `the ${kind.noun} did not get ${untilReady ? 'ready' : 'done'} within its timeout (${seconds} s) and was cancelled`,
        };
        void this.cancel(entry, reason).catch((err) => this.ctx.log.error('cancel on timeout failed', { jobId: job.jobId, error: err }));
      },
      Math.max(0, at - this.ctx.realNow()),
    );
    // Deliberately not unref'd: the cancel must happen even if nothing else keeps the process up; stop() clears it.
  }
}

function percentText(entry: JobEntry): string {
  const p = publicJob(entry).progress.percent;
  return p === null ? 'unknown' : `${p}%`;
}
