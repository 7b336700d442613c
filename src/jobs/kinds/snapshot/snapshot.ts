// snapshotDisks: an external disk-only snapshot of some disks of a running domain at one moment
// (virDomainSnapshotCreateXML with DISK_ONLY, NO_METADATA, ATOMIC, and QUIESCE when asked). A
// one-shot operation, not a block job: it is checked, journaled durably (an op record), made,
// verified in the live XML, and its record removed. After a crash between the record and the
// answer, recover.ts tells from the live XML whether it happened.
import { randomUUID } from 'node:crypto';
import { AgentError } from '../../../errors.js';
import type { ListJobsParams, ListJobsResult, SnapshotDisksParams, SnapshotDisksResult } from '../../../generated/api.js';
import { DEFAULTS } from '../../../generated/api.js';
import type { DestinationCheck } from '../../../destination/policy.js';
import type { Connection, DomainRef, SnapshotXml } from '../../../libvirt/index.js';
import { LibvirtError, VirErrorCode } from '../../../libvirt/index.js';
import { parseDomainXml } from '../../../libvirt/disk-xml.js';
import type { Logger } from '../../../log.js';
import { faultPoint } from '../../fault-points.js';
import { KeyedMutex } from '../../lock.js';
import { isTerminal } from '../../state-machine.js';
import { isOutcomeUnknown, libvirtData, lookupDomain, outcomeUnknown, toAgentError } from '../../libvirt-errors.js';
import { stateUnavailable, type Journal, type OpRecord } from '../../journal.js';
import { checkSnapshot } from './checks.js';
import { outcomeOf } from './outcome.js';
import { toSnapshotXml } from './xml.js';
import { recoverSnapshots, type RecoverOptions } from './recover.js';
import { isBlockJob } from '../../../job-types.js';

/** What the snapshot operation needs of the job manager (JobManager satisfies it). */
export interface SnapshotHost {
  readonly connection: Connection;
  readonly store: Journal;
  assertServing(): void;
  now(): string;
  listJobs(params: ListJobsParams): Promise<ListJobsResult>;
  /** Whether a domain (by name) is this agent's (config domains). */
  readonly manages: (name: string) => boolean;
}

export interface SnapshotOptions {
  jobs: SnapshotHost;
  checkDestination: DestinationCheck;
  log: Logger;
}

/** The guest agent could not freeze: none configured, not connected, not answering. */
export function isGuestAgentFailure(e: unknown): boolean {
  if (!(e instanceof LibvirtError) || isOutcomeUnknown(e)) return false;
  if (e.code === VirErrorCode.AGENT_UNRESPONSIVE) return true;
  return /guest agent|quiesce|fsfreeze|freeze/i.test(e.message);
}

/** A snapshot is always the agent's own (crash points fire only for the agent's own work). */
const AGENT = { owner: 'agent' as const };

export class SnapshotService {
  private readonly locks = new KeyedMutex();
  /** Snapshots whose libvirt call is in flight in this process (recovery leaves their records). */
  private readonly inFlight = new Set<string>();

  constructor(private readonly opts: SnapshotOptions) {}

  private get conn(): Connection {
    return this.opts.jobs.connection;
  }

  async snapshotDisks(params: SnapshotDisksParams, by: { principal?: string } = {}): Promise<SnapshotDisksResult> {
    this.opts.jobs.assertServing();
    const dom = await lookupDomain(this.conn, params.domain, this.opts.jobs.manages);
    // One snapshot of a domain at a time: the second sees the first one's overlays as sources.
    return this.locks.run(dom.uuid, () => this.take(params, dom, by.principal));
  }

  private async take(params: SnapshotDisksParams, dom: DomainRef, principal?: string): Promise<SnapshotDisksResult> {
    const { jobs } = await this.opts.jobs.listJobs({ domain: dom.uuid });
    const busy = new Set(
      jobs
        .filter(isBlockJob)
        .filter((j) => !isTerminal(j.state))
        .map((j) => j.disk),
    );
    const checked = await checkSnapshot(this.conn, this.opts.checkDestination, params, dom, busy, this.opts.log);
    const xml = toSnapshotXml(checked.disks, checked.untouched);
    const rec: OpRecord = {
      opId: randomUUID(),
      kind: 'snapshot',
      domain: { name: dom.name, uuid: dom.uuid },
      disks: checked.disks,
      at: this.opts.jobs.now(),
      ...(principal !== undefined ? { principal } : {}),
    };
    await this.opts.jobs.store.saveOp(rec).catch((e: unknown) => {
      throw stateUnavailable(e, 'the snapshot');
    });
    this.inFlight.add(rec.opId);
    try {
      return await this.send(rec, params, dom, xml);
    } finally {
      this.inFlight.delete(rec.opId);
    }
  }

  /**
   * After a reconnect: the records of snapshots whose answer was lost with the old connection
   * (or timed out) are settled from the live XML, as at start-up, except those still in flight.
   */
  settleLeftovers(audit?: RecoverOptions['audit']): Promise<unknown> {
    return recoverSnapshots({
      conn: this.conn,
      journal: this.opts.jobs.store,
      log: this.opts.log,
      skip: this.inFlight,
      ...(audit ? { audit } : {}),
    });
  }

  private async send(rec: OpRecord, params: SnapshotDisksParams, dom: DomainRef, xml: SnapshotXml): Promise<SnapshotDisksResult> {
    faultPoint('snapshot:journaled', AGENT);
    const quiesce = params.quiesce ?? DEFAULTS.SnapshotDisksParams.quiesce;
    let quiesced = quiesce !== 'none';
    const call = (withQuiesce: boolean) =>
      this.conn.snapshotCreateXml(dom.uuid, xml, { diskOnly: true, noMetadata: true, atomic: true, quiesce: withQuiesce });
    try {
      try {
        await call(quiesced);
      } catch (e) {
        if (!quiesced || !isGuestAgentFailure(e)) throw e;
        if (quiesce === 'required')
          throw new AgentError('quiesceFailed', `cannot quiesce the guest for the snapshot; nothing was changed: ${(e as Error).message}`, {
            libvirt: libvirtData(e as LibvirtError),
          });
        this.opts.log.info('snapshot: the guest could not be quiesced; taken without', { domain: dom.name, error: (e as Error).message });
        quiesced = false;
        await call(false);
      }
    } catch (e) {
      if (isOutcomeUnknown(e)) {
        // libvirtd may still act on it: unless the live XML already shows it done, the record
        // stays and the next start of the agent settles it (recover.ts).
        const happened = await this.conn
          .getXml(dom.uuid)
          .then((x) => outcomeOf(x, rec) === 'happened')
          .catch(() => false);
        if (happened) return this.answer(rec, dom, quiesced);
        throw outcomeUnknown(e, 'snapshot', "the live XML shows whether the overlays became the disks' sources", { opId: rec.opId });
      }
      await this.opts.jobs.store
        .removeOp(rec.opId)
        .catch((err) => this.opts.log.error('cannot remove a snapshot record', { opId: rec.opId, error: err }));
      if (e instanceof AgentError) throw e;
      throw toAgentError(e, 'libvirt refused the snapshot');
    }
    faultPoint('snapshot:sent', AGENT);
    return this.answer(rec, dom, quiesced);
  }

  /** Verifies the live XML, removes the record, answers. */
  private async answer(rec: OpRecord, dom: DomainRef, quiesced: boolean): Promise<SnapshotDisksResult> {
    const xml = await this.conn.getXml(dom.uuid).catch((e: unknown) => {
      throw toAgentError(e, 'the snapshot was taken, but the domain cannot be read to verify it');
    });
    const outcome = outcomeOf(xml, rec);
    if (outcome !== 'happened') {
      throw new AgentError(
        'libvirtError',
        `libvirt reported the snapshot taken, but the live XML shows it ${outcome === 'partial' ? 'partly' : 'not'} applied`,
        {
          opId: rec.opId,
        },
      );
    }
    await this.opts.jobs.store
      .removeOp(rec.opId)
      .catch((err) => this.opts.log.error('cannot remove a snapshot record', { opId: rec.opId, error: err }));
    const live = parseDomainXml(xml).disks;
    this.opts.log.info('snapshot taken', { domain: dom.name, disks: rec.disks, quiesced });
    return {
      domain: { name: dom.name, uuid: dom.uuid },
      quiesced,
      disks: rec.disks.map((d) => ({
        disk: d.disk,
        overlay: { path: d.overlay, format: 'qcow2' as const },
        backing: live.find((x) => x.target === d.disk)?.backing?.[0]?.path ?? d.source,
      })),
    };
  }
}
