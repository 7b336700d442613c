// WebSocket transport on `ws`: frames in, frames out, one Session per connection.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { ERRORS } from '../errors.js';
import { TokenBucket } from './rate-limit.js';
import type { Logger } from '../log.js';
import type { RefusalKind } from '../metrics/observer.js';
import type { RpcServer } from '../rpc/server.js';
import { Session, type Principal } from '../rpc/session.js';

export interface WebSocketOptions {
  host: string;
  port: number;
  /** Largest accepted frame in bytes; larger frames close the connection (1009). */
  maxPayload: number;
  /** Ping interval; a peer that has not answered the previous ping is dropped. */
  heartbeatMs: number;
  /** Decides who the peer is, or null to refuse it before any method runs. */
  authenticate?: (req: IncomingMessage) => Principal | null;
  /** An HTTP(S) server to attach to instead of a plain HTTP one (TLS). */
  server?: Server;
  maxConnections?: number;
  /** Per-connection request rate (token bucket). */
  rate?: { perSecond: number; burst: number };
  /** Told of every refused connection or request (metrics). */
  onRefusal?: (kind: RefusalKind) => void;
}

export interface WebSocketTransport {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

const LOCAL: Principal = { name: 'local', readOnly: false };

/** The id of a request, when it has a plain one (for answers that skip the RPC layer). */
function idOf(text: string): string | number | null {
  try {
    const id = (JSON.parse(text) as { id?: unknown })?.id;
    return typeof id === 'string' || typeof id === 'number' ? id : null;
  } catch {
    return null;
  }
}

export async function startWebSocket(rpc: RpcServer, opts: WebSocketOptions, log: Logger): Promise<WebSocketTransport> {
  const http = opts.server ?? createServer((_req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain' }).end('blockcopy-agent speaks JSON-RPC over WebSocket\n');
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxPayload, perMessageDeflate: false });
  const alive = new WeakMap<WebSocket, boolean>();
  const principals = new WeakMap<IncomingMessage, Principal>();

  // Refusals happen at the HTTP upgrade, before a WebSocket (let alone a method) exists, and a
  // wrong credential gets exactly the answer a missing one gets.
  const refuse = (socket: Socket, status: string) => {
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    socket.destroy();
  };
  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => {});
    if (opts.maxConnections !== undefined && wss.clients.size >= opts.maxConnections) {
      log.warn('connection refused: limit reached', { peer: req.socket.remoteAddress, limit: opts.maxConnections });
      opts.onRefusal?.('connectionLimit');
      return refuse(socket, '503 Service Unavailable');
    }
    const principal = opts.authenticate ? opts.authenticate(req) : LOCAL;
    if (!principal) {
      log.warn('connection refused: not authenticated', { peer: req.socket.remoteAddress });
      opts.onRefusal?.('authFailed');
      return refuse(socket, '401 Unauthorized');
    }
    principals.set(req, principal);
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });

  wss.on('connection', (ws, req) => {
    // Without an error listener one malformed frame raises an unhandled 'error' and kills the process.
    ws.on('error', (err: Error & { code?: string }) => {
      log.debug('websocket error', { error: err.message });
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') opts.onRefusal?.('oversizedFrame');
    });
    const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const principal = principals.get(req)!;
    const bucket = opts.rate ? new TokenBucket(opts.rate.perSecond, opts.rate.burst) : null;
    const session = new Session(principal, peer, (frame) => {
      if (ws.readyState === ws.OPEN) ws.send(frame);
    });
    rpc.attach(session);
    alive.set(ws, true);
    log.debug('session opened', { session: session.id, peer, principal: principal.name });
    ws.on('pong', () => alive.set(ws, true));
    ws.on('message', (data) => {
      // Binary frames are read as UTF-8 too: JSON parsing then decides (-32700 for junk).
      const text = Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8');
      if (bucket && !bucket.take()) {
        opts.onRefusal?.('rateLimited');
        ws.send(JSON.stringify({ jsonrpc: '2.0', id: idOf(text), error: { code: ERRORS.rateLimited.code, message: 'rate limit exceeded', data: { name: 'rateLimited', retryable: true } } }));
        return;
      }
      void rpc.handle(text, session).then(
        (reply) => { if (reply !== null && ws.readyState === ws.OPEN) ws.send(reply); },
        (err) => log.error('unexpected failure handling a frame', { error: err }),
      );
    });
    ws.on('close', () => {
      rpc.detach(session);
      log.debug('session closed', { session: session.id });
    });
  });
  wss.on('error', (err) => log.error('websocket server error', { error: err.message }));

  const heartbeat = setInterval(() => {
    for (const ws of wss.clients) {
      if (alive.get(ws) === false) {
        ws.terminate();
        continue;
      }
      alive.set(ws, false);
      ws.ping();
    }
  }, opts.heartbeatMs);
  heartbeat.unref();

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(opts.port, opts.host, () => {
      http.off('error', reject);
      resolve();
    });
  });
  const addr = http.address() as AddressInfo;
  log.info('listening', { host: addr.address, port: addr.port });

  return {
    address: { host: addr.address, port: addr.port },
    async close() {
      clearInterval(heartbeat);
      for (const ws of wss.clients) ws.close(1001, 'agent shutting down');
      await new Promise<void>((r) => wss.close(() => r()));
      await new Promise<void>((r) => http.close(() => r()));
      // Connections that did not finish the close handshake in time.
      for (const ws of wss.clients) ws.terminate();
    },
  };
}
