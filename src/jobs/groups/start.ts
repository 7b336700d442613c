// blockCopyGroup: every disk checked before any copy starts, the copies started all or nothing,
// and the answer once the group reaches what the caller waits for.
import { randomUUID } from 'node:crypto';
import { AgentError } from '../../errors.js';
import type { BlockCopyGroupParams, BlockCopyGroupResult, BlockCopyParams, Group, GroupDisk } from '../../generated/api.js';
import { DEFAULTS } from '../../generated/api.js';
import { checkDistinct, errorOf } from './params.js';
import { isGroupEnded } from './state.js';
import { groupEntry, type GroupContext, type GroupEntry } from './context.js';
import { lookupDomain } from '../libvirt-errors.js';
import { planMove, type MovePlan } from './move.js';
import { assertRoom, type SpaceNeed } from '../space.js';

/** Per-disk params: every entry names its destination (a move's are planned before). */
export type GroupParams = Omit<BlockCopyGroupParams, 'disks' | 'target' | 'dryRun'> & { disks: GroupDisk[] };

/** One member's blockCopy params: the group's options, and no wait or whenReady of its own. */
function memberParams(params: GroupParams, d: GroupParams['disks'][number]): BlockCopyParams {
  const g = DEFAULTS.BlockCopyGroupParams;
  const disk = DEFAULTS.GroupDisk;
  return {
    domain: params.domain,
    disk: d.disk,
    ...(d.destination ? { destination: d.destination } : {}),
    ...(d.destinationXml !== undefined ? { destinationXml: d.destinationXml } : {}),
    shallow: d.shallow ?? disk.shallow,
    reuseExternal: d.reuseExternal ?? disk.reuseExternal,
    synchronousWrites: params.synchronousWrites ?? g.synchronousWrites,
    ...(params.transientJob !== undefined ? { transientJob: params.transientJob } : {}),
    ...(d.bandwidth !== undefined ? { bandwidth: d.bandwidth } : params.bandwidth !== undefined ? { bandwidth: params.bandwidth } : {}),
    ...(d.granularity !== undefined ? { granularity: d.granularity } : {}),
    ...(d.bufSize !== undefined ? { bufSize: d.bufSize } : {}),
    // A member not ready in time cancels itself (journaled, so a restart keeps the deadline);
    // the group then cancels the others.
    ...(params.timeout !== undefined ? { timeout: params.timeout } : {}),
    queue: params.queue ?? g.queue,
    ...(params.removeSource ? { removeSource: true } : {}),
    whenReady: 'none',
    wait: 'none',
  };
}

export class GroupStart {
  /** `started`: the group's copies all run; the group may now act on its own. */
  constructor(
    private readonly ctx: GroupContext,
    private readonly started: (entry: GroupEntry) => void,
  ) {}

  async blockCopyGroup(input: BlockCopyGroupParams, signal?: AbortSignal): Promise<BlockCopyGroupResult> {
    const { ctx } = this;
    ctx.assertServing();
    // The schema holds the shapes: with target, disks are targets ("vda") or absent; without, disk objects with destinations.

    // The domain the name names now: a group of an earlier domain of that name is not this one.
    const dom = await this.domainOf(input.domain);
    let move: MovePlan | undefined;
    let params: GroupParams;
    if (input.target) {
      move = await planMove(ctx.jobs.connection, input, dom, ctx.allowedPools);
      const { target: _t, dryRun: _d, ...rest } = input;
      params = { ...rest, disks: move.disks };
    } else params = input as GroupParams;

    const extras = move ? this.moveExtras(move, false) : {};
    const members = params.disks.map((d) => memberParams(params, d));
    checkDistinct(params);
    const same = params.disks.length > 0 ? ctx.findSame(params, dom.uuid) : undefined;
    // A dry run never waits: it answers what is, or what would be.
    if (same && input.dryRun) return { group: ctx.view(same), changed: false, ...extras };
    if (same) return { ...(await this.awaitGoal(same, params, false, signal)), ...extras };
    if (move && move.disks.length === 0) {
      ctx.log.info('move: every disk already is in the target', { domain: dom.name, dir: move.dir });
      return { changed: false, ...extras };
    }

    // Every disk is checked before any copy starts: bad input changes nothing.
    const needs: Array<SpaceNeed | null> = [];
    for (const m of members) {
      const existing = await ctx.jobs.checkCopy(m, needs);
      if (existing) {
        throw new AgentError(
          'jobExists',
          `disk ${m.disk} already has a copy job (${existing.jobId}, ${existing.state}) outside this group`,
          { job: existing },
        );
      }
    }
    // Disks that fit one by one may not fit together: their figures summed per filesystem.
    assertRoom(needs, await ctx.jobs.runningSpace());
    // A dry run passed every check a real move makes before it starts anything.
    if (input.dryRun) return { changed: true, ...extras };
    const now = ctx.jobs.now();
    const g = DEFAULTS.BlockCopyGroupParams;
    const entry = groupEntry(
      {
        groupId: params.groupId ?? randomUUID(),
        domain: dom,
        jobIds: [],
        whenReady: params.whenReady ?? g.whenReady,
        freeze: params.freeze ?? g.freeze,
        maxPause: params.maxPause ?? g.maxPause,
        createdAt: now,
        updatedAt: now,
        lastSwitch: null,
      },
      true,
    );
    ctx.groups.set(entry.rec.groupId, entry);
    await ctx.save(entry).catch((e: unknown) => {
      ctx.groups.delete(entry.rec.groupId);
      throw e;
    });
    for (const m of members) {
      try {
        const r = await ctx.jobs.blockCopy(m, signal, { groupId: entry.rec.groupId });
        entry.rec.jobIds.push(r.job.jobId);
        await ctx.save(entry);
      } catch (e) {
        entry.starting = false;
        // All or nothing: the copies already started are cancelled.
        entry.rec.error = {
          name: errorOf(e).name,
          message: `disk ${m.disk}: ${(e as Error).message}; the group's other copies were cancelled`,
        };
        entry.cancelledRest = true;
        await ctx.cancelMembers(entry);
        await ctx.save(entry);
        throw e instanceof AgentError ? new AgentError(e.errorName, e.message, { ...e.data, group: ctx.view(entry) }) : e;
      }
    }
    entry.starting = false;
    ctx.log.info('group started', { groupId: entry.rec.groupId, domain: dom.name, disks: params.disks.map((d) => d.disk) });
    this.started(entry);
    const refreshed = move?.pool ? await this.refreshPool(move.pool.name) : false;
    return { ...(await this.awaitGoal(entry, params, true, signal)), ...(move ? this.moveExtras(move, refreshed) : {}) };
  }

  private moveExtras(move: MovePlan, refreshed: boolean): Pick<BlockCopyGroupResult, 'alreadyThere' | 'plan' | 'pool'> {
    return { alreadyThere: move.alreadyThere, plan: move.plan, ...(move.pool ? { pool: { ...move.pool, refreshed } } : {}) };
  }

  /** libvirt lists a file written into a pool once the pool is refreshed; a failure only loses that listing. */
  private async refreshPool(name: string): Promise<boolean> {
    try {
      await this.ctx.jobs.connection.storagePoolRefresh(name);
      return true;
    } catch (e) {
      this.ctx.log.warn('cannot refresh the storage pool after a move started', { pool: name, error: e });
      return false;
    }
  }

  private async awaitGoal(entry: GroupEntry, params: GroupParams, changed: boolean, signal?: AbortSignal): Promise<BlockCopyGroupResult> {
    const { ctx } = this;
    const wait = params.wait ?? DEFAULTS.BlockCopyGroupParams.wait;
    if (wait !== 'none') {
      const automatic = entry.rec.whenReady !== 'none';
      const done = (): boolean => {
        const s = ctx.state(entry);
        if (wait === 'ready') return s !== 'copying';
        // With whenReady, a switch that failed on every disk leaves the group ready: that is its end too.
        return !entry.switching && (isGroupEnded(s) || s === 'partial' || (automatic && !!entry.rec.lastSwitch && s === 'ready'));
      };
      // A re-run's timeout only bounds its own wait; the first call's members own the deadline.
      const limit = !changed && params.timeout !== undefined ? params.timeout * 1000 : undefined;
      if (!(await ctx.waitUntil(done, limit, signal))) {
        throw new AgentError('timeout', `group ${entry.rec.groupId} is still ${ctx.state(entry)}`, { group: ctx.view(entry) });
      }
      if (wait === 'done') await ctx.jobs.groupCleaned(entry.rec.groupId);
      const s = ctx.state(entry);
      if (entry.rec.error && s !== 'pivoted' && s !== 'finished') {
        throw new AgentError(entry.rec.error.name, entry.rec.error.message, { group: ctx.view(entry) });
      }
    }
    return { group: ctx.view(entry), changed };
  }

  private async domainOf(key: string): Promise<Group['domain']> {
    // Only libvirt's "no such domain" is notFound; a libvirtd that did not answer is its named, retryable error.
    const dom = await lookupDomain(this.ctx.jobs.connection, key, this.ctx.jobs.manages);
    return { name: dom.name, uuid: dom.uuid };
  }
}
