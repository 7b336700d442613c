// How a backup ended, decided from libvirt's completed-job stats (read with KEEP_COMPLETED by
// the caller), never from a request or an event alone; and, for a completed one, its files
// described and appended to the manifest.
import { lstat } from 'node:fs/promises';
import type { BackupJob, ErrorName } from '../../../generated/api.js';
import { JOB_OPERATION_BACKUP, type DomainJobStats } from '../../../libvirt/index.js';
import { appendToManifest, describeFile } from './manifest.js';
import { fingerprint, type BackupRecord } from './record.js';

export type Ending =
  | { state: 'completed'; evidence: string }
  | { state: 'failed' | 'cancelled'; error: { name: ErrorName; message: string; evidence: string } };

const big = (v: unknown): bigint => (typeof v === 'bigint' ? v : typeof v === 'number' ? BigInt(Math.trunc(v)) : 0n);

/** The public progress from a running backup's job stats (disk_processed / disk_total). */
export function progressOf(s: DomainJobStats): BackupJob['progress'] {
  const total = big(s.stats.disk_total ?? s.stats.data_total);
  const processed = big(s.stats.disk_processed ?? s.stats.data_processed);
  return { processed: String(processed), total: String(total), percent: total > 0n ? Number((processed * 10000n) / total) / 100 : null };
}

/** `done`: the completed stats (null: the domain is gone). */
export function decideEnd(rec: BackupRecord, done: DomainJobStats | null, seenBy: string): Ending {
  const stale = done !== null && rec.priorCompleted !== null && fingerprint(done.stats) === rec.priorCompleted;
  const ours = done !== null && !stale && done.type !== 'none' && done.stats.operation === JOB_OPERATION_BACKUP;
  const stats = done ? JSON.stringify(Object.fromEntries(Object.entries(done.stats).map(([k, v]) => [k, String(v)]))) : '';
  const evidence = done
    ? `libvirt's completed-job stats (seen by ${seenBy}): type ${done.type}${stale ? ' (those of an earlier job)' : ''} ${stats}`
    : `the domain is gone (seen by ${seenBy})`;
  if (ours && done.type === 'completed') return { state: 'completed', evidence };
  if (ours && done.type === 'cancelled')
    return { state: 'cancelled', error: { name: 'libvirtError', message: 'the backup was cancelled; its files are incomplete', evidence } };
  const errmsg = ours && typeof done.stats.errmsg === 'string' ? `: ${done.stats.errmsg}` : '';
  const message = ours
    ? `the backup failed${errmsg}`
    : 'the backup ended and libvirt kept no completed stats of it: its outcome cannot be verified, so it is reported failed and its files are incomplete';
  return { state: 'failed', error: { name: 'libvirtError', message, evidence } };
}

/**
 * Describes each file (size, virtual size, SHA-256) into `b` and appends it to the manifest.
 * `detached`: libvirt has detached the targets from QEMU (see BackupTracker.detached).
 */
export async function recordFiles(
  b: BackupJob,
  done: DomainJobStats,
  now: string,
  detached: boolean,
): Promise<Record<string, 'closed' | 'settled'>> {
  const described = await Promise.all(
    b.disks.map(async (d) => ({ disk: d.disk, ...(await describeFile(d.file, d.format, { detached, checksum: b.checksum })) })),
  );
  b.endedAt = now;
  for (const d of b.disks) {
    const x = described.find((y) => y.disk === d.disk)!;
    Object.assign(d, { virtualSize: x.virtualSize, size: x.size }, x.sha256 === null ? {} : { sha256: x.sha256 });
  }
  if (done.stats.disk_total !== undefined) {
    const total = String(big(done.stats.disk_total));
    b.progress = { processed: total, total, percent: 100 };
  }
  // How each file was known final: QEMU closed it, or it stayed unchanged for a while.
  const final = Object.fromEntries(described.map((d) => [d.disk, d.final]));
  // A backup started elsewhere gets no manifest from the agent (its files are its starter's).
  if (b.owner === 'adopted') return final;
  b.manifest = await appendToManifest(
    b,
    described.map(({ path: _p, final: _f, ...d }) => d),
  );
  return final;
}

/** The backup's files that exist (libvirt removes the ones it created when a backup fails). */
export async function leftFiles(b: BackupJob): Promise<string[]> {
  const left: string[] = [];
  for (const d of b.disks)
    if (
      await lstat(d.file).then(
        () => true,
        () => false,
      )
    )
      left.push(d.file);
  return left;
}
