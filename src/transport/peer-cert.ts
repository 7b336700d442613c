// A client certificate, kept with its session so that it can be judged again after a reload
// (SIGHUP): its chain against the CA bundle then in force, its subject against the principals.
import { X509Certificate } from 'node:crypto';
import type { TLSSocket, DetailedPeerCertificate } from 'node:tls';
import { certificateSubject, type Dn } from '../net/dn.js';

export interface PeerCertificate {
  /** Leaf first, then the issuers the handshake used (presented or from the CA bundle). */
  chain: X509Certificate[];
  subject: Dn;
}

/** Every certificate of a PEM bundle (a CA file may hold several). */
export function pemCertificates(pem: Buffer | string): X509Certificate[] {
  const blocks = pem.toString().match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

/** The verified peer certificate of a TLS socket, or null (none, or an empty subject). */
export function peerCertificate(sock: TLSSocket): PeerCertificate | null {
  const leaf = sock.getPeerCertificate(true) as DetailedPeerCertificate | null;
  if (!leaf?.raw) return null;
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  for (let c: DetailedPeerCertificate | undefined = leaf; c?.raw && !seen.has(c.fingerprint256); c = c.issuerCertificate) {
    seen.add(c.fingerprint256);
    chain.push(new X509Certificate(c.raw));
  }
  const subject = certificateSubject(leaf.raw);
  return subject.length > 0 ? { chain, subject } : null;
}

const current = (c: X509Certificate, now: number) => Date.parse(c.validFrom) <= now && now <= Date.parse(c.validTo);
const signs = (issuer: X509Certificate, c: X509Certificate, now: number) =>
  issuer.ca && current(issuer, now) && c.checkIssued(issuer) && c.verify(issuer.publicKey);

/**
 * Whether the chain still leads to one of `anchors`: each link issued and signed by the next,
 * every certificate within its validity, issuers marked as CAs. Certificates of the old chain
 * serve only as intermediates; trust comes from `anchors` alone.
 */
export function chainTrusted(peer: PeerCertificate, anchors: X509Certificate[], now = Date.now()): boolean {
  let cur = peer.chain[0];
  if (!cur || !current(cur, now)) return false;
  for (let depth = 0; depth < 10; depth++) {
    const c: X509Certificate = cur;
    if (anchors.some((a) => signs(a, c, now))) return true;
    const next = peer.chain.find((i) => i !== c && !i.checkIssued(i) && signs(i, c, now));
    if (!next) return false;
    cur = next;
  }
  return false;
}
