// The backup kind's tracking half: the backups the agent follows (its own and adopted ones),
// their progress from libvirt's domain job stats, their end from the JOB_COMPLETED event or the
// poll, verified from the completed-job stats read with KEEP_COMPLETED (never assumed), the
// files described and the manifest written; every change journaled and sent as job.changed.
// The requests (start, abort, adoption, reconcile) are service.ts's, on top of this.
import { EventEmitter } from 'node:events';
import type { ErrorName } from '../../../errors.js';
import type { BackupJob, BackupState, Job } from '../../../generated/api.js';
import type { DestinationCheck } from '../../../destination/policy.js';
import {
  JOB_OPERATION_BACKUP,
  LibvirtError,
  VirErrorCode,
  type Connection,
  type DomainEvent,
  type DomainJobStats,
} from '../../../libvirt/index.js';
import type { Logger } from '../../../log.js';
import { KeyedMutex } from '../../lock.js';
import type { Journal } from '../../journal.js';
import { decideEnd, leftFiles, progressOf, recordFiles } from './conclude.js';
import { BACKUP_NEXT, isBackupOver, type BackupRecord } from './record.js';
import { isThisBackup, runningBackupXml } from './xml.js';

/** What the backup kind needs of the job manager (JobManager satisfies it). */
export interface BackupHost {
  readonly connection: Connection;
  readonly store: Journal;
  assertServing(): void;
  now(): string;
  /** Whether a domain (by name) is this agent's (config domains): others' backups are never adopted. */
  readonly manages: (name: string) => boolean;
  on(event: 'agent.connection', listener: (p: { state: string }) => void): unknown;
  /** The block job of that id: one id space for every kind (all-jobs.ts). */
  job(jobId: string): Job | undefined;
}

export interface BackupOptions {
  jobs: BackupHost;
  checkDestination: DestinationCheck;
  allowedPools: readonly string[];
  log: Logger;
  pollIntervalMs?: number;
}

export interface Entry {
  rec: BackupRecord;
  /** A conclusion under way (one at a time). */
  concluding?: Promise<void>;
  timer?: NodeJS.Timeout;
}

/** Ended backups remembered (as the job manager's keepEnded). */
const KEEP_ENDED = 1000;

export class BackupTracker extends EventEmitter {
  protected readonly entries = new Map<string, Entry>();
  protected readonly locks = new KeyedMutex();
  protected stopped = false;

  constructor(protected readonly opts: BackupOptions) {
    super();
  }

  /** job.changed, with the public view (all-jobs.ts merges it into the one stream). */
  protected changed(e: Entry): void {
    this.emit('job.changed', this.view(e));
  }

  protected get conn(): Connection {
    return this.opts.jobs.connection;
  }

  protected onEvent(e: DomainEvent): void {
    if (e.kind !== 'jobCompleted' && !(e.kind === 'lifecycle' && (e.event === 'stopped' || e.event === 'crashed'))) return;
    for (const entry of this.entries.values())
      if (entry.rec.job.domain.uuid === e.domain.uuid && entry.rec.job.state === 'running')
        void this.conclude(
          entry,
          e.kind === 'jobCompleted' ? 'the JOB_COMPLETED event' : `the domain ${e.kind === 'lifecycle' ? e.event : ''}`,
        );
  }

  /** The domain's running backup job is this one (same target files), read from libvirt now. */
  protected async isLiveBackup(e: Entry): Promise<boolean> {
    return isThisBackup(e.rec.job, await runningBackupXml(this.conn, e.rec.job.domain.uuid));
  }

  protected async poll(): Promise<void> {
    if (this.stopped) return;
    for (const e of this.entries.values()) {
      if (e.rec.job.state !== 'running' || e.concluding) continue;
      const stats = await this.conn.getJobStats(e.rec.job.domain.uuid).catch(() => null);
      if (!stats) continue;
      if (stats.type !== 'none' && stats.stats.operation === JOB_OPERATION_BACKUP) {
        this.progress(e, stats);
      } else if (e.rec.intent?.op !== 'backupBegin' || Date.now() - Date.parse(e.rec.intent.at) > 30_000) {
        // No backup job any more (an event missed, or a begin whose answer was lost): conclude.
        void this.conclude(e, 'the poll (no backup job running)');
      }
    }
  }

  private progress(e: Entry, s: DomainJobStats): void {
    const p = progressOf(s);
    const was = e.rec.job.progress;
    if (was.processed === p.processed && was.total === p.total) return;
    e.rec.job.progress = p;
    e.rec.job.updatedAt = this.opts.jobs.now();
    this.changed(e);
  }

  protected conclude(e: Entry, seenBy: string): Promise<void> {
    e.concluding ??= this.locks
      .run(e.rec.job.domain.uuid, () => this.concludeNow(e, seenBy))
      .catch((err) => this.opts.log.error('cannot conclude a backup yet; the poll retries', { jobId: e.rec.job.jobId, error: err }))
      .finally(() => (e.concluding = undefined));
    return e.concluding;
  }

  private async concludeNow(e: Entry, seenBy: string): Promise<void> {
    const b = e.rec.job;
    if (isBackupOver(b.state)) return;
    if (await this.isLiveBackup(e).catch(() => true)) return; // still running (or unknown): not over
    const done = await this.conn.getJobStats(b.domain.uuid, { completed: true, keepCompleted: true }).catch((err: unknown) => {
      if (err instanceof LibvirtError && err.code === VirErrorCode.NO_DOMAIN) return null;
      throw err;
    });
    const ending = decideEnd(e.rec, done, seenBy);
    if (ending.state !== 'completed') return this.end(e, ending.state, ending.error, true);
    try {
      const final = await recordFiles(b, done!, this.opts.jobs.now(), await this.detached(b));
      this.opts.log.info('backup files described', { jobId: b.jobId, final });
    } catch (err) {
      const message = `libvirt reported the backup complete, but its files could not be checked: ${(err as Error).message}`;
      return this.end(e, 'failed', { name: 'libvirtError', message, evidence: ending.evidence }, true);
    }
    await this.end(e, 'completed', undefined, false);
  }

  /**
   * Whether libvirt has detached the backup's targets from QEMU. libvirt sends JOB_COMPLETED from
   * the domain job that handles the block jobs' end, and detaches the targets (QEMU's close, its
   * last metadata writes) later in that same job (qemu_blockjob.c, qemu_backup.c): a query that
   * needs a domain job of its own (virDomainGetBlockInfo) answers only once that job is over.
   * A domain that is gone took its QEMU, and every open file, with it.
   */
  private async detached(b: BackupJob): Promise<boolean> {
    try {
      await this.conn.getBlockInfo(b.domain.uuid, b.disks[0]!.disk);
      return true;
    } catch (err) {
      return err instanceof LibvirtError && err.code === VirErrorCode.NO_DOMAIN;
    }
  }

  protected async end(
    e: Entry,
    state: BackupState,
    error: { name: ErrorName; message: string; evidence?: string } | undefined,
    partial: boolean,
  ): Promise<void> {
    const b = e.rec.job;
    if (!BACKUP_NEXT[b.state].includes(state)) return;
    b.state = state;
    b.updatedAt = this.opts.jobs.now();
    b.endedAt ??= b.updatedAt;
    if (error) b.error = error;
    if (partial) b.partialFiles = await leftFiles(b);
    delete e.rec.intent;
    if (e.timer) clearTimeout(e.timer);
    await this.save(e.rec).catch((err) => this.opts.log.error('cannot write a backup record', { jobId: b.jobId, error: err }));
    this.opts.log.info(`backup ${state}`, {
      jobId: b.jobId,
      domain: b.domain.name,
      ...(error ? { error } : {}),
      partialFiles: b.partialFiles,
    });
    this.changed(e);
    this.forgetOldest();
  }

  /** Ended backups beyond the newest KEEP_ENDED are forgotten (memory and record): the list stays bounded. */
  private forgetOldest(): void {
    const ended = [...this.entries.values()].filter((x) => isBackupOver(x.rec.job.state));
    ended.sort((a, b) => a.rec.job.createdAt.localeCompare(b.rec.job.createdAt));
    for (const old of ended.slice(0, Math.max(0, ended.length - KEEP_ENDED))) {
      this.entries.delete(old.rec.job.jobId);
      void this.opts.jobs.store
        .removeBackup(old.rec.job.jobId)
        .catch((err: unknown) => this.opts.log.warn('cannot remove an old backup record', { error: err }));
    }
  }

  protected view(e: Entry): BackupJob {
    return structuredClone(e.rec.job);
  }

  protected save(rec: BackupRecord): Promise<void> {
    return this.opts.jobs.store.saveBackup(rec.job.jobId, rec);
  }
}
