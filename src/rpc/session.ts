// One connected caller: who it is, where it comes from, and what it subscribed to.
import { randomBytes } from 'node:crypto';
import { DEFAULTS, type Job, type SubscribeParams } from '../generated/api.js';
import { AgentError } from '../errors.js';
import { notificationFrame } from '../protocol/index.js';

/** Decides whether one more call may run now (a rate limit); absent: no limit (stdio). */
export interface CallBudget {
  take(): boolean;
}

/** What the running calls of one connection may pin at once (limits.maxPendingCalls, maxPendingBytes). */
export interface PendingLimits {
  maxPendingCalls: number;
  maxPendingBytes: number;
}

/**
 * The running calls of one connection and what they pin: their count, and bytes: each call's id
 * plus PER_CALL_BYTES for what a call holds besides, taken before it runs, and twice its params'
 * JSON length once they are validated (the params as sent, kept for the audit, and the
 * validated copy; params that fail validation are dropped at once). A call that would go beyond
 * either bound is refused (tooManyPending) before it acts, and the transport reads no further
 * frame while the budget is full (src/transport/flow.ts).
 */
export class PendingBudget {
  calls = 0;
  bytes = 0;

  constructor(readonly limits: PendingLimits) {}

  get full(): boolean {
    return this.calls >= this.limits.maxPendingCalls || this.bytes >= this.limits.maxPendingBytes;
  }

  /** Whether a call of `bytes` would fit now (0 bytes: it takes nothing, always fits). */
  fits(bytes: number): boolean {
    return bytes === 0 || (this.calls + 1 <= this.limits.maxPendingCalls && this.bytes + bytes <= this.limits.maxPendingBytes);
  }

  /** Takes room for `calls` calls (1: a call starts; 0: its params once validated) and `bytes`; false (nothing taken) when it does not fit. */
  take(bytes: number, calls = 1): boolean {
    if (this.calls + calls > this.limits.maxPendingCalls || this.bytes + bytes > this.limits.maxPendingBytes) return false;
    this.calls += calls;
    this.bytes += bytes;
    return true;
  }

  release(bytes: number, calls = 1): void {
    this.calls -= calls;
    this.bytes -= bytes;
  }

  /** The error of a call that does not fit. */
  refusal(cost: number): AgentError {
    const { maxPendingCalls, maxPendingBytes } = this.limits;
    return new AgentError(
      'tooManyPending',
      `this connection's running calls would exceed ${maxPendingCalls} calls or ${maxPendingBytes} bytes (this one: ${cost}); send it again once earlier calls have answered`,
      { maxPendingCalls, maxPendingBytes },
    );
  }
}

/**
 * Counted for every running call besides its id and params (its promises, closures, context:
 * about 7 KiB measured for a wait held through the RPC layer and the job's waiter).
 */
export const PER_CALL_BYTES = 4096;

/** About the JSON length of a value (validated params: bounded by their schema), without recursion. */
export function jsonSize(value: unknown): number {
  let n = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') n += v.length + 2;
    else if (v === null || typeof v !== 'object') n += 8;
    else if (Array.isArray(v)) {
      n += 2 + v.length;
      for (const x of v) stack.push(x);
    } else {
      n += 2;
      for (const [k, x] of Object.entries(v)) {
        n += k.length + 4;
        stack.push(x);
      }
    }
  }
  return n;
}

/** The principals of the host's own callers: stdio, the unix socket, the stdio relay (src/transport/). */
const LOCAL_PRINCIPALS = new Set(['local', 'local-socket', 'local-stdio']);

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
  /** Calls of this session now running: the transport starts no frame while the budget is full. */
  readonly pending: PendingBudget;

  constructor(
    readonly principal: Principal,
    readonly peer: string,
    private readonly send: (frame: string) => void,
    /** Counted per call, not per frame: a batch of n calls takes n. */
    readonly budget: CallBudget | null = null,
    pendingLimits: PendingLimits = {
      maxPendingCalls: DEFAULTS.AgentConfig.limits.maxPendingCalls,
      maxPendingBytes: DEFAULTS.AgentConfig.limits.maxPendingBytes,
    },
  ) {
    this.pending = new PendingBudget(pendingLimits);
  }

  /**
   * Whose jobIds this session's calls use: the principal's name, and one "local" for the host's
   * own callers (stdio, the unix socket, the stdio relay), who are all root on this host.
   */
  get owner(): string {
    return LOCAL_PRINCIPALS.has(this.principal.name) ? 'local' : this.principal.name;
  }

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

  /** A job's or a backup's change, by the subscription's jobIds and domain. */
  wants(job: Pick<Job, 'jobId' | 'domain'>): boolean {
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
