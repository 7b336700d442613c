// A backup job's record (journaled in the state directory as backup-<jobId>.json, written
// atomically before every libvirt side effect) and the state table of the kind.
import { randomUUID } from 'node:crypto';
import { AgentError } from '../../../errors.js';
import type { BackupJob, BackupParams, BackupState } from '../../../generated/api.js';
import type { BackupXml, DomainJobStats } from '../../../libvirt/index.js';
import type { BackupPlan } from './plan.js';
import { toBackupXml, toCheckpointXml } from './xml.js';

export interface BackupRecord {
  job: BackupJob;
  /** The exact documents handed to libvirt. */
  backupXml: BackupXml;
  checkpointXml: BackupXml | null;
  /** The call in flight when the record was written; absent once it returned. */
  intent?: { op: 'backupBegin' | 'abortJob'; at: string };
  /**
   * libvirt's completed-job stats as they were before this backup began (a fingerprint), so a
   * restart never takes an older job's kept stats for this backup's.
   */
  priorCompleted: string | null;
  /** Written durably before the agent asks the guest agent to freeze, cleared once it thawed:
   *  a restart in between thaws (only what the agent froze). */
  frozenAt?: string;
  /** When the caller's timeout aborts the backup (ms since the epoch). */
  timeoutAt?: number;
  principal?: string;
}

export const BACKUP_NEXT: Readonly<Record<BackupState, readonly BackupState[]>> = {
  running: ['completed', 'failed', 'cancelled'],
  completed: [],
  failed: [],
  cancelled: [],
};

export const isBackupOver = (s: BackupState): boolean => BACKUP_NEXT[s].length === 0;

/** A stable text of a stats object (bigints as decimal strings). */
export const fingerprint = (stats: Record<string, unknown>): string =>
  JSON.stringify(
    Object.keys(stats)
      .sort()
      .map((k) => [k, String(stats[k])]),
  );

/**
 * A re-run with the same jobId returns its backup only for the same domain and principal; a key
 * another domain's backup or another principal holds is jobExists (as for every kind).
 */
export function sameRequest(rec: BackupRecord, params: BackupParams, principal: string | undefined): void {
  const b = rec.job;
  const why =
    params.domain !== b.domain.name && params.domain !== b.domain.uuid
      ? `already names a backup of ${b.domain.name}`
      : rec.principal !== undefined && principal !== undefined && rec.principal !== principal
        ? 'belongs to another principal'
        : undefined;
  if (why) throw new AgentError('jobExists', `jobId '${b.jobId}' ${why}`, { job: structuredClone(b) });
}

/** The record of a backup about to begin: its public state, the documents for libvirt, the intent. */
export function newRecord(
  params: BackupParams,
  dom: { name: string; uuid: string },
  plan: BackupPlan,
  startedAt: string,
  prior: DomainJobStats | null,
  principal: string | undefined,
): BackupRecord {
  const job: BackupJob = {
    jobId: params.jobId ?? randomUUID(),
    kind: 'backup',
    domain: { name: dom.name, uuid: dom.uuid },
    state: 'running',
    mode: plan.mode,
    since: plan.since,
    checkpoint: plan.checkpoint,
    dir: plan.dir,
    ...(plan.pool ? { pool: plan.pool } : {}),
    manifest: null,
    disks: plan.disks.map((d) => ({ disk: d.disk, file: d.file, format: d.format })),
    progress: { processed: '0', total: '0', percent: null },
    owner: 'agent',
    checksum: params.checksum ?? 'sha256',
    createdAt: startedAt,
    updatedAt: startedAt,
  };
  const disks = plan.disks.map((d) => d.disk);
  return {
    job,
    backupXml: toBackupXml(plan.disks, plan.since),
    checkpointXml: plan.checkpoint === null ? null : toCheckpointXml(plan.checkpoint, disks, plan.others),
    intent: { op: 'backupBegin', at: startedAt },
    priorCompleted: prior && prior.type !== 'none' ? fingerprint(prior.stats) : null,
    ...(params.timeout !== undefined ? { timeoutAt: Date.now() + params.timeout * 1000 } : {}),
    ...(principal !== undefined ? { principal } : {}),
  };
}
