// The only code that changes a job's state, writes its journal record and notifies: every
// transition goes through the state table, every side effect is preceded by a durable record.
import { AgentError, type ErrorName } from '../errors.js';
import type { Job, JobState } from '../generated/api.js';
import { publicJob, type JobEntry } from './job.js';
import { stateUnavailable, type Intent, type JobRecord } from './journal.js';
import { faultPoint } from './fault-points.js';
import { isTerminal } from './state-machine.js';
import { canTransition } from './kinds/index.js';
import { unansweredWhy } from './libvirt-errors.js';
import type { JobContext } from './context.js';

/** What became of a journaled libvirt call (Recorder.journaledCall). */
export type CallResult<T> = { status: 'done'; value: T } | { status: 'refused' | 'unknown'; error: unknown };

export class Recorder {
  constructor(private readonly ctx: JobContext) {}

  /** The only way a job's state changes. `persist: false` when the caller writes the journal itself (before a side effect). */
  transition(entry: JobEntry, to: JobState, patch: Partial<Job> = {}, opts: { persist?: boolean } = {}): void {
    const job = entry.rec.job;
    if (job.state === to) return;
    if (!canTransition(job, job.state, to)) {
      this.ctx.log.error('refused an impossible transition', { jobId: job.jobId, from: job.state, to });
      return;
    }
    this.ctx.log.info('job state', { jobId: job.jobId, from: job.state, to });
    Object.assign(job, patch, { state: to });
    if (isTerminal(to)) {
      job.endedAt = this.ctx.iso();
      this.ctx.time.clearTimer(entry.timeoutTimer);
      delete entry.rec.timeoutAt;
      faultPoint(`decided:${to}`, job);
    }
    this.touch(entry, opts.persist ?? true);
    // The kernel's post-end step a job may have promised (deleteMerged), after its end is journaled.
    if (isTerminal(to)) this.ctx.cleanup.afterEnd(entry);
  }

  fail(
    entry: JobEntry,
    name: ErrorName,
    message: string,
    evidence: string,
    libvirt?: { code: number; domain: number; message: string },
  ): void {
    if (isTerminal(entry.rec.job.state)) return;
    this.transition(entry, 'failed', { error: { name, message, ...(libvirt ? { libvirt } : {}) }, evidence, outcome: 'observed' });
  }

  /** Records a change: journal (in order, in the background) and notify. */
  touch(entry: JobEntry, persist = true): void {
    entry.rec.job.updatedAt = this.ctx.iso();
    if (persist) this.persistLater(entry);
    this.emitChanged(entry);
  }

  /**
   * The journal write that must land before a libvirt side effect: the record with its intent,
   * durably. If it cannot be written, the side effect is not attempted (state restored to `revertTo`).
   */
  private async beforeSideEffect(entry: JobEntry, intent: Intent, revertTo?: JobState): Promise<void> {
    entry.rec.intent = intent;
    try {
      await this.persist(entry);
      faultPoint(`${intent.op}:journaled`, entry.rec.job);
    } catch (e) {
      delete entry.rec.intent;
      if (revertTo) this.transition(entry, revertTo);
      this.ctx.log.error('journal write failed; the libvirt call was not made', { jobId: entry.rec.job.jobId, op: intent.op, error: e });
      throw stateUnavailable(e, intent.op);
    }
  }

  /**
   * One libvirt side effect under a journaled intent, the only way one is made: the record with
   * the intent lands durably first (else nothing is sent: stateUnavailable, the state restored to
   * `revertTo`), then the call. `done`: the intent is cleared. `refused`: libvirt answered no, or
   * the agent refused itself (an AgentError thrown inside `call`, certain whatever the
   * connection): the intent is cleared. `unknown`: libvirtd timed out or the connection dropped,
   * so whether the call took effect is unknown: the intent stays, and the poll (or the
   * reconcile after a reconnect) decides from what libvirt shows.
   */
  async journaledCall<T>(entry: JobEntry, intent: Intent, call: () => Promise<T>, revertTo?: JobState): Promise<CallResult<T>> {
    await this.beforeSideEffect(entry, intent, revertTo);
    try {
      const value = await call();
      this.afterSideEffect(entry);
      return { status: 'done', value };
    } catch (e) {
      if (!(e instanceof AgentError) && this.ctx.outcomeUnknown(e)) {
        this.ctx.log.warn(`${intent.op}: ${unansweredWhy(e)}`, { jobId: entry.rec.job.jobId, error: e });
        return { status: 'unknown', error: e };
      }
      this.afterSideEffect(entry);
      return { status: 'refused', error: e };
    }
  }

  private afterSideEffect(entry: JobEntry): void {
    if (!entry.rec.intent) return;
    faultPoint(`${entry.rec.intent.op}:sent`, entry.rec.job);
    delete entry.rec.intent;
    this.persistLater(entry);
  }

  /** A journal write nobody waits for (in order with the job's other writes). */
  persistLater(entry: JobEntry): void {
    void this.persist(entry).catch((err) => {
      if (!this.ctx.stopped) this.ctx.log.error('journal write failed', { jobId: entry.rec.job.jobId, error: err });
    });
  }

  persist(entry: JobEntry): Promise<void> {
    // After stop() the state directory may already belong to the next agent: nothing more is
    // written, and so (journal first) no libvirt call is made either.
    if (this.ctx.stopped)
      return Promise.reject(new AgentError('unavailable', 'the agent is stopping; nothing was journaled or sent to libvirt'));
    const snapshot: JobRecord = structuredClone(entry.rec);
    // The earlier write's failure was reported to its own caller; this one is written anyway.
    const write = entry.writes
      .catch(() => {})
      .then(() => this.ctx.journal.save(snapshot))
      .then(() => faultPoint(`journaled:${snapshot.job.state}`, snapshot.job));
    entry.writes = write;
    return write;
  }

  emitChanged(entry: JobEntry): void {
    entry.lastEmit = this.ctx.realNow();
    this.ctx.updates.emit('update', entry);
    this.ctx.events.emit('job.changed', publicJob(entry));
  }
}
