// Runs the real agent (the built CLI) for integration tests and hands back a typed client.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from '../src/cli/node-flags.js';
import { AgentClient } from '../src/client/index.js';
import { makeDestinationCheck } from '../src/destination/policy.js';
import type { AnyJob, BackupJob, Job, JobState } from '../src/generated/api.js';
import { isBackupJob, isBlockJob } from '../src/job-types.js';
import { scratchDir, TEST_ROOT, type TeardownHost } from './hypervisor.js';

export const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
export type Transport = 'ws' | 'stdio';

const ENV = { ...process.env, BLOCKCOPY_VALIDATE_RESULTS: '1', BLOCKCOPY_LOG_LEVEL: process.env.BLOCKCOPY_LOG_LEVEL ?? 'warn' };

/**
 * Test disks and destinations live under TEST_ROOT (root-owned 0755, in the sticky /var/tmp),
 * not in libvirt's default pool directory: agents the tests start allow it explicitly. For
 * commands that start an agent themselves (the CLI without --url, Ansible).
 */
export const TEST_AGENT_ENV = { BLOCKCOPY_ALLOWED_ROOTS: TEST_ROOT };

/** The same policy for a JobManager a test builds itself. */
export const testDestinationCheck = () => makeDestinationCheck({ roots: [TEST_ROOT], devices: [], trustedOwners: new Set(), network: [] });

export function stateDir(host: TeardownHost): string {
  const dir = scratchDir('state-');
  host.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface ServedAgent {
  process: ChildProcess;
  url: string;
  stateDir: string;
  /** The bearer token of the 'test-admin' principal, and the header that carries it. */
  token: string;
  headers: Record<string, string>;
  connect(): Promise<AgentClient>;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface ServeOptions {
  /** Config file content, merged over the helper's own (tokens file, ephemeral loopback port). */
  config?: Record<string, unknown>;
  args?: string[];
  dir?: string;
  /** Extra token entries for the tokens file. */
  tokens?: Array<{ name: string; token: string; readOnly?: boolean }>;
  /** The test-admin token (default: a new random one). */
  token?: string;
  /** A fixed loopback port (default: an ephemeral one). */
  port?: number;
  /** Extra environment for the agent process (e.g. BLOCKCOPY_FAULT_KILL_AT). */
  env?: Record<string, string>;
  /** A command the agent runs under, e.g. ['ip', 'netns', 'exec', NS] (it must exec the agent: signals reach it). */
  wrap?: string[];
  /** The host of the returned url (default 127.0.0.1), for an agent listening elsewhere. */
  urlHost?: string;
}

/** `blockcopy-agent serve` on an ephemeral loopback port, with a tokens file (0600). */
export async function serveAgent(host: TeardownHost, opts: ServeOptions = {}): Promise<ServedAgent> {
  const dir = opts.dir ?? stateDir(host);
  const token = opts.token ?? randomBytes(24).toString('hex');
  const tokensFile = join(dir, 'tokens.json');
  writeFileSync(tokensFile, JSON.stringify({ tokens: [{ name: 'test-admin', token }, ...(opts.tokens ?? [])] }), { mode: 0o600 });
  const configFile = join(dir, 'config.json');
  const { auth, ...rest } = opts.config ?? {};
  // Each agent its own unix socket (the default path is one per host).
  writeFileSync(
    configFile,
    JSON.stringify({
      auth: { tokensFile, ...(auth as object) },
      listen: { host: '127.0.0.1', port: opts.port ?? 0 },
      socket: { path: join(dir, 'run', 'agent.sock') },
      allowedRoots: [TEST_ROOT],
      ...rest,
    }),
  );
  const [command, ...prefix] = [...(opts.wrap ?? []), process.execPath];
  const child = spawn(
    command!,
    [
      ...prefix,
      ...NODE_FLAGS,
      CLI,
      'serve',
      '--config',
      configFile,
      '--state-dir',
      dir,
      '--poll-interval-ms',
      '500',
      '--log-level',
      'info',
      ...(opts.args ?? []),
    ],
    { stdio: ['ignore', 'inherit', 'pipe'], env: { ...ENV, ...opts.env } },
  );
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
  const tls = !!opts.config?.tls;
  const url = `${tls ? 'wss' : 'ws'}://${opts.urlHost ?? '127.0.0.1'}:${port}`;
  const headers = { authorization: `Bearer ${token}` };
  return {
    process: child,
    url,
    stateDir: dir,
    token,
    headers,
    stop,
    connect: async () => {
      const client = await AgentClient.connect(url, { headers });
      host.teardown(() => client.close());
      return client;
    },
  };
}

/** A client on a fresh agent: over WebSocket to `serve`, or as the stdin/stdout of `stdio`. */
export async function agentClient(host: TeardownHost, transport: Transport): Promise<AgentClient> {
  if (transport === 'ws') return (await serveAgent(host)).connect();
  const dir = stateDir(host);
  const client = AgentClient.spawn(process.execPath, [CLI, 'stdio', '--state-dir', dir, '--poll-interval-ms', '500'], {
    env: { ...ENV, ...TEST_AGENT_ENV },
  });
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

/** The block job a call about a copy, commit or pull answers (a backup there is a test's failure). */
export function blockJob(j: AnyJob): Job {
  if (!isBlockJob(j)) throw new Error(`job ${j.jobId} is a ${j.kind} job, not a block job`);
  return j;
}

/** The backup a call about a backup answers (a block job there is a test's failure). */
export function backupJob(j: AnyJob): BackupJob {
  if (!isBackupJob(j)) throw new Error(`job ${j.jobId} is a ${j.kind} job, not a backup`);
  return j;
}

/** Resolves once the job is in one of `states`, polling jobInfo (notifications are tested separately). */
export async function untilState(client: AgentClient, jobId: string, states: JobState[], timeoutMs = 120_000): Promise<Job> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { job } = await client.call('jobInfo', { jobId });
    if (!isBlockJob(job)) throw new Error(`job ${jobId} is a ${job.kind} job, not a block job`);
    if (states.includes(job.state)) return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} stayed ${job.state}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
