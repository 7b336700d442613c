// A group's switch: every disk ready, then freeze (optional), pause, pivot or finish each disk,
// resume, thaw; and the release of a guest that a crash or a lost libvirtd left paused or frozen.
import { AgentError } from '../../errors.js';
import type { GroupChange, Job, PivotGroupParams } from '../../generated/api.js';
import { DEFAULTS } from '../../generated/api.js';
import { GOAL, switchError, type Operation, type SwitchDisk, type SwitchOptions } from './params.js';
import type { GroupContext, GroupEntry } from './context.js';
import { GuestRelease, type Freeze } from './guest-release.js';
import { isTerminal } from '../state-machine.js';

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
    ctx.assertNotStopping();
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
    // A shutdown ends this wait: nothing was changed yet.
    const ready = await ctx.waitUntil(allReady, o.timeoutMs, ctx.stopSignal).catch(() => false);
    ctx.assertNotStopping();
    if (!ready) {
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
    entry.switchMaxPauseMs = o.maxPauseMs;
    entry.switching = this.pauseAndSwitch(entry, how, pending(), o).finally(() => {
      entry.switching = null;
      ctx.changed(entry);
    });
    return entry.switching;
  }

  /**
   * Freeze (optional), pause, switch every disk, resume, thaw; the result says what each disk
   * did. Each step on the guest is journaled before it is sent (a restart undoes exactly what
   * the record says, guest-release.ts). A guest already paused by someone else is switched as it
   * is: not frozen, not paused, not resumed (it stays paused).
   */
  private async pauseAndSwitch(entry: GroupEntry, how: Operation, targets: Job[], o: SwitchOptions): Promise<GroupChange> {
    const { jobs, guest } = this.ctx;
    const uuid = entry.rec.domain.uuid;
    const release = new GuestRelease(this.ctx);
    const state = await guest.runState(uuid, "cannot read the guest's run state before the switch");
    const alreadyPaused = state.state === 'paused';
    if (!alreadyPaused && state.state !== 'running' && state.state !== 'blocked')
      throw new AgentError('invalidState', `the domain is ${state.state}; a group switch needs a running (or paused) guest`, {
        group: this.ctx.view(entry),
      });
    if (alreadyPaused && o.freeze === 'always')
      throw new AgentError(
        'invalidState',
        "the guest is paused by someone else: its guest agent cannot freeze the filesystems, and the agent does not resume a guest it did not pause; resume it, or switch with freeze 'auto' or 'never'",
        { group: this.ctx.view(entry) },
      );
    this.ctx.assertNotStopping();
    const each = (j: Job, budget: number) =>
      how === 'pivot' ? jobs.pivot({ jobId: j.jobId, timeout: budget }) : jobs.finish({ jobId: j.jobId, timeout: budget });
    const startedAt = jobs.now();
    let freeze: Freeze;
    let outcomes: Map<string, SwitchDisk>;
    let pausedMs = 0;
    // Nothing is deleted (removeSource) while the guest is paused: the cleanups start after the resume.
    jobs.holdCleanups(uuid);
    try {
      if (alreadyPaused) {
        freeze = {
          mode: o.freeze,
          frozen: null,
          ...(o.freeze === 'auto' ? { error: 'the guest was already paused by someone else' } : {}),
        };
        outcomes = await guest.switchEach(targets, o.maxPauseMs, GOAL[how], each);
      } else {
        freeze = await release.freeze(entry, o.freeze);
        try {
          this.ctx.assertNotStopping();
          await release.pause(entry);
        } catch (e) {
          // The guest agent answers only a running guest: one still paused is thawed by the release later.
          if (!entry.rec.pausedAt) await release.thaw(entry);
          throw e;
        }
        const t0 = performance.now();
        outcomes = await guest.switchEach(targets, o.maxPauseMs, GOAL[how], each);
        // If it could not be resumed (libvirtd gone), pausedAt and frozenAt stay: the reconnect or a
        // restart resumes it, then thaws it (the guest agent answers only a running guest).
        const resumed = await release.resume(entry);
        pausedMs = Math.round((performance.now() - t0) * 10) / 10;
        if (resumed) await release.thaw(entry);
      }
    } finally {
      jobs.releaseCleanups(uuid);
    }
    const disks = entry.rec.jobIds.map((id): SwitchDisk => {
      const done = outcomes.get(id);
      if (done) return done;
      const j = this.ctx.members(entry).find((x) => x.jobId === id);
      return { disk: j?.disk ?? '?', jobId: id, outcome: 'already' };
    });
    entry.rec.lastSwitch = { operation: how, startedAt, pausedMs, guestPause: alreadyPaused ? 'alreadyPaused' : 'agent', freeze, disks };
    const failed = disks.filter((d) => d.outcome === 'failed');
    if (failed.length > 0)
      entry.rec.error = switchError(
        how,
        failed.map((d) => d.disk),
      );
    else delete entry.rec.error;
    await this.ctx.saveOrLog(entry);
    this.ctx.log.info(`group ${how}`, { groupId: entry.rec.groupId, pausedMs, alreadyPaused, failed: failed.length });
    this.ctx.onSwitch?.(how, pausedMs);
    const group = this.ctx.view(entry);
    if (failed.length > 0) {
      const first = failed[0]!.error;
      throw new AgentError(entry.rec.error!.name, entry.rec.error!.message, {
        group,
        ...(first?.libvirt ? { libvirt: first.libvirt } : {}),
      });
    }
    return { group, changed: true };
  }

  /** A switch was interrupted with the guest paused or frozen (crash, or libvirtd lost): undo exactly that. */
  releaseAfterCrash(entry: GroupEntry): Promise<void> {
    return new GuestRelease(this.ctx).afterCrash(entry);
  }
}
