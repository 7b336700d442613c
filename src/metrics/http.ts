// The /metrics listener: its own HTTP server, GET /metrics only. It is apart from the WebSocket
// so that a scraper needs no API token (a token that may read jobs is more than metrics need)
// and the metrics can never open a way to the API. Plain HTTP on loopback; anywhere else only
// HTTPS with client certificates and/or bearer tokens (access.ts), so that a central Prometheus
// scrapes each host directly and the domain names in the labels travel only to it.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';
import { isLoopbackAddress, resolvesToLoopbackOnly } from '../net/addresses.js';
import type { SchemaSet } from '../schemas.js';
import type { Authenticator } from '../transport/auth.js';
import { metricsAuthenticator, metricsConfigProblems, readMetricsAccess, securedForNetwork, type MetricsConfig } from './access.js';
import type { AgentMetrics } from './metrics.js';

export interface MetricsServer {
  readonly address: { host: string; port: number; tls: boolean };
  /**
   * Reads the TLS material and tokens of `next` (SIGHUP) and returns the step that puts them in
   * force for new connections and every later scrape. Throws, changing nothing, on a bad file or
   * on a change that needs a restart (TLS on or off, credentials off on a non-loopback address).
   */
  prepareReload(next: MetricsConfig): () => void;
  close(): Promise<void>;
}

/** Few scrapers exist; Node closes connections beyond this at once. */
const MAX_CONNECTIONS = 16;
const TIMEOUT_MS = 10_000;

const refuse = (host: string, why: string) =>
  new Error(
    `refusing to serve metrics on ${host}: ${why}; configure metrics.tls and metrics.tls.ca or metrics.tokensFile, or bind to a loopback address`,
  );

export async function startMetricsServer(
  metrics: AgentMetrics,
  cfg: MetricsConfig,
  schemas: SchemaSet,
  log: Logger,
): Promise<MetricsServer> {
  const problems = metricsConfigProblems({ ...cfg, enabled: true });
  if (problems.length > 0) throw new Error(`invalid metrics configuration: ${problems.join('; ')}`);
  const host = cfg.host ?? '127.0.0.1';
  // The one resolution of the name: the address bound is the one judged here.
  const { loopback, addresses } = await resolvesToLoopbackOnly(host).catch((e: Error) => {
    throw new Error(`cannot resolve metrics.host ${host}: ${e.message}`);
  });
  if (!loopback && !securedForNetwork(cfg)) throw refuse(`${host} (${addresses.join(', ')})`, 'not a loopback address');
  let { tls, policy } = readMetricsAccess(cfg, schemas);
  let auth: Authenticator | null = policy ? metricsAuthenticator(policy) : null;

  const answer = (req: IncomingMessage, res: ServerResponse) => {
    // Credentials first: an unauthenticated peer learns nothing, not even which paths exist.
    if (auth && !auth.authenticate(req)) {
      return void res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="metrics"' }).end('unauthorized\n');
    }
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
  };
  const server: Server | HttpsServer = tls ? createHttpsServer({ ...tls.material }, answer) : createServer(answer);
  server.maxConnections = MAX_CONNECTIONS;
  server.headersTimeout = TIMEOUT_MS;
  server.requestTimeout = TIMEOUT_MS;
  server.on('clientError', (_e, socket) => socket.destroy());
  // A failed TLS handshake (no or a foreign client certificate) is the client's problem, not the agent's.
  server.on('tlsClientError', (_e, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port ?? 9879, addresses[0], () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  // Decided on the address really bound, not on the name given.
  if (!isLoopbackAddress(addr.address) && !securedForNetwork(cfg)) {
    await new Promise((r) => server.close(r));
    throw refuse(`${addr.address} (${host})`, 'not a loopback address');
  }
  log.info('metrics listening', { host: addr.address, port: addr.port, tls: !!tls, authenticated: !!auth });
  return {
    address: { host: addr.address, port: addr.port, tls: !!tls },
    prepareReload(next) {
      if (!!next.tls !== !!tls) throw new Error('a reload cannot turn TLS of the metrics listener on or off: restart the agent');
      if (!isLoopbackAddress(addr.address) && !securedForNetwork(next)) {
        throw refuse(addr.address, 'a reload cannot drop client authentication on a non-loopback address');
      }
      if (next.host !== cfg.host || next.port !== cfg.port) {
        log.warn('the metrics address changes only at the next start', { host: next.host, port: next.port });
      }
      const read = readMetricsAccess(next, schemas);
      return () => {
        if (read.tls) (server as HttpsServer).setSecureContext(read.tls.material);
        if (!read.policy) auth = null;
        else if (auth) auth.setPolicy(read.policy);
        else auth = metricsAuthenticator(read.policy);
        ({ tls, policy } = read);
        log.info('metrics credentials reloaded', { tls: !!tls, tokens: policy?.tokens.length ?? 0, authenticated: !!auth });
      };
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
