// Client certificates against the real agent: a read-only subject is matched by meaning
// (RFC 2253 order, the agent's own order, OpenSSL's spellings, a partial DN), never granted
// full access because of how it was written; an invalid DN is a config error at start and on
// reload; on SIGHUP every open certificate session is judged again (chain against the new CA,
// subject against the new rules) and closed if it no longer passes or became another principal.
import t from 'tap';
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { AgentClient, RpcError } from '../../src/client/index.js';
import { CLI, serveAgent, stateDir, type ServedAgent } from '../../harness/agent.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { logged } from '../helpers/ws-probe.js';

/** What a certificate holder may do: 'full' (abort answers noJob) or 'readOnly' (unauthorized); `server` signed the agent's certificate. */
async function access(agent: ServedAgent, server: Pki, who: { cert: string; key: string }): Promise<string> {
  const c = await AgentClient.connect(agent.url, { ca: readFileSync(server.ca), cert: readFileSync(who.cert), key: readFileSync(who.key) });
  try {
    const e = await c.call('abort', { jobId: 'no-such-job' }).then(
      () => null,
      (x) => x as RpcError,
    );
    return e?.errorName === 'noJob' ? 'full' : e?.errorName === 'unauthorized' ? 'readOnly' : `? ${e?.errorName}`;
  } finally {
    c.close();
  }
}

/** The value of `p`, or 'still open' if it takes longer than `ms`. */
const within = <T>(p: Promise<T>, ms = 30_000) =>
  Promise.race([p, new Promise<string>((r) => setTimeout(() => r('still open'), ms).unref())]);

/** A raw mTLS WebSocket, and how it got closed. */
function certSession(agent: ServedAgent, ca: Buffer, who: { cert: string; key: string }) {
  return new Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }> }>((resolve, reject) => {
    const ws = new WebSocket(agent.url, { ca, cert: readFileSync(who.cert), key: readFileSync(who.key) });
    const closed = new Promise<{ code: number; reason: string }>((r) =>
      ws.once('close', (code, reason) => r({ code, reason: reason.toString() })),
    );
    ws.once('open', () => resolve({ ws, closed }));
    ws.once('error', reject);
  });
}

t.test('a read-only subject is matched however it is written', async (t) => {
  const pki = await makePki(t);
  const tls = { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca };
  const spellings = [
    'CN=viewer,O=ops,C=US', // openssl -nameopt RFC2253
    'C=US,O=ops,CN=viewer', // the order the certificate holds (and the agent used to print)
    'C = US, O = ops, CN = viewer', // openssl x509 -subject
    '/C=US/O=ops/CN=viewer', // openssl -subj
    'cn=Viewer;o=OPS;c=us', // case and ';' (RFC 2253 section 4)
    'CN=viewer', // a partial DN: every certificate with this CN
    '2.5.4.3=viewer,O=ops', // an OID for the type
  ];
  for (const spelling of spellings) {
    const agent = await serveAgent(t, { config: { tls, auth: { readOnlyPrincipals: [spelling] } } });
    const got = await access(agent, pki, pki.viewerClient);
    t.comment(`readOnlyPrincipals ["${spelling}"] → ${got}`);
    t.equal(got, 'readOnly', `"${spelling}" makes the viewer certificate read-only`);
    t.equal(await access(agent, pki, pki.client), 'full', `"${spelling}" leaves CN=ops-admin alone`);
    await agent.stop();
  }
});

t.test('an invalid DN is a config error, at start and on reload', async (t) => {
  const dir = stateDir(t);
  const cfg = join(dir, 'bad.json');
  writeFileSync(cfg, JSON.stringify({ auth: { readOnlyPrincipals: ['CN=viewer,XX=1'] }, listen: { host: '127.0.0.1', port: 0 } }));
  const child = spawn(process.execPath, [CLI, 'serve', '--state-dir', dir, '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  // An agent that does not refuse would serve on: stopped after a while, so the test ends.
  const stop = setTimeout(() => child.kill(), 30_000);
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  clearTimeout(stop);
  t.equal(code, 1, 'the agent refuses to start');
  t.match(err, /readOnlyPrincipals\[0\] is not a valid distinguished name \(unknown attribute type 'XX'/, 'and says why');

  const pki = await makePki(t);
  const agent = await serveAgent(t, { config: { tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca } } });
  const configFile = join(agent.stateDir, 'config.json');
  const config = JSON.parse(readFileSync(configFile, 'utf8'));
  writeFileSync(configFile, JSON.stringify({ ...config, auth: { ...config.auth, readOnlyPrincipals: ['CN=viewer,'] } }));
  const failed = logged(agent, /reload failed/);
  agent.process.kill('SIGHUP');
  t.match(await failed, /not a valid distinguished name/, 'a reload with an invalid DN fails');
  t.equal(await access(agent, pki, pki.viewerClient), 'full', 'and the previous rules stay in force');
});

t.test('SIGHUP judges open certificate sessions again', async (t) => {
  const [a, b] = [await makePki(t), await makePki(t)];
  const dir = stateDir(t);
  const tls = { cert: join(dir, 'server.pem'), key: join(dir, 'server.key'), ca: join(dir, 'ca.pem') };
  copyFileSync(a.serverCert, tls.cert);
  copyFileSync(a.serverKey, tls.key);
  copyFileSync(a.ca, tls.ca);
  const agent = await serveAgent(t, { dir, config: { tls } });
  const caA = readFileSync(a.ca);
  const configFile = join(dir, 'config.json');
  const config = JSON.parse(readFileSync(configFile, 'utf8'));

  // 1. A subject that becomes read-only: its open full-access session is closed.
  const viewer = await certSession(agent, caA, a.viewerClient);
  const admin = await certSession(agent, caA, a.client);
  const byToken = await AgentClient.connect(agent.url, { ca: caA, headers: agent.headers });
  t.teardown(() => byToken.close());
  writeFileSync(configFile, JSON.stringify({ ...config, auth: { ...config.auth, readOnlyPrincipals: ['CN=viewer'] } }));
  let reloaded = logged(agent, /credentials reloaded/);
  agent.process.kill('SIGHUP');
  t.match(await reloaded, /"closedConnections":1/, 'one session closed');
  t.match(await within(viewer.closed), { code: 1008, reason: 'credentials revoked' }, 'the session of the now read-only subject is closed');
  t.equal(await access(agent, a, a.viewerClient), 'readOnly', 'it comes back read-only');
  t.equal(admin.ws.readyState, WebSocket.OPEN, 'an unchanged principal stays connected');

  // 2. The CA replaced: sessions of certificates it did not sign are closed; token sessions stay.
  copyFileSync(b.ca, tls.ca);
  reloaded = logged(agent, /credentials reloaded/);
  agent.process.kill('SIGHUP');
  // (the read-only check's own session of CA A may still be closing: it would go too)
  t.match(await reloaded, /"closedConnections":[12]\b/, 'the sessions of CA A are closed');
  t.match(await within(admin.closed), { code: 1008, reason: 'credentials revoked' }, 'the no-longer-trusted certificate session is closed');
  const refused = await certSession(agent, caA, a.client).then(
    () => 'accepted',
    (e: Error) => e.message,
  );
  t.not(refused, 'accepted', 'and the certificate is refused from then on');
  t.match(await byToken.call('capabilities', {}), { agent: {} }, 'a token session is untouched');
  t.equal(await access(agent, a, b.client), 'full', "the new CA's certificates are accepted");
});
