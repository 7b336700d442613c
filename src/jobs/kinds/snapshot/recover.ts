// At start-up and after a reconnect: settles the snapshot records a crash (or an unanswered
// call) left behind, from
// the live XML of each domain: did the overlays become the disks' sources? The outcome is
// logged (and audited when an audit trail is given) and the record removed. A record whose
// domain cannot be read now (libvirtd not answering) is kept for the next start.
import type { AuditEntry } from '../../../generated/api.js';
import type { Connection } from '../../../libvirt/index.js';
import type { Logger } from '../../../log.js';
import type { Journal } from '../../journal.js';
import { isDomainGone } from '../../libvirt-errors.js';
import { outcomeOf } from './outcome.js';

export interface RecoverOptions {
  conn: Connection;
  journal: Journal;
  log: Logger;
  audit?: (entry: AuditEntry) => void;
  /** Records of snapshots still in flight in this process: theirs to settle, not recovery's. */
  skip?: ReadonlySet<string>;
}

export type RecoveredOutcome = 'happened' | 'notHappened' | 'partial' | 'domainGone' | 'kept';

/** Settles every op record; resolves to each record's outcome (by opId). */
export async function recoverSnapshots(o: RecoverOptions): Promise<Map<string, RecoveredOutcome>> {
  const out = new Map<string, RecoveredOutcome>();
  const records = await o.journal.loadOps((file, err) => o.log.error('unreadable operation record skipped', { file, error: err }));
  for (const rec of records) {
    if (o.skip?.has(rec.opId)) continue;
    let outcome: RecoveredOutcome;
    try {
      outcome = outcomeOf(await o.conn.getXml(rec.domain.uuid), rec);
    } catch (e) {
      if (!isDomainGone(e)) {
        o.log.warn('snapshot record kept: the domain cannot be read now', { opId: rec.opId, domain: rec.domain.name, error: e });
        out.set(rec.opId, 'kept');
        continue;
      }
      outcome = 'domainGone';
    }
    const data = { opId: rec.opId, domain: rec.domain.name, disks: rec.disks, at: rec.at, outcome };
    if (outcome === 'happened') o.log.info('snapshot interrupted by a restart: it was taken', data);
    else o.log.warn(`snapshot interrupted by a restart: ${outcome === 'notHappened' ? 'it was not taken' : outcome}`, data);
    try {
      o.audit?.({
        time: new Date().toISOString(),
        requestId: `recover-${rec.opId}`,
        principal: rec.principal ?? 'agent',
        peer: 'agent',
        method: 'snapshotDisks',
        params: { domain: rec.domain.uuid, disks: rec.disks.map((d) => ({ disk: d.disk, overlay: { path: d.overlay } })) },
        outcome: outcome === 'happened' ? 'ok' : 'error',
        ...(outcome === 'happened'
          ? {}
          : { error: { code: 0, message: `found after a restart: ${outcome === 'notHappened' ? 'not taken' : outcome}` } }),
      });
    } catch (e) {
      o.log.error('audit write failed', { opId: rec.opId, error: e });
    }
    await o.journal
      .removeOp(rec.opId)
      .catch((e: unknown) => o.log.error('cannot remove a settled snapshot record', { opId: rec.opId, error: e }));
    out.set(rec.opId, outcome);
  }
  return out;
}
