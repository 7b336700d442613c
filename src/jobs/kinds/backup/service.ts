// backup: the requests of the backup kind (a push-mode backup of a running domain,
// virDomainBackupBegin: a domain job, not a block job): start (plan, journal, then libvirt),
// abort (only the domain's job that is provably this backup), adoption of a backup started
// elsewhere, and the reconcile at start-up and after a reconnect (a running backup is adopted,
// one that ended meanwhile concluded from libvirt's kept stats, else failed with the evidence and
// its partial files named). Following and concluding is tracker.ts's; one backup per domain.
import { AgentError } from '../../../errors.js';
import type {
  AnyJobChange,
  BackupJob,
  BackupParams,
  BackupResult,
  CheckpointsParams,
  CheckpointsResult,
  DeleteCheckpointsParams,
  DeleteCheckpointsResult,
} from '../../../generated/api.js';
import type { Connection } from '../../../libvirt/index.js';
import { faultPoint } from '../../fault-points.js';
import { isOutcomeUnknown, lookupDomain, toAgentError } from '../../libvirt-errors.js';
import { stateUnavailable } from '../../journal.js';
import { until } from '../../until.js';
import { deleteCheckpoints, listCheckpoints } from './checkpoints.js';
import { foreignBackup } from './adopt.js';
import { planBackup } from './plan.js';
import { isBackupOver, newRecord, sameRequest, type BackupRecord } from './record.js';
import { BackupTracker, type Entry } from './tracker.js';
import { GuestControl } from '../../groups/guest.js';

export type { BackupHost, BackupOptions } from './tracker.js';

const AGENT = { owner: 'agent' as const };

export class BackupService extends BackupTracker {
  private readonly guest = new GuestControl(() => this.conn, this.opts.log);
  private poller: NodeJS.Timeout | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private subscribedTo: Connection | undefined;

  /** Loads the records, subscribes to events, settles what happened while the agent was away. */
  async start(): Promise<void> {
    const recs = await this.opts.jobs.store.loadBackups<BackupRecord>((file, err) =>
      this.opts.log.error('unreadable backup record skipped', { file, error: err }),
    );
    for (const rec of recs.sort((a, b) => a.job.createdAt.localeCompare(b.job.createdAt))) this.entries.set(rec.job.jobId, { rec });
    // A crash between a freeze and its thaw: the guest thawed first, as the record says.
    for (const e of this.entries.values()) await this.thawOwn(e);
    await this.subscribe();
    this.opts.jobs.on('agent.connection', (p) => {
      if (p.state === 'restored')
        void this.subscribe()
          .then(() => this.reconcileAll())
          .then(() => this.adoptAll());
    });
    await this.reconcileAll();
    await this.adoptAll();
    const every = this.opts.pollIntervalMs ?? 1000;
    this.poller = setInterval(() => void this.poll(), every);
    this.poller.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.poller) clearInterval(this.poller);
    for (const e of this.entries.values()) if (e.timer) clearTimeout(e.timer);
    await this.unsubscribe?.().catch(() => {});
  }

  private async subscribe(): Promise<void> {
    const conn = this.conn;
    if (this.subscribedTo === conn) return;
    this.subscribedTo = conn;
    this.unsubscribe = await conn.onEvent((e) => this.onEvent(e));
  }

  // ---- the API ----

  async backup(params: BackupParams, by: { principal?: string } = {}): Promise<BackupResult> {
    this.opts.jobs.assertServing();
    const known = params.jobId === undefined ? undefined : this.entries.get(params.jobId);
    if (known) {
      sameRequest(known.rec, params, by.principal);
      return { job: await this.maybeWait(known, params), changed: false };
    }
    const dom = await lookupDomain(this.conn, params.domain, this.opts.jobs.manages);
    const entry = await this.locks.run(dom.uuid, async () => {
      await this.runningOn(dom.uuid, dom.name);
      return this.begin(params, dom, by.principal);
    });
    return { job: await this.maybeWait(entry, params), changed: true };
  }

  /** A backup by id (the id space is every kind's: all-jobs.ts asks here first). */
  get(jobId: string): BackupJob | undefined {
    const e = this.entries.get(jobId);
    return e && this.view(e);
  }

  /** The backups matching listJobs' filter (`domain`: a name or UUID), oldest first. */
  list(f: { domain?: string; states?: readonly string[]; includeEnded: boolean }): BackupJob[] {
    return [...this.entries.values()]
      .map((e) => e.rec.job)
      .filter(
        (b) =>
          (f.domain === undefined || b.domain.name === f.domain || b.domain.uuid === f.domain) &&
          (f.includeEnded || !isBackupOver(b.state)) &&
          (!f.states || f.states.includes(b.state)),
      )
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
      .map((b) => structuredClone(b));
  }

  /** wait: a backup has no ready phase, so until ready and until done both wait for its end. */
  async wait(jobId: string, timeoutS?: number, signal?: AbortSignal): Promise<BackupJob> {
    const e = this.known(jobId);
    await this.waitEnd(e, timeoutS, signal);
    return this.view(e);
  }

  async abort(jobId: string): Promise<AnyJobChange> {
    this.opts.jobs.assertServing();
    const e = this.known(jobId);
    if (isBackupOver(e.rec.job.state)) return { job: this.view(e), changed: false };
    await this.abortNow(e, 'abort');
    await this.waitEnd(e, 60);
    return { job: this.view(e), changed: true };
  }

  private known(jobId: string): Entry {
    const e = this.entries.get(jobId);
    if (!e) throw new AgentError('noJob', `no job '${jobId}'`);
    return e;
  }

  checkpoints(params: CheckpointsParams): Promise<CheckpointsResult> {
    return listCheckpoints(this.conn, params, this.opts.jobs.manages);
  }

  deleteCheckpoints(params: DeleteCheckpointsParams): Promise<DeleteCheckpointsResult> {
    this.opts.jobs.assertServing();
    return deleteCheckpoints(
      this.conn,
      params,
      (uuid, name) => this.locks.run(uuid, () => this.runningOn(uuid, name)),
      this.opts.log,
      this.opts.jobs.manages,
    );
  }

  /** Refuses (backupRunning) while a backup of the domain runs, the agent's own or one started elsewhere. */
  private async runningOn(uuid: string, name: string): Promise<void> {
    const mine = [...this.entries.values()].find((e) => e.rec.job.domain.uuid === uuid && e.rec.job.state === 'running');
    if (mine)
      throw new AgentError('backupRunning', `backup ${mine.rec.job.jobId} of '${name}' is still running`, {
        jobId: mine.rec.job.jobId,
      });
    await this.refuseForeign(uuid, name);
  }

  // ---- start ----

  /** libvirt runs one backup per domain: one started elsewhere (virsh backup-begin) refuses ours by name. */
  private async refuseForeign(uuid: string, name: string): Promise<void> {
    const adopted = await this.adoptForeign({ uuid, name });
    if (adopted !== undefined)
      throw new AgentError(
        'backupRunning',
        `a backup of '${name}' started outside this agent is running`,
        adopted ? { jobId: adopted } : {},
      );
  }

  /** A backup running on the domain that no record follows is adopted: its jobId (null: not adoptable; undefined: none runs). */
  private async adoptForeign(dom: { uuid: string; name: string }): Promise<string | null | undefined> {
    const found = await foreignBackup(
      this.conn,
      dom,
      [...this.entries.values()].map((e) => e.rec.job),
      this.opts.jobs.now(),
    );
    if (found === null || found === undefined || 'jobId' in found) return found === null || found === undefined ? found : found.jobId;
    await this.save(found.rec).catch((e: unknown) => this.opts.log.error('cannot write an adopted backup record', { error: e }));
    const entry: Entry = { rec: found.rec };
    this.entries.set(found.rec.job.jobId, entry);
    this.opts.log.info('backup started elsewhere adopted', { jobId: found.rec.job.jobId, domain: dom.name });
    this.changed(entry);
    return found.rec.job.jobId;
  }

  private async begin(
    params: BackupParams,
    dom: { name: string; uuid: string; active: boolean } & object,
    principal?: string,
  ): Promise<Entry> {
    const startedAt = this.opts.jobs.now();
    const plan = await planBackup(
      this.conn,
      this.opts.checkDestination,
      this.opts.allowedPools,
      params,
      dom as Parameters<typeof planBackup>[4],
      startedAt,
      this.opts.log,
    );
    const prior = await this.conn.getJobStats(dom.uuid, { completed: true, keepCompleted: true }).catch(() => null);
    const rec = newRecord(params, dom, plan, startedAt, prior, principal);
    const backup = rec.job;
    this.claimId(backup.jobId);
    const entry: Entry = { rec };
    this.entries.set(backup.jobId, entry);
    await this.save(rec).catch((e: unknown) => {
      this.entries.delete(backup.jobId);
      throw stateUnavailable(e, 'the backup');
    });
    faultPoint('backup:journaled', AGENT);
    if (params.quiesce === 'required' || params.quiesce === 'try') await this.quiesce(entry, params.quiesce);
    try {
      await this.conn.backupBegin(dom.uuid, rec.backupXml, rec.checkpointXml);
    } catch (e) {
      await this.thawOwn(entry);
      if (isOutcomeUnknown(e)) {
        // libvirtd may still start it: the poll and the next reconcile tell.
        this.opts.log.warn('backup begin: outcome unknown; the poll settles it', { jobId: backup.jobId, error: e });
        return entry;
      }
      await this.end(entry, 'failed', { name: 'libvirtError', message: `libvirt refused the backup: ${(e as Error).message}` }, false);
      throw toAgentError(e, 'libvirt refused the backup');
    }
    delete rec.intent;
    await this.save(rec).catch((e: unknown) => this.opts.log.error('cannot clear a backup intent', { jobId: backup.jobId, error: e }));
    faultPoint('backup:sent', AGENT);
    await this.thawOwn(entry);
    this.armTimeout(entry);
    this.changed(entry);
    this.opts.log.info('backup started', { jobId: backup.jobId, domain: dom.name, mode: plan.mode, checkpoint: plan.checkpoint });
    return entry;
  }

  /**
   * Freezes the guest's filesystems for the backup's moment, the freeze journaled first. Without
   * a guest agent that freezes: `required` removes the record and throws quiesceFailed (nothing
   * was started), `try` notes why and goes on unquiesced.
   */
  private async quiesce(e: Entry, mode: 'required' | 'try'): Promise<void> {
    const b = e.rec.job;
    const unquiesced = async (why: string) => {
      if (mode === 'try') {
        b.quiesced = false;
        b.quiesceNote = why;
        return;
      }
      this.entries.delete(b.jobId);
      await this.opts.jobs.store.removeBackup(b.jobId).catch(() => {});
      throw new AgentError('quiesceFailed', `cannot quiesce the guest for the backup; nothing was started: ${why}`);
    };
    if (!(await this.guest.hasGuestAgent(b.domain.uuid))) return unquiesced('the domain has no QEMU guest agent channel');
    e.rec.frozenAt = this.opts.jobs.now();
    await this.save(e.rec).catch((err: unknown) => {
      throw stateUnavailable(err, 'the freeze');
    });
    try {
      await this.guest.freeze(b.domain.uuid);
      b.quiesced = true;
    } catch (err) {
      // A freeze libvirt refused froze nothing of ours (perhaps a freeze by someone else): not
      // thawed. One whose answer was lost may have frozen: thawed, as the agent's own.
      if (isOutcomeUnknown(err)) await this.thawOwn(e);
      else {
        delete e.rec.frozenAt;
        await this.save(e.rec).catch(() => {});
      }
      await unquiesced((err as Error).message);
    }
  }

  /** Thaws what the record says the agent froze; kept in the record (retried at the next start) when libvirt cannot confirm. */
  protected async thawOwn(e: Entry): Promise<void> {
    if (e.rec.frozenAt === undefined) return;
    const r = await this.guest.thaw(e.rec.job.domain.uuid);
    if (!r.ok)
      return this.opts.log.error("cannot thaw the guest's filesystems the backup froze", { jobId: e.rec.job.jobId, error: r.error });
    delete e.rec.frozenAt;
    await this.save(e.rec).catch((err: unknown) => this.opts.log.error('cannot journal a thaw', { jobId: e.rec.job.jobId, error: err }));
  }

  /** A jobId names one job of one kind: one a block job or another backup holds is jobExists. */
  private claimId(jobId: string): void {
    const other = this.opts.jobs.job(jobId) ?? this.entries.get(jobId)?.rec.job;
    if (other)
      throw new AgentError('jobExists', `jobId '${jobId}' already names a ${other.kind} job on ${other.domain.name}`, {
        job: structuredClone(other),
      });
  }

  private armTimeout(e: Entry): void {
    if (e.rec.timeoutAt === undefined || isBackupOver(e.rec.job.state)) return;
    e.timer = setTimeout(
      () => void this.abortNow(e, 'timeout').catch((err) => this.opts.log.error('cannot abort a backup at its timeout', { error: err })),
      Math.max(0, e.rec.timeoutAt - Date.now()),
    );
    e.timer.unref();
  }

  // ---- abort ----

  private async abortNow(e: Entry, why: 'abort' | 'timeout'): Promise<void> {
    const b = e.rec.job;
    await this.locks.run(b.domain.uuid, async () => {
      if (isBackupOver(b.state)) return;
      // Only when the domain's current job is provably this backup: a backup job whose targets are this one's files.
      if (!(await this.isLiveBackup(e)))
        throw new AgentError('invalidState', `the domain's current job is not backup ${b.jobId}; nothing was aborted`);
      e.rec.intent = { op: 'abortJob', at: this.opts.jobs.now() };
      await this.save(e.rec).catch((err: unknown) => {
        throw stateUnavailable(err, 'the abort');
      });
      await this.conn.abortJob(b.domain.uuid).catch((err: unknown) => {
        throw toAgentError(err, 'libvirt refused the abort');
      });
      this.opts.log.info('backup abort sent', { jobId: b.jobId, why });
    });
    void this.conclude(e, why === 'timeout' ? 'the abort at its timeout' : 'the abort');
  }

  // ---- observe and conclude ----

  /** Backups started elsewhere on running domains (at start-up and after a reconnect). */
  private async adoptAll(): Promise<void> {
    const doms = await this.conn.listDomains({ activeOnly: true }).catch(() => []);
    for (const d of doms.filter((x) => this.opts.jobs.manages(x.name)))
      await this.locks
        .run(d.uuid, () => this.adoptForeign(d))
        .catch((e: unknown) => this.opts.log.warn('cannot look for a backup started elsewhere', { domain: d.name, error: e }));
  }

  private async reconcileAll(): Promise<void> {
    for (const e of this.entries.values()) {
      if (e.rec.job.state !== 'running') continue;
      const live = await this.isLiveBackup(e).catch(() => null);
      if (live === null) continue; // libvirtd does not answer: the poll retries
      if (live) {
        this.opts.log.info('running backup adopted', { jobId: e.rec.job.jobId });
        delete e.rec.intent;
        this.armTimeout(e);
        this.changed(e);
      } else {
        await this.conclude(e, 'the reconcile at start or reconnect');
      }
    }
  }

  // ---- helpers ----

  private async maybeWait(e: Entry, params: BackupParams): Promise<BackupJob> {
    if (params.wait) await this.waitEnd(e);
    return this.view(e);
  }

  /** Until the backup has ended (the one wait of every kind: until.ts); timeout names it with its state. */
  private async waitEnd(e: Entry, timeoutS?: number, signal?: AbortSignal): Promise<void> {
    const over = () => isBackupOver(e.rec.job.state);
    if (!(await until(this, 'job.changed', over, timeoutS !== undefined ? timeoutS * 1000 : undefined, signal)))
      throw new AgentError('timeout', `job ${e.rec.job.jobId} is still ${e.rec.job.state} after ${timeoutS} s`, { job: this.view(e) });
  }
}
