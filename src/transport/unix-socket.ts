// The local unix socket: newline-delimited JSON-RPC for root on this host (the CLI's fast path,
// no second process, no token). Who may connect is decided by the file system, as libvirt does
// for its root socket: the directory is 0700 and the socket 0600, both owned by the agent's
// user. Node has no SO_PEERCRED API, and reading it through the native addon would only repeat
// what the kernel already enforces on connect(): a caller that can open the socket is root.
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import type { RefusalKind } from '../metrics/observer.js';
import type { RpcServer } from '../rpc/server.js';
import { Session } from '../rpc/session.js';
import { readLines } from './lines.js';

export interface UnixSocketOptions {
  path: string;
  /** Longest accepted line in bytes. */
  maxLine: number;
  onRefusal?: (kind: RefusalKind) => void;
}

export interface UnixSocketTransport {
  readonly path: string;
  close(): Promise<void>;
}

export class SocketSetupError extends Error {}

/** Root's tools rarely hold more at once; each further connection is closed at once. */
const MAX_CONNECTIONS = 64;
/** Answers and notifications queued for a client that does not read; beyond it, it is dropped. */
const MAX_UNREAD_BYTES = 16 * 1024 * 1024;

const uid = () => process.getuid!();

/** The socket's directory exists, is ours and closed to everyone else (made so if we own it). */
function prepareDirectory(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new SocketSetupError(`${dir} is not a directory`);
  if (st.uid !== uid()) throw new SocketSetupError(`the socket directory ${dir} is owned by uid ${st.uid}, not by the agent (uid ${uid()})`);
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/** A socket left by an agent that died is removed; one that answers belongs to a live agent. */
async function clearStale(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new SocketSetupError(`${path} exists and is not a socket; not replacing it`);
  const live = await new Promise<boolean>((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  if (live) throw new SocketSetupError(`another agent serves ${path} (set socket.path, or stop it)`);
  unlinkSync(path);
}

export async function serveUnixSocket(rpc: RpcServer, opts: UnixSocketOptions, log: Logger): Promise<UnixSocketTransport> {
  prepareDirectory(dirname(opts.path));
  await clearStale(opts.path);
  const clients = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    sock.on('error', (e) => log.debug('unix socket client error', { error: e.message }));
    if (clients.size >= MAX_CONNECTIONS) {
      log.warn('unix socket connection refused: limit reached', { limit: MAX_CONNECTIONS });
      opts.onRefusal?.('connectionLimit');
      return void sock.destroy();
    }
    clients.add(sock);
    const write = (frame: string) => {
      if (sock.destroyed) return;
      if (sock.writableLength > MAX_UNREAD_BYTES) {
        log.warn('unix socket client dropped: it does not read its answers', { unreadBytes: sock.writableLength });
        return void sock.destroy();
      }
      sock.write(frame + '\n');
    };
    const session = new Session({ name: 'local-socket', readOnly: false }, 'unix', write);
    rpc.attach(session);
    const done = () => {
      clients.delete(sock);
      rpc.detach(session);
    };
    sock.once('close', done);
    const pending = new Set<Promise<void>>();
    readLines(sock, opts.maxLine, {
      line: (text) => {
        const p = rpc.handle(text, session).then(
          (reply) => { if (reply !== null) write(reply); },
          (err) => log.error('unexpected failure handling a line', { error: err }),
        ).finally(() => pending.delete(p));
        pending.add(p);
      },
      tooLong: () => {
        opts.onRefusal?.('oversizedFrame');
        write(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error: line too long' } }));
      },
      // Half-close: the client sent all it will; answers still in flight are written, then the end.
      end: () => void Promise.all([...pending]).then(() => sock.end()),
    });
  });
  server.on('error', (e) => log.error('unix socket server error', { error: e.message }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.path, () => { server.off('error', reject); resolve(); });
  });
  // The directory (0700) already keeps others out; the mode is the second lock.
  chmodSync(opts.path, 0o600);
  log.info('unix socket listening', { path: opts.path });
  return {
    path: opts.path,
    async close() {
      for (const c of clients) c.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      try {
        unlinkSync(opts.path);
      } catch { /* already gone */ }
    },
  };
}
