// Who is on the other end of a WebSocket: a client certificate (mTLS), a bearer token, the
// local stdio relay, or nobody. Every refusal looks the same to the peer.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { TokensFile } from '../generated/api.js';
import type { Principal } from '../rpc/session.js';
import type { SchemaSet } from '../schemas.js';

export class AuthConfigError extends Error {}

interface TokenEntry {
  name: string;
  digest: Buffer;
  readOnly: boolean;
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Reads the tokens file, refusing one that others could read (the tokens are root's secrets). */
export function loadTokens(path: string, schemas: SchemaSet): TokenEntry[] {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new AuthConfigError(`cannot read the tokens file ${path}: ${(e as Error).message}`);
  }
  if (st.uid !== process.getuid!() || (st.mode & 0o077) !== 0) {
    throw new AuthConfigError(`the tokens file ${path} must be owned by uid ${process.getuid!()} and not accessible to group or others (mode 0600), it is ${(st.mode & 0o777).toString(8)} uid ${st.uid}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new AuthConfigError(`the tokens file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  const validate = schemas.validator('tokens.schema.json');
  if (!validate(doc)) {
    // Never echo the file's content: it holds secrets.
    throw new AuthConfigError(`the tokens file ${path} is invalid: ${(validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`).join('; ')}`);
  }
  const names = new Set<string>();
  return (doc as TokensFile).tokens.map((t) => {
    if (names.has(t.name)) throw new AuthConfigError(`the tokens file ${path} names '${t.name}' twice`);
    names.add(t.name);
    return { name: t.name, digest: digest(t.token), readOnly: !!t.readOnly };
  });
}

export interface AuthOptions {
  tokens: TokenEntry[];
  readOnlyPrincipals: string[];
  allowUnauthenticatedLoopback: boolean;
  /** The per-start secret of the local stdio relay (kept in the root-only state directory). */
  relayToken: string;
}

const isLoopback = (addr: string | undefined) => !!addr && (/^127\./.test(addr) || addr === '::1' || addr === '::ffff:127.0.0.1' || /^::ffff:127\./.test(addr));

export function makeAuthenticator(opts: AuthOptions): (req: IncomingMessage) => Principal | null {
  const readOnly = new Set(opts.readOnlyPrincipals);
  const relay = { name: 'local-stdio', digest: digest(opts.relayToken), readOnly: false };
  const entries = [...opts.tokens, relay];
  return (req) => {
    // Tokens in URLs end up in logs and histories: a query string with one is refused outright.
    if (/[?&](access_token|token|auth)=/i.test(req.url ?? '')) return null;
    const sock = req.socket as TLSSocket;
    if (sock.encrypted && sock.authorized) {
      const cert = sock.getPeerCertificate();
      const subject = cert?.subject ? Object.entries(cert.subject).map(([k, v]) => `${k}=${v}`).join(',') : '';
      if (subject) return { name: subject, readOnly: readOnly.has(subject) };
    }
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (m) {
      const d = digest(m[1]!);
      // Compare with every entry, always: neither timing nor order tells which one matched.
      let found: (typeof entries)[number] | null = null;
      for (const e of entries) if (timingSafeEqual(e.digest, d) && !found) found = e;
      if (found) return { name: found.name, readOnly: found.readOnly || readOnly.has(found.name) };
      return null;
    }
    if (opts.allowUnauthenticatedLoopback && !sock.encrypted && isLoopback(req.socket.remoteAddress)) {
      return { name: 'loopback', readOnly: readOnly.has('loopback') };
    }
    return null;
  };
}
