// Runs the real agent (the built CLI) for integration tests and hands back a typed client.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../../src/client/index.js';
import type { Job, JobState } from '../../src/generated/api.js';
import { TEST_ROOT, type TeardownHost } from './hypervisor.js';

export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
export type Transport = 'ws' | 'stdio';

const ENV = { ...process.env, BLOCKCOPY_VALIDATE_RESULTS: '1', BLOCKCOPY_LOG_LEVEL: process.env.BLOCKCOPY_LOG_LEVEL ?? 'warn' };

export function stateDir(host: TeardownHost): string {
  mkdirSync(TEST_ROOT, { recursive: true });
  const dir = mkdtempSync(join(TEST_ROOT, 'state-'));
  host.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface ServedAgent {
  process: ChildProcess;
  url: string;
  stateDir: string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** `blockcopy-agent serve` on an ephemeral loopback port. */
export async function serveAgent(host: TeardownHost, args: string[] = [], dir = stateDir(host)): Promise<ServedAgent> {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--state-dir', dir, '--poll-interval-ms', '500', '--log-level', 'info', ...args],
    { stdio: ['ignore', 'inherit', 'pipe'], env: ENV });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  host.teardown(() => stop());
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`agent did not start: ${buf}`)), 30_000);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      buf += chunk;
      const m = /"msg":"listening"[^\n]*"port":(\d+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
      // Keep the rest of the agent's log visible for failing tests.
      if (process.env.BLOCKCOPY_TEST_VERBOSE) process.stderr.write(chunk);
    });
    child.once('exit', (code) => reject(new Error(`agent exited with ${code}: ${buf}`)));
  });
  return { process: child, url: `ws://127.0.0.1:${port}`, stateDir: dir, stop };
}

/** A client on a fresh agent: over WebSocket to `serve`, or as the stdin/stdout of `stdio`. */
export async function agentClient(host: TeardownHost, transport: Transport): Promise<AgentClient> {
  if (transport === 'ws') {
    const agent = await serveAgent(host);
    const client = await AgentClient.connect(agent.url);
    host.teardown(() => client.close());
    return client;
  }
  const dir = stateDir(host);
  const client = AgentClient.spawn(process.execPath, [CLI, 'stdio', '--state-dir', dir, '--poll-interval-ms', '500'], { env: ENV });
  host.teardown(async () => {
    client.close();
    await new Promise((r) => (client.process.exitCode !== null ? r(null) : client.process.once('exit', r)));
  });
  return client;
}

/** Records job.changed notifications and waits for states. */
export class JobWatch {
  readonly seen: Job[] = [];
  constructor(client: AgentClient) {
    client.on('job.changed', (job: Job) => this.seen.push(job));
  }

  states(jobId: string): JobState[] {
    const out: JobState[] = [];
    for (const j of this.seen) if (j.jobId === jobId && out[out.length - 1] !== j.state) out.push(j.state);
    return out;
  }
}

/** Resolves once the job is in one of `states`, polling jobInfo (notifications are tested separately). */
export async function untilState(client: AgentClient, jobId: string, states: JobState[], timeoutMs = 120_000): Promise<Job> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { job } = await client.call('jobInfo', { jobId });
    if (states.includes(job.state)) return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} stayed ${job.state}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
