// The jobs the manager knows: lookups by id or disk, admission (the host's copy limit),
// waiting for a state, and the one retention rule for jobs and groups.
import { AgentError } from '../errors.js';
import type { BlockCopyParams, JobState } from '../generated/api.js';
import { publicJob, type JobEntry } from './job.js';
import { until } from './until.js';
import { isTerminal } from './state-machine.js';
import type { JobContext } from './context.js';
import type { DomainRef } from '../libvirt/index.js';
import { SingleFlight } from './read-bound.js';

/** How a caller names a job: by id, or by domain and disk. */
export type JobRef = { jobId?: string; domain?: string; disk?: string };

export class Registry {
  /** Domain lookups of reads, one per name at a time. */
  private readonly lookups = new SingleFlight<DomainRef>();

  constructor(private readonly ctx: JobContext) {}

  /**
   * Copies that count toward the host's limit: the ones this agent started. Adopted copies were
   * admitted by whoever started them; counting them would let any outside tool (or another
   * agent's domains on a shared test host) make this agent refuse its own callers.
   */
  activeCount(): number {
    return [...this.ctx.entries.values()].filter((t) => t.rec.job.owner === 'agent' && !isTerminal(t.rec.job.state)).length;
  }

  /** At the host's limit: tooManyJobs, or with `queue`, wait (up to `timeout`) for a copy to end. */
  async awaitSlot(params: BlockCopyParams, signal?: AbortSignal): Promise<void> {
    if (this.activeCount() < this.ctx.maxCopies) return;
    if (!params.queue) {
      throw new AgentError('tooManyJobs', `this host already runs ${this.activeCount()} copies (maximum ${this.ctx.maxCopies})`);
    }
    this.ctx.log.info('copy queued: the host is at its limit', { domain: params.domain, disk: params.disk, limit: this.ctx.maxCopies });
    const timeoutMs = params.timeout !== undefined ? params.timeout * 1000 : undefined;
    if (!(await until(this.ctx.updates, 'update', () => this.activeCount() < this.ctx.maxCopies, timeoutMs, signal, this.ctx.time))) {
      throw new AgentError('timeout', `no copy slot became free within ${params.timeout} s`);
    }
  }

  activeFor(uuid: string, disk: string): JobEntry | undefined {
    for (const t of this.ctx.entries.values()) {
      if (t.rec.job.domain.uuid === uuid && t.rec.job.disk === disk && !isTerminal(t.rec.job.state)) return t;
    }
    return undefined;
  }

  latestFor(uuid: string, disk: string): JobEntry | undefined {
    let best: JobEntry | undefined;
    for (const t of this.ctx.entries.values()) {
      if (t.rec.job.domain.uuid === uuid && t.rec.job.disk === disk && (!best || t.rec.job.createdAt >= best.rec.job.createdAt)) best = t;
    }
    return best;
  }

  /**
   * A job by id, or the disk's active job (else its most recent one). A disk with no active job
   * is first checked for a copy started outside the agent. `readMs`: a read, which waits for
   * libvirtd at most that long, then answers from what the agent knows (the check goes on);
   * without it (mutating calls) the check must complete, or its named error is thrown.
   */
  async find(ref: JobRef, readMs?: number): Promise<JobEntry> {
    if (ref.jobId) {
      const t = this.ctx.entries.get(ref.jobId);
      if (!t) throw new AgentError('noJob', `no job '${ref.jobId}'`);
      return t;
    }
    if (!ref.domain || !ref.disk) throw new AgentError('noJob', 'name the job by jobId, or by domain and disk');
    const { uuid, dom } = await this.resolveDomain(ref.domain, readMs);
    const disk = ref.disk;
    // Why the disk could not be checked for a copy started outside the agent (virsh blockcopy),
    // which is otherwise a job from its first moment.
    let unchecked: unknown;
    if (this.activeFor(uuid, disk)) {
      // The disk's job: nothing to check.
    } else if (this.ctx.recovering) {
      unchecked = new AgentError(
        'unavailable',
        `the agent is reconnecting to libvirtd and cannot yet check disk ${disk} of '${ref.domain}' for a copy started outside it; retry`,
      );
    } else {
      try {
        const done = await this.ctx.reconciler.checkDisk(uuid, disk, dom, readMs === undefined ? undefined : this.readWait(readMs, uuid));
        if (!done)
          unchecked = this.notAnswered(
            `whether disk ${disk} of '${ref.domain}' has a copy started outside the agent`,
            'the check goes on',
            uuid,
          );
      } catch (e) {
        unchecked = e;
      }
    }
    const active = this.activeFor(uuid, disk);
    if (active) return active;
    if (unchecked !== undefined && readMs === undefined) throw unchecked;
    const t = this.latestFor(uuid, disk);
    if (t) return t;
    throw unchecked ?? new AgentError('noJob', `no copy job on disk ${disk} of '${ref.domain}'`);
  }

  /**
   * Which domain a caller's key names now. A name is resolved through libvirt first: a domain
   * destroyed and re-created under the same name has a new UUID, and the name is the new one's.
   * A UUID some job of the agent is on needs no libvirt call (UUIDs are not reused), so a job of
   * a domain that no longer exists is found by its UUID (or its jobId). When libvirt does not
   * give the domain (no domain of that name now, or, for a read, no answer within the bound),
   * the journal answers only if its jobs know exactly one domain of that name, and the log says
   * so; with several, the caller must name the domain by UUID or the job by jobId. A mutating
   * call does not act on the journal's guess while libvirtd does not answer.
   */
  async resolveDomain(key: string, readMs?: number): Promise<{ uuid: string; dom?: DomainRef }> {
    const known = this.knownDomainUuids(key);
    if (known.has(key)) return { uuid: key };
    let failure: unknown;
    try {
      const dom = readMs === undefined ? await this.ctx.starter.lookup(key) : await this.lookupWithin(key, readMs);
      if (dom) return { uuid: dom.uuid, dom };
    } catch (e) {
      failure = e;
    }
    const gone = failure instanceof AgentError && failure.errorName === 'notFound';
    if (known.size === 1 && (gone || readMs !== undefined)) {
      const uuid = [...known][0]!;
      const why = gone ? 'libvirt knows no domain of that name now' : 'libvirtd did not answer the lookup of the name';
      this.ctx.log.warn(`domain '${key}' resolved from the journal: ${why}`, { domain: key, uuid });
      return { uuid };
    }
    if (known.size > 1) {
      // The lookup's own failure keeps its name and libvirt's data (a dropped connection is not a
      // timeout, a refusal is not retryable); only a lookup still unanswered is libvirtTimeout.
      if (failure !== undefined && !(failure instanceof AgentError)) throw failure;
      const why = gone
        ? `no domain is named '${key}'`
        : `libvirt cannot say now which domain is '${key}'${failure ? ` (${failure.message})` : ''}`;
      throw new AgentError(
        failure?.errorName ?? 'libvirtTimeout',
        `${why}, and the agent's jobs name ${known.size} domains so (${[...known].join(', ')}): name the domain by UUID or the job by jobId`,
        failure?.data ?? {},
      );
    }
    throw (
      failure ??
      this.notAnswered(
        `the lookup of domain '${key}'`,
        known.size ? 'the agent knows one domain of that name' : 'the agent knows no job on it',
        key,
      )
    );
  }

  /** The UUIDs of the domains (named by name or UUID) that the agent's jobs are on: no libvirt call. */
  knownDomainUuids(key: string): Set<string> {
    const uuids = new Set<string>();
    for (const t of this.ctx.entries.values())
      if (t.rec.job.domain.name === key || t.rec.job.domain.uuid === key) uuids.add(t.rec.job.domain.uuid);
    return uuids;
  }

  /** The domain, or undefined when libvirtd has not answered within ms (the lookup goes on; a retry joins it). */
  async lookupWithin(key: string, ms: number): Promise<DomainRef | undefined> {
    return (await this.lookups.run(key, () => this.ctx.starter.lookup(key), this.readWait(ms, key)))?.value;
  }

  /**
   * A read waits for libvirtd up to its bound, and not at all while libvirtd is known not to
   * answer, nor while the domain it is about is slow (its calls wait on a hung QEMU).
   */
  private readWait(ms: number, domain?: string): number {
    return this.ctx.reconciler.libvirtSilent || (domain !== undefined && this.ctx.slow.isSlow(domain)) ? 0 : ms;
  }

  private notAnswered(what: string, after: string, domain?: string): AgentError {
    const why = this.ctx.reconciler.libvirtSilent
      ? 'libvirtd does not answer (nor did it the last scan)'
      : domain !== undefined && this.ctx.slow.isSlow(domain)
        ? 'while the domain is slow (an earlier call on it has not been answered)'
        : 'within the read bound';
    return new AgentError('libvirtTimeout', `libvirtd has not answered ${what} ${why}; ${after}; retry`);
  }

  /**
   * One retention rule for jobs and groups: the oldest ended units go beyond `keepEnded` ended
   * jobs, where a unit is a job, or a group with all its jobs (dropped together, and only once
   * every one has ended, so a group never outlives its members nor loses some of them).
   */
  pruneEnded(): void {
    const units = new Map<string, JobEntry[]>();
    for (const t of this.ctx.entries.values()) {
      const key = t.rec.job.groupId !== undefined ? `group:${t.rec.job.groupId}` : `job:${t.rec.job.jobId}`;
      units.set(key, [...(units.get(key) ?? []), t]);
    }
    const newest = (ts: JobEntry[]) =>
      ts
        .map((t) => t.rec.job.createdAt)
        .sort()
        .at(-1)!;
    const ended = [...units.entries()]
      .filter(([, ts]) => ts.every((t) => isTerminal(t.rec.job.state)))
      .sort((a, b) => newest(a[1]).localeCompare(newest(b[1])));
    let count = ended.reduce((n, [, ts]) => n + ts.length, 0);
    for (const [key, ts] of ended) {
      if (count <= this.ctx.keepEnded) break;
      count -= ts.length;
      for (const t of ts) {
        this.ctx.entries.delete(t.rec.job.jobId);
        // An ended job's record: one left behind is loaded as ended and pruned again next start.
        void t.writes
          .catch(() => {})
          .then(() => this.ctx.journal.remove(t.rec.job.jobId))
          .catch(() => {});
      }
      if (key.startsWith('group:')) this.ctx.events.emit('group.pruned', key.slice('group:'.length));
    }
  }

  /** Resolves when pred(state) holds; rejects with `timeout` or when the signal aborts. */
  async waitFor(entry: JobEntry, pred: (s: JobState) => boolean, timeoutMs?: number, signal?: AbortSignal): Promise<void> {
    if (!(await until(this.ctx.updates, 'update', () => pred(entry.rec.job.state), timeoutMs, signal, this.ctx.time))) {
      throw new AgentError('timeout', `job ${entry.rec.job.jobId} is still ${entry.rec.job.state}`, { job: publicJob(entry) });
    }
  }
}
