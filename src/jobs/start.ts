// Starting a job of any kind: idempotency (jobId is an exact key), the kind's validation with
// nothing changed, admission, the journal record with every promise, then the kind's libvirt
// call through the one journaled call. What is a kind's own (its checks, its job, its call)
// comes in a StartSpec (kinds/*/start.ts).
import { AgentError } from '../errors.js';
import type { DomainRef } from '../libvirt/index.js';
import type { Job, JobState } from '../generated/api.js';
import type { StartOp } from './journal.js';
import { publicJob, track, type JobEntry } from './job.js';
import { kindOf } from './kinds/index.js';
import { lookupDomain, outcomeUnknown, toAgentError } from './libvirt-errors.js';
import { isTerminal, reachedReady } from './state-machine.js';
import { cleaned } from './cleanup.js';
import type { JobContext } from './context.js';
import type { SpaceNeed } from './space.js';

/** What every start request has (blockCopy, blockCommit, blockPull params). */
export interface StartParams {
  domain: string;
  disk: string;
  jobId?: string;
  timeout?: number;
  queue?: boolean;
  wait?: 'none' | 'ready' | 'done';
}

/** A kind's validated start: the new job, what the journal keeps of the request, and the call. */
export interface Prepared {
  job: Job;
  /** The exact XML handed to libvirt, if any (kept so a restart knows what was asked). */
  destinationXml?: string;
  /** A copy's pre-flight space figure (jobs/space.ts), for a group to sum per filesystem. */
  space?: SpaceNeed | null;
  /** The libvirt call; an AgentError thrown in it is the agent's own, certain refusal. */
  call: () => Promise<void>;
}

/** How one kind starts. */
export interface StartSpec {
  op: StartOp;
  params: StartParams;
  dom: DomainRef;
  /** Whether an existing job is what this request would create (an idempotent re-run). */
  sameAs(job: Job): boolean;
  /** How an existing job of the same disk differs from this request (when sameAs is false). */
  whyNot(job: Job): string;
  /** What the request asks, for messages ("a copy to /x", "a commit of vda[2]"). */
  describe(job: Job): string;
  /** The kind's checks (nothing changed) and its job. Run again after a wait in the queue. */
  prepare(): Promise<Prepared>;
}

export class Starter {
  constructor(private readonly ctx: JobContext) {}

  /** Runs under the disk's lock: idempotency, validation, journal, then libvirt. */
  async start(
    spec: StartSpec,
    signal?: AbortSignal,
    { principal, groupId }: { principal?: string; groupId?: string } = {},
  ): Promise<{ entry: JobEntry; changed: boolean }> {
    const { params, dom } = spec;
    this.refuseOtherKinds(params.jobId);
    const existing = this.existingFor(spec, principal);
    if (existing) return { entry: existing, changed: false };
    const adopted = dom.active ? await this.ctx.reconciler.adoptIfRunning(dom, params.disk) : undefined;
    if (adopted) {
      if (!params.jobId && spec.sameAs(adopted.rec.job)) return { entry: adopted, changed: false };
      throw this.taken(spec, adopted);
    }
    let prepared = await spec.prepare();
    const queued = this.ctx.registry.activeCount() >= this.ctx.maxCopies;
    await this.ctx.registry.awaitSlot(params, signal);
    // A queued job may have waited long: check again right before libvirt opens anything.
    if (queued) prepared = await spec.prepare();
    const { job } = prepared;
    if (groupId !== undefined) job.groupId = groupId;
    this.refuseOtherKinds(job.jobId);
    if (this.ctx.entries.has(job.jobId)) {
      // The same key raced in on another disk while this call was validating.
      throw new AgentError('jobExists', `jobId '${job.jobId}' already names another job`, {
        job: publicJob(this.ctx.entries.get(job.jobId)!),
      });
    }
    // Everything the answer promises (deadline, whenReady, bandwidth) is in the record written
    // before libvirt is called: a crash right after the answer must still keep the promise.
    const entry = track({
      job,
      destinationXml: prepared.destinationXml ?? '',
      ...(params.timeout !== undefined ? { timeoutAt: this.ctx.realNow() + params.timeout * 1000 } : {}),
      ...(principal !== undefined ? { principal } : {}),
    });
    if (prepared.space) entry.space = prepared.space;
    // Until libvirt has answered there is nothing of this job to see (poll, events).
    entry.starting = true;
    this.ctx.entries.set(job.jobId, entry);
    const noun = kindOf(job).noun;
    let r;
    try {
      // Journal first: a crash right after libvirt starts the job must still find it.
      r = await this.ctx.recorder.journaledCall(entry, { op: spec.op, at: job.createdAt }, prepared.call);
    } catch (e) {
      // Not journaled, so not sent.
      r = { status: 'refused' as const, error: e };
    } finally {
      entry.starting = false;
    }
    if (r.status === 'unknown') {
      // It may have started: the job stays (with its start intent) until the poll, or the
      // reconcile after a reconnect, finds out from libvirt whether it did.
      throw outcomeUnknown(
        r.error,
        `${noun} request`,
        `job ${job.jobId} stays and shows whether the ${noun} started once libvirtd answers the agent's poll (or its reconcile after a reconnect); the same call again returns that job`,
        { job: publicJob(entry) },
      );
    }
    if (r.status === 'refused') {
      if (this.ctx.entries.get(job.jobId) === entry) this.ctx.entries.delete(job.jobId);
      // Clean-up of a record libvirt refused (nothing was started): a record left behind is
      // reconciled as never started at the next start, so a failure here is safe to drop.
      await entry.writes.catch(() => {});
      await this.ctx.journal.remove(job.jobId).catch(() => {});
      throw toAgentError(r.error, `libvirt refused the ${noun}`);
    }
    this.ctx.log.info(`${noun} started`, { jobId: job.jobId, domain: dom.name, disk: params.disk, destination: job.destination.path });
    this.ctx.recorder.emitChanged(entry);
    this.ctx.registry.pruneEnded();
    return { entry, changed: true };
  }

  /** A jobId a job of another kind (a backup) holds is that job's: jobExists, with it. */
  refuseOtherKinds(jobId: string | undefined): void {
    const other = jobId === undefined ? undefined : this.ctx.otherJob(jobId);
    if (other)
      throw new AgentError('jobExists', `jobId '${jobId}' already names a ${other.kind} job on ${other.domain.name}`, { job: other });
  }

  /**
   * The job an identical earlier call created, which a re-run returns unchanged: with a jobId,
   * exactly the job of that id (a new jobId never returns another job); without one, the disk's
   * job that is what this request asks. Throws jobExists when the key or the disk is taken by
   * another job. A jobId is its creator's, for that job only: the same key from another
   * principal, or for another domain, disk or request, is jobExists (as a groupId is for a group).
   */
  existingFor(spec: StartSpec, principal?: string): JobEntry | undefined {
    const { params, dom } = spec;
    const byId = params.jobId ? this.ctx.entries.get(params.jobId) : undefined;
    if (byId) {
      const other = byId.rec.job;
      const why =
        other.domain.uuid !== dom.uuid || other.disk !== params.disk
          ? `already names a job on ${other.domain.name}/${other.disk}`
          : !spec.sameAs(other)
            ? `already names ${spec.whyNot(other)}`
            : byId.rec.principal !== undefined && principal !== undefined && byId.rec.principal !== principal
              ? 'belongs to another principal'
              : undefined;
      if (why) throw new AgentError('jobExists', `jobId '${params.jobId}' ${why}`, { job: publicJob(byId) });
    }
    const active = this.ctx.registry.activeFor(dom.uuid, params.disk);
    if (active) {
      if (active === byId || (!params.jobId && spec.sameAs(active.rec.job))) return active;
      throw this.taken(spec, active);
    }
    // A re-run of a call that already completed: the same key, or the same request the disk
    // already went through successfully.
    if (byId) return byId;
    if (params.jobId) return undefined;
    const last = this.ctx.registry.latestFor(dom.uuid, params.disk);
    const s = last?.rec.job.state;
    if (last && spec.sameAs(last.rec.job) && (s === 'pivoted' || s === 'finished' || s === 'completed')) return last;
    return undefined;
  }

  private taken(spec: StartSpec, other: JobEntry): AgentError {
    return new AgentError(
      'jobExists',
      `disk ${spec.params.disk} of '${spec.dom.name}' already has a ${kindOf(other.rec.job).noun} job (${spec.describe(other.rec.job)})`,
      { job: publicJob(other) },
    );
  }

  /** A start's answer: at once, at ready or at the end, as the caller asked. */
  async awaitGoal(entry: JobEntry, params: StartParams, changed: boolean, signal?: AbortSignal): Promise<{ job: Job; changed: boolean }> {
    const wait = params.wait ?? 'none';
    if (wait !== 'none') {
      const pred = wait === 'ready' ? (s: JobState) => reachedReady(s) || isTerminal(s) : isTerminal;
      // A re-run's timeout only bounds its own wait; the first call's timer owns the job.
      const waitMs = !changed && params.timeout !== undefined ? params.timeout * 1000 : undefined;
      await this.ctx.registry.waitFor(entry, pred, waitMs, signal);
      if (isTerminal(entry.rec.job.state)) await cleaned(entry);
      const job = entry.rec.job;
      if (job.error?.name === 'timeout') throw new AgentError('timeout', job.error.message, { job: publicJob(entry) });
      if (job.state === 'failed') {
        const name = job.error?.name ?? 'libvirtError';
        throw new AgentError(name, job.error?.message ?? `the ${kindOf(job).noun} failed`, {
          job: publicJob(entry),
          ...(job.evidence ? { evidence: job.evidence } : {}),
          ...(job.error?.libvirt ? { libvirt: job.error.libvirt } : {}),
        });
      }
    }
    return { job: publicJob(entry), changed };
  }

  lookup(key: string): Promise<DomainRef> {
    return lookupDomain(this.ctx.conn, key, this.ctx.manages);
  }
}
