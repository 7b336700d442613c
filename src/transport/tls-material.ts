// The TLS material of a listener (the WebSocket's `tls`, the metrics' `metrics.tls`), read from
// its files: at start and again on every reload (SIGHUP), by the same code for both.
import type { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pemCertificates } from './peer-cert.js';

export interface TlsFiles {
  cert: string;
  key: string;
  /** CA that signs client certificates: set, the server asks for one (mTLS). */
  ca?: string;
  /** Refuse a client without a valid certificate at the handshake. */
  requireClientCert?: boolean;
}

export interface TlsMaterial {
  /** Options for https.createServer / setSecureContext. */
  material: { cert: Buffer; key: Buffer; ca?: Buffer; requestCert: boolean; rejectUnauthorized: boolean };
  /** The CA certificates client certificates must lead to ([] without mTLS). */
  clientCas: X509Certificate[];
  serverCert: X509Certificate | null;
}

export function readTls(tls: TlsFiles): TlsMaterial {
  const material = {
    cert: readFileSync(tls.cert),
    key: readFileSync(tls.key),
    ...(tls.ca ? { ca: readFileSync(tls.ca) } : {}),
    requestCert: !!tls.ca,
    rejectUnauthorized: !!tls.ca && !!tls.requireClientCert,
  };
  const clientCas = material.ca ? pemCertificates(material.ca) : [];
  if (material.ca && clientCas.length === 0) throw new Error(`the CA file ${tls.ca} holds no certificate`);
  return { material, clientCas, serverCert: pemCertificates(material.cert)[0] ?? null };
}
