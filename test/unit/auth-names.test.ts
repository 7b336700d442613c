// Names the listener compares: distinguished names (parsing, canonical form, covering), the
// read-only rules, the Host/Origin rules, the relay token's loopback-only rule, and the bound
// address check. The same behaviours against the real agent: test/integration/listener.test.ts
// and mtls-principals.test.ts.
import t from 'tap';
import type { IncomingMessage } from 'node:http';
import { dnCovers, formatDn, parseDn } from '../../src/net/dn.js';
import { Authenticator, readOnlyRules } from '../../src/transport/auth.js';
import { OriginCheck } from '../../src/transport/origin.js';
import { InsecureListener, startWebSocket } from '../../src/transport/websocket.js';
import { silentLogger } from '../../src/log.js';

const req = (headers: Record<string, string>, remoteAddress = '127.0.0.1', url = '/') =>
  ({ headers, url, socket: { remoteAddress, encrypted: false } }) as unknown as IncomingMessage;

t.test('distinguished names: one meaning, many spellings', async (t) => {
  const viewer = parseDn('CN=viewer,O=ops,C=US');
  t.equal(formatDn(viewer), 'CN=viewer,O=ops,C=US', 'RFC 4514 form, most specific first');
  t.same(
    viewer.map((r) => r.map((a) => a.oid)),
    [['2.5.4.6'], ['2.5.4.10'], ['2.5.4.3']],
    'held in X.500 order',
  );
  for (const s of [
    'C=US,O=ops,CN=viewer',
    'C = US, O = ops, CN = viewer',
    '/C=US/O=ops/CN=viewer',
    'cn=Viewer;o=OPS;c=us',
    'commonName=viewer,  organizationName=ops ,countryName=US',
    'OID.2.5.4.3=viewer,2.5.4.10=ops,C=US',
    'CN=#0c06766965776572,O=ops,C=US',
    'CN="viewer",O=ops,C=US',
    'CN=vi\\65wer,O=ops,C=US',
  ])
    t.ok(dnCovers(parseDn(s), viewer) && dnCovers(viewer, parseDn(s)), `${s} is the same DN`);
  t.ok(dnCovers(parseDn('CN=viewer'), viewer), 'a partial DN covers the full one');
  t.notOk(dnCovers(viewer, parseDn('CN=viewer')), 'but not the other way round');
  t.notOk(dnCovers(parseDn('CN=viewer,O=dev'), viewer), 'a different O does not match');
  t.notOk(dnCovers(parseDn('CN=view'), viewer), 'values are compared whole');
  t.notOk(dnCovers(parseDn('CN=#0403766965'), parseDn('CN=\\#0403766965')), 'a binary value is not the string that spells it');
  const multi = parseDn('CN=a\\,b+UID=x,DC=example,DC=com');
  t.equal(multi.length, 3, 'a multi-valued RDN is one RDN');
  t.equal(formatDn(multi), 'CN=a\\,b+UID=x,DC=example,DC=com', 'and is written back the same');
  t.equal(formatDn(parseDn('CN=\\ lead\\, and trail\\ ')), 'CN=\\ lead\\, and trail\\ ', 'escaped spaces kept');
  for (const bad of ['', 'CN viewer', 'CN=', 'CN=a,', 'XX=1', 'CN=a\\q', 'CN=#abc', 'CN=a<b', 'CN=\\ff', 'CN="open', '1=x'])
    t.throws(() => parseDn(bad), `'${bad}' is refused`);
});

t.test('read-only rules: names or DNs, nothing else', async (t) => {
  const r = readOnlyRules(['monitoring', 'loopback', 'CN=viewer,O=ops']);
  t.same([...r.names], ['monitoring', 'loopback']);
  t.equal(r.subjects.length, 1);
  t.throws(() => readOnlyRules(['CN viewer']), /neither a principal name nor a distinguished name/);
  t.throws(() => readOnlyRules(['ok', 'CN=viewer,XX=1']), /readOnlyPrincipals\[1\] is not a valid distinguished name/);
});

t.test('the relay token only from loopback', async (t) => {
  const relayToken = 'r'.repeat(64);
  const auth = new Authenticator({ tokens: [], readOnlyPrincipals: [], allowUnauthenticatedLoopback: false, clientCas: [], relayToken });
  const headers = { authorization: `Bearer ${relayToken}` };
  t.match(auth.authenticate(req(headers, '127.0.0.1')), { name: 'local-stdio' }, 'from 127.0.0.1');
  t.match(auth.authenticate(req(headers, '::1')), { name: 'local-stdio' }, 'from ::1');
  t.equal(auth.authenticate(req(headers, '192.0.2.2')), null, 'not from 192.0.2.2');
  t.equal(auth.authenticate(req(headers, '::ffff:192.0.2.2')), null, 'nor from ::ffff:192.0.2.2');
});

t.test('a reload re-decides each principal', async (t) => {
  const token = 't'.repeat(40);
  const { createHash } = await import('node:crypto');
  const entry = { name: 'ops', digest: createHash('sha256').update(token).digest(), readOnly: false };
  const base = { tokens: [entry], readOnlyPrincipals: [], allowUnauthenticatedLoopback: true, clientCas: [] };
  const auth = new Authenticator({ ...base, relayToken: 'r'.repeat(64) });
  const ops = auth.authenticate(req({ authorization: `Bearer ${token}` }))!;
  const lo = auth.authenticate(req({}))!;
  t.same([ops.name, lo.name], ['ops', 'loopback']);
  auth.setPolicy({ ...base, readOnlyPrincipals: ['ops'] });
  t.notOk(auth.stillValid(ops), 'a token principal made read-only is no longer the same principal');
  t.ok(auth.stillValid(lo), 'the loopback principal is unchanged');
  auth.setPolicy({ ...base, allowUnauthenticatedLoopback: false });
  t.notOk(auth.stillValid(lo), 'unauthenticated loopback turned off');
  t.ok(auth.stillValid(ops), 'ops is full again, as it connected');
  t.throws(() => auth.setPolicy({ ...base, readOnlyPrincipals: ['CN='] }), 'a bad rule is refused');
  t.ok(auth.stillValid(ops), 'and the previous policy stays');
});

t.test('Host and Origin', async (t) => {
  const loop = new OriginCheck({ bound: '127.0.0.1', tls: false, hostNames: ['agent.test'], allowedOrigins: ['https://console.example'] });
  const ok = (h: Record<string, string>) => loop.check(req(h)).ok;
  t.ok(ok({ host: '127.0.0.1:7879' }), 'the bound address');
  t.ok(ok({ host: 'localhost:7879', origin: 'http://localhost:7879' }), 'localhost with its own origin');
  t.ok(ok({ host: '[::1]:7879' }), '::1 when bound to loopback');
  t.ok(ok({ host: 'Agent.Test.:7879', origin: 'http://agent.test.:7879' }), 'a configured name (case, trailing dot)');
  t.ok(ok({ host: '127.0.0.1:7879', origin: 'https://console.example' }), 'a configured origin');
  t.notOk(ok({ host: 'evil.example:7879', origin: 'http://evil.example:7879' }), 'DNS rebinding');
  t.notOk(ok({ host: 'evil.example:7879' }), 'a foreign Host without Origin');
  t.notOk(ok({}), 'no Host');
  t.notOk(ok({ host: '127.0.0.1:7879', origin: 'http://localhost:7879' }), 'an Origin for another Host');
  t.notOk(ok({ host: '127.0.0.1:7879', origin: 'http://127.0.0.1:8080' }), 'another port');
  t.notOk(ok({ host: '127.0.0.1:7879', origin: 'https://127.0.0.1:7879' }), 'https on ws://');
  t.notOk(ok({ host: '127.0.0.1:7879', origin: 'null' }), 'the null origin');
  const tls = new OriginCheck({ bound: '10.0.0.5', tls: true, hostNames: [], allowedOrigins: [] });
  t.ok(tls.check(req({ host: '10.0.0.5:7879', origin: 'https://10.0.0.5:7879' })).ok, 'wss:// and its https origin');
  t.ok(tls.check(req({ host: '10.0.0.5:7879', origin: 'http://10.0.0.5:7879' })).ok, 'and websocket-client 1.2 http origin');
  t.notOk(tls.check(req({ host: 'localhost:7879' })).ok, 'not localhost when bound elsewhere');
});

t.test('plaintext refused on a bound address that is not loopback', async (t) => {
  const err = await startWebSocket(
    {} as never,
    {
      host: '0.0.0.0',
      port: 0,
      maxPayload: 1024,
      heartbeatMs: 60_000,
      flow: { maxBufferedBytes: 1 << 20, slowReaderMs: 1000, maxPendingCalls: 10, maxPendingBytes: 1 << 20 },
      origins: { hostNames: [], allowedOrigins: [] },
      loopbackOnly: true,
      requestTimeoutMs: 1000,
    },
    silentLogger,
  ).then(
    (ws) => (void ws.close(), null),
    (e: Error) => e,
  );
  t.type(err, InsecureListener, 'the listener is closed and the start refused');
});
