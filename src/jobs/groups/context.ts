// What the group modules share: the group entries, the job manager they build on, the record
// writes (chained per group, in order) and the lookups every group call starts with.
import { EventEmitter } from 'node:events';
import { AgentError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Group, GroupChange, GroupState, Job } from '../../generated/api.js';
import { groupMembers, groupView, sameGroup } from './params.js';
import { groupState } from './state.js';
import { GuestControl } from './guest.js';
import { stateUnavailable, type GroupRecord, type Journal } from '../journal.js';
import type { JobManager } from '../manager.js';
import { isTerminal } from '../state-machine.js';
import { until } from '../until.js';

/** The group layer works on the job manager's context: its state store, clock and libvirt connection. */
export interface GroupManagerOptions {
  jobs: JobManager;
  log: Logger;
  /** Told how long each group switch paused the guest (metrics). */
  onSwitch?: (operation: 'pivot' | 'finish', pausedMs: number) => void;
  /** Storage pools a move (blockCopyGroup target {pool}) may name (config allowedPools). */
  allowedPools?: readonly string[];
}

/** One group in memory: its journaled record and what is under way. */
export interface GroupEntry {
  rec: GroupRecord;
  /** The switch under way; a second caller joins it. */
  switching: Promise<GroupChange> | null;
  /** Members' ends already acted on (one automatic cancel of the rest per group). */
  cancelledRest: boolean;
  /** Record writes, chained so they land in order. */
  writes: Promise<void>;
  /** blockCopyGroup is still starting the copies: the group must not act on its first members alone. */
  starting: boolean;
  /** The maxPause of the switch under way (a shutdown waits for it, bounded by this). */
  switchMaxPauseMs?: number;
}

export function groupEntry(rec: GroupRecord, starting: boolean): GroupEntry {
  return { rec, switching: null, cancelledRest: false, writes: Promise.resolve(), starting };
}

export class GroupContext {
  readonly jobs: JobManager;
  readonly log: Logger;
  readonly journal: Journal;
  readonly guest: GuestControl;
  readonly groups = new Map<string, GroupEntry>();
  readonly onSwitch: GroupManagerOptions['onSwitch'];
  readonly allowedPools: readonly string[];
  /** Emits 'update' on every change of a group or its members (waits listen to it). */
  private readonly updates = new EventEmitter();
  /** Groups loaded and subscribed to the job manager: group calls are served. */
  started = false;
  /** The agent is shutting down: no switch begins, and one waiting for ready gives up. */
  private readonly stopping = new AbortController();

  constructor(opts: GroupManagerOptions) {
    this.jobs = opts.jobs;
    this.log = opts.log;
    this.onSwitch = opts.onSwitch;
    this.allowedPools = opts.allowedPools ?? [];
    this.journal = opts.jobs.store;
    this.guest = new GuestControl(() => this.jobs.connection, opts.log);
    this.updates.setMaxListeners(0);
  }

  waitUntil(pred: () => boolean, timeoutMs?: number, signal?: AbortSignal): Promise<boolean> {
    return until(this.updates, 'update', pred, timeoutMs, signal);
  }

  changed(entry: GroupEntry): void {
    this.updates.emit('update', entry);
  }

  members(entry: GroupEntry): Job[] {
    return groupMembers(this.jobs.groupJobs(entry.rec.groupId), entry.rec);
  }

  state(entry: GroupEntry): GroupState {
    return groupState(this.members(entry).map((j) => j.state));
  }

  view(entry: GroupEntry): Group {
    return groupView(entry.rec, this.members(entry));
  }

  find(groupId: string): GroupEntry {
    const e = this.groups.get(groupId);
    if (!e) throw new AgentError('noJob', `no group '${groupId}'`);
    return e;
  }

  /** The group an identical earlier call created: same groupId, or same domain, disks and destinations. */
  findSame(params: Parameters<typeof sameGroup>[0], uuid: string): GroupEntry | undefined {
    const byId = params.groupId ? this.groups.get(params.groupId) : undefined;
    const candidates = params.groupId ? (byId ? [byId] : []) : [...this.groups.values()];
    const same = sameGroup(
      params,
      uuid,
      candidates.map((e) => ({ rec: e.rec, members: this.members(e) })),
    );
    return same ? this.groups.get(same.groupId) : undefined;
  }

  /** Cancels every member that has not ended; true if any was running. */
  async cancelMembers(entry: GroupEntry): Promise<boolean> {
    const running = this.members(entry).filter((j) => !isTerminal(j.state));
    const results = await Promise.allSettled(running.map((j) => this.jobs.abort({ jobId: j.jobId })));
    const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (refused) throw refused.reason;
    return running.length > 0;
  }

  get stopSignal(): AbortSignal {
    return this.stopping.signal;
  }

  stop(): void {
    this.stopping.abort();
  }

  /** Before each step that would change the guest: a shutdown under way refuses it (nothing changed yet). */
  assertNotStopping(): void {
    if (this.stopping.signal.aborted)
      throw new AgentError('unavailable', 'the agent is shutting down; the group switch did not begin; retry once it is back');
  }

  assertServing(): void {
    this.jobs.assertServing();
    if (!this.started) throw new AgentError('recovering', 'the agent is loading its groups; retry shortly');
  }

  save(entry: GroupEntry): Promise<void> {
    entry.rec.updatedAt = this.jobs.now();
    const snapshot = structuredClone(entry.rec);
    entry.writes = entry.writes.catch(() => {}).then(() => this.journal.saveGroup(snapshot));
    // A record that cannot be written refuses the group call by name (before any pause or copy).
    return entry.writes.catch((e: unknown) => {
      throw stateUnavailable(e, 'the group call');
    });
  }

  /** A write after the fact (the group already acted): a failure is logged, the next write retries it. */
  saveOrLog(entry: GroupEntry): Promise<void> {
    return this.save(entry).catch((e) => this.log.error('group record write failed', { groupId: entry.rec.groupId, error: e }));
  }
}
