// Reconcile at start-up and after a reconnect, and adoption of jobs this agent did not start:
// every journaled job against libvirt's live state, every unowned block job of a kind the
// agent runs (a <mirror> names a copy or an active commit; a commit below the top or a pull
// shows none, and libvirt's block job type tells).
import type { BlockJobInfo, DomainRef } from '../libvirt/index.js';
import { findDisk, parseDisks, type DiskInfo } from '../libvirt/disk-xml.js';
import { diskKey, track, type JobEntry } from './job.js';
import { KINDS, kindOfBlockJob, kindOfMirror, type JobKind } from './kinds/index.js';
import { Observer, type Recovery } from './observe.js';
import { isTerminal } from './state-machine.js';
import { isDomainGone, isUnanswered, toAgentError } from './libvirt-errors.js';
import { SingleFlight, within } from './read-bound.js';
import type { JobContext } from './context.js';

export class Reconciler {
  private scanning: { uuid: string | undefined; startedAt: number; done: Promise<boolean> } | null = null;
  /** The last adoption scan failed because libvirtd did not answer. */
  private stalled = false;
  private readonly checks = new SingleFlight<JobEntry | undefined>();
  private readonly observer: Observer;

  constructor(private readonly ctx: JobContext) {
    this.observer = new Observer(ctx);
  }

  async reconcile(when: Recovery): Promise<void> {
    for (const entry of this.ctx.entries.values()) {
      if (isTerminal(entry.rec.job.state)) continue;
      await this.reconcileOne(entry, when).catch((err) =>
        this.ctx.log.error('reconcile failed', { jobId: entry.rec.job.jobId, error: err }),
      );
    }
    // Copies started elsewhere (virsh, another tool, an earlier agent that lost its journal).
    await this.scan(undefined, when).catch((err) => this.ctx.log.error('cannot scan the domains to adopt running copies', { error: err }));
    this.ctx.registry.pruneEnded();
  }

  /** One journaled job against libvirt: the poll's observation, with recovery's policy (observe.ts). */
  reconcileOne(entry: JobEntry, when: Recovery): Promise<void> {
    return this.observer.observe(entry, when);
  }

  /**
   * Copies started outside the agent while it runs are adopted when first seen, in any phase:
   * this scan (poll, listJobs), an event, or a lookup by domain and disk. One scan at a time:
   * a caller joins the one running when it covers what it asks, else runs its own after it.
   * Resolves whether the scan saw every running domain's disks (never rejects).
   */
  adoptionScan(uuid?: string): Promise<boolean> {
    const cur = this.scanning;
    if (cur) return cur.uuid === undefined || cur.uuid === uuid ? cur.done : cur.done.then(() => this.adoptionScan(uuid));
    const done = this.scan(uuid)
      .then(
        (complete) => {
          this.stalled = false;
          return complete;
        },
        (err: unknown) => {
          // libvirtd did not answer: until a scan completes, reads stop waiting for one.
          this.stalled = isUnanswered(err);
          this.ctx.log.debug('adoption scan failed', { error: err });
          return false;
        },
      )
      .finally(() => {
        this.scanning = null;
      });
    this.scanning = { uuid, startedAt: this.ctx.realNow(), done };
    return done;
  }

  /** The last adoption scan failed because libvirtd did not answer (reads then do not wait for it). */
  get libvirtSilent(): boolean {
    return this.stalled;
  }

  /**
   * A read's scan: runs (or joins) one and waits for it at most `ms` from when it started;
   * not at all while libvirtd is known not to answer (the last scan stalled). Whether the scan
   * completed in time; if not, it goes on in the background and adopts what it finds.
   */
  async scanWithin(uuid: string | undefined, ms: number): Promise<boolean> {
    const done = this.adoptionScan(uuid);
    const left = this.stalled ? 0 : (this.scanning?.startedAt ?? this.ctx.realNow()) + ms - this.ctx.realNow();
    return (await within(done, left))?.value ?? false;
  }

  /**
   * Adopts every unowned <mirror job='copy'> (of one domain, or of all running ones); whether
   * every disk was seen. `recovery`: the reconcile's own scan, which runs while calls are refused
   * and so takes no disk lock (one may be held by a request stuck on the dropped connection).
   */
  private async scan(uuid?: string, recovery?: Recovery): Promise<boolean> {
    let doms: DomainRef[];
    try {
      doms = uuid ? [await this.ctx.conn.lookupDomain(uuid)] : await this.ctx.conn.listDomains({ activeOnly: true });
    } catch (e) {
      if (uuid && isDomainGone(e)) return true;
      throw e;
    }
    let complete = true;
    for (const dom of doms) {
      if (this.ctx.stopped || (this.ctx.recovering && !recovery)) return false;
      if (!dom.active) continue;
      // A slow domain (a call on it hangs in its QEMU) is passed by, not queued behind: the
      // scan goes on with the others and says it was incomplete.
      if (this.ctx.slow.isSlow(dom.uuid)) {
        complete = false;
        continue;
      }
      let xml: string;
      try {
        xml = await this.ctx.conn.getXml(dom.uuid);
      } catch (e) {
        if (isUnanswered(e) && !this.ctx.slow.isSlow(dom.uuid)) throw e;
        if (!isDomainGone(e)) complete = false;
        continue;
      }
      for (const d of parseDisks(xml)) {
        if (!mayRunJob(d) || this.ctx.registry.activeFor(dom.uuid, d.target)) continue;
        try {
          if (recovery) await this.adoptRunning(dom, d);
          else await this.ctx.locks.run(diskKey(dom.uuid, d.target), () => this.adoptIfRunning(dom, d.target));
        } catch (e) {
          if (isUnanswered(e)) throw e;
          complete = false;
        }
      }
    }
    return complete;
  }

  /**
   * A lookup by domain and disk: `{ value }`, the disk's copy started outside the agent, adopted
   * (under the disk's lock), or undefined when there is none; undefined itself when the check
   * has not completed `readMs` after it started (it goes on). One check per disk at a time,
   * shared by the callers meanwhile. Rejects with a named error when libvirtd could not tell.
   */
  checkDisk(uuid: string, target: string, dom?: DomainRef, readMs?: number): Promise<{ value: JobEntry | undefined } | undefined> {
    const key = diskKey(uuid, target);
    return this.checks.run(
      key,
      async () => {
        const d =
          dom ??
          (await this.ctx.conn.lookupDomain(uuid).catch((e: unknown) => {
            if (isDomainGone(e)) return undefined;
            throw toAgentError(e, 'cannot look up the domain');
          }));
        if (!d?.active) return undefined;
        return this.ctx.locks.run(key, () => this.adoptIfRunning(d, target));
      },
      readMs,
    );
  }

  /** Runs under the disk's lock. A domain that is gone or stopped has no job. */
  async adoptIfRunning(dom: DomainRef, target: string): Promise<JobEntry | undefined> {
    const active = this.ctx.registry.activeFor(dom.uuid, target);
    if (active) return active;
    const xml = await this.ctx.conn.getXml(dom.uuid).catch((e: unknown) => {
      if (isDomainGone(e)) return '';
      throw toAgentError(e, 'cannot read the domain to look for a job started outside the agent');
    });
    const d = findDisk(xml, target);
    return d && mayRunJob(d) ? this.adoptRunning(dom, d) : undefined;
  }

  /** Adopts the block job libvirt runs on the disk, if it is of a kind the agent runs. */
  private async adoptRunning(dom: { name: string; uuid: string }, d: DiskInfo): Promise<JobEntry | undefined> {
    // Another agent's domain (config domains): its copies are that agent's, never adopted here.
    if (!this.ctx.manages(dom.name)) return undefined;
    if (d.mirror) {
      const kind = kindOfMirror(d.mirror.job);
      return kind ? this.adopt(dom, d, kind) : undefined;
    }
    const info = await this.ctx.conn.getBlockJobInfo(dom.uuid, d.target).catch((e: unknown) => {
      if (isDomainGone(e)) return null;
      throw toAgentError(e, 'cannot read the block job of a disk to look for a job started outside the agent');
    });
    const kind = info ? kindOfBlockJob(info.type) : null;
    return kind && kind.mirrorJob === null ? this.adopt(dom, d, kind, info) : undefined;
  }

  async adopt(dom: { name: string; uuid: string }, d: DiskInfo, kind: JobKind, known?: BlockJobInfo | null): Promise<JobEntry | undefined> {
    // Progress only: the adoption rests on what was already read; the poll reads the job next.
    const info = known !== undefined ? known : await this.ctx.conn.getBlockJobInfo(dom.uuid, d.target).catch(() => null);
    // After stop() the directory may be the next agent's: nothing more is recorded.
    if (this.ctx.stopped) return undefined;
    const job = kind.adopted(dom, d, info, this.ctx.iso());
    const entry = track({ job, destinationXml: '' });
    this.ctx.entries.set(job.jobId, entry);
    // A record that cannot be written (full state directory) leaves the job known in memory,
    // served to readers; the agent never stops over it. The next change writes it again.
    await this.ctx.recorder
      .persist(entry)
      .catch((e) => this.ctx.log.error('cannot journal an adopted copy; it is tracked in memory', { jobId: job.jobId, error: e }));
    this.ctx.log.info(`adopted a running ${kind.noun}`, {
      jobId: job.jobId,
      domain: dom.name,
      disk: d.target,
      destination: job.destination.path,
    });
    this.ctx.recorder.emitChanged(entry);
    return entry;
  }
}

/** Kinds that show no <mirror> run only on a disk with a backing chain (a commit or pull needs one). */
const WITHOUT_MIRROR = Object.values(KINDS).some((k) => k.mirrorJob === null);

/** Whether the disk may run a block job of a kind the agent runs (only then is its block job read). */
function mayRunJob(d: DiskInfo): boolean {
  if (d.mirror) return kindOfMirror(d.mirror.job) !== null;
  return WITHOUT_MIRROR && (d.backing?.length ?? 0) > 0;
}
