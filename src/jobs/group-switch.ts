// A group's switch: every disk ready, then freeze (optional), pause, pivot or finish each disk,
// resume, thaw; and the resume of a guest that a crash or a lost libvirtd left paused.
import { AgentError, type ErrorName } from '../errors.js';
import type { GroupChange, Job, PivotGroupParams } from '../generated/api.js';
import { DEFAULTS } from '../generated/api.js';
import { GOAL, switchError, type Operation, type SwitchDisk, type SwitchOptions } from './group-params.js';
import type { GroupContext, GroupEntry } from './group-context.js';
import { isTerminal } from './state-machine.js';

/** pivotGroup/finishGroup params as switch options (the schema's defaults for what is left out). */
export function switchOptions(p: PivotGroupParams): SwitchOptions {
  const d = DEFAULTS.PivotGroupParams;
  return { timeoutMs: (p.timeout ?? d.timeout) * 1000, freeze: p.freeze ?? d.freeze, maxPauseMs: (p.maxPause ?? d.maxPause) * 1000 };
}

export class GroupSwitch {
  constructor(private readonly ctx: GroupContext) {}

  /** Switches every disk not yet at the goal; a second caller joins the switch under way. */
  async run(entry: GroupEntry, how: Operation, o: SwitchOptions): Promise<GroupChange> {
    const ctx = this.ctx;
    ctx.assertServing();
    if (entry.switching) {
      const r = await entry.switching;
      return { group: r.group, changed: false };
    }
    const goal = GOAL[how];
    const pending = () => ctx.members(entry).filter((j) => j.state !== goal);
    if (pending().length === 0) return { group: ctx.view(entry), changed: false };
    const stuck = () => pending().find((j) => isTerminal(j.state));
    const refuse = (j: Job) =>
      new AgentError('invalidState', `disk ${j.disk} of the group is ${j.state}; the group cannot be ${goal}`, { group: ctx.view(entry) });
    let bad = stuck();
    if (bad) throw refuse(bad);
    // Nothing is paused until every disk is ready.
    const allReady = () => pending().every((j) => j.state === 'ready') || !!stuck();
    if (!(await ctx.waitUntil(allReady, o.timeoutMs))) {
      const late = pending()
        .filter((j) => j.state !== 'ready')
        .map((j) => `${j.disk} (${j.state})`)
        .join(', ');
      throw new AgentError('notReady', `not every disk of group ${entry.rec.groupId} is ready: ${late}`, { group: ctx.view(entry) });
    }
    bad = stuck();
    if (bad) throw refuse(bad);
    // Another caller may have started the switch while this one waited for ready.
    const joined = entry.switching as Promise<GroupChange> | null;
    if (joined) return { group: (await joined).group, changed: false };
    entry.switching = this.pauseAndSwitch(entry, how, pending(), o).finally(() => {
      entry.switching = null;
      ctx.changed(entry);
    });
    return entry.switching;
  }

  /** Freeze (optional), pause, switch every disk, resume, thaw; the result says what each disk did. */
  private async pauseAndSwitch(entry: GroupEntry, how: Operation, targets: Job[], o: SwitchOptions): Promise<GroupChange> {
    const { jobs, guest } = this.ctx;
    const dom = entry.rec.domain;
    const freeze = await guest.freeze(dom.uuid, o.freeze);
    const startedAt = jobs.now();
    entry.rec.pausedAt = startedAt;
    try {
      await this.ctx.save(entry); // durable before the pause: a restart resumes the guest
    } catch (e) {
      delete entry.rec.pausedAt;
      await guest.thaw(dom.uuid, freeze.frozen);
      throw e;
    }
    const { outcomes, pausedMs, resumed } = await guest.whilePaused(dom.uuid, targets, o.maxPauseMs, GOAL[how], (j, budget) =>
      how === 'pivot' ? jobs.pivot({ jobId: j.jobId, timeout: budget }) : jobs.finish({ jobId: j.jobId, timeout: budget }),
    );
    // If it could not be resumed (libvirtd gone), pausedAt stays: the reconnect or a restart resumes it.
    if (resumed) delete entry.rec.pausedAt;
    await guest.thaw(dom.uuid, freeze.frozen);
    const disks = entry.rec.jobIds.map((id): SwitchDisk => {
      const done = outcomes.get(id);
      if (done) return done;
      const j = this.ctx.members(entry).find((x) => x.jobId === id);
      return { disk: j?.disk ?? '?', jobId: id, outcome: 'already' };
    });
    entry.rec.lastSwitch = { operation: how, startedAt, pausedMs, freeze, disks };
    const failed = disks.filter((d) => d.outcome === 'failed');
    if (failed.length > 0)
      entry.rec.error = switchError(
        how,
        failed.map((d) => d.disk),
      );
    else delete entry.rec.error;
    await this.ctx.saveOrLog(entry);
    this.ctx.log.info(`group ${how}`, { groupId: entry.rec.groupId, pausedMs, failed: failed.length });
    this.ctx.onSwitch?.(how, pausedMs);
    const group = this.ctx.view(entry);
    if (failed.length > 0) {
      const first = failed[0]!.error;
      throw new AgentError(entry.rec.error!.name as ErrorName, entry.rec.error!.message, {
        group,
        ...(first?.libvirt ? { libvirt: first.libvirt } : {}),
      });
    }
    return { group, changed: true };
  }

  /** A switch was interrupted with the guest paused (crash, or libvirtd lost): resume it and say so. */
  async resumeAfterCrash(entry: GroupEntry): Promise<void> {
    this.ctx.log.warn('a group switch was interrupted with the guest paused: resuming it', {
      groupId: entry.rec.groupId,
      pausedAt: entry.rec.pausedAt,
    });
    if (!(await this.ctx.guest.resume(entry.rec.domain.uuid))) return;
    entry.rec.error = {
      name: 'interrupted',
      message: `a group switch was interrupted (the agent stopped or lost libvirtd) with the guest paused at ${entry.rec.pausedAt}; the guest was resumed later, each disk's job shows where it ended`,
    };
    delete entry.rec.pausedAt;
    await this.ctx.save(entry);
  }
}
