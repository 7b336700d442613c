// What the job layer's modules share: the libvirt connection (replaced on reconnect), the
// journal, the jobs, the per-disk locks, the settings, the serving state, and each other.
// The facade (manager.ts) builds it once; every module reads and changes state through it.
import { EventEmitter } from 'node:events';
import { DEFAULTS, type AnyJob } from '../generated/api.js';
import type { Logger } from '../log.js';
import type { Connection, DomainEvent } from '../libvirt/index.js';
import { STALE_MIRROR_MS } from './kinds/decision.js';
import { defaultDestinationCheck, type DestinationCheck } from '../destination/policy.js';
import type { JobEntry } from './job.js';
import { Journal } from './journal.js';
import { isOutcomeUnknown } from './libvirt-errors.js';
import { KeyedMutex } from './lock.js';
import type { Cleanup, CleanupPolicy } from './cleanup.js';
import type { Completion } from './completion.js';
import type { Reconciler } from './reconcile.js';
import type { Recorder } from './recorder.js';
import type { Registry } from './registry.js';
import type { Starter } from './start.js';
import type { Verify } from './verify.js';
import type { Watch } from './watch.js';
import { SlowDomains } from './slow-domains.js';
import { systemClock, type Clock } from './clock.js';

export interface JobManagerOptions {
  connection: Connection;
  stateDir: string;
  log: Logger;
  /** Safety-net poll of running jobs: cross-checks the live XML this often (ms). Progress is sampled at least once a second. */
  pollIntervalMs?: number;
  /** Clock for the timestamps and progress samples of jobs (ms since the epoch); default: `time.now`. */
  now?: () => number;
  /** The kernel's time: deadlines, retries, graces, timers (clock.ts); default: the system clock. */
  time?: Clock;
  maxConcurrentCopies?: number;
  /** Destination policy; defaults to the built-in checks (not the source, no clobbering, …). */
  checkDestination?: DestinationCheck;
  /** How many ended jobs to remember. */
  keepEnded?: number;
  /** How long a <mirror> may outlive its block job before the job is failed as lost by libvirt (ms). */
  staleMirrorMs?: number;
  /** Where deleteMerged may delete (the destination policy's roots and trusted owners); default: the default roots. */
  cleanupPolicy?: CleanupPolicy;
  agentVersion?: string;
  /** Whether this agent outlives its caller (capabilities.agent.mode). */
  agentMode?: 'daemon' | 'stdio';
  /** Names of the domains this agent manages (shell-style patterns, config `domains`); default: every one. */
  domains?: string[];
  /** The jobs of the domain-job kinds (backups) by id, so that every kind shares one id space. */
  otherJob?: (jobId: string) => AnyJob | undefined;
}

/** The config's domain patterns as one test: `*` any run of characters, `?` one, the rest literal. */
export function domainMatcher(patterns: string[] = ['*']): (name: string) => boolean {
  const glob = (p: string) =>
    p
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.');
  const re = new RegExp(`^(?:${patterns.map(glob).join('|')})$`, 's');
  return (name) => re.test(name);
}

export class JobContext {
  /** Domains whose calls libvirtd took and has not answered in time (slow-domains.ts). */
  readonly slow = new SlowDomains();
  private tracked!: Connection;
  /** The connection as given (the owner's object); `conn` is the same, tracked. */
  raw!: Connection;
  /** The libvirt connection, every call on a domain tracked by `slow`. */
  get conn(): Connection {
    return this.tracked;
  }
  set conn(c: Connection) {
    this.raw = c;
    this.tracked = this.slow.watch(c);
  }
  readonly log: Logger;
  readonly journal: Journal;
  readonly pollMs: number;
  readonly staleMirrorMs: number;
  readonly sampleMs: number;
  readonly clock: () => number;
  readonly time: Clock;
  readonly maxCopies: number;
  readonly keepEnded: number;
  readonly checkDest: DestinationCheck;
  /** Whether the domain of that name is this agent's (config `domains`); others' jobs are never adopted. */
  readonly manages: (name: string) => boolean;
  readonly entries = new Map<string, JobEntry>();
  /** The jobs of the domain-job kinds (backups) by id: one id space for every kind (all-jobs.ts). */
  readonly otherJob: (jobId: string) => AnyJob | undefined;
  /** Serializes creation and every side effect per (domain, disk). */
  readonly locks = new KeyedMutex();
  /** Internal: fires on every job update, for waiters. */
  readonly updates = new EventEmitter();
  /** Until a reconcile is done, mutating calls get `recovering`. */
  recovering = true;
  /** Events held back while reconciling (null while serving). */
  buffered: DomainEvent[] | null = [];
  stopped = false;

  // The modules, set by the facade right after construction.
  registry!: Registry;
  recorder!: Recorder;
  starter!: Starter;
  completion!: Completion;
  watch!: Watch;
  verify!: Verify;
  reconciler!: Reconciler;
  cleanup!: Cleanup;

  /** `events`: the facade, which callers subscribe to (job.changed, agent.connection, group.pruned). */
  constructor(
    readonly opts: JobManagerOptions,
    readonly events: EventEmitter,
  ) {
    this.conn = opts.connection;
    this.log = opts.log;
    this.journal = new Journal(opts.stateDir);
    this.pollMs = opts.pollIntervalMs ?? DEFAULTS.AgentConfig.pollIntervalMs;
    this.staleMirrorMs = opts.staleMirrorMs ?? STALE_MIRROR_MS;
    this.sampleMs = Math.min(1000, this.pollMs);
    this.time = opts.time ?? systemClock;
    this.clock = opts.now ?? (() => this.time.now());
    this.maxCopies = opts.maxConcurrentCopies ?? DEFAULTS.AgentConfig.maxConcurrentCopies;
    this.keepEnded = opts.keepEnded ?? 1000;
    this.checkDest = opts.checkDestination ?? defaultDestinationCheck;
    this.manages = domainMatcher(opts.domains);
    this.otherJob = opts.otherJob ?? (() => undefined);
    this.updates.setMaxListeners(0);
  }

  iso(): string {
    return new Date(this.clock()).toISOString();
  }

  /**
   * A failed request whose outcome is unknown: libvirtd timed out or the connection dropped
   * (named by the error, or seen on the connection). The job keeps its journaled intent and the
   * poll, or the reconcile after a reconnect, finds out from libvirt what happened.
   */
  outcomeUnknown(e: unknown): boolean {
    return isOutcomeUnknown(e) || this.conn.closed;
  }

  realNow(): number {
    return this.time.now();
  }
}
