// GET /metrics from an agent's metrics listener over TLS, as a central Prometheus would, with a
// client certificate, a bearer token, both or neither.
import { readFileSync } from 'node:fs';
import { request } from 'node:https';

export interface Scraper {
  /** The CA the listener's certificate is checked against. */
  ca: string;
  cert?: { cert: string; key: string };
  token?: string;
  /** Default 127.0.0.1. */
  host?: string;
  path?: string;
}

/** The HTTP status and body, or the TLS or socket error's code when the request is refused. */
export function scrapeTls(port: number, who: Scraper): Promise<{ status: number | string; body: string }> {
  return new Promise((resolve) => {
    const req = request(
      {
        host: who.host ?? '127.0.0.1',
        port,
        path: who.path ?? '/metrics',
        ca: readFileSync(who.ca),
        ...(who.cert ? { cert: readFileSync(who.cert.cert), key: readFileSync(who.cert.key) } : {}),
        headers: who.token ? { authorization: `Bearer ${who.token}` } : {},
        agent: false,
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: e.code ?? e.message, body: '' }));
    req.end();
  });
}
