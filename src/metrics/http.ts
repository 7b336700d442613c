// The /metrics listener: its own HTTP server, loopback only, GET /metrics only. It is apart from
// the WebSocket so that a scraper needs no API token (a token that may read jobs is more than
// metrics need) and the metrics can never open a way to the API; the loopback rule keeps the
// domain names in the labels on this host (a remote Prometheus scrapes through a TLS proxy).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';
import type { AgentMetrics } from './metrics.js';

export interface MetricsServerOptions {
  host: string;
  port: number;
}

export interface MetricsServer {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/** Few scrapers exist; Node closes connections beyond this at once. */
const MAX_CONNECTIONS = 16;
const TIMEOUT_MS = 10_000;

export const isLoopbackHost = (host: string) => /^127\./.test(host) || host === '::1' || host === 'localhost';

export async function startMetricsServer(metrics: AgentMetrics, opts: MetricsServerOptions, log: Logger): Promise<MetricsServer> {
  if (!isLoopbackHost(opts.host)) {
    throw new Error(
      `refusing to serve metrics on ${opts.host}: metrics.host must be a loopback address (scrape remotely through a TLS reverse proxy)`,
    );
  }
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the only path is /metrics\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
    metrics.render().then(
      (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (e: unknown) => {
        log.error('metrics rendering failed', { error: e });
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n');
      },
    );
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.headersTimeout = TIMEOUT_MS;
  server.requestTimeout = TIMEOUT_MS;
  server.on('clientError', (_e, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  // Decided on the address really bound, not on the name given.
  if (!isLoopbackHost(addr.address)) {
    await new Promise((r) => server.close(r));
    throw new Error(`refusing to serve metrics on ${addr.address} (${opts.host}): not a loopback address`);
  }
  log.info('metrics listening', { host: addr.address, port: addr.port });
  return {
    address: { host: addr.address, port: addr.port },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
