// How a client verb reaches the agent: --url (WebSocket), the local agent's unix socket, or a
// spawned `blockcopy-agent stdio`; and closing so that a spawned agent never outlives the command.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { AgentClient } from '../client/index.js';
import { UsageError, type Values } from './args.js';
import { localSocket } from './local-socket.js';

/**
 * The bearer token for --url: from --token-file, else BLOCKCOPY_TOKEN, else --token (kept for
 * old scripts, with a warning: a command line is readable by every user in /proc/PID/cmdline).
 */
export function bearerToken(v: Values, warn: (msg: string) => void = (m) => process.stderr.write(m)): string | undefined {
  if (v['token-file'] !== undefined && v.token !== undefined) throw new UsageError('--token and --token-file exclude each other');
  if (v['token-file'] !== undefined) {
    let text: string;
    try {
      text = readFileSync(v['token-file'], 'utf8');
    } catch (e) {
      throw new UsageError(`--token-file: cannot read ${v['token-file']}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const token = text.trim();
    if (token === '' || /\s/.test(token)) throw new UsageError(`--token-file: ${v['token-file']} must hold one token on one line`);
    return token;
  }
  if (v.token !== undefined) {
    warn(
      'blockcopy-agent: warning: --token shows the token to every user of this host (/proc/PID/cmdline); use --token-file PATH or BLOCKCOPY_TOKEN\n',
    );
    return v.token;
  }
  return process.env.BLOCKCOPY_TOKEN || undefined;
}

/** A PEM file named by its option or, failing that, its environment variable; unreadable = a
 *  usage error naming where the path came from. */
function pemFile(option: string, given: string | undefined, env: string): Buffer | undefined {
  const path = given ?? (process.env[env] || undefined);
  if (path === undefined) return undefined;
  try {
    return readFileSync(path);
  } catch (e) {
    const from = given !== undefined ? `--${option}` : env;
    throw new UsageError(`${from}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/**
 * TLS material for --url: the CA (--ca or BLOCKCOPY_CA) and a client certificate with its key
 * (--cert and --key, or BLOCKCOPY_CERT and BLOCKCOPY_KEY) for an agent that takes or requires
 * client certificates (mTLS). Options given on the command line are checked here: a certificate
 * without its key (or the reverse), without --url or over plain ws:// is a usage error. The
 * variables only apply to a wss:// --url (a shell may export them for every command).
 */
export function tlsFiles(v: Values): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
  if ((v.cert === undefined) !== (v.key === undefined)) throw new UsageError('--cert and --key go together');
  if (v.cert !== undefined && !v.url)
    throw new UsageError('--cert and --key need --url wss://… (the local socket and stdio need no certificate)');
  if (v.cert !== undefined && !/^wss:/i.test(v.url ?? ''))
    throw new UsageError('--cert and --key are presented only over TLS: --url wss://…');
  if (!v.url || !/^wss:/i.test(v.url)) return v.ca && v.url ? { ca: pemFile('ca', v.ca, 'BLOCKCOPY_CA')! } : {};
  const ca = pemFile('ca', v.ca, 'BLOCKCOPY_CA');
  const cert = pemFile('cert', v.cert, 'BLOCKCOPY_CERT');
  const key = pemFile('key', v.key, 'BLOCKCOPY_KEY');
  if ((cert === undefined) !== (key === undefined)) throw new UsageError('BLOCKCOPY_CERT and BLOCKCOPY_KEY go together');
  return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
}

/**
 * The command that runs the local agent, spawned with `stdio …` when no socket answers: the
 * agent's own CLI runs its main.js with this Node.js; the client package (which has no agent)
 * runs `blockcopy-agent` from PATH.
 */
export type LocalAgent = readonly [command: string, ...args: string[]];

export async function connect(v: Values, token: string | undefined, agent: LocalAgent): Promise<AgentClient> {
  const tls = tlsFiles(v);
  if (v.url) return AgentClient.connect(v.url, { headers: token ? { authorization: `Bearer ${token}` } : {}, ...tls });
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
  const [command, ...args] = agent;
  return AgentClient.spawn(
    command,
    [...args, 'stdio', ...(v['state-dir'] ? ['--state-dir', v['state-dir']] : []), '--log-level', 'error'],
    { stderr: 'inherit' },
  );
}

/** Closes the client; a spawned local agent is given a few seconds to finish and exit, so that
 *  it never outlives the command (still writing its journal, or starting up, after we are gone). */
export async function closeClient(client: AgentClient | null | undefined): Promise<void> {
  if (!client) return;
  client.close();
  const child = 'process' in client ? (client as unknown as { process: ChildProcess }).process : undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      resolve();
    }, 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
