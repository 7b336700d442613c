// The security table: every row is an attempt that must be refused, with nothing written, run
// against the real agent (TLS, mTLS, tokens, read-only principal, destination policy, limits).
// Each row prints what was tried and what came back.
import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { AgentClient, RpcError } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent, stateDir } from '../../harness/agent.js';
import { makePki } from '../helpers/pki.js';
import { SchemaSet } from '../../src/schemas.js';

const MiB = 1024 * 1024;

interface Attempt {
  headers?: Record<string, string>;
  cert?: string;
  key?: string;
  path?: string;
}

t.test('security table', async (t) => {
  const pki = await makePki(t);
  const root = hv.scratchDir('allowed-');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const viewerToken = 'v'.repeat(8) + Math.random().toString(36).slice(2).padEnd(24, 'x');
  const dir = stateDir(t);
  const auditFile = join(dir, 'audit.log');
  const agent = await serveAgent(t, {
    dir,
    tokens: [{ name: 'viewer', token: viewerToken, readOnly: true }],
    config: {
      tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca },
      allowedRoots: [root],
      allowedDevices: [],
      audit: { file: auditFile },
    },
  });
  const ca = readFileSync(pki.ca);
  const rows: string[] = [];
  const row = (tried: string, got: string) => {
    rows.push(`${tried.padEnd(58)} → ${got}`);
    t.comment(`${tried} → ${got}`);
  };

  /** Opens a WebSocket as described; says what the agent answered. */
  const attempt = (a: Attempt) =>
    new Promise<string>((resolve) => {
      const ws = new WebSocket(agent.url + (a.path ?? ''), {
        ca,
        headers: a.headers,
        ...(a.cert ? { cert: readFileSync(a.cert), key: readFileSync(a.key!) } : {}),
      });
      ws.on('open', () => {
        ws.close();
        resolve('accepted');
      });
      ws.on('unexpected-response', (_req, res) => {
        resolve(`HTTP ${res.statusCode}`);
        res.destroy();
      });
      ws.on('error', (e) => resolve(`error: ${e.message}`));
    });
  const connect = (headers: Record<string, string>, extra: { cert?: Buffer; key?: Buffer } = {}) =>
    AgentClient.connect(agent.url, { headers, ca, ...extra });
  const admin = await connect(agent.headers);
  t.teardown(() => admin.close());

  await t.test('who may connect', async (t) => {
    const cases: Array<[string, Attempt, string]> = [
      ['no token', {}, 'HTTP 401'],
      ['wrong token', { headers: { authorization: 'Bearer not-the-right-token-at-all-000000' } }, 'HTTP 401'],
      ['token in the query string', { path: `/?token=${agent.token}` }, 'HTTP 401'],
      ['expired client certificate (right CA)', { cert: pki.expiredClient.cert, key: pki.expiredClient.key }, 'HTTP 401'],
      ['client certificate from another CA', { cert: pki.rogueClient.cert, key: pki.rogueClient.key }, 'HTTP 401'],
      ['valid token over TLS', { headers: agent.headers }, 'accepted'],
      ['valid client certificate (mTLS), no token', { cert: pki.client.cert, key: pki.client.key }, 'accepted'],
    ];
    for (const [tried, a, want] of cases) {
      const got = await attempt(a);
      row(tried, got);
      t.equal(got, want, tried);
    }
    const plain = await new Promise<string>((resolve) => {
      const ws = new WebSocket(agent.url.replace('wss:', 'ws:'), { headers: agent.headers });
      ws.on('open', () => {
        ws.close();
        resolve('accepted');
      });
      ws.on('error', (e) => resolve(`error: ${e.message}`));
      ws.on('unexpected-response', (_q, res) => resolve(`HTTP ${res.statusCode}`));
    });
    row('plain ws:// to the TLS listener', plain);
    t.not(plain, 'accepted', 'no plaintext access');
  });

  await t.test('the certificate subject is the principal', async (t) => {
    const byCert = await connect({}, { cert: readFileSync(pki.client.cert), key: readFileSync(pki.client.key) });
    const err = await byCert.call('abort', { jobId: 'no-such-job' }).then(
      () => null,
      (e) => e as RpcError,
    );
    t.equal(err?.errorName, 'noJob');
    byCert.close();
    const audit = readFileSync(auditFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    t.match(
      audit[audit.length - 1],
      { principal: pki.client.subject, method: 'abort', outcome: 'error' },
      'audited under the certificate subject',
    );
  });

  const victim = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64, backing: true }] });
  const other = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  await hv.guestWrite(victim, 'vda', { pattern: 0xe1, offset: 0, length: 16 * MiB });

  await t.test('what callers may do', async (t) => {
    const viewer = await connect({ authorization: `Bearer ${viewerToken}` });
    const e = await viewer.call('blockCopy', { domain: victim.name, disk: 'vda', destination: { path: `${root}/by-viewer.qcow2` } }).then(
      () => null,
      (x) => x as RpcError,
    );
    row('read-only principal calls blockCopy', `${e?.code} ${e?.errorName}`);
    t.equal(e?.errorName, 'unauthorized');
    t.match(await viewer.call('listJobs', {}), { jobs: Array }, 'but may read');
    t.notOk(existsSync(`${root}/by-viewer.qcow2`), 'nothing written');
    viewer.close();

    mkdirSync(join(root, 'sub'));
    writeFileSync(join(root, 'exists.qcow2'), 'precious');
    symlinkSync('/etc', join(root, 'etc-link'));
    symlinkSync('/etc/hostname', join(root, 'hostname-link'));
    const refused: Array<[string, Record<string, unknown>]> = [
      ['destination ../ outside the root', { destination: { path: `${root}/sub/../../outside.qcow2` } }],
      ['destination outside any allowed root', { destination: { path: `${hv.TEST_ROOT}/outside.qcow2` } }],
      ['a directory symlink pointing to /etc', { destination: { path: `${root}/etc-link/evil.qcow2` } }],
      [
        'a file symlink (reuseExternal) pointing to /etc/hostname',
        { destination: { path: `${root}/hostname-link`, format: 'raw' }, reuseExternal: true },
      ],
      ['an existing file without reuseExternal', { destination: { path: `${root}/exists.qcow2` } }],
      ['reuseExternal without format', { destination: { path: `${root}/exists.qcow2` }, reuseExternal: true }],
      ['the source itself', { destination: { path: victim.disks[0]!.path } }],
      ['a backing file of the disk', { destination: { path: victim.disks[0]!.backingPath! } }],
      ["another VM's disk", { destination: { path: other.disks[0]!.path } }],
      ['/dev/sda, not in allowedDevices', { destination: { path: '/dev/sda', type: 'block' } }],
      ['destinationXml outside the root', { destinationXml: `<disk type='file'><source file='/etc/evil.qcow2'/></disk>` }],
    ];
    for (const [tried, extra] of refused) {
      const err = await admin.call('blockCopy', { domain: victim.name, disk: 'vda', ...extra } as never).then(
        () => null,
        (x) => x as RpcError,
      );
      row(tried, `${err?.code} ${err?.errorName}: ${String(err?.data?.reason ?? err?.message)}`);
      t.equal(err?.errorName, 'destinationRejected', tried);
    }
    t.equal(readFileSync(join(root, 'exists.qcow2'), 'utf8'), 'precious', 'the existing file is untouched');
    t.notOk(
      existsSync(`${hv.TEST_ROOT}/outside.qcow2`) || existsSync('/etc/evil.qcow2') || existsSync(`${root}/etc-link/evil.qcow2`),
      'nothing written anywhere',
    );
    t.notMatch(await hv.liveXml(victim), /<mirror/, 'no copy started');
  });

  await t.test('limits', async (t) => {
    // A second agent with small limits, so that they bite here and nowhere else.
    const limited = await serveAgent(t, {
      config: { limits: { requestsPerSecond: 5, burst: 10, maxConnections: 4 }, maxPayloadBytes: 65536 },
    });
    const open: WebSocket[] = [];
    // Connections that succeed stay open, so that they count against the limit.
    const attemptLimited = () =>
      new Promise<string>((resolve) => {
        const ws = new WebSocket(limited.url, { headers: limited.headers });
        ws.on('open', () => {
          open.push(ws);
          resolve('accepted');
        });
        ws.on('unexpected-response', (_req, res) => {
          resolve(`HTTP ${res.statusCode}`);
          res.destroy();
        });
        ws.on('error', (e) => resolve(`error: ${e.message}`));
      });
    const big = await new Promise<string>((resolve) => {
      const ws = new WebSocket(limited.url, { headers: limited.headers });
      ws.on('open', () => ws.send('x'.repeat(128 * 1024)));
      ws.on('close', (code) => resolve(`closed ${code}`));
      ws.on('error', () => {});
    });
    row('an oversized frame (128 KiB > maxPayloadBytes 64 KiB)', big);
    t.equal(big, 'closed 1009');

    const flood = await AgentClient.connect(limited.url, { headers: limited.headers });
    const answers = await Promise.all(
      Array.from({ length: 40 }, () =>
        flood.call('capabilities', {}).then(
          () => 'ok',
          (e) => (e as RpcError).errorName,
        ),
      ),
    );
    const refused = answers.filter((a) => a === 'rateLimited').length;
    row('40 requests at once (rate 5/s, burst 10)', `${answers.length - refused} served, ${refused} rateLimited (retryable)`);
    t.ok(refused >= 25, 'requests beyond the rate are refused');
    await new Promise((r) => setTimeout(r, 1500));
    t.match(await flood.call('capabilities', {}), { agent: {} }, 'the connection works again once the rate allows');

    let extra = 'accepted';
    for (let i = 0; i < 5 && extra === 'accepted'; i++) extra = await attemptLimited();
    row('connections beyond maxConnections (4)', extra);
    t.equal(extra, 'HTTP 503');
    t.equal(open.length, 3, 'three more fit beside the flooding one');
    flood.close();
    for (const ws of open) ws.close();
  });

  await t.test('audit trail', async (t) => {
    const lines = readFileSync(auditFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const valid = new SchemaSet().validator('audit-entry.schema.json');
    t.same(
      lines.filter((l) => !valid(l)),
      [],
      'every line matches schemas/audit-entry.schema.json',
    );
    t.ok(
      lines.every((l) => l.principal && l.method && l.outcome && l.peer),
      'every entry names principal, peer, method, outcome',
    );
    t.ok(
      lines.some((l) => l.principal === 'viewer' && l.method === 'blockCopy' && l.error?.name === 'unauthorized'),
      'the refused read-only call is audited',
    );
    t.ok(lines.filter((l) => l.error?.name === 'destinationRejected').length >= 11, 'every refused destination is audited');
    const text = readFileSync(auditFile, 'utf8');
    t.notOk(text.includes(agent.token) || text.includes(viewerToken), 'no token in the audit log');
  });

  t.comment(`\n  security table\n  ${rows.join('\n  ')}`);
});

t.test('the agent refuses to start insecurely', async (t) => {
  const cases: Array<[string, (dir: string) => string[]]> = [
    ['listen on 0.0.0.0 without TLS', () => ['--listen', '0.0.0.0:0']],
    [
      'a tokens file others can read',
      (dir) => {
        const f = join(dir, 'tokens.json');
        writeFileSync(f, JSON.stringify({ tokens: [{ name: 'a', token: 'x'.repeat(32) }] }), { mode: 0o644 });
        chmodSync(f, 0o644);
        writeFileSync(join(dir, 'c.json'), JSON.stringify({ auth: { tokensFile: f } }));
        return ['--config', join(dir, 'c.json'), '--listen', '127.0.0.1:0'];
      },
    ],
  ];
  for (const [tried, args] of cases) {
    const dir = stateDir(t);
    const child = spawn(process.execPath, [CLI, 'serve', '--state-dir', dir, ...args(dir)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    t.comment(`${tried} → exit ${code}: ${err.trim().split('\n').pop()}`);
    t.equal(code, 1, `${tried}: refuses to start`);
    t.match(err, /without TLS|not accessible to group or others/, `${tried}: says why`);
  }
});
