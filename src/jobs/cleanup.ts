// deleteMerged: the kernel's one post-end step, which the chain kinds opt into through
// JobKind.mergedPaths. When a job that promised it ends (the recorder's terminal transition,
// always decided from the live XML), the files that left the chain are checked
// (cleanup-files.ts) against the policy and against every domain's storage (live and
// persistent definitions: a persistent definition that still names a file keeps it), the files
// to delete and their identities are journaled durably (state `deleting`), then each is
// unlinked after its identity is compared again and its removal journaled. A restart finds a
// `pending` or `deleting` cleanup of an ended job and finishes it: nothing is lost, and a file
// deleted before the crash is found gone and reported removed, never deleted twice.
import type { Job } from '../generated/api.js';
import { identitiesOf, type DiskIdentities } from '../destination/identity.js';
import { DEFAULT_ROOTS } from '../destination/policy.js';
import type { JobContext } from './context.js';
import { faultPoint } from './fault-points.js';
import { domainStorage } from './inventory.js';
import type { JobEntry } from './job.js';
import { kindOf } from './kinds/index.js';
import { isTerminal } from './state-machine.js';
import { mayDelete, unlinkIfSame, type CleanupPolicy } from './cleanup-files.js';

export type { CleanupPolicy };

/** The policy when none is given (unit tests): the default roots, no trusted owners besides root. */
export const DEFAULT_CLEANUP_POLICY: CleanupPolicy = { roots: DEFAULT_ROOTS, trustedOwners: new Set() };

type JobCleanup = NonNullable<Job['cleanup']>;

/** A job's cleanup record for a request's deleteMerged (undefined: not asked). */
export function cleanupPromise(deleteMerged: boolean | undefined): Pick<Job, 'cleanup'> {
  return deleteMerged ? { cleanup: { deleteMerged: true, state: 'pending', removed: [], kept: [] } } : {};
}

/** Resolves once the job's cleanup (if one runs) is done: answers that report an end wait for it. */
export const cleaned = (entry: JobEntry): Promise<void> => entry.cleaning ?? Promise.resolve();

export class Cleanup {
  constructor(
    private readonly ctx: JobContext,
    private readonly policy: CleanupPolicy,
  ) {}

  /** Called on every terminal transition: starts the job's promised cleanup, at most one at a time. */
  afterEnd(entry: JobEntry): void {
    const c = entry.rec.job.cleanup;
    if (!c?.deleteMerged || c.state === 'done' || !isTerminal(entry.rec.job.state) || entry.cleaning) return;
    entry.cleaning = this.run(entry, c)
      .catch((err: unknown) => {
        // Left as journaled (pending or deleting): the poll (every poll interval), a reconnect or
        // the next start-up tries again.
        this.ctx.log.error('deleting the merged layers failed; the agent tries again at its next poll', {
          jobId: entry.rec.job.jobId,
          error: err,
        });
      })
      .finally(() => {
        entry.cleaning = null;
      });
  }

  /** Start-up, reconnect and each poll interval: finishes every cleanup a crash (or a failure) left pending or deleting. */
  resumeAll(): void {
    for (const entry of this.ctx.entries.values()) this.afterEnd(entry);
  }

  private async run(entry: JobEntry, c: JobCleanup): Promise<void> {
    const job = entry.rec.job;
    let ids: DiskIdentities | undefined;
    if (c.state === 'pending') {
      const paths = kindOf(job).mergedPaths?.(job, job.state) ?? [];
      if (paths === null) {
        c.kept.push({ path: '', reason: "the job's layers are not known (a job adopted from another tool): nothing was deleted" });
      } else if (paths.length > 0) {
        ids = await this.storage();
        const files: NonNullable<JobCleanup['files']> = [];
        for (const path of paths) {
          const v = await mayDelete(path, this.policy, ids);
          if (v.verdict === 'delete') files.push({ path: path!, id: v.id });
          else if (v.verdict === 'gone') c.removed.push(path!);
          else c.kept.push({ path: path ?? '', reason: v.reason });
        }
        c.files = files;
        c.state = 'deleting';
        // The intent, durably, before the first unlink.
        await this.ctx.recorder.persist(entry);
        faultPoint('cleanup:journaled', job);
      }
    }
    if (c.state === 'deleting') {
      // Resumed after a restart: every domain's storage again (one may have been defined since).
      ids ??= await this.storage();
      for (const f of [...(c.files ?? [])]) {
        const v = await mayDelete(f.path, this.policy, ids);
        const r = v.verdict === 'keep' ? { removed: false as const, reason: v.reason } : await unlinkIfSame(f.path, f.id);
        if (r.removed) c.removed.push(f.path);
        else c.kept.push({ path: f.path, reason: r.reason });
        c.files = c.files!.filter((x) => x !== f);
        await this.ctx.recorder.persist(entry);
        faultPoint('cleanup:removed', job);
        this.ctx.log.info(r.removed ? 'deleted a merged layer' : 'kept a merged layer', {
          jobId: job.jobId,
          path: f.path,
          ...(r.removed ? {} : { reason: r.reason }),
        });
      }
    }
    delete c.files;
    c.state = 'done';
    await this.ctx.recorder.persist(entry);
    this.ctx.recorder.emitChanged(entry);
  }

  /** Every domain's storage (this one's too: its live and persistent definitions), by identity. */
  private async storage(): Promise<DiskIdentities> {
    return identitiesOf(await domainStorage(this.ctx.conn, this.ctx.log));
  }
}
