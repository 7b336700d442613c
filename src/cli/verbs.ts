// The CLI verbs (`call` and the friendly ones, like virsh blockcopy/blockjob) on top of the
// client library (src/client/), talking to the local agent (its unix socket when it serves one;
// else a spawned `blockcopy-agent stdio`, which relays to a running daemon) or to a remote one
// (--url, --token, --ca).
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AgentClient, RpcError } from '../client/index.js';
import type { BlockCopyGroupParams, BlockCopyParams, Group, Job } from '../generated/api.js';
import type { MethodName } from '../client/methods.js';
import { localSocket } from './local-socket.js';

/** The client verbs: main.ts dispatches these here, and the switch below must handle each
 *  (a verb added here without a case, or a case for no verb, does not compile). */
export const CLIENT_COMMANDS = ['copy', 'info', 'pivot', 'finish', 'abort', 'jobs', 'watch', 'call', 'copy-group', 'group', 'pivot-group', 'finish-group', 'abort-group'] as const;
export type ClientCommand = (typeof CLIENT_COMMANDS)[number];
export const isClientCommand = (word: string | undefined): word is ClientCommand => (CLIENT_COMMANDS as readonly string[]).includes(word ?? '');

export const EXIT = { ok: 0, agentError: 1, usage: 2, connection: 3, timeout: 4, interrupted: 130 } as const;

export const CLIENT_HELP = `Client commands (talk to the agent on this host, or --url a remote one):
  blockcopy-agent copy DOMAIN DISK DEST [--format raw|qcow2] [--type file|block] [--bandwidth BYTES/S]
        [--shallow] [--reuse-external] [--transient-job] [--synchronous-writes] [--granularity BYTES]
        [--buf-size BYTES] [--job-id ID] [--wait] [--pivot | --finish] [--timeout SECONDS]
  blockcopy-agent info DOMAIN DISK | --job ID
  blockcopy-agent pivot|finish|abort DOMAIN DISK | --job ID
  blockcopy-agent jobs [DOMAIN]
  blockcopy-agent watch [DOMAIN] [--job ID]       print job changes until Ctrl-C
  blockcopy-agent call METHOD [--params JSON]      any method, params as JSON
  blockcopy-agent copy-group DOMAIN DISK=DEST... [--format raw|qcow2] [--bandwidth BYTES/S] [--group-id ID]
        [--wait] [--pivot | --finish] [--timeout SECONDS] [--max-pause SECONDS]
                                                   several disks ready together, switched in one guest pause
  blockcopy-agent group ID                         a group and its jobs
  blockcopy-agent pivot-group|finish-group|abort-group ID [--max-pause SECONDS]

Connection: --url ws(s)://HOST:PORT [--token TOKEN | BLOCKCOPY_TOKEN] [--ca FILE]; without --url the
command connects to the local agent's unix socket (--socket PATH | BLOCKCOPY_SOCKET, else the one
the agent owning --state-dir serves; root only), or else runs 'blockcopy-agent stdio'.
Output: a progress bar on a terminal; with --json, or when not a terminal, one JSON document per line.
Like virsh: --wait waits for ready, --pivot/--finish then pivot or finish, --timeout cancels the
copy on expiry. Ctrl-C during phase 1 cancels the copy (and says so); later it leaves it running.
Exit codes: 0 ok, 1 the agent refused (error name on stderr), 2 usage, 3 no connection,
4 timeout, 130 interrupted.`;

const OPTIONS = {
  url: { type: 'string' }, socket: { type: 'string' }, token: { type: 'string' }, ca: { type: 'string' }, 'state-dir': { type: 'string' },
  json: { type: 'boolean' }, job: { type: 'string' }, params: { type: 'string' },
  format: { type: 'string' }, type: { type: 'string' }, bandwidth: { type: 'string' }, granularity: { type: 'string' },
  'buf-size': { type: 'string' }, 'job-id': { type: 'string' }, shallow: { type: 'boolean' }, 'reuse-external': { type: 'boolean' },
  'transient-job': { type: 'boolean' }, 'synchronous-writes': { type: 'boolean' }, wait: { type: 'boolean' },
  pivot: { type: 'boolean' }, finish: { type: 'boolean' }, timeout: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  'group-id': { type: 'string' }, 'max-pause': { type: 'string' },
} as const;

class UsageError extends Error {}

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

async function connect(v: Values): Promise<AgentClient> {
  if (v.url) {
    const token = v.token ?? process.env.BLOCKCOPY_TOKEN;
    return AgentClient.connect(v.url, { headers: token ? { authorization: `Bearer ${token}` } : {}, ...(v.ca ? { ca: readFileSync(v.ca) } : {}) });
  }
  const local = localSocket({ socket: v.socket, stateDir: v['state-dir'] });
  if (local) {
    try {
      return await AgentClient.connectSocket(local.path);
    } catch (e) {
      // A socket left by an agent that is gone: the spawned agent below takes over. A named
      // socket, or one we may not open (not root), is an answer in itself.
      const code = (e as NodeJS.ErrnoException).code;
      if (local.explicit || (code !== 'ENOENT' && code !== 'ECONNREFUSED')) throw new Error(`${local.path}: ${(e as Error).message}`);
    }
  }
  const cli = fileURLToPath(new URL('./main.js', import.meta.url));
  return AgentClient.spawn(process.execPath, [cli, 'stdio', ...(v['state-dir'] ? ['--state-dir', v['state-dir']] : []), '--log-level', 'error'], { stderr: 'inherit' });
}

/** Closes the client; a spawned local agent is given a few seconds to finish and exit, so that
 *  it never outlives the command (still writing its journal, or starting up, after we are gone). */
async function closeClient(client: AgentClient | null | undefined): Promise<void> {
  if (!client) return;
  client.close();
  const child = 'process' in client ? (client as unknown as { process: ChildProcess }).process : undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => { child.kill('SIGTERM'); resolve(); }, 10_000);
    child.once('exit', () => { clearTimeout(timer); resolve(); });
  });
}

const num = (s: string | undefined, name: string): number | undefined => {
  if (s === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(s)) throw new UsageError(`--${name} must be a number, got '${s}'`);
  return Number(s);
};

function jobRef(v: Values, pos: string[]): { jobId: string } | { domain: string; disk: string } {
  if (v.job) return { jobId: v.job };
  if (pos.length !== 2) throw new UsageError('name the job: DOMAIN DISK, or --job ID');
  return { domain: pos[0]!, disk: pos[1]! };
}

const MiB = 1024 * 1024;

function progressLine(job: Job): string {
  const cur = Number(job.progress.cur);
  const end = Number(job.progress.end);
  const pct = job.progress.percent ?? 0;
  const filled = Math.round((pct / 100) * 30);
  const rate = job.progress.rate === null ? '' : ` ${(job.progress.rate / MiB).toFixed(1)} MiB/s`;
  const eta = job.progress.eta === null ? '' : ` ETA ${job.progress.eta}s`;
  return `${job.domain.name}/${job.disk} [${'#'.repeat(filled)}${'.'.repeat(30 - filled)}] ${pct.toFixed(0).padStart(3)}% ${(cur / MiB).toFixed(0)}/${(end / MiB).toFixed(0)} MiB${rate}${eta} ${job.state}`;
}

/** JSON lines (one document per line) with --json or whenever stdout is not a terminal. */
const jsonLines = (v: Values): boolean => !!v.json || !process.stdout.isTTY;

/** Shows job changes: a live bar on a terminal, JSON lines otherwise. */
function reporter(json: boolean) {
  const tty = !json;
  let open = false;
  return {
    job(job: Job) {
      if (!tty) return void process.stdout.write(JSON.stringify({ event: 'job.changed', job }) + '\n');
      process.stdout.write(`\r${progressLine(job)}\x1b[K`);
      open = true;
    },
    /** Several jobs at once (a group): one line on a terminal. */
    jobs(jobs: Job[]) {
      if (!tty) return void process.stdout.write(JSON.stringify({ event: 'jobs.changed', jobs }) + '\n');
      process.stdout.write(`\r${jobs.map((j) => `${j.disk} ${(j.progress.percent ?? 0).toFixed(0).padStart(3)}% ${j.state}`).join(' | ')}\x1b[K`);
      open = true;
    },
    say(msg: string, data: unknown) {
      if (!tty) return void process.stdout.write(JSON.stringify(data) + '\n');
      if (open) process.stdout.write('\n');
      open = false;
      process.stdout.write(msg + '\n');
    },
  };
}

async function copy(client: AgentClient, v: Values, pos: string[]): Promise<number> {
  if (pos.length !== 3) throw new UsageError('copy needs DOMAIN DISK DEST');
  if (v.pivot && v.finish) throw new UsageError('--pivot and --finish exclude each other');
  const [domain, disk, path] = pos as [string, string, string];
  const whenReady = v.pivot ? 'pivot' : v.finish ? 'finish' : 'none';
  const wait = whenReady !== 'none' ? 'done' : v.wait ? 'ready' : 'none';
  const params: BlockCopyParams = {
    domain, disk, destination: { path, ...(v.format ? { format: v.format as 'raw' | 'qcow2' } : {}), ...(v.type ? { type: v.type as 'file' | 'block' } : {}) },
    whenReady, wait: 'none',
    ...(v.shallow ? { shallow: true } : {}), ...(v['reuse-external'] ? { reuseExternal: true } : {}),
    ...(v['transient-job'] ? { transientJob: true } : {}), ...(v['synchronous-writes'] ? { synchronousWrites: true } : {}),
    ...(v.bandwidth !== undefined ? { bandwidth: num(v.bandwidth, 'bandwidth')! } : {}),
    // The agent's schema checks the value (a power of two in range); here it is only a number.
    ...(v.granularity !== undefined ? { granularity: num(v.granularity, 'granularity') as BlockCopyParams['granularity'] } : {}),
    ...(v['buf-size'] !== undefined ? { bufSize: num(v['buf-size'], 'buf-size')! } : {}),
    ...(v.timeout !== undefined ? { timeout: num(v.timeout, 'timeout')! } : {}),
    ...(v['job-id'] ? { jobId: v['job-id'] } : {}),
  };
  const out = reporter(jsonLines(v));
  const { job } = await client.call('blockCopy', params);
  if (wait === 'none') {
    out.say(`copy started: job ${job.jobId} (${job.state})`, { event: 'started', job });
    return EXIT.ok;
  }
  client.on('job.changed', (j: Job) => { if (j.jobId === job.jobId) out.job(j); });
  await client.call('subscribe', { jobIds: [job.jobId] });
  // Ctrl-C: a copy still in phase 1 is cancelled (nothing useful exists yet); later it stays.
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
    void client.call('jobInfo', { jobId: job.jobId }).then(async ({ job: now }) => {
      if (now.state === 'copying') {
        await client.call('abort', { jobId: job.jobId });
        out.say(`interrupted: cancelled job ${job.jobId}, which was still copying (phase 1); the guest stays on its source`, { event: 'interrupted', action: 'cancelled', jobId: job.jobId });
      } else {
        out.say(`interrupted: job ${job.jobId} is ${now.state}; left as it is`, { event: 'interrupted', action: 'none', job: now });
      }
      await closeClient(client);
      process.exit(EXIT.interrupted);
    });
  };
  process.once('SIGINT', onSigint);
  const final = (await client.call('wait', { jobId: job.jobId, until: wait })).job;
  process.off('SIGINT', onSigint);
  if (interrupted) return new Promise(() => {}); // the handler exits
  if (final.error?.name === 'timeout') {
    out.say(`timeout: ${final.error.message}`, { event: 'timeout', job: final });
    return EXIT.timeout;
  }
  if (final.state === 'failed' || final.state === 'cancelled') {
    out.say(`${final.state}: ${final.error?.message ?? final.evidence ?? ''}`, { event: final.state, job: final });
    return EXIT.agentError;
  }
  const what = final.state === 'pivoted' ? `pivoted: ${domain}/${disk} now runs on ${final.destination.path}` :
    final.state === 'finished' ? `finished: ${final.destination.path} holds a consistent copy` : `ready: mirroring to ${final.destination.path} (job ${final.jobId})`;
  out.say(what, { event: final.state, job: final });
  return EXIT.ok;
}

async function copyGroup(client: AgentClient, v: Values, pos: string[]): Promise<number> {
  if (pos.length < 2) throw new UsageError('copy-group needs DOMAIN DISK=DEST...');
  if (v.pivot && v.finish) throw new UsageError('--pivot and --finish exclude each other');
  const [domain, ...pairs] = pos as [string, ...string[]];
  const disks = pairs.map((p) => {
    const m = /^([^=]+)=(.+)$/.exec(p);
    if (!m) throw new UsageError(`'${p}' is not DISK=DEST`);
    return {
      disk: m[1]!, destination: { path: m[2]!, ...(v.format ? { format: v.format as 'raw' | 'qcow2' } : {}) },
      ...(v.bandwidth !== undefined ? { bandwidth: num(v.bandwidth, 'bandwidth')! } : {}),
    };
  });
  const whenReady = v.pivot ? 'pivot' : v.finish ? 'finish' : 'none';
  const params: BlockCopyGroupParams = {
    domain, disks, whenReady, wait: whenReady !== 'none' ? 'done' : v.wait ? 'ready' : 'none',
    ...(v.timeout !== undefined ? { timeout: num(v.timeout, 'timeout')! } : {}),
    ...(v['max-pause'] !== undefined ? { maxPause: num(v['max-pause'], 'max-pause')! } : {}),
    ...(v['group-id'] ? { groupId: v['group-id'] } : {}),
  };
  const out = reporter(jsonLines(v));
  const shown = new Map<string, Job>();
  client.on('job.changed', (j: Job) => {
    const ours = pairs.some((p) => p.startsWith(`${j.disk}=`)) && (j.domain.name === domain || j.domain.uuid === domain) && !!j.groupId;
    if (!ours) return;
    shown.set(j.disk, j);
    out.jobs([...shown.values()]);
  });
  if (params.wait !== 'none') await client.call('subscribe', { domain });
  const { group } = await client.call('blockCopyGroup', params).catch((e: unknown) => {
    const g = e instanceof RpcError ? (e.data as { group?: Group } | undefined)?.group : undefined;
    if (g) out.say(groupSummary(g), { event: 'group', group: g });
    throw e;
  });
  out.say(groupSummary(group), { event: 'group', group });
  return EXIT.ok;
}

function groupSummary(g: Group): string {
  const sw = g.lastSwitch;
  const detail = sw ? `guest paused ${sw.pausedMs} ms to ${sw.operation}: ${sw.disks.map((d) => `${d.disk} ${d.outcome}`).join(', ')}`
    : g.jobs.map((j) => `${j.disk} ${j.state}`).join(', ');
  return `group ${g.groupId}: ${g.state} (${detail})${g.error ? `; ${g.error.message}` : ''}`;
}

async function watch(client: AgentClient, v: Values, pos: string[]): Promise<number> {
  const out = reporter(true); // a stream of changes: JSON lines even on a terminal
  client.on('job.changed', (j: Job) => out.job(j));
  await client.call('subscribe', { ...(v.job ? { jobIds: [v.job] } : {}), ...(pos[0] ? { domain: pos[0] } : {}) });
  await new Promise<void>((resolve) => { process.once('SIGINT', resolve); client.once('close', resolve); });
  return EXIT.ok;
}

export async function runClientCommand(command: ClientCommand, argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    process.stderr.write(`blockcopy-agent: ${(e as Error).message}\n\n${CLIENT_HELP}\n`);
    return EXIT.usage;
  }
  const { values: v, positionals: pos } = parsed;
  if (v.help) {
    process.stdout.write(CLIENT_HELP + '\n');
    return EXIT.ok;
  }
  let client: AgentClient | null = null;
  try {
    // Check the words before connecting, so that usage errors never start anything.
    const plan = (): (() => Promise<number>) => {
      // One answer: indented for a person at a terminal, else one line.
      const print = (r: unknown) => { process.stdout.write(JSON.stringify(r, null, jsonLines(v) ? 0 : 2) + '\n'); return EXIT.ok; };
      switch (command) {
        case 'copy': return () => copy(client!, v, pos);
        case 'info': { const ref = jobRef(v, pos); return async () => print(await client!.call('jobInfo', ref)); }
        case 'pivot': case 'finish': case 'abort': {
          const ref = jobRef(v, pos);
          return async () => print(await client!.call(command, { ...ref, ...(command !== 'abort' && v.timeout ? { timeout: num(v.timeout, 'timeout')! } : {}) }));
        }
        case 'jobs': return async () => print(await client!.call('listJobs', pos[0] ? { domain: pos[0] } : {}));
        case 'watch': return () => watch(client!, v, pos);
        case 'copy-group': return () => copyGroup(client!, v, pos);
        case 'group': case 'pivot-group': case 'finish-group': case 'abort-group': {
          if (pos.length !== 1) throw new UsageError(`${command} needs a group ID`);
          const groupId = pos[0]!;
          const pause = v['max-pause'] !== undefined ? { maxPause: num(v['max-pause'], 'max-pause')! } : {};
          return async () => {
            const r = command === 'group' ? await client!.call('groupInfo', { groupId })
              : command === 'abort-group' ? await client!.call('abortGroup', { groupId })
                : await client!.call(command === 'pivot-group' ? 'pivotGroup' : 'finishGroup', { groupId, ...pause });
            return print(r);
          };
        }
        case 'call': {
          if (pos.length !== 1) throw new UsageError('call needs METHOD');
          let params: unknown = {};
          try { params = v.params ? JSON.parse(v.params) : {}; } catch { throw new UsageError('--params must be JSON'); }
          return async () => print(await client!.call(pos[0] as MethodName, params as never));
        }
        default: return command satisfies never;
      }
    };
    const run = plan();
    try {
      client = await connect(v);
    } catch (e) {
      process.stderr.write(`blockcopy-agent: cannot reach the agent: ${(e as Error).message}\n`);
      return EXIT.connection;
    }
    return await run();
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`blockcopy-agent: ${e.message}\n\n${CLIENT_HELP}\n`);
      return EXIT.usage;
    }
    if (e instanceof RpcError) {
      process.stderr.write(JSON.stringify({ error: e.errorName ?? e.code, message: e.message, ...(e.data ? { data: e.data } : {}) }) + '\n');
      return e.errorName === 'timeout' ? EXIT.timeout : EXIT.agentError;
    }
    process.stderr.write(`blockcopy-agent: ${(e as Error).message}\n`);
    return EXIT.connection;
  } finally {
    await closeClient(client);
  }
}
