// Who may scrape /metrics, and over what: plain HTTP on loopback (the default), or HTTPS with
// client certificates and/or bearer tokens, as Prometheus exporters do it (exporter-toolkit's
// tls_server_config, Prometheus's `authorization` and `tls_config`). The TLS files and the
// tokens file are read by the listener's own code (tls-material.ts, auth.ts) and read again on
// SIGHUP; a scrape is judged by the same Authenticator as a WebSocket upgrade.
import { randomBytes } from 'node:crypto';
import type { AgentConfig } from '../generated/api.js';
import { isLoopbackAddress } from '../net/addresses.js';
import type { SchemaSet } from '../schemas.js';
import { Authenticator, loadTokens, type AuthPolicy } from '../transport/auth.js';
import { readTls, type TlsMaterial } from '../transport/tls-material.js';

export type MetricsConfig = NonNullable<AgentConfig['metrics']>;

/** A host the config may serve plain metrics on before resolving it: a loopback literal or localhost. */
export const isLoopbackHost = (host: string) => isLoopbackAddress(host) || host === 'localhost';

/** Whether scrapes must prove who they are (a client CA or a tokens file is configured). */
export const authenticates = (m: MetricsConfig) => !!m.tls?.ca || !!m.tokensFile;

/** Whether the config makes the listener fit for a non-loopback address: TLS and client authentication. */
export const securedForNetwork = (m: MetricsConfig) => !!m.tls && authenticates(m);

/** What the schema cannot say about `metrics` ([] when fine); checked when the config is loaded. */
export function metricsConfigProblems(m: MetricsConfig | undefined): string[] {
  if (!m?.enabled) return [];
  const out: string[] = [];
  if (m.tls?.requireClientCert && !m.tls.ca)
    out.push('/metrics/tls requireClientCert needs metrics.tls.ca (the CA client certificates must lead to)');
  const host = m.host ?? '127.0.0.1';
  if (!isLoopbackHost(host) && !securedForNetwork(m)) {
    const missing = [
      ...(m.tls ? [] : ['metrics.tls (cert, key)']),
      ...(authenticates(m) ? [] : ['metrics.tls.ca and/or metrics.tokensFile']),
    ];
    out.push(
      `/metrics/host ${host} is not a loopback address: metrics are served there only over TLS with client authentication; missing: ${missing.join(', ')} (see docs/metrics.md)`,
    );
  }
  return out;
}

/** Reads the TLS material and tokens `m` names (throws on a bad file, changing nothing). */
export function readMetricsAccess(m: MetricsConfig, schemas: SchemaSet): { tls: TlsMaterial | null; policy: AuthPolicy | null } {
  const tls = m.tls ? readTls(m.tls) : null;
  if (!authenticates(m)) return { tls, policy: null };
  return {
    tls,
    policy: {
      tokens: m.tokensFile ? loadTokens(m.tokensFile, schemas) : [],
      readOnlyPrincipals: [],
      allowUnauthenticatedLoopback: false,
      clientCas: tls?.clientCas ?? [],
    },
  };
}

/**
 * The Authenticator of the WebSocket, given the metrics' own tokens and CA. Its stdio-relay
 * secret is a random one nobody is ever told, so the only ways in are a token or a certificate.
 */
export function metricsAuthenticator(policy: AuthPolicy): Authenticator {
  return new Authenticator({ ...policy, relayToken: randomBytes(32).toString('hex') });
}
