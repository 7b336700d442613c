// The local unix socket: newline-delimited JSON-RPC for root on this host (the CLI's fast path,
// no second process, no token). Who may connect is decided by the file system, as libvirt does
// for its root socket: the directory is 0700 and the socket 0600, both owned by the agent's
// user, and every directory above it trustworthy (own-files.ts); a directory that is not is
// refused, never changed. Node has no SO_PEERCRED API, and reading it through the native addon
// would only repeat what the kernel already enforces on connect(): a caller that can open the
// socket is root.
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import { checkOwnDirectory } from '../own-files.js';
import type { RefusalKind } from '../metrics/observer.js';
import type { RpcServer } from '../rpc/server.js';
import type { FlowLimits } from './flow.js';
import { serveStdio } from './stdio.js';

export interface UnixSocketOptions {
  path: string;
  /** Longest accepted line in bytes. */
  maxLine: number;
  /** Output and calls in flight per client, as for stdio and WebSocket. */
  flow: FlowLimits;
  onRefusal?: (kind: RefusalKind) => void;
}

export interface UnixSocketTransport {
  readonly path: string;
  close(): Promise<void>;
}

export class SocketSetupError extends Error {}

/** Root's tools rarely hold more at once; each further connection is closed at once. */
const MAX_CONNECTIONS = 64;

/** The socket's directory: created 0700 if missing; if present, the agent's and closed to everyone else. */
export const SOCKET_DIR = { create: true, private: true } as const;

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
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new SocketSetupError(`another agent serves ${path} (set socket.path, or stop it)`);
  unlinkSync(path);
}

export async function serveUnixSocket(rpc: RpcServer, opts: UnixSocketOptions, log: Logger): Promise<UnixSocketTransport> {
  await checkOwnDirectory(dirname(opts.path), 'socket directory', SOCKET_DIR);
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
    sock.once('close', () => clients.delete(sock));
    // The same framing, flow control and answers as stdio: a client is a stdio caller on a socket.
    void serveStdio(
      rpc,
      {
        input: sock,
        output: sock,
        maxLine: opts.maxLine,
        flow: opts.flow,
        principal: 'local-socket',
        peer: 'unix',
        ...(opts.onRefusal ? { onRefusal: opts.onRefusal } : {}),
      },
      log,
    )
      // Half-close: the client sent all it will; once every answer is written, the end.
      .then((how) => (how === 'eof' ? sock.end() : sock.destroy()));
  });
  server.on('error', (e) => log.error('unix socket server error', { error: e.message }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.path, () => {
      server.off('error', reject);
      resolve();
    });
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
      } catch {
        /* already gone */
      }
    },
  };
}
