// Consistent multi-disk copies: several disks of one domain copied as a group, ready when all
// are, and pivoted or finished at one point in time for the guest (pause, switch every disk,
// resume). Each disk is an ordinary job of the JobManager (journaled, reconciled, verified);
// this layer adds the group record, the pause, and the rules that keep the set consistent.
//
// Why a mix is safe after a failed pivot: while the guest is paused, every ready mirror holds
// exactly what its source holds. A disk whose pivot fails stays on its source with its mirror
// still running, so whichever file backs each disk, the guest sees one consistent state; a
// later pivotGroup switches the rest. Finish is different: a destination finished later holds
// a later moment, so a partial finish is reported as not a consistent set.
import { AgentError } from '../../errors.js';
import type {
  AbortGroupParams,
  AbortGroupResult,
  BlockCopyGroupParams,
  BlockCopyGroupResult,
  GroupChange,
  GroupInfoParams,
  GroupInfoResult,
  Job,
  PivotGroupParams,
} from '../../generated/api.js';
import { GroupContext, groupEntry, type GroupEntry, type GroupManagerOptions } from './context.js';
import { GroupStart } from './start.js';
import { GroupSwitch, switchOptions } from './switch.js';
import { within } from '../read-bound.js';
import { isTerminal } from '../state-machine.js';

/** A shutdown waits for a switch under way up to its maxPause plus this: the resume and thaw,
 *  retried, each libvirt call bounded by the call timeout (10 s by default). */
export const RELEASE_MARGIN_MS = 30_000;

export type { GroupManagerOptions } from './context.js';

export class GroupManager {
  private readonly ctx: GroupContext;
  private readonly switcher: GroupSwitch;
  private readonly starter: GroupStart;

  constructor(opts: GroupManagerOptions) {
    this.ctx = new GroupContext(opts);
    this.switcher = new GroupSwitch(this.ctx);
    this.starter = new GroupStart(this.ctx, (entry) => this.react(entry));
  }

  /** After the JobManager has reconciled: loads the groups, resumes a guest a crash left paused. */
  async start(): Promise<void> {
    const { ctx } = this;
    for (const rec of await ctx.journal.loadGroups((file, err) => ctx.log.error('unreadable group record skipped', { file, error: err }))) {
      // A crash while the group started its copies may have left members its record does not
      // list yet: their own records name the group.
      for (const j of ctx.jobs.groupJobs(rec.groupId)) if (!rec.jobIds.includes(j.jobId)) rec.jobIds.push(j.jobId);
      const known = new Set(ctx.jobs.groupJobs(rec.groupId).map((j) => j.jobId));
      if (rec.jobIds.length > 0 && !rec.jobIds.some((id) => known.has(id)) && !rec.pausedAt && !rec.frozenAt) {
        // Its jobs were pruned (the job manager drops a group's jobs together): so is the group.
        // (One left paused or frozen is released first, below; one with no job yet says it was interrupted.)
        ctx.log.info('group record without any job removed', { groupId: rec.groupId });
        await ctx.journal
          .removeGroup(rec.groupId)
          .catch((e) => ctx.log.error('cannot remove a group record', { groupId: rec.groupId, error: e }));
        continue;
      }
      const entry = groupEntry(rec, false);
      ctx.groups.set(rec.groupId, entry);
      if (rec.pausedAt || rec.frozenAt)
        await this.switcher.releaseAfterCrash(entry).catch((e) =>
          ctx.log.error('cannot release a guest a crash left paused or frozen; the reconnect retries', {
            groupId: rec.groupId,
            error: e,
          }),
        );
    }
    ctx.jobs.on('job.changed', this.onJob);
    ctx.jobs.on('agent.connection', this.onConnection);
    ctx.jobs.on('group.pruned', this.onPruned);
    ctx.started = true;
    for (const e of ctx.groups.values()) this.react(e);
  }

  /**
   * Shutdown: no switch begins any more, and one under way that paused or froze the guest is
   * waited for (bounded: its maxPause plus RELEASE_MARGIN_MS) until it resumed and thawed it.
   * Past the bound the record still says what to undo: the next start does it.
   */
  async stop(): Promise<void> {
    const { ctx } = this;
    ctx.stop();
    ctx.jobs.off('job.changed', this.onJob);
    ctx.jobs.off('agent.connection', this.onConnection);
    ctx.jobs.off('group.pruned', this.onPruned);
    const busy = [...ctx.groups.values()].filter((e) => e.switching);
    if (busy.length === 0) return;
    const boundMs = Math.max(...busy.map((e) => e.switchMaxPauseMs ?? 0)) + RELEASE_MARGIN_MS;
    ctx.log.info('shutdown waits for the group switches under way to release their guests', {
      groups: busy.map((e) => e.rec.groupId),
      boundMs,
    });
    const done = await within(Promise.allSettled(busy.map((e) => e.switching)), boundMs);
    if (!done) ctx.log.error('group switches still under way at the shutdown bound; the next start releases their guests', { boundMs });
  }

  blockCopyGroup(params: BlockCopyGroupParams, signal?: AbortSignal): Promise<BlockCopyGroupResult> {
    return this.starter.blockCopyGroup(params, signal);
  }

  async groupInfo(params: GroupInfoParams): Promise<GroupInfoResult> {
    return { group: this.ctx.view(this.ctx.find(params.groupId)) };
  }

  async pivotGroup(params: PivotGroupParams): Promise<GroupChange> {
    const entry = this.ctx.find(params.groupId);
    if (params.removeSource) await this.ctx.jobs.promiseGroupCleanup(entry.rec.groupId, 'removeSource', 'pivotGroup');
    const r = await this.switcher.run(entry, 'pivot', switchOptions(params));
    // The deletions run after the guest resumed; the answer reports them (each job's cleanup).
    await this.ctx.jobs.groupCleaned(entry.rec.groupId);
    return { ...r, group: this.ctx.view(entry) };
  }

  finishGroup(params: PivotGroupParams): Promise<GroupChange> {
    return this.switcher.run(this.ctx.find(params.groupId), 'finish', switchOptions(params));
  }

  async abortGroup(params: AbortGroupParams): Promise<AbortGroupResult> {
    const { ctx } = this;
    ctx.assertServing();
    const entry = ctx.find(params.groupId);
    if (entry.switching)
      throw new AgentError('invalidState', `group ${entry.rec.groupId} is being switched; it cannot be aborted now`, {
        group: ctx.view(entry),
      });
    const changed = await ctx.cancelMembers(entry);
    return { group: ctx.view(entry), changed };
  }

  /** The job manager dropped an ended group's jobs (retention): the group goes with them. */
  private readonly onPruned = (groupId: string): void => {
    const { ctx } = this;
    const entry = ctx.groups.get(groupId);
    if (!entry || entry.switching || entry.starting) return;
    ctx.groups.delete(groupId);
    void entry.writes
      .catch(() => {})
      .then(() => ctx.journal.removeGroup(groupId))
      .catch((e) => ctx.log.error('cannot remove a group record', { groupId, error: e }));
  };

  /** The libvirt connection is back: a guest that could not be resumed while it was gone is resumed now. */
  private readonly onConnection = (e: { state: string }): void => {
    if (e.state !== 'restored') return;
    for (const entry of this.ctx.groups.values()) {
      if ((entry.rec.pausedAt || entry.rec.frozenAt) && !entry.switching) {
        void this.switcher
          .releaseAfterCrash(entry)
          .catch((err) => this.ctx.log.error('cannot release a guest after the reconnect', { groupId: entry.rec.groupId, error: err }));
      }
    }
  };

  private readonly onJob = (job: Job): void => {
    if (!job.groupId) return;
    const entry = this.ctx.groups.get(job.groupId);
    if (entry) this.react(entry);
  };

  /** whenReady once all are ready; all or nothing before a switch: one disk lost cancels the rest. */
  private react(entry: GroupEntry): void {
    const { ctx } = this;
    if (!ctx.started) return;
    ctx.changed(entry);
    if (entry.starting || entry.switching || entry.rec.lastSwitch) return;
    const members = ctx.members(entry);
    const lost = members.find((j) => j.state === 'failed' || j.state === 'cancelled');
    if (lost && !entry.cancelledRest && members.some((j) => !isTerminal(j.state))) {
      entry.cancelledRest = true;
      entry.rec.error = {
        name: lost.error?.name ?? 'libvirtError',
        message: `disk ${lost.disk} ${lost.state}${lost.error ? `: ${lost.error.message}` : ''}; the group's other copies were cancelled`,
      };
      void ctx.saveOrLog(entry);
      void ctx
        .cancelMembers(entry)
        .catch((e) => ctx.log.error('cannot cancel the rest of a group', { groupId: entry.rec.groupId, error: e }));
      return;
    }
    const how = entry.rec.whenReady;
    if ((how === 'pivot' || how === 'finish') && members.every((j) => j.state === 'ready') && ctx.jobs.serving && !ctx.stopSignal.aborted) {
      // As if the caller had called pivotGroup/finishGroup with the group's own freeze and maxPause.
      const options = switchOptions({ groupId: entry.rec.groupId, freeze: entry.rec.freeze, maxPause: entry.rec.maxPause });
      void this.switcher
        .run(entry, how, options)
        .catch((e) => ctx.log.warn(`automatic group ${how} failed`, { groupId: entry.rec.groupId, error: e }));
    }
  }
}
