// Reconcile at start-up and after a reconnect, and adoption of copies this agent did not
// start: every journaled job against libvirt's live state, every unowned <mirror job='copy'>.
import type { DomainRef } from '../libvirt/index.js';
import { findDisk, parseDisks, type DiskInfo } from './disk-xml.js';
import { adoptedJob, diskKey, track, type Tracked } from './job.js';
import { Observer, type Recovery } from './observe.js';
import { isTerminal } from './state-machine.js';
import type { JobContext } from './context.js';

export class Reconciler {
  private scanning: Promise<void> | null = null;
  private readonly observer: Observer;

  constructor(private readonly ctx: JobContext) {
    this.observer = new Observer(ctx);
  }

  async reconcile(when: Recovery): Promise<void> {
    for (const entry of this.ctx.entries.values()) {
      if (isTerminal(entry.rec.job.state)) continue;
      await this.reconcileOne(entry, when).catch((err) => this.ctx.log.error('reconcile failed', { jobId: entry.rec.job.jobId, error: err }));
    }
    // Copies started elsewhere (virsh, another tool, an earlier agent that lost its journal).
    let domains: DomainRef[] = [];
    try {
      domains = await this.ctx.conn.listDomains({ activeOnly: true });
    } catch (err) {
      this.ctx.log.error('cannot list domains to adopt running copies', { error: err });
    }
    for (const dom of domains) {
      const xml = await this.ctx.conn.getXml(dom.uuid).catch(() => '');
      for (const d of parseDisks(xml)) {
        if (d.mirror?.job === 'copy' && !this.ctx.registry.activeFor(dom.uuid, d.target)) await this.adopt(dom, d);
      }
    }
    this.ctx.registry.pruneEnded();
  }

  /** One journaled job against libvirt: the poll's observation, with recovery's policy (observe.ts). */
  reconcileOne(entry: Tracked, when: Recovery): Promise<void> {
    return this.observer.observe(entry, when);
  }

  /**
   * Copies started outside the agent while it runs are adopted when first seen, in any phase:
   * this scan (poll, listJobs), an event, or a lookup by domain and disk. One scan at a time.
   */
  adoptionScan(uuid?: string): Promise<void> {
    if (this.scanning) return this.scanning;
    this.scanning = (async () => {
      const doms = uuid ? [await this.ctx.conn.lookupDomain(uuid)] : await this.ctx.conn.listDomains({ activeOnly: true });
      for (const dom of doms) {
        if (this.ctx.stopped || this.ctx.recovering) return;
        if (!dom.active) continue;
        const xml = await this.ctx.conn.getXml(dom.uuid).catch(() => '');
        for (const d of parseDisks(xml)) {
          if (d.mirror?.job !== 'copy' || this.ctx.registry.activeFor(dom.uuid, d.target)) continue;
          await this.ctx.locks.run(diskKey(dom.uuid, d.target), () => this.adoptIfMirrored(dom, d.target));
        }
      }
    })().catch((err) => this.ctx.log.debug('adoption scan failed', { error: err })).finally(() => { this.scanning = null; });
    return this.scanning;
  }

  /** Runs under the disk's lock. */
  async adoptIfMirrored(dom: DomainRef, target: string): Promise<Tracked | undefined> {
    const active = this.ctx.registry.activeFor(dom.uuid, target);
    if (active) return active;
    const xml = await this.ctx.conn.getXml(dom.uuid).catch(() => '');
    const d = findDisk(xml, target);
    if (d?.mirror?.job !== 'copy') return undefined;
    return this.adopt(dom, d);
  }

  async adopt(dom: { name: string; uuid: string }, d: DiskInfo): Promise<Tracked | undefined> {
    const info = await this.ctx.conn.getBlockJobInfo(dom.uuid, d.target).catch(() => null);
    // After stop() the directory may be the next agent's: nothing more is recorded.
    if (this.ctx.stopped) return undefined;
    const job = adoptedJob(dom, d, info, this.ctx.iso());
    const entry = track({ job, destinationXml: '' });
    this.ctx.entries.set(job.jobId, entry);
    // A record that cannot be written (full state directory) leaves the job known in memory,
    // served to readers; the agent never stops over it. The next change writes it again.
    await this.ctx.recorder.persist(entry).catch((e) => this.ctx.log.error('cannot journal an adopted copy; it is tracked in memory', { jobId: job.jobId, error: e }));
    this.ctx.log.info('adopted a running copy', { jobId: job.jobId, domain: dom.name, disk: d.target, destination: job.destination.path });
    this.ctx.recorder.emitChanged(entry);
    return entry;
  }
}
