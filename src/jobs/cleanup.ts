// deleteMerged (commits, pulls) and removeSource (copies): the kernel's one post-end step, which
// a kind opts into through JobKind.mergedPaths and names by JobKind.cleanupOption. When a job that promised it ends (the recorder's terminal transition,
// always decided from the live XML), the files that left the chain are checked
// (cleanup-files.ts) against the policy and against every domain's storage (live and
// persistent definitions: a persistent definition that still names a file keeps it), the files
// to delete and their identities are journaled durably (state `deleting`), then each is
// unlinked after its identity is compared again and its removal journaled. A restart finds a
// `pending` or `deleting` cleanup of an ended job and finishes it: nothing is lost, and a file
// deleted before the crash is found gone and reported removed, never deleted twice.
import { AgentError } from '../errors.js';
import type { Job } from '../generated/api.js';
import { identitiesOf, type DiskIdentities } from '../destination/identity.js';
import { DEFAULT_ROOTS } from '../destination/policy.js';
import type { JobContext } from './context.js';
import { faultPoint } from './fault-points.js';
import { storageOwners } from './inventory.js';
import { canonicalPath, publicJob, type JobEntry } from './job.js';
import { stateUnavailable } from './journal.js';
import { kindOf } from './kinds/index.js';
import type { CleanupOption } from './kinds/kind.js';
import { isTerminal } from './state-machine.js';
import { mayDelete, unlinkIfSame, type CleanupPolicy } from './cleanup-files.js';

export type { CleanupPolicy };

/** The policy when none is given (unit tests): the default roots, no trusted owners besides root. */
export const DEFAULT_CLEANUP_POLICY: CleanupPolicy = { roots: DEFAULT_ROOTS, trustedOwners: new Set() };

type JobCleanup = NonNullable<Job['cleanup']>;

/** A job's cleanup record for a request's deleteMerged or removeSource (false: not asked). */
export function cleanupPromise(asked: boolean | undefined, option: CleanupOption = 'deleteMerged'): Pick<Job, 'cleanup'> {
  return asked ? { cleanup: { [option]: true, state: 'pending', removed: [], kept: [] } } : {};
}

/**
 * A request's deleteMerged or removeSource on a running job (pivot, pivotGroup): journaled
 * durably before the pivot is sent. Refused by name for a kind whose cleanup has the other name
 * (or none), before anything changes.
 */
export async function promiseCleanup(ctx: JobContext, entry: JobEntry, option: CleanupOption, request: string): Promise<void> {
  const job = entry.rec.job;
  const kind = kindOf(job);
  if (!kind.mergedPaths || kind.cleanupOption !== option)
    throw new AgentError(
      'unsupported',
      `${option} does not apply to job ${job.jobId}: a ${kind.noun} ${kind.cleanupOption ? `names it ${kind.cleanupOption}` : 'leaves no files behind'}`,
      { job: publicJob(entry) },
    );
  // Already promised; or ended otherwise (the pivot itself is then refused): nothing to promise.
  if (job.cleanup?.[option] || (isTerminal(job.state) && job.state !== 'pivoted')) return;
  Object.assign(job, cleanupPromise(true, option));
  await ctx.recorder.persist(entry).catch((e: unknown) => {
    delete job.cleanup;
    throw stateUnavailable(e, request);
  });
  if (isTerminal(job.state)) ctx.cleanup.afterEnd(entry);
}

/** Resolves once the job's cleanup (if one runs) is done: answers that report an end wait for it. */
export const cleaned = (entry: JobEntry): Promise<void> => entry.cleaning ?? Promise.resolve();

export class Cleanup {
  constructor(
    private readonly ctx: JobContext,
    private readonly policy: CleanupPolicy,
  ) {}

  /** Domains whose cleanups wait (a group switch: nothing is deleted while the guest is paused). */
  private readonly held = new Map<string, number>();

  hold(uuid: string): void {
    this.held.set(uuid, (this.held.get(uuid) ?? 0) + 1);
  }

  /** Ends a hold; the domain's ended jobs then start their cleanups. */
  release(uuid: string): void {
    const n = (this.held.get(uuid) ?? 1) - 1;
    if (n > 0) this.held.set(uuid, n);
    else this.held.delete(uuid);
    for (const entry of this.ctx.entries.values()) if (entry.rec.job.domain.uuid === uuid) this.afterEnd(entry);
  }

  /** Called on every terminal transition: starts the job's promised cleanup, at most one at a time. */
  afterEnd(entry: JobEntry): void {
    const c = entry.rec.job.cleanup;
    if (!(c?.deleteMerged || c?.removeSource) || c.state === 'done' || !isTerminal(entry.rec.job.state) || entry.cleaning) return;
    // (A record without a domain, hand-made in the unit tests, is never held.)
    const uuid = (entry.rec.job.domain as Job['domain'] | undefined)?.uuid;
    if (uuid !== undefined && this.held.has(uuid)) return;
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
    let ids: Storage | undefined;
    if (c.state === 'pending') {
      const kind = kindOf(job);
      const paths = kind.mergedPaths?.(job, job.state) ?? [];
      const keptOnEnd = kind.keptOnEnd?.(job, job.state) ?? [];
      const stale = kind.deleteAfterDefinitionMatches && paths?.length ? await this.staleDefinition(entry) : null;
      if (stale) {
        for (const path of paths!) c.kept.push({ path: path ?? '', reason: stale });
      } else if (keptOnEnd.length > 0) {
        c.kept.push(...keptOnEnd);
      } else if (paths === null) {
        c.kept.push({ path: '', reason: "the job's layers are not known (a job adopted from another tool): nothing was deleted" });
      } else if (paths.length > 0) {
        ids = await this.storage();
        const files: NonNullable<JobCleanup['files']> = [];
        for (const path of paths) {
          const v = await verdictOf(path, this.policy, ids);
          const moved = v.verdict === 'delete' ? replaced(job, path!, v.id) : null;
          if (moved) c.kept.push({ path: path!, reason: moved });
          else if (v.verdict === 'delete') files.push({ path: path!, id: v.id });
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
        const v = await verdictOf(f.path, this.policy, ids);
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

  /**
   * The gate of a kind that deletes only after the definition matches live: why the old files stay when the domain's persistent
   * definition, read now, does not name the destination (the next cold boot would use them), or
   * null. A transient domain has none: libvirt holds no definition that could boot the old files.
   */
  private async staleDefinition(entry: JobEntry): Promise<string | null> {
    const p = await this.ctx.verify.persistentView(entry);
    // Not read (libvirtd busy): left pending, the poll tries again.
    if (!p) throw new Error('cannot read the persistent definition');
    entry.rec.job.persistent = p;
    if (!p.defined || p.matchesLive) return null;
    return `the persistent definition does not match live (it names ${p.source ?? 'no source'}): the next cold boot would use the old files`;
  }

  /** Every domain's storage (this one's too: its live and persistent definitions), by identity,
   *  and the domains using each path, so that a kept file names who keeps it. */
  private async storage(): Promise<Storage> {
    const { paths, owners } = await storageOwners(this.ctx.conn, this.ctx.log);
    return { ids: await identitiesOf(paths), owners };
  }
}

interface Storage {
  ids: DiskIdentities;
  owners: Map<string, Set<string>>;
}

/** Why a file is kept, with the domains that use it when that is the reason. */
async function verdictOf(path: string | null, policy: CleanupPolicy, s: Storage) {
  const v = await mayDelete(path, policy, s.ids);
  if (v.verdict !== 'keep' || !v.user) return v;
  const who = [...(s.owners.get(canonicalPath(v.user)) ?? [])].sort();
  return who.length ? { ...v, reason: `used by domain${who.length > 1 ? 's' : ''} ${who.join(', ')} (${v.user})` } : v;
}

/** Why `path` is not the file the job recorded under that name (its identity at the start), or null. */
function replaced(job: Job, path: string, id: string): string | null {
  const was = job.layers?.chain?.find((l) => l.path === path)?.id;
  return was && was !== id ? `not the file the source chain held when the copy started (was ${was}, now ${id})` : null;
}
