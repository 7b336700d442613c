// A typed client for the agent over WebSocket or a spawned `blockcopy-agent stdio`.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { WebSocket } from 'ws';
import type { AgentErrorData, Job } from '../generated/api.js';
import type { MethodName, Methods } from './methods.js';

export type { MethodName, Methods } from './methods.js';

/** An error answer from the agent; `name` is the agent's stable error name when it has one. */
export class RpcError extends Error {
  override readonly name = 'RpcError';
  constructor(readonly code: number, message: string, readonly data?: Partial<AgentErrorData> & Record<string, unknown>) {
    super(message);
  }
  get errorName(): string | undefined {
    return this.data?.name;
  }
  get retryable(): boolean {
    return this.data?.retryable === true;
  }
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/** Emits 'job.changed' (job: Job) for notifications and 'close' when the transport ends. */
export class AgentClient extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  private constructor(private readonly sendFrame: (frame: string) => void, private readonly closeTransport: () => void) {
    super();
  }

  static connect(url: string, opts: { headers?: Record<string, string>; ca?: Buffer | string; cert?: Buffer | string; key?: Buffer | string } = {}): Promise<AgentClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: opts.headers, ca: opts.ca, cert: opts.cert, key: opts.key, perMessageDeflate: false });
      const client = new AgentClient((f) => ws.send(f), () => ws.close());
      ws.once('open', () => resolve(client));
      ws.on('error', (e) => {
        reject(e);
        client.shutdown(e);
      });
      ws.on('message', (data) => client.receive(data.toString()));
      ws.on('close', (code, reason) => client.shutdown(new Error(`connection closed (${code}${reason.length ? ' ' + reason.toString() : ''})`)));
    });
  }

  /** Runs `command args…` (e.g. ['blockcopy-agent','stdio'] or ['ssh', host, 'blockcopy-agent', 'stdio']). */
  static spawn(command: string, args: string[] = [], opts: { env?: NodeJS.ProcessEnv; stderr?: 'inherit' | 'ignore' | 'pipe' } = {}): AgentClient & { process: ChildProcess } {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', opts.stderr ?? 'inherit'], env: opts.env ?? process.env });
    const client = new AgentClient((f) => child.stdin!.write(f + '\n'), () => child.stdin!.end()) as AgentClient & { process: ChildProcess };
    client.process = child;
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) client.receive(line);
      }
    });
    child.on('exit', (code, signal) => client.shutdown(new Error(`agent exited (${signal ?? code})`)));
    child.on('error', (e) => client.shutdown(e));
    return client;
  }

  call<M extends MethodName>(method: M, params: Methods[M][0]): Promise<Methods[M][1]> {
    if (this.closed) return Promise.reject(new Error('the client is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sendFrame(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    });
  }

  /** Sends any frame as is (for protocol tests); answers arrive through 'frame' events. */
  sendRaw(frame: string): void {
    this.sendFrame(frame);
  }

  close(): void {
    this.closeTransport();
    this.shutdown(new Error('the client is closed'));
  }

  private receive(text: string): void {
    this.emit('frame', text);
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    for (const m of Array.isArray(msg) ? msg : [msg]) {
      if (!m || typeof m !== 'object') continue;
      const r = m as { id?: unknown; method?: string; params?: { job?: Job }; result?: unknown; error?: { code: number; message: string; data?: Record<string, unknown> } };
      if (r.method === 'job.changed' && r.params?.job) {
        this.emit('job.changed', r.params.job);
        continue;
      }
      const p = typeof r.id === 'number' ? this.pending.get(r.id) : undefined;
      if (!p) continue;
      this.pending.delete(r.id as number);
      if (r.error) p.reject(new RpcError(r.error.code, r.error.message, r.error.data as RpcError['data']));
      else p.resolve(r.result);
    }
  }

  private shutdown(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.emit('close', err);
  }
}
