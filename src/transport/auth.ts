// Who is on the other end of a WebSocket: a client certificate (mTLS), a bearer token, the
// local stdio relay, or nobody. Every refusal looks the same to the peer.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { TokensFile } from '../generated/api.js';
import { isLoopbackAddress } from '../net/addresses.js';
import type { Principal } from '../rpc/session.js';
import type { SchemaSet } from '../schemas.js';

export class AuthConfigError extends Error {}

export interface TokenEntry {
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
    throw new AuthConfigError(
      `the tokens file ${path} must be owned by uid ${process.getuid!()} and not accessible to group or others (mode 0600), it is ${(st.mode & 0o777).toString(8)} uid ${st.uid}`,
    );
  }
  let doc: unknown;
  const text = readFileSync(path, 'utf8');
  try {
    doc = JSON.parse(text);
  } catch (e) {
    // V8's message may quote the text around the fault (a token): say only where it is.
    const pos = Number(/position (\d+)/.exec((e as Error).message)?.[1] ?? NaN);
    const where = Number.isFinite(pos)
      ? ` (line ${text.slice(0, pos).split('\n').length}, column ${pos - text.lastIndexOf('\n', pos - 1)})`
      : '';
    throw new AuthConfigError(`the tokens file ${path} is not valid JSON${where}`);
  }
  const validate = schemas.validator('tokens.schema.json');
  if (!validate(doc)) {
    // Never echo the file's content: it holds secrets.
    throw new AuthConfigError(
      `the tokens file ${path} is invalid: ${(validate.errors ?? []).map((e) => `${e.instancePath || '(top level)'} ${e.message}`).join('; ')}`,
    );
  }
  const names = new Set<string>();
  return (doc as TokensFile).tokens.map((t) => {
    if (names.has(t.name))
      throw new AuthConfigError(
        `the tokens file ${path} names one principal twice (entries ${[...names].indexOf(t.name) + 1} and ${names.size + 1})`,
      );
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

/**
 * Decides who a WebSocket peer is. The tokens can be replaced (SIGHUP); `stillValid` then tells
 * whether a connected principal's token is still in the file unchanged.
 */
export class Authenticator {
  private entries: TokenEntry[] = [];
  private readonly readOnly: Set<string>;
  private readonly relay: TokenEntry;
  /** Which token entry authenticated a principal (absent: certificate or loopback). */
  private readonly via = new WeakMap<Principal, TokenEntry>();

  constructor(private readonly opts: AuthOptions) {
    this.readOnly = new Set(opts.readOnlyPrincipals);
    this.relay = { name: 'local-stdio', digest: digest(opts.relayToken), readOnly: false };
    this.setTokens(opts.tokens);
  }

  setTokens(tokens: TokenEntry[]): void {
    this.entries = [...tokens, this.relay];
  }

  stillValid(p: Principal): boolean {
    const used = this.via.get(p);
    return (
      !used ||
      this.entries.includes(used) ||
      this.entries.some((e) => e.name === used.name && e.readOnly === used.readOnly && e.digest.equals(used.digest))
    );
  }

  readonly authenticate = (req: IncomingMessage): Principal | null => {
    // Tokens in URLs end up in logs and histories: a query string with one is refused outright.
    if (/[?&](access_token|token|auth)=/i.test(req.url ?? '')) return null;
    const sock = req.socket as TLSSocket;
    if (sock.encrypted && sock.authorized) {
      const cert = sock.getPeerCertificate();
      const subject = cert?.subject
        ? Object.entries(cert.subject)
            .map(([k, v]) => `${k}=${v}`)
            .join(',')
        : '';
      if (subject) return { name: subject, readOnly: this.readOnly.has(subject) };
    }
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (m) {
      const d = digest(m[1]!);
      // Compare with every entry, always: neither timing nor order tells which one matched.
      let found: TokenEntry | null = null;
      for (const e of this.entries) if (timingSafeEqual(e.digest, d) && !found) found = e;
      if (!found) return null;
      const p = { name: found.name, readOnly: found.readOnly || this.readOnly.has(found.name) };
      this.via.set(p, found);
      return p;
    }
    if (this.opts.allowUnauthenticatedLoopback && !sock.encrypted && isLoopbackAddress(req.socket.remoteAddress)) {
      return { name: 'loopback', readOnly: this.readOnly.has('loopback') };
    }
    return null;
  };
}
