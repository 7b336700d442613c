// One owner of the libvirt connection's life, with its state explicit: connecting (first open,
// retried), serving, lost (libvirtd went away; reopening with backoff), reconciling (the job
// manager checks every job against the new connection before serving again), stopped. The job
// manager follows it (connectionLost / reconnect) and tells its own followers (the group layer,
// subscribed sessions) through its `agent.connection` event; this emits `state` for each change.
import { EventEmitter } from 'node:events';
import type { Connection } from './libvirt/index.js';
import type { Logger } from './log.js';

export type ConnectionState = 'connecting' | 'serving' | 'lost' | 'reconciling' | 'stopped';

export interface ConnectionStateEvent {
  state: ConnectionState;
  at: string;
  reason?: string;
}

/** What the supervisor drives: the job manager. */
export interface Supervised {
  readonly isStopped: boolean;
  connectionLost(reason: string): void;
  reconnect(conn: Connection): Promise<void>;
}

export interface SupervisorOptions {
  open: () => Promise<Connection>;
  log: Logger;
  /** Tries of the first open before giving up (the agent then exits). */
  firstAttempts?: number;
  /** Backoff of the reopen after a loss (ms): doubles from `reopenMinMs` up to `reopenMaxMs`. */
  reopenMinMs?: number;
  reopenMaxMs?: number;
}

export class ConnectionSupervisor extends EventEmitter {
  private current: ConnectionState = 'connecting';

  constructor(private readonly opts: SupervisorOptions) {
    super();
  }

  get state(): ConnectionState {
    return this.current;
  }

  private set(state: ConnectionState, reason?: string): void {
    if (this.current === 'stopped' || this.current === state) return;
    this.current = state;
    const e: ConnectionStateEvent = { state, at: new Date().toISOString(), ...(reason ? { reason } : {}) };
    this.emit('state', e);
  }

  /** The first connection, retried while libvirtd starts. */
  async connect(): Promise<Connection> {
    const attempts = this.opts.firstAttempts ?? 10;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.opts.open();
      } catch (e) {
        if (attempt >= attempts) throw e;
        this.opts.log.warn('libvirt not reachable yet, retrying', { attempt, error: (e as Error).message });
        await new Promise((r) => setTimeout(r, Math.min(500 * attempt, 3000)));
      }
    }
  }

  /**
   * Hands the connection's life to `jobs`: it serves on `conn`; when libvirtd closes it, jobs are
   * kept (lost), a new connection is opened with backoff and reconciled before serving again.
   */
  watch(conn: Connection, jobs: Supervised): void {
    this.set('serving');
    conn.onClose((reason) => {
      if (this.current === 'stopped' || jobs.isStopped) return;
      const why = `libvirt closed the connection (${reason})`;
      jobs.connectionLost(why);
      this.set('lost', why);
      void this.recover(conn, jobs);
    });
  }

  private async recover(old: Connection, jobs: Supervised): Promise<void> {
    const max = this.opts.reopenMaxMs ?? 1000;
    for (let delay = this.opts.reopenMinMs ?? 100; ; delay = Math.min(delay * 2, max)) {
      await new Promise((r) => setTimeout(r, delay));
      if (this.current === 'stopped' || jobs.isStopped) return;
      let next: Connection;
      try {
        next = await this.opts.open();
      } catch (e) {
        this.opts.log.warn('libvirt not reachable yet, retrying', { delayMs: delay, error: (e as Error).message });
        continue;
      }
      await old.close().catch(() => {});
      this.set('reconciling');
      try {
        await jobs.reconnect(next);
      } catch (e) {
        this.opts.log.warn('reconcile after reconnect failed; reconnecting again', { error: (e as Error).message });
        await next.close().catch(() => {});
        this.set('lost', 'the reconcile failed');
        continue;
      }
      if (next.closed) {
        // Lost again while reconciling: start over.
        jobs.connectionLost('libvirt closed the connection during the reconcile');
        this.set('lost', 'closed during the reconcile');
        old = next;
        continue;
      }
      this.watch(next, jobs);
      return;
    }
  }

  /** No more reconnects: the agent is shutting down. */
  stop(): void {
    this.set('stopped');
  }
}
