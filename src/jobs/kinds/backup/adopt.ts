// A push-mode backup started outside the agent (virsh backup-begin) found running: the agent
// follows it as a job of its own (progress, end, verification from the kept completed stats),
// marked adopted, and never writes a manifest for it (its files are where its starter put them).
import { dirname } from 'node:path';
import type { BackupJob } from '../../../generated/api.js';
import type { BackupXml, Connection, DomainJobStats } from '../../../libvirt/index.js';
import { compactTime } from './plan.js';
import { fingerprint, type BackupRecord } from './record.js';
import { isThisBackup, pushBackup, runningBackupXml } from './xml.js';

/** The record of a running backup the agent did not start; null for a pull-mode or unreadable one. */
export function adoptedRecord(
  dom: { name: string; uuid: string },
  xml: string,
  now: string,
  prior: DomainJobStats | null,
): BackupRecord | null {
  const read = pushBackup(xml);
  if (!read) return null;
  const { since, disks } = read;
  if (disks.length === 0) return null;
  const job: BackupJob = {
    jobId: `adopted-backup-${dom.uuid.slice(0, 8)}-${compactTime(now)}`,
    kind: 'backup',
    domain: dom,
    state: 'running',
    mode: since === null ? 'full' : 'incremental',
    since,
    checkpoint: null,
    dir: dirname(disks[0]!.file),
    manifest: null,
    disks,
    progress: { processed: '0', total: '0', percent: null },
    owner: 'adopted',
    // Its files are described (and hashed) as the agent's own are, for the job's view.
    checksum: 'sha256',
    createdAt: now,
    updatedAt: now,
  };
  return {
    job,
    backupXml: '' as BackupXml,
    checkpointXml: null,
    priorCompleted: prior && prior.type !== 'none' ? fingerprint(prior.stats) : null,
  };
}

/**
 * The backup running on the domain: undefined when none runs; the jobId of the record that
 * follows it; else a new adopted record (null: one the agent cannot follow, e.g. pull mode).
 */
export async function foreignBackup(
  conn: Connection,
  dom: { name: string; uuid: string },
  known: BackupJob[],
  now: string,
): Promise<{ jobId: string } | { rec: BackupRecord } | null | undefined> {
  const xml = await runningBackupXml(conn, dom.uuid);
  if (xml === null) return undefined;
  const mine = known.find((b) => b.domain.uuid === dom.uuid && b.state === 'running' && isThisBackup(b, xml));
  if (mine) return { jobId: mine.jobId };
  // The completed stats kept now are an earlier job's: never taken for this one's.
  const prior = await conn.getJobStats(dom.uuid, { completed: true, keepCompleted: true }).catch(() => null);
  const rec = adoptedRecord({ name: dom.name, uuid: dom.uuid }, xml, now, prior);
  return rec ? { rec } : null;
}
