// Who is on the other end of a WebSocket: a client certificate (mTLS), a bearer token, the
// local stdio relay (loopback peers only), or nobody. Every refusal looks the same to the peer.
// Each principal keeps the credential it proved itself with, judged again on every reload.
import { createHash, timingSafeEqual, type X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { TokensFile } from '../generated/api.js';
import { isLoopbackAddress } from '../net/addresses.js';
import { dnCovers, formatDn, parseDn, type Dn } from '../net/dn.js';
import type { Principal } from '../rpc/session.js';
import type { SchemaSet } from '../schemas.js';
import { chainTrusted, peerCertificate, type PeerCertificate } from './peer-cert.js';

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

/** `auth.readOnlyPrincipals`, read: plain names (tokens, `loopback`) and certificate subjects. */
export interface ReadOnlyRules {
  names: Set<string>;
  subjects: Dn[];
}

const NAME = /^[A-Za-z0-9._@:-]{1,128}$/;

/**
 * Reads `auth.readOnlyPrincipals`: an entry with '=' is a distinguished name (parsed, see
 * src/net/dn.ts), any other a principal name. An entry that is neither is an error, so a
 * misspelt subject cannot silently match nothing.
 */
export function readOnlyRules(entries: string[]): ReadOnlyRules {
  const rules: ReadOnlyRules = { names: new Set(), subjects: [] };
  entries.forEach((e, i) => {
    if (!e.includes('=')) {
      if (!NAME.test(e))
        throw new AuthConfigError(
          `auth.readOnlyPrincipals[${i}] is neither a principal name nor a distinguished name: '${e.slice(0, 200)}'`,
        );
      rules.names.add(e);
      return;
    }
    try {
      rules.subjects.push(parseDn(e));
    } catch (x) {
      throw new AuthConfigError(
        `auth.readOnlyPrincipals[${i}] is not a valid distinguished name (${(x as Error).message}): '${e.slice(0, 200)}'`,
      );
    }
  });
  return rules;
}

/** What may change on a reload (SIGHUP). */
export interface AuthPolicy {
  tokens: TokenEntry[];
  readOnlyPrincipals: string[];
  allowUnauthenticatedLoopback: boolean;
  /** The CA certificates client certificates must lead to (mTLS); [] without mTLS. */
  clientCas: X509Certificate[];
}

export interface AuthOptions extends AuthPolicy {
  /** The per-start secret of the local stdio relay (kept in the root-only state directory). */
  relayToken: string;
}

/** How a principal proved who it is: kept with it, judged again on every reload. */
type Credential =
  { kind: 'token'; entry: TokenEntry } | { kind: 'certificate'; cert: PeerCertificate } | { kind: 'loopback' } | { kind: 'relay' };

/**
 * Decides who a WebSocket peer is. The policy can be replaced (SIGHUP); `stillValid` then tells
 * whether a connected principal's credential still passes and still makes the same principal.
 */
export class Authenticator {
  private entries: TokenEntry[] = [];
  private policy!: AuthPolicy;
  private readOnly!: ReadOnlyRules;
  private readonly relay: TokenEntry;
  private readonly credentials = new WeakMap<Principal, Credential>();

  constructor(opts: AuthOptions) {
    this.relay = { name: 'local-stdio', digest: digest(opts.relayToken), readOnly: false };
    this.setPolicy(opts);
  }

  /** Replaces tokens, read-only rules and client CAs at once; throws (and keeps the old) on a bad rule. */
  setPolicy(policy: AuthPolicy): void {
    const readOnly = readOnlyRules(policy.readOnlyPrincipals);
    this.policy = policy;
    this.readOnly = readOnly;
    this.entries = [...policy.tokens, this.relay];
  }

  /** The principal a credential makes under the policy in force, or null if it no longer passes. */
  private decide(c: Credential): Principal | null {
    switch (c.kind) {
      case 'relay':
        return { name: this.relay.name, readOnly: false };
      case 'loopback':
        return this.policy.allowUnauthenticatedLoopback ? { name: 'loopback', readOnly: this.readOnly.names.has('loopback') } : null;
      case 'token': {
        const used = c.entry;
        const e = this.entries.find(
          (x) => x === used || (x.name === used.name && x.readOnly === used.readOnly && x.digest.equals(used.digest)),
        );
        return e ? { name: e.name, readOnly: e.readOnly || this.readOnly.names.has(e.name) } : null;
      }
      case 'certificate': {
        if (!chainTrusted(c.cert, this.policy.clientCas)) return null;
        const subject = c.cert.subject;
        // A restriction list: a rule matching more certificates only takes access away.
        return { name: formatDn(subject), readOnly: this.readOnly.subjects.some((rule) => dnCovers(rule, subject)) };
      }
    }
  }

  private admit(c: Credential): Principal | null {
    const p = this.decide(c);
    if (p) this.credentials.set(p, c);
    return p;
  }

  /** Whether a connected principal would still be let in as the same principal (name and access). */
  stillValid(p: Principal): boolean {
    const c = this.credentials.get(p);
    if (!c) return true;
    const now = this.decide(c);
    return !!now && now.name === p.name && now.readOnly === p.readOnly;
  }

  readonly authenticate = (req: IncomingMessage): Principal | null => {
    // Tokens in URLs end up in logs and histories: a query string with one is refused outright.
    if (/[?&](access_token|token|auth)=/i.test(req.url ?? '')) return null;
    const sock = req.socket as TLSSocket;
    if (sock.encrypted && sock.authorized) {
      const cert = peerCertificate(sock);
      if (cert) return this.admit({ kind: 'certificate', cert });
    }
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (m) {
      const d = digest(m[1]!);
      // Compare with every entry, always: neither timing nor order tells which one matched.
      let found: TokenEntry | null = null;
      for (const e of this.entries) if (timingSafeEqual(e.digest, d) && !found) found = e;
      if (!found) return null;
      if (found === this.relay) {
        // The relay runs on this host: its secret is worth nothing from anywhere else.
        return isLoopbackAddress(req.socket.remoteAddress) ? this.admit({ kind: 'relay' }) : null;
      }
      return this.admit({ kind: 'token', entry: found });
    }
    if (!sock.encrypted && isLoopbackAddress(req.socket.remoteAddress)) return this.admit({ kind: 'loopback' });
    return null;
  };
}
