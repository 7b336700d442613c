// Whose Host and Origin an upgrade may carry. The agent's own names: the address it is bound
// to, loopback names when that address is loopback, every local address when it is bound to
// a wildcard, the names its server certificate carries and `listen.allowedHostNames`. A Host
// that is none of them is refused (DNS rebinding: a page of evil.example whose name now
// resolves to 127.0.0.1 reaches the agent with `Host: evil.example:PORT`). An Origin is
// accepted if it is the agent's own (the Host it was reached by, with the listener's scheme)
// or listed in `listen.allowedOrigins`; any other Origin is a page elsewhere and refused.
import type { X509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { isLoopbackAddress } from '../net/addresses.js';

export interface OriginPolicy {
  /** The address the listener is bound to (server.address()). */
  bound: string;
  tls: boolean;
  /** Extra host names of the agent (`listen.allowedHostNames`). */
  hostNames: string[];
  /** Origins of browser pages allowed to connect (`listen.allowedOrigins`). */
  allowedOrigins: string[];
  /** The server certificate: its DNS and IP subject alternative names are the agent's names too. */
  serverCert?: X509Certificate | null;
}

/** A host name or address as compared: lower case, no brackets, no trailing dot, IPv4-mapped unwrapped. */
export function normalHost(h: string): string {
  const a = h
    .toLowerCase()
    .replace(/^\[|\]$/g, '')
    .replace(/\.$/, '');
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)?.[1] ?? a;
}

/** The names a server certificate answers to (subjectAltName DNS and IP entries). */
function certNames(cert: X509Certificate | null | undefined): string[] {
  if (!cert?.subjectAltName) return [];
  return cert.subjectAltName
    .split(', ')
    .map((e) => /^(?:DNS|IP Address):(.+)$/.exec(e)?.[1])
    .filter((n): n is string => !!n && !n.includes('*'));
}

const WILDCARD = new Set(['0.0.0.0', '::']);

export type UpgradeVerdict = { ok: true } | { ok: false; why: 'host' | 'origin'; detail: string };

/** Splits a Host header (`name`, `name:port`, `[v6]:port`); null if it is not one. */
function parseHost(value: string): { host: string; port: string } | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]\s/@]+)(?::(\d{1,5}))?$/.exec(value);
  return m ? { host: normalHost(m[1]!), port: m[2] ?? '' } : null;
}

export class OriginCheck {
  constructor(private policy: OriginPolicy) {}

  /** Replaces the policy (SIGHUP). */
  set(policy: OriginPolicy): void {
    this.policy = policy;
  }

  private own(host: string): boolean {
    const { bound, hostNames, serverCert } = this.policy;
    const b = normalHost(bound);
    if (host === b) return true;
    if (hostNames.some((n) => normalHost(n) === host) || certNames(serverCert).some((n) => normalHost(n) === host)) return true;
    const loopbackToo = WILDCARD.has(b) || isLoopbackAddress(b);
    if (loopbackToo && (host === 'localhost' || (isIP(host) && isLoopbackAddress(host)))) return true;
    if (WILDCARD.has(b) && isIP(host)) {
      // Bound everywhere: any address of this host (looked up now, interfaces come and go).
      return Object.values(networkInterfaces()).some((list) => list?.some((i) => normalHost(i.address.split('%')[0]!) === host));
    }
    return false;
  }

  check(req: IncomingMessage): UpgradeVerdict {
    const hostHeader = req.headers.host ?? '';
    const host = parseHost(hostHeader);
    if (!host || !this.own(host.host)) return { ok: false, why: 'host', detail: hostHeader.slice(0, 200) };
    const origin = req.headers.origin;
    if (origin === undefined || this.policy.allowedOrigins.includes(origin)) return { ok: true };
    // The agent's own origin: the Host it was reached by, with its scheme. websocket-client up to
    // 1.2 (Debian 12) sends http:// even for wss://; no page can be served from http:// on a
    // port that speaks only TLS, so that origin is the agent's own too.
    const schemes = this.policy.tls ? ['https', 'http'] : ['http'];
    const m = /^([a-z]+):\/\/([^/]+)$/i.exec(origin);
    const o = m ? parseHost(m[2]!) : null;
    if (m && o && schemes.includes(m[1]!.toLowerCase()) && o.host === host.host && o.port === host.port) return { ok: true };
    return { ok: false, why: 'origin', detail: origin.slice(0, 200) };
  }
}
