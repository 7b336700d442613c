// WebSocket transport on `ws`: frames in, frames out, one Session and one Flow per connection.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { SecureContextOptions, TlsOptions } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { Flow, type FlowLimits } from './flow.js';
import { OriginCheck, type OriginPolicy } from './origin.js';
import { isLoopbackAddress } from '../net/addresses.js';
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
  /** Serve wss:// with this TLS material (replaceable later with setTls). */
  tls?: TlsOptions;
  maxConnections?: number;
  /** Per-connection call rate (token bucket; a batch of n calls takes n). */
  rate?: { perSecond: number; burst: number };
  /** Output and pending-call bounds of each connection (see flow.ts). */
  flow: FlowLimits;
  /** Host and Origin rules (origin.ts); the bound address and scheme are the listener's own. */
  origins: Omit<OriginPolicy, 'bound' | 'tls'>;
  /** Without TLS: refuse to serve (close, throw) unless the socket actually bound is loopback. */
  loopbackOnly?: boolean;
  /** A request (headers included) not complete after this long is dropped. */
  requestTimeoutMs: number;
  /** Told of every refused connection or request (metrics). */
  onRefusal?: (kind: RefusalKind) => void;
}

export interface WebSocketTransport {
  readonly address: { host: string; port: number };
  /** Replaces the TLS material for new connections (SIGHUP). */
  setTls(tls: SecureContextOptions): void;
  /** Replaces the Host and Origin rules (SIGHUP). */
  setOrigins(origins: Omit<OriginPolicy, 'bound' | 'tls'>): void;
  /** Closes (1008) every connection whose principal `valid` now refuses; returns how many. */
  revalidate(valid: (p: Principal) => boolean): number;
  close(): Promise<void>;
}

export class InsecureListener extends Error {
  constructor(readonly address: string) {
    super(`refusing to serve on ${address} without TLS: configure tls (cert, key) or bind to a loopback address`);
  }
}

/** Close codes: 1008 policy violation (credentials revoked, output not read). */
const POLICY = 1008;
const LOCAL: Principal = { name: 'local', readOnly: false };

export async function startWebSocket(rpc: RpcServer, opts: WebSocketOptions, log: Logger): Promise<WebSocketTransport> {
  const answer426 = (_req: IncomingMessage, res: import('node:http').ServerResponse) => {
    res.writeHead(426, { 'content-type': 'text/plain' }).end('blockcopy-agent speaks JSON-RPC over WebSocket\n');
  };
  // Half-sent requests (slowloris) are dropped: Node checks these timeouts every second here.
  const httpOpts = {
    headersTimeout: opts.requestTimeoutMs,
    requestTimeout: opts.requestTimeoutMs,
    connectionsCheckingInterval: Math.min(1000, opts.requestTimeoutMs),
  };
  const http: Server | HttpsServer = opts.tls
    ? createHttpsServer({ ...opts.tls, ...httpOpts }, answer426)
    : createServer(httpOpts, answer426);
  // A connection that sends nothing, or a TLS handshake that never completes, is dropped too.
  http.setTimeout(opts.requestTimeoutMs, (s: Socket) => s.destroy());
  const wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxPayload, perMessageDeflate: false });
  const alive = new WeakMap<WebSocket, boolean>();
  const conns = new Map<WebSocket, { session: Session; flow: Flow }>();
  const principals = new WeakMap<IncomingMessage, Principal>();
  let origins: OriginCheck | null = null; // set once the address is known, before any connection

  // Refusals happen at the HTTP upgrade, before a WebSocket (let alone a method) exists, and a
  // wrong credential gets exactly the answer a missing one gets.
  const refuse = (socket: Socket, status: string) => {
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    socket.destroy();
  };
  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => {});
    // The upgraded socket is ours now: the HTTP server's idle timeout must not cut it.
    socket.setTimeout(0);
    const verdict = origins?.check(req) ?? { ok: false, why: 'host', detail: '' };
    if (!verdict.ok) {
      // A page elsewhere (cross-site WebSocket hijacking), or reached by a name that is not ours (DNS rebinding).
      log.warn(`connection refused: foreign ${verdict.why === 'host' ? 'Host' : 'Origin'}`, {
        peer: req.socket.remoteAddress,
        [verdict.why]: verdict.detail,
      });
      return refuse(socket, '403 Forbidden');
    }
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

  const closeWs = (ws: WebSocket, reason: string) => {
    conns.get(ws)?.flow.dispose(); // no further frame of this peer is handled
    ws.close(POLICY, reason.slice(0, 120));
    // A peer that does not read will not read the close frame either: free its buffers soon.
    setTimeout(() => ws.terminate(), 2000).unref();
  };

  wss.on('connection', (ws, req) => {
    // Without an error listener one malformed frame raises an unhandled 'error' and kills the process.
    ws.on('error', (err: Error & { code?: string }) => {
      log.debug('websocket error', { error: err.message });
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') opts.onRefusal?.('oversizedFrame');
    });
    const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const principal = principals.get(req)!;
    const bucket = opts.rate ? new TokenBucket(opts.rate.perSecond, opts.rate.burst) : null;
    const flow: Flow = new Flow(
      {
        write: (frame, done) => {
          if (ws.readyState !== ws.OPEN) return;
          if (typeof frame === 'string') return ws.send(frame, done);
          // One text message in fragments: a shared cached piece is sent without a copy.
          frame.forEach((part, i) =>
            ws.send(part, { binary: false, fin: i === frame.length - 1 }, i === frame.length - 1 ? done : undefined),
          );
        },
        buffered: () => ws.bufferedAmount,
        pause: () => ws.pause(),
        resume: () => ws.resume(),
        close: (reason) => {
          log.warn('connection closed: the peer does not read its answers', { session: session.id, peer, reason });
          closeWs(ws, `output not read: ${reason}`);
        },
      },
      opts.flow,
      (frame) => rpc.handle(frame, session),
      () => session.pending.full,
    );
    const session = new Session(principal, peer, (frame) => flow.send(frame), bucket, opts.flow);
    rpc.attach(session);
    conns.set(ws, { session, flow });
    alive.set(ws, true);
    log.debug('session opened', { session: session.id, peer, principal: principal.name });
    ws.on('pong', () => alive.set(ws, true));
    ws.on('message', (data) => {
      // Binary frames are read as UTF-8 too: JSON parsing then decides (-32700 for junk).
      flow.receive(Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8'));
    });
    ws.on('close', () => {
      flow.dispose();
      conns.delete(ws);
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
  // Judged on the socket actually bound, not on what a name resolved to a moment before.
  if (opts.loopbackOnly && !opts.tls && !isLoopbackAddress(addr.address)) {
    clearInterval(heartbeat);
    await new Promise<void>((r) => http.close(() => r()));
    throw new InsecureListener(addr.address);
  }
  origins = new OriginCheck({ ...opts.origins, bound: addr.address, tls: !!opts.tls });

  return {
    address: { host: addr.address, port: addr.port },
    setOrigins(o) {
      origins!.set({ ...o, bound: addr.address, tls: !!opts.tls });
    },
    setTls(tls) {
      if (!opts.tls) throw new Error('this listener has no TLS to replace');
      (http as HttpsServer).setSecureContext(tls);
    },
    revalidate(valid) {
      let n = 0;
      for (const [ws, { session }] of conns) {
        if (valid(session.principal)) continue;
        n++;
        log.warn('connection closed: its credentials were revoked', { session: session.id, principal: session.principal.name });
        closeWs(ws, 'credentials revoked');
      }
      return n;
    },
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
