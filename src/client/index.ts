// A typed client for the agent over WebSocket, its local unix socket, or a spawned
// `blockcopy-agent stdio`. `ws` is loaded only for WebSocket connections (the CLI's local verbs
// start faster without it), and child_process only to spawn (it alone costs a short command ~20 ms).
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { createConnection } from 'node:net';
import type { AgentErrorData, ErrorName, Job } from '../generated/api.js';
import { LineReader, classify, parseFrame, requestFrame } from '../protocol/index.js';
import type { MethodName, Methods } from './methods.js';

export type { MethodName, Methods } from './methods.js';

/** An error answer from the agent; `name` is the agent's stable error name when it has one. */
export class RpcError extends Error {
  override readonly name = 'RpcError';
  constructor(
    readonly code: number,
    message: string,
    readonly data?: Partial<AgentErrorData> & Record<string, unknown>,
  ) {
    super(message);
  }
  /**
   * The agent's error name, typed by this package's table so that a misspelled name in a
   * comparison does not compile (an agent of another version may still send a name it lacks).
   */
  get errorName(): ErrorName | undefined {
    return this.data?.name;
  }
  get retryable(): boolean {
    return this.data?.retryable === true;
  }
}

/** Longest line accepted from a spawned agent (its answers to this client's own calls). */
const MAX_ANSWER_LINE = 256 * 1024 * 1024;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export interface ConnectOptions {
  headers?: Record<string, string>;
  ca?: Buffer | string;
  cert?: Buffer | string;
  key?: Buffer | string;
  /** Reconnect (with backoff) when the connection drops, and subscribe again as before. */
  reconnect?: boolean | { maxDelayMs?: number };
  /**
   * How long the agent may stay silent (ms, default 30000) before the connection counts as lost:
   * a peer cut off from the network closes nothing. The client pings after a third of it.
   */
  livenessMs?: number;
}

interface Transport {
  send(frame: string): void;
  close(): void;
}

/**
 * Emits 'job.changed' (job: AnyJob: a block job, or a backup; isBlockJob/isBackupJob tell) and 'agent.connection' (AgentConnectionParams: the agent lost or
 * regained libvirtd) for notifications, 'reconnect' after a dropped connection came back (with
 * reconnect), and 'close' when the client is done.
 */
export class AgentClient extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private emittedClose = false;
  private subscription: Methods['subscribe'][0] | null = null;

  private constructor(private transport: Transport) {
    super();
  }

  static async connect(url: string, opts: ConnectOptions = {}): Promise<AgentClient> {
    const client = new AgentClient({ send: () => {}, close: () => {} });
    await client.attachWebSocket(url, opts);
    return client;
  }

  /** The agent's local unix socket (root only; newline-delimited JSON-RPC). */
  static connectSocket(path: string): Promise<AgentClient> {
    return new Promise((resolve, reject) => {
      const sock = createConnection(path);
      const client = new AgentClient({ send: (f) => sock.write(f + '\n'), close: () => sock.end() });
      sock.once('connect', () => resolve(client));
      sock.on('error', (e) => {
        reject(e);
        client.shutdown(e);
      });
      sock.on('close', () => client.shutdown(new Error('the agent closed the connection')));
      client.readLines(sock);
    });
  }

  private async attachWebSocket(url: string, opts: ConnectOptions): Promise<void> {
    const { WebSocket } = await import('ws');
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: opts.headers, ca: opts.ca, cert: opts.cert, key: opts.key, perMessageDeflate: false });
      let opened = false;
      let heard = Date.now();
      let lost = '';
      const alive = () => void (heard = Date.now());
      const liveness = opts.livenessMs ?? 30_000;
      const timer = setInterval(
        () => {
          const silent = Date.now() - heard;
          if (silent < liveness) return void (ws.readyState === ws.OPEN && ws.ping());
          lost = `lost the connection to the agent at ${url}: nothing received for ${Math.round(silent / 1000)} s (its host or the network is down)`;
          ws.terminate();
        },
        Math.max(liveness / 3, 50),
      ).unref();
      ws.once('open', () => {
        opened = true;
        alive();
        this.transport = { send: (f) => ws.send(f), close: () => ws.close() };
        resolve();
      });
      ws.on('error', (e) => {
        if (!opened) reject(e);
      });
      ws.on('message', (data) => {
        alive();
        this.receive(data.toString());
      });
      ws.on('pong', alive);
      ws.on('ping', alive);
      ws.on('close', (code, reason) => {
        clearInterval(timer);
        if (!opened) return;
        const err = new Error(lost || `connection closed (${code}${reason.length ? ' ' + reason.toString() : ''})`);
        if (this.closed || !opts.reconnect) return this.shutdown(err);
        // Calls in flight may or may not have run: they fail, and the caller decides.
        this.failPending(err);
        void this.reconnect(url, opts);
      });
    });
  }

  private async reconnect(url: string, opts: ConnectOptions): Promise<void> {
    const max = (typeof opts.reconnect === 'object' ? opts.reconnect.maxDelayMs : undefined) ?? 5000;
    this.transport = {
      send: () => {
        throw new Error('reconnecting');
      },
      close: () => {},
    };
    for (let delay = 100; !this.closed; delay = Math.min(delay * 2, max)) {
      await new Promise((r) => setTimeout(r, delay));
      if (this.closed) return;
      try {
        await this.attachWebSocket(url, opts);
      } catch {
        continue;
      }
      if (this.subscription) await this.call('subscribe', this.subscription).catch(() => {});
      this.emit('reconnect');
      return;
    }
  }

  /** Runs `command args…` (e.g. ['blockcopy-agent','stdio'] or ['ssh', host, 'blockcopy-agent', 'stdio']). */
  static spawn(
    command: string,
    args: string[] = [],
    opts: { env?: NodeJS.ProcessEnv; stderr?: 'inherit' | 'ignore' | 'pipe' } = {},
  ): AgentClient & { process: ChildProcess } {
    const { spawn } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', opts.stderr ?? 'inherit'], env: opts.env ?? process.env });
    const client = new AgentClient({ send: (f) => child.stdin!.write(f + '\n'), close: () => child.stdin!.end() }) as AgentClient & {
      process: ChildProcess;
    };
    client.process = child;
    client.readLines(child.stdout!);
    child.on('exit', (code, signal) => client.shutdown(new Error(`agent exited (${signal ?? code})`)));
    child.on('error', (e) => client.shutdown(e));
    return client;
  }

  call<M extends MethodName>(method: M, params: Methods[M][0]): Promise<Methods[M][1]> {
    if (this.closed) return Promise.reject(new Error('the client is closed'));
    const id = this.nextId++;
    const result = new Promise<Methods[M][1]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      try {
        this.transport.send(requestFrame(id, method, params));
      } catch (e) {
        this.pending.delete(id);
        reject(e as Error);
      }
    });
    // Remembered so that a reconnect can subscribe again.
    if (method === 'subscribe')
      void result.then(
        () => {
          this.subscription = params as Methods['subscribe'][0];
        },
        () => {},
      );
    if (method === 'unsubscribe')
      void result.then(
        () => {
          this.subscription = null;
        },
        () => {},
      );
    return result;
  }

  /** Sends any frame as is (for protocol tests); answers arrive through 'frame' events. */
  sendRaw(frame: string): void {
    this.transport.send(frame);
  }

  close(): void {
    this.closed = true;
    this.transport.close();
    this.shutdown(new Error('the client is closed'));
  }

  /** The agent's lines are bounded by what it answers; this bound only stops a runaway peer. */
  private readLines(input: NodeJS.ReadableStream): void {
    const lines = new LineReader({
      maxLine: MAX_ANSWER_LINE,
      onLine: (l) => this.receive(l),
      onOversize: () => this.shutdown(new Error(`the agent sent a line over ${MAX_ANSWER_LINE} bytes`)),
    });
    input.on('data', (chunk: Buffer | string) => lines.push(chunk));
    input.on('end', () => lines.end());
  }

  private receive(text: string): void {
    this.emit('frame', text);
    const parsed = parseFrame(text);
    if (!parsed.ok) return;
    for (const m of parsed.items) {
      const kind = classify(m);
      if (kind === 'notification') {
        const n = m as { method: string; params?: { job?: Job } };
        if (n.method === 'job.changed' && n.params?.job) this.emit('job.changed', n.params.job);
        else if (n.method === 'agent.connection' && n.params) this.emit('agent.connection', n.params);
        continue;
      }
      if (kind !== 'response') continue;
      const r = m as { id: unknown; result?: unknown; error?: { code: number; message: string; data?: Record<string, unknown> } };
      const p = typeof r.id === 'number' ? this.pending.get(r.id) : undefined;
      if (!p) continue;
      this.pending.delete(r.id as number);
      if (r.error) p.reject(new RpcError(r.error.code, r.error.message, r.error.data as RpcError['data']));
      else p.resolve(r.result);
    }
  }

  private failPending(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private shutdown(err: Error): void {
    this.closed = true;
    this.failPending(err);
    if (this.emittedClose) return;
    this.emittedClose = true;
    this.emit('close', err);
  }
}
