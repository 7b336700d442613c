// Starting a copy: idempotency (jobId is an exact key), validation with nothing changed,
// admission, the journal record with every promise, then virDomainBlockCopy.
import { AgentError } from '../errors.js';
import type { DomainRef } from '../libvirt/index.js';
import type { BlockCopyParams, BlockCopyResult, Destination, JobState } from '../generated/api.js';
import { DEFAULTS } from '../generated/api.js';
import type { CheckedDestination } from '../destination/policy.js';
import { destinationFromXml } from '../destination/xml.js';
import { findDisk, type DiskInfo } from '../libvirt/disk-xml.js';
import { domainStorage } from './inventory.js';
import { newJob, publicJob, samePath, track, type JobEntry } from './job.js';
import { lookupError, outcomeUnknown, toAgentError, unansweredWhy } from './libvirt-errors.js';
import { fromByteCount } from './numbers.js';
import { rawDeviceSizeMismatch } from './sizes.js';
import { isTerminal, reachedReady } from './state-machine.js';
import type { JobContext } from './context.js';

export class Starter {
  constructor(private readonly ctx: JobContext) {}

  /** Runs under the disk's lock: idempotency, validation, journal, then libvirt. */
  async startCopy(
    params: BlockCopyParams,
    dom: DomainRef,
    dest: Destination,
    signal?: AbortSignal,
    { principal, groupId }: { principal?: string; groupId?: string } = {},
  ): Promise<{ entry: JobEntry; changed: boolean }> {
    const existing = this.existingFor(params, dom, dest, principal);
    if (existing) return { entry: existing, changed: false };
    const adopted = dom.active ? await this.ctx.reconciler.adoptIfMirrored(dom, params.disk) : undefined;
    if (adopted) {
      if (!params.jobId && samePath(adopted.rec.job.destination.path, dest.path)) return { entry: adopted, changed: false };
      throw new AgentError(
        'jobExists',
        `disk ${params.disk} of '${dom.name}' already has a copy job to ${adopted.rec.job.destination.path}`,
        { job: publicJob(adopted) },
      );
    }
    let { disk, checked } = await this.validateNew(params, dom, dest);
    const queued = this.ctx.registry.activeCount() >= this.ctx.maxCopies;
    await this.ctx.registry.awaitSlot(params, signal);
    // A queued copy may have waited long: check the destination again right before libvirt opens it.
    if (queued) ({ disk, checked } = await this.validateNew(params, dom, dest));

    // The job records the canonical destination the policy checked; libvirt gets its XML.
    const job = newJob(params, dom, disk, checked.destination, this.ctx.iso(), groupId);
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
      destinationXml: checked.xml,
      ...(params.timeout !== undefined ? { timeoutAt: this.ctx.realNow() + params.timeout * 1000 } : {}),
      ...(principal !== undefined ? { principal } : {}),
    });
    // Until libvirt has answered there is nothing of this copy to see (poll, events).
    entry.starting = true;
    this.ctx.entries.set(job.jobId, entry);
    // Refused by the agent itself, before libvirt was asked: certain, whatever the connection.
    let refused = false;
    try {
      // Journal first: a crash right after libvirt starts the copy must still find the job.
      await this.ctx.recorder.beforeSideEffect(entry, { op: 'blockCopy', at: job.createdAt });
      // A reused image's header, read again as late as the agent can: changed since the check, refused.
      await checked.recheck?.().catch((e: unknown) => {
        refused = true;
        throw e;
      });
      await this.ctx.conn.blockCopy(dom.uuid, params.disk, checked.xml, {
        shallow: job.options.shallow,
        reuseExternal: job.options.reuseExternal,
        transientJob: job.options.transientJob,
        synchronousWrites: job.options.synchronousWrites,
        bandwidth: fromByteCount(params.bandwidth),
        granularity: params.granularity,
        bufSize: fromByteCount(params.bufSize),
      });
    } catch (e) {
      if (!refused && this.ctx.outcomeUnknown(e)) {
        // The copy may have started: the job stays (intent blockCopy) until the poll, or the
        // reconcile after a reconnect, finds out from libvirt whether it did.
        this.ctx.log.warn(`blockCopy: ${unansweredWhy(e)}`, { jobId: job.jobId, error: e });
        throw outcomeUnknown(
          e,
          'copy request',
          `job ${job.jobId} stays and shows whether the copy started once libvirtd answers the agent's poll (or its reconcile after a reconnect); the same call again returns that job`,
          { job: publicJob(entry) },
        );
      }
      if (this.ctx.entries.get(job.jobId) === entry) this.ctx.entries.delete(job.jobId);
      // Clean-up of a record libvirt refused (nothing was started): a record left behind is
      // reconciled as never started at the next start, so a failure here is safe to drop.
      await entry.writes.catch(() => {});
      await this.ctx.journal.remove(job.jobId).catch(() => {});
      throw toAgentError(e, 'libvirt refused the copy');
    } finally {
      entry.starting = false;
    }
    this.ctx.recorder.afterSideEffect(entry);
    this.ctx.log.info('copy started', { jobId: job.jobId, domain: dom.name, disk: params.disk, destination: dest.path });
    this.ctx.recorder.emitChanged(entry);
    this.ctx.registry.pruneEnded();
    return { entry, changed: true };
  }

  /**
   * The job an identical earlier call created, which a re-run returns unchanged: with a jobId,
   * exactly the job of that id (a new jobId never returns another job); without one, the disk's
   * job to the same destination. Throws jobExists when the key or the disk is taken by another copy.
   * A jobId is its creator's, for that copy only: the same key from another principal, or for
   * another domain, disk or destination, is jobExists (as a groupId is for a group).
   */
  existingFor(params: BlockCopyParams, dom: DomainRef, dest: Destination, principal?: string): JobEntry | undefined {
    const byId = params.jobId ? this.ctx.entries.get(params.jobId) : undefined;
    if (byId) {
      const other = byId.rec.job;
      const why =
        other.domain.uuid !== dom.uuid || other.disk !== params.disk
          ? `already names a job on ${other.domain.name}/${other.disk}`
          : !samePath(other.destination.path, dest.path)
            ? `already names a copy to another destination (${other.destination.path})`
            : byId.rec.principal !== undefined && principal !== undefined && byId.rec.principal !== principal
              ? 'belongs to another principal'
              : undefined;
      if (why) throw new AgentError('jobExists', `jobId '${params.jobId}' ${why}`, { job: publicJob(byId) });
    }
    const active = this.ctx.registry.activeFor(dom.uuid, params.disk);
    if (active) {
      if (active === byId || (!params.jobId && samePath(active.rec.job.destination.path, dest.path))) return active;
      throw new AgentError(
        'jobExists',
        `disk ${params.disk} of '${dom.name}' already has a copy job to ${active.rec.job.destination.path}`,
        { job: publicJob(active) },
      );
    }
    // A re-run of a call that already completed: the same key, or the same destination the
    // disk was already pivoted or finished to.
    if (byId) return byId;
    if (params.jobId) return undefined;
    const last = this.ctx.registry.latestFor(dom.uuid, params.disk);
    if (
      last &&
      samePath(last.rec.job.destination.path, dest.path) &&
      (last.rec.job.state === 'pivoted' || last.rec.job.state === 'finished')
    ) {
      return last;
    }
    return undefined;
  }

  /** The checks of a new copy; nothing here changes anything. Returns the disk as the live XML shows it. */
  async validateNew(params: BlockCopyParams, dom: DomainRef, dest: Destination): Promise<{ disk: DiskInfo; checked: CheckedDestination }> {
    if (!dom.active) throw new AgentError('invalidState', `domain '${dom.name}' is not running`);
    const xml = await this.ctx.conn.getXml(dom.uuid).catch((e) => {
      throw toAgentError(e, 'cannot read the domain');
    });
    const disk = findDisk(xml, params.disk);
    if (!disk) throw new AgentError('notFound', `domain '${dom.name}' has no disk '${params.disk}'`);
    if (disk.device !== 'disk' || (disk.type !== 'file' && disk.type !== 'block') || !disk.sourcePath) {
      throw new AgentError(
        'unsupported',
        `disk ${params.disk} of '${dom.name}' is a ${disk.type} ${disk.device}; only file and block disks can be copied`,
      );
    }
    if (disk.mirror) {
      throw new AgentError('jobExists', `disk ${params.disk} of '${dom.name}' already has a ${disk.mirror.job} job`);
    }
    const checked = await this.ctx.checkDest(dest, {
      reuseExternal: !!params.reuseExternal,
      shallow: params.shallow ?? DEFAULTS.BlockCopyParams.shallow,
      disk,
      domainDisks: await domainStorage(this.ctx.conn, this.ctx.log),
    });
    // Known before starting, so said before starting (QEMU would fail it as "an I/O error").
    const size = await rawDeviceSizeMismatch(
      { path: disk.sourcePath, format: disk.format },
      { path: checked.destination.path, format: checked.destination.format ?? null },
    );
    if (size) throw new AgentError('destinationRejected', `destination rejected: ${size}`, { reason: size });
    return { disk, checked };
  }

  /** blockCopy's answer: at once, at ready or at the end, as the caller asked. */
  async awaitGoal(entry: JobEntry, params: BlockCopyParams, changed: boolean, signal?: AbortSignal): Promise<BlockCopyResult> {
    const wait = params.wait ?? DEFAULTS.BlockCopyParams.wait;
    if (wait !== 'none') {
      const pred = wait === 'ready' ? (s: JobState) => reachedReady(s) || isTerminal(s) : isTerminal;
      // A re-run's timeout only bounds its own wait; the first call's timer owns the copy.
      const waitMs = !changed && params.timeout !== undefined ? params.timeout * 1000 : undefined;
      await this.ctx.registry.waitFor(entry, pred, waitMs, signal);
      const job = entry.rec.job;
      if (job.error?.name === 'timeout') throw new AgentError('timeout', job.error.message, { job: publicJob(entry) });
      if (job.state === 'failed') {
        const name = job.error?.name ?? 'libvirtError';
        throw new AgentError(name, job.error?.message ?? 'the copy failed', {
          job: publicJob(entry),
          ...(job.evidence ? { evidence: job.evidence } : {}),
          ...(job.error?.libvirt ? { libvirt: job.error.libvirt } : {}),
        });
      }
    }
    return { job: publicJob(entry), changed };
  }

  async lookup(key: string): Promise<DomainRef> {
    try {
      return await this.ctx.conn.lookupDomain(key);
    } catch (e) {
      throw lookupError(e, key);
    }
  }

  destinationOf(params: BlockCopyParams): Destination {
    // destinationXml is parsed (whitelisted shape) or refused here.
    return params.destination ?? destinationFromXml(params.destinationXml ?? '');
  }
}
