// One connected caller: who it is, where it comes from, and what it subscribed to.
import { randomBytes } from 'node:crypto';
import type { Job, SubscribeParams } from '../generated/api.js';
import { notificationFrame } from '../protocol/index.js';

/** Decides whether one more call may run now (a rate limit); absent: no limit (stdio). */
export interface CallBudget {
  take(): boolean;
}

export interface Principal {
  /** Token name, certificate subject, or "local" for stdio. */
  name: string;
  /** May call only read-only methods. */
  readOnly: boolean;
}

export class Session {
  readonly id = randomBytes(4).toString('hex');
  /** Aborted when the transport closes: waits on behalf of this session stop. */
  private readonly closing = new AbortController();
  private filter: { jobIds?: Set<string>; domain?: string } | null = null;
  /** Calls of this session now running: the transport starts no frame while too many are. */
  pendingCalls = 0;

  constructor(
    readonly principal: Principal,
    readonly peer: string,
    private readonly send: (frame: string) => void,
    /** Counted per call, not per frame: a batch of n calls takes n. */
    readonly budget: CallBudget | null = null,
  ) {}

  get signal(): AbortSignal {
    return this.closing.signal;
  }

  subscribe(p: SubscribeParams): void {
    this.filter = { ...(p.jobIds ? { jobIds: new Set(p.jobIds) } : {}), ...(p.domain ? { domain: p.domain } : {}) };
  }

  unsubscribe(): void {
    this.filter = null;
  }

  get subscribed(): boolean {
    return this.filter !== null;
  }

  wants(job: Job): boolean {
    const f = this.filter;
    if (!f) return false;
    if (f.jobIds && !f.jobIds.has(job.jobId)) return false;
    if (f.domain && f.domain !== job.domain.name && f.domain !== job.domain.uuid) return false;
    return true;
  }

  notify(method: string, params: unknown): void {
    if (!this.closing.signal.aborted) this.send(notificationFrame(method, params));
  }

  close(): void {
    this.closing.abort();
  }
}
