// Throwaway certificates for TLS tests, made with Debian's openssl: a CA, a server certificate
// for 127.0.0.1, a client certificate, one from another CA, and an expired one.
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { scratchDir, type TeardownHost } from '../../harness/hypervisor.js';

const run = promisify(execFile);

export interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  client: { cert: string; key: string; subject: string };
  /** A client certificate with a three-RDN subject (C=US, O=ops, CN=viewer). */
  viewerClient: { cert: string; key: string; subject: string };
  rogueClient: { cert: string; key: string };
  expiredClient: { cert: string; key: string };
}

async function openssl(dir: string, ...args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

const newKey = (dir: string, name: string) =>
  openssl(dir, 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`);

async function selfSignedCa(dir: string, name: string, cn: string) {
  await newKey(dir, name);
  await openssl(dir, 'req', '-x509', '-new', '-key', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${cn}`);
}

async function signed(dir: string, name: string, cn: string, ca: string, ext: string) {
  await newKey(dir, name);
  await openssl(dir, 'req', '-new', '-key', `${name}.key`, '-out', `${name}.csr`, '-subj', cn.startsWith('/') ? cn : `/CN=${cn}`);
  writeFileSync(join(dir, `${name}.ext`), ext);
  await openssl(
    dir,
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.pem`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-out',
    `${name}.pem`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  );
}

export async function makePki(host: TeardownHost): Promise<Pki> {
  const dir = scratchDir('pki-');
  host.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await selfSignedCa(dir, 'ca', 'blockcopy test CA');
  await selfSignedCa(dir, 'rogue-ca', 'somebody else');
  await signed(dir, 'server', '127.0.0.1', 'ca', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  await signed(dir, 'client', 'ops-admin', 'ca', 'extendedKeyUsage=clientAuth\n');
  await signed(dir, 'rogue', 'ops-admin', 'rogue-ca', 'extendedKeyUsage=clientAuth\n');
  await signed(dir, 'viewer', '/C=US/O=ops/CN=viewer', 'ca', 'extendedKeyUsage=clientAuth\n');
  // An expired certificate from the right CA: `openssl ca` is the tool that takes explicit dates.
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '1000\n');
  writeFileSync(
    join(dir, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = test',
      '[test]',
      'dir = .',
      'database = index.txt',
      'new_certs_dir = .',
      'certificate = ca.pem',
      'private_key = ca.key',
      'serial = serial',
      'default_md = sha256',
      'policy = any',
      'unique_subject = no',
      'copy_extensions = none',
      '[any]',
      'commonName = supplied',
      '',
    ].join('\n'),
  );
  await newKey(dir, 'expired');
  await openssl(dir, 'req', '-new', '-key', 'expired.key', '-out', 'expired.csr', '-subj', '/CN=ops-admin');
  await openssl(
    dir,
    'ca',
    '-batch',
    '-config',
    'ca.cnf',
    '-startdate',
    '20200101000000Z',
    '-enddate',
    '20200102000000Z',
    '-in',
    'expired.csr',
    '-out',
    'expired.pem',
    '-notext',
  );
  const p = (f: string) => join(dir, f);
  return {
    dir,
    ca: p('ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    client: { cert: p('client.pem'), key: p('client.key'), subject: 'CN=ops-admin' },
    rogueClient: { cert: p('rogue.pem'), key: p('rogue.key') },
    viewerClient: { cert: p('viewer.pem'), key: p('viewer.key'), subject: 'CN=viewer,O=ops,C=US' },
    expiredClient: { cert: p('expired.pem'), key: p('expired.key') },
  };
}

/** A server certificate from the pki's CA for another address (an agent in a network namespace). */
export async function serverCertFor(pki: Pki, ip: string): Promise<{ cert: string; key: string }> {
  const name = `server-${ip.replace(/[^0-9a-f]/gi, '_')}`;
  await signed(pki.dir, name, ip, 'ca', `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`);
  return { cert: join(pki.dir, `${name}.pem`), key: join(pki.dir, `${name}.key`) };
}
