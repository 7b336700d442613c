// How a client verb reaches the agent: --url (WebSocket), the local agent's unix socket, or a
// spawned `blockcopy-agent stdio`; and closing so that a spawned agent never outlives the command.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../client/index.js';
import type { Values } from './args.js';
import { localSocket } from './local-socket.js';

export async function connect(v: Values): Promise<AgentClient> {
  if (v.url) {
    const token = v.token ?? process.env.BLOCKCOPY_TOKEN;
    return AgentClient.connect(v.url, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      ...(v.ca ? { ca: readFileSync(v.ca) } : {}),
    });
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
  return AgentClient.spawn(
    process.execPath,
    [cli, 'stdio', ...(v['state-dir'] ? ['--state-dir', v['state-dir']] : []), '--log-level', 'error'],
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
