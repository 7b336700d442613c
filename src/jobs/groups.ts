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
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { AgentError, ERRORS, type ErrorName } from '../errors.js';
import type { Logger } from '../log.js';
import type { Connection } from '../libvirt/index.js';
import { LibvirtError } from '../libvirt/index.js';
import type {
  AbortGroupParams, AbortGroupResult, BlockCopyGroupParams, BlockCopyGroupResult, BlockCopyParams,
  Group, GroupChange, GroupInfoParams, GroupInfoResult, GroupState, Job, PivotGroupParams,
} from '../generated/api.js';
import { checkDistinct, groupMembers, groupView, sameGroup, switchError,
  GOAL, type Operation, type SwitchDisk, type SwitchOptions } from './group-params.js';
import { groupState, isGroupEnded } from './group-state.js';
import { GuestControl } from './guest.js';
import { stateUnavailable, type GroupRecord, type Journal } from './journal.js';
import { libvirtData } from './libvirt-errors.js';
import type { JobManager } from './manager.js';
import { isTerminal } from './state-machine.js';
import { until } from './until.js';

/** The group layer works on the job manager's context: its state store, clock and libvirt connection. */
export interface GroupManagerOptions {
  jobs: JobManager;
  log: Logger;
  /** Told how long each group switch paused the guest (metrics). */
  onSwitch?: (operation: 'pivot' | 'finish', pausedMs: number) => void;
}


interface Entry {
  rec: GroupRecord;
  /** The switch under way; a second caller joins it. */
  switching: Promise<GroupChange> | null;
  /** Members' ends already acted on (one automatic cancel of the rest per group). */
  cancelledRest: boolean;
  /** Record writes, chained so they land in order. */
  writes: Promise<void>;
  /** blockCopyGroup is still starting the copies: the group must not act on its first members alone. */
  starting: boolean;
}

export class GroupManager {
  private readonly jobs: JobManager;
  private readonly log: Logger;
  private readonly journal: Journal;
  private readonly groups = new Map<string, Entry>();
  private readonly guest: GuestControl;
  private readonly updates = new EventEmitter();
  private started = false;
  private readonly onSwitch: GroupManagerOptions['onSwitch'];

  constructor(opts: GroupManagerOptions) {
    this.jobs = opts.jobs;
    this.log = opts.log;
    this.onSwitch = opts.onSwitch;
    this.journal = opts.jobs.store;
    this.guest = new GuestControl(() => this.jobs.connection, opts.log);
    this.updates.setMaxListeners(0);
  }

  /** After the JobManager has reconciled: loads the groups, resumes a guest a crash left paused. */
  async start(): Promise<void> {
    for (const rec of await this.journal.loadGroups((file, err) => this.log.error('unreadable group record skipped', { file, error: err }))) {
      // A crash while the group started its copies may have left members its record does not
      // list yet: their own records name the group.
      for (const j of this.jobs.groupJobs(rec.groupId)) if (!rec.jobIds.includes(j.jobId)) rec.jobIds.push(j.jobId);
      const known = new Set(this.jobs.groupJobs(rec.groupId).map((j) => j.jobId));
      if (rec.jobIds.length > 0 && !rec.jobIds.some((id) => known.has(id)) && !rec.pausedAt) {
        // Its jobs were pruned (the job manager drops a group's jobs together): so is the group.
        // (One left paused is resumed first, below; one with no job yet says it was interrupted.)
        this.log.info('group record without any job removed', { groupId: rec.groupId });
        await this.journal.removeGroup(rec.groupId).catch((e) => this.log.error('cannot remove a group record', { groupId: rec.groupId, error: e }));
        continue;
      }
      const entry: Entry = { rec, switching: null, cancelledRest: false, writes: Promise.resolve(), starting: false };
      this.groups.set(rec.groupId, entry);
      if (rec.pausedAt) await this.resumeAfterCrash(entry);
    }
    this.jobs.on('job.changed', this.onJob);
    this.jobs.on('agent.connection', this.onConnection);
    this.jobs.on('group.pruned', this.onPruned);
    this.started = true;
    for (const e of this.groups.values()) this.react(e);
  }

  stop(): void {
    this.jobs.off('job.changed', this.onJob);
    this.jobs.off('agent.connection', this.onConnection);
    this.jobs.off('group.pruned', this.onPruned);
  }

  /** The job manager dropped an ended group's jobs (retention): the group goes with them. */
  private readonly onPruned = (groupId: string): void => {
    const entry = this.groups.get(groupId);
    if (!entry || entry.switching || entry.starting) return;
    this.groups.delete(groupId);
    void entry.writes.catch(() => {}).then(() => this.journal.removeGroup(groupId))
      .catch((e) => this.log.error('cannot remove a group record', { groupId, error: e }));
  };

  /** The libvirt connection is back: a guest that could not be resumed while it was gone is resumed now. */
  private readonly onConnection = (e: { state: string }): void => {
    if (e.state !== 'restored') return;
    for (const entry of this.groups.values()) {
      if (entry.rec.pausedAt && !entry.switching) void this.resumeAfterCrash(entry).catch((err) => this.log.error('cannot resume a guest after the reconnect', { groupId: entry.rec.groupId, error: err }));
    }
  };

  private conn(): Connection {
    return this.jobs.connection;
  }

  async blockCopyGroup(params: BlockCopyGroupParams, signal?: AbortSignal): Promise<BlockCopyGroupResult> {
    this.assertServing();
    const members = params.disks.map((d): BlockCopyParams => ({
      domain: params.domain, disk: d.disk, ...(d.destination ? { destination: d.destination } : {}),
      ...(d.destinationXml !== undefined ? { destinationXml: d.destinationXml } : {}),
      shallow: d.shallow ?? false, reuseExternal: d.reuseExternal ?? false, synchronousWrites: params.synchronousWrites ?? false,
      ...(params.transientJob !== undefined ? { transientJob: params.transientJob } : {}),
      ...(d.bandwidth !== undefined ? { bandwidth: d.bandwidth } : {}),
      ...(d.granularity !== undefined ? { granularity: d.granularity } : {}),
      ...(d.bufSize !== undefined ? { bufSize: d.bufSize } : {}),
      // A member not ready in time cancels itself (journaled, so a restart keeps the deadline);
      // the group then cancels the others.
      ...(params.timeout !== undefined ? { timeout: params.timeout } : {}),
      queue: params.queue ?? false, whenReady: 'none', wait: 'none',
    }));
    checkDistinct(params);

    const same = this.findSame(params);
    if (same) return this.awaitGoal(same, params, false, signal);

    // Every disk is checked before any copy starts: bad input changes nothing.
    for (const m of members) {
      const existing = await this.jobs.checkCopy(m);
      if (existing) {
        throw new AgentError('jobExists', `disk ${m.disk} already has a copy job (${existing.jobId}, ${existing.state}) outside this group`, { job: existing });
      }
    }
    const dom = await this.domainOf(params.domain);
    const now = this.jobs.now();
    const entry: Entry = {
      rec: {
        groupId: params.groupId ?? randomUUID(), domain: dom, jobIds: [], whenReady: params.whenReady ?? 'none',
        freeze: params.freeze ?? 'auto', maxPause: params.maxPause ?? 10, createdAt: now, updatedAt: now, lastSwitch: null,
      },
      switching: null, cancelledRest: false, writes: Promise.resolve(), starting: true,
    };
    this.groups.set(entry.rec.groupId, entry);
    await this.save(entry).catch((e: unknown) => {
      this.groups.delete(entry.rec.groupId);
      throw e;
    });
    for (const m of members) {
      try {
        const r = await this.jobs.blockCopy(m, signal, { groupId: entry.rec.groupId });
        entry.rec.jobIds.push(r.job.jobId);
        await this.save(entry);
      } catch (e) {
        entry.starting = false;
        // All or nothing: the copies already started are cancelled.
        entry.rec.error = { name: e instanceof AgentError ? e.errorName : 'libvirtError', message: `disk ${m.disk}: ${(e as Error).message}; the group's other copies were cancelled` };
        entry.cancelledRest = true;
        await this.cancelAll(entry);
        await this.save(entry);
        throw e instanceof AgentError ? new AgentError(e.errorName, e.message, { ...e.data, group: this.view(entry) }) : e;
      }
    }
    entry.starting = false;
    this.log.info('group started', { groupId: entry.rec.groupId, domain: dom.name, disks: params.disks.map((d) => d.disk) });
    this.react(entry);
    return this.awaitGoal(entry, params, true, signal);
  }

  async groupInfo(params: GroupInfoParams): Promise<GroupInfoResult> {
    return { group: this.view(this.find(params.groupId)) };
  }

  pivotGroup(params: PivotGroupParams): Promise<GroupChange> {
    return this.switchGroup(this.find(params.groupId), 'pivot', this.switchOptions(params));
  }

  finishGroup(params: PivotGroupParams): Promise<GroupChange> {
    return this.switchGroup(this.find(params.groupId), 'finish', this.switchOptions(params));
  }

  async abortGroup(params: AbortGroupParams): Promise<AbortGroupResult> {
    this.assertServing();
    const entry = this.find(params.groupId);
    if (entry.switching) throw new AgentError('invalidState', `group ${entry.rec.groupId} is being switched; it cannot be aborted now`, { group: this.view(entry) });
    const changed = await this.cancelAll(entry);
    return { group: this.view(entry), changed };
  }

  private switchOptions(p: PivotGroupParams): SwitchOptions {
    return { timeoutMs: (p.timeout ?? 30) * 1000, freeze: p.freeze ?? 'auto', maxPauseMs: (p.maxPause ?? 10) * 1000 };
  }

  private async switchGroup(entry: Entry, how: Operation, o: SwitchOptions): Promise<GroupChange> {
    this.assertServing();
    if (entry.switching) {
      const r = await entry.switching;
      return { group: r.group, changed: false };
    }
    const goal = GOAL[how];
    const pending = () => this.members(entry).filter((j) => j.state !== goal);
    if (pending().length === 0) return { group: this.view(entry), changed: false };
    const stuck = () => pending().find((j) => isTerminal(j.state));
    const refuse = (j: Job) => new AgentError('invalidState', `disk ${j.disk} of the group is ${j.state}; the group cannot be ${goal}`, { group: this.view(entry) });
    let bad = stuck();
    if (bad) throw refuse(bad);
    // Nothing is paused until every disk is ready.
    const allReady = () => pending().every((j) => j.state === 'ready') || !!stuck();
    if (!(await this.waitUntil(allReady, o.timeoutMs))) {
      const late = pending().filter((j) => j.state !== 'ready').map((j) => `${j.disk} (${j.state})`).join(', ');
      throw new AgentError('notReady', `not every disk of group ${entry.rec.groupId} is ready: ${late}`, { group: this.view(entry) });
    }
    bad = stuck();
    if (bad) throw refuse(bad);
    // Another caller may have started the switch while this one waited for ready.
    const joined = entry.switching as Promise<GroupChange> | null;
    if (joined) return { group: (await joined).group, changed: false };
    entry.switching = this.pauseAndSwitch(entry, how, pending(), o).finally(() => {
      entry.switching = null;
      this.changed(entry);
    });
    return entry.switching;
  }

  /** Freeze (optional), pause, switch every disk, resume, thaw; the result says what each disk did. */
  private async pauseAndSwitch(entry: Entry, how: Operation, targets: Job[], o: SwitchOptions): Promise<GroupChange> {
    const dom = entry.rec.domain;
    const freeze = await this.guest.freeze(dom.uuid, o.freeze);
    const startedAt = this.jobs.now();
    entry.rec.pausedAt = startedAt;
    try {
      await this.save(entry); // durable before the pause: a restart resumes the guest
    } catch (e) {
      delete entry.rec.pausedAt;
      await this.guest.thaw(dom.uuid, freeze.frozen);
      throw e;
    }
    const { outcomes, pausedMs, resumed } = await this.guest.whilePaused(dom.uuid, targets, o.maxPauseMs, GOAL[how],
      (j, budget) => (how === 'pivot' ? this.jobs.pivot({ jobId: j.jobId, timeout: budget }) : this.jobs.finish({ jobId: j.jobId, timeout: budget })));
    // If it could not be resumed (libvirtd gone), pausedAt stays: the reconnect or a restart resumes it.
    if (resumed) delete entry.rec.pausedAt;
    await this.guest.thaw(dom.uuid, freeze.frozen);
    const disks = entry.rec.jobIds.map((id): SwitchDisk => {
      const done = outcomes.get(id);
      if (done) return done;
      const j = this.members(entry).find((x) => x.jobId === id);
      return { disk: j?.disk ?? '?', jobId: id, outcome: 'already' };
    });
    entry.rec.lastSwitch = { operation: how, startedAt, pausedMs, freeze, disks };
    const failed = disks.filter((d) => d.outcome === 'failed');
    if (failed.length > 0) entry.rec.error = switchError(how, failed.map((d) => d.disk));
    else delete entry.rec.error;
    await this.save(entry).catch((e) => this.log.error('group record write failed', { groupId: entry.rec.groupId, error: e }));
    this.log.info(`group ${how}`, { groupId: entry.rec.groupId, pausedMs: entry.rec.lastSwitch.pausedMs, failed: failed.length });
    this.onSwitch?.(how, entry.rec.lastSwitch.pausedMs);
    const group = this.view(entry);
    if (failed.length > 0) {
      const first = failed[0]!.error;
      throw new AgentError(entry.rec.error!.name as ErrorName, entry.rec.error!.message, { group, ...(first?.libvirt ? { libvirt: first.libvirt } : {}) });
    }
    return { group, changed: true };
  }

  private async resumeAfterCrash(entry: Entry): Promise<void> {
    this.log.warn('a group switch was interrupted with the guest paused: resuming it', { groupId: entry.rec.groupId, pausedAt: entry.rec.pausedAt });
    if (!(await this.guest.resume(entry.rec.domain.uuid))) return;
    entry.rec.error = { name: 'interrupted', message: `a group switch was interrupted (the agent stopped or lost libvirtd) with the guest paused at ${entry.rec.pausedAt}; the guest was resumed later, each disk's job shows where it ended` };
    delete entry.rec.pausedAt;
    await this.save(entry);
  }

  private readonly onJob = (job: Job): void => {
    if (!job.groupId) return;
    const entry = this.groups.get(job.groupId);
    if (entry) this.react(entry);
  };

  /** whenReady once all are ready; all or nothing before a switch: one disk lost cancels the rest. */
  private react(entry: Entry): void {
    if (!this.started) return;
    this.changed(entry);
    if (entry.starting || entry.switching || entry.rec.lastSwitch) return;
    const members = this.members(entry);
    const lost = members.find((j) => j.state === 'failed' || j.state === 'cancelled');
    if (lost && !entry.cancelledRest && members.some((j) => !isTerminal(j.state))) {
      entry.cancelledRest = true;
      entry.rec.error = { name: lost.error?.name ?? 'libvirtError', message: `disk ${lost.disk} ${lost.state}${lost.error ? `: ${lost.error.message}` : ''}; the group's other copies were cancelled` };
      void this.save(entry).catch((e) => this.log.error('group record write failed', { groupId: entry.rec.groupId, error: e }));
      void this.cancelAll(entry).catch((e) => this.log.error('cannot cancel the rest of a group', { groupId: entry.rec.groupId, error: e }));
      return;
    }
    const how = entry.rec.whenReady;
    if ((how === 'pivot' || how === 'finish') && members.every((j) => j.state === 'ready') && this.jobs.serving) {
      void this.switchGroup(entry, how, { timeoutMs: 30_000, freeze: entry.rec.freeze, maxPauseMs: entry.rec.maxPause * 1000 })
        .catch((e) => this.log.warn(`automatic group ${how} failed`, { groupId: entry.rec.groupId, error: e }));
    }
  }

  /** Cancels every member that has not ended; true if any was running. */
  private async cancelAll(entry: Entry): Promise<boolean> {
    const running = this.members(entry).filter((j) => !isTerminal(j.state));
    const results = await Promise.allSettled(running.map((j) => this.jobs.abort({ jobId: j.jobId })));
    const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (refused) throw refused.reason;
    return running.length > 0;
  }

  private async awaitGoal(entry: Entry, params: BlockCopyGroupParams, changed: boolean, signal?: AbortSignal): Promise<BlockCopyGroupResult> {
    const wait = params.wait ?? 'none';
    if (wait !== 'none') {
      const automatic = entry.rec.whenReady !== 'none';
      const done = (): boolean => {
        const s = this.state(entry);
        if (wait === 'ready') return s !== 'copying';
        // With whenReady, a switch that failed on every disk leaves the group ready: that is its end too.
        return !entry.switching && (isGroupEnded(s) || s === 'partial' || (automatic && !!entry.rec.lastSwitch && s === 'ready'));
      };
      // A re-run's timeout only bounds its own wait; the first call's members own the deadline.
      const limit = !changed && params.timeout !== undefined ? params.timeout * 1000 : undefined;
      if (!(await this.waitUntil(done, limit, signal))) {
        throw new AgentError('timeout', `group ${entry.rec.groupId} is still ${this.state(entry)}`, { group: this.view(entry) });
      }
      const s = this.state(entry);
      if (entry.rec.error && s !== 'pivoted' && s !== 'finished') {
        const name = entry.rec.error.name in ERRORS ? entry.rec.error.name as ErrorName : 'libvirtError';
        throw new AgentError(name, entry.rec.error.message, { group: this.view(entry) });
      }
    }
    return { group: this.view(entry), changed };
  }

  private waitUntil(pred: () => boolean, timeoutMs?: number, signal?: AbortSignal): Promise<boolean> {
    return until(this.updates, 'update', pred, timeoutMs, signal);
  }

  private changed(entry: Entry): void {
    this.updates.emit('update', entry);
  }

  private members(entry: Entry): Job[] {
    return groupMembers(this.jobs.groupJobs(entry.rec.groupId), entry.rec);
  }

  private state(entry: Entry): GroupState {
    return groupState(this.members(entry).map((j) => j.state));
  }

  private view(entry: Entry): Group {
    return groupView(entry.rec, this.members(entry));
  }

  private find(groupId: string): Entry {
    const e = this.groups.get(groupId);
    if (!e) throw new AgentError('noJob', `no group '${groupId}'`);
    return e;
  }

  /** The group an identical earlier call created: same groupId, or same domain, disks and destinations. */
  private findSame(params: BlockCopyGroupParams): Entry | undefined {
    const byId = params.groupId ? this.groups.get(params.groupId) : undefined;
    const candidates = params.groupId ? (byId ? [byId] : []) : [...this.groups.values()];
    const same = sameGroup(params, candidates.map((e) => ({ rec: e.rec, members: this.members(e) })));
    return same ? this.groups.get(same.groupId) : undefined;
  }

  private async domainOf(key: string): Promise<Group['domain']> {
    const dom = await this.conn().lookupDomain(key).catch((e) => {
      throw new AgentError('notFound', `no domain '${key}'`, e instanceof LibvirtError ? { libvirt: libvirtData(e) } : {});
    });
    return { name: dom.name, uuid: dom.uuid };
  }

  private assertServing(): void {
    this.jobs.assertServing();
    if (!this.started) throw new AgentError('recovering', 'the agent is loading its groups; retry shortly');
  }

  private save(entry: Entry): Promise<void> {
    entry.rec.updatedAt = this.jobs.now();
    const snapshot = structuredClone(entry.rec);
    entry.writes = entry.writes.catch(() => {}).then(() => this.journal.saveGroup(snapshot));
    // A record that cannot be written refuses the group call by name (before any pause or copy).
    return entry.writes.catch((e: unknown) => { throw stateUnavailable(e, 'the group call'); });
  }
}
