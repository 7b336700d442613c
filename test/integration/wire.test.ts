// The wire against the real agent process: a client that does not read is paused and then
// closed (1008) while others are served; batch size and per-call rate limits; foreign Origins
// and half-sent HTTP requests refused; a malformed tokens file never echoed; SIGHUP reloads the
// tokens and closes revoked connections; the stdio relay answers everything and keeps big ids.
import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { CLI, serveAgent, stateDir } from '../../harness/agent.js';
import { attempt, logged } from '../helpers/ws-probe.js';
import { makePki } from '../helpers/pki.js';

const BIG = '123456789012345678901234567890';

function open(url: string, headers: Record<string, string>): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

const closeOf = (ws: WebSocket) =>
  new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })));
const answer = (ws: WebSocket, frame: string) =>
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers of many shapes, matched by t.match
  new Promise<any>((r) => {
    ws.once('message', (d) => r(JSON.parse(d.toString())));
    ws.send(frame);
  });

t.test('a client that does not read is stopped and closed (1008); another is served meanwhile', async (t) => {
  const agent = await serveAgent(t, {
    config: { limits: { maxBufferedBytes: 65536, slowReaderMs: 2000, requestsPerSecond: 100000, burst: 100000 } },
  });
  const hostile = await open(agent.url, agent.headers);
  hostile.on('error', () => {});
  const closed = closeOf(hostile);
  hostile.pause(); // reads nothing from here on
  const discover = JSON.stringify({ jsonrpc: '2.0', method: 'rpc.discover', id: 1 });
  // ~80 KiB per answer: 3,000 answers would be ~240 MiB if the agent kept producing them.
  for (let i = 0; i < 3000; i++) hostile.send(discover);
  const good = await agent.connect();
  t.match(
    await good.call('capabilities', {}),
    { agent: { name: 'blockcopy-agent' } },
    'another client is served while the hostile one floods',
  );
  const line = await logged(agent, /the peer does not read its answers/);
  t.match(line, /unread for 2000 ms/, 'the agent logs why');
  hostile.resume();
  const { code, reason } = await closed;
  t.equal(code, 1008, 'closed with 1008 (policy violation)');
  t.match(reason, /output not read/, `with a reason: ${reason}`);
  t.match(await good.call('capabilities', {}), { agent: {} }, 'the other client is still served');
  t.equal(agent.process.exitCode, null, 'the agent is alive');
});

t.test('batch size limit and a rate limit that counts calls', async (t) => {
  const agent = await serveAgent(t, { config: { limits: { maxBatch: 20, requestsPerSecond: 1, burst: 30 } } });
  const ws = await open(agent.url, agent.headers);
  t.teardown(() => ws.close());
  const call = (id: number) => ({ jsonrpc: '2.0', method: 'listJobs', params: {}, id });
  const tooBig = await answer(ws, JSON.stringify(Array.from({ length: 21 }, (_, i) => call(i))));
  t.match(
    tooBig,
    { id: null, error: { code: -32600, message: /batch of 21 messages exceeds the limit of 20/, data: { maxBatch: 20 } } },
    'a batch over maxBatch is refused whole',
  );
  const first = await answer(ws, JSON.stringify(Array.from({ length: 20 }, (_, i) => call(i))));
  t.equal(first.filter((a: { result?: unknown }) => a.result).length, 20, 'a batch of 20 takes 20 of the 30 tokens');
  const second = await answer(ws, JSON.stringify(Array.from({ length: 20 }, (_, i) => call(i))));
  const limited = second.filter((a: { error?: { data?: { name?: string } } }) => a.error?.data?.name === 'rateLimited').length;
  t.ok(
    limited >= 9 && limited <= 11,
    `the next batch of 20 is mostly refused (${limited} rateLimited; one frame would have passed whole before)`,
  );
});

t.test('HTTP hygiene: foreign Origin refused, half-sent requests dropped', async (t) => {
  const agent = await serveAgent(t, {
    config: { listen: { host: '127.0.0.1', port: 0, allowedOrigins: ['https://console.example'] }, limits: { requestTimeoutMs: 1000 } },
  });
  t.equal(
    await attempt(agent.url, { headers: { ...agent.headers, origin: 'https://evil.example' } }),
    'HTTP 403',
    'a foreign Origin is refused',
  );
  t.equal(
    await attempt(agent.url, { headers: { ...agent.headers, origin: 'https://console.example' } }),
    'open',
    'a configured Origin is accepted',
  );
  t.equal(await attempt(agent.url, { headers: agent.headers }), 'open', 'no Origin (not a browser) is accepted');
  const { port } = new URL(agent.url);
  const dropped = await new Promise<string>((resolve) => {
    const sock = connect(Number(port), '127.0.0.1', () => sock.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n'));
    sock.on('data', () => {});
    sock.on('close', () => resolve('closed by the agent'));
    sock.on('error', () => {});
    setTimeout(() => {
      sock.destroy();
      resolve('still open after 20 s');
    }, 20_000);
  });
  t.equal(dropped, 'closed by the agent', 'a request whose headers never end is dropped');
  const silent = await new Promise<string>((resolve) => {
    const sock = connect(Number(port), '127.0.0.1');
    let connectedAt = 0;
    sock.on('connect', () => (connectedAt = Date.now()));
    sock.on('close', () => resolve('closed by the agent'));
    sock.on('error', () => {});
    setTimeout(() => {
      sock.destroy();
      // Says which side stalled, should this ever fail again (seen once under full load).
      resolve(`still open after 20 s (${connectedAt ? `connected ${Date.now() - connectedAt} ms ago` : 'never connected'})`);
    }, 20_000);
  });
  t.equal(silent, 'closed by the agent', 'a connection that sends nothing is dropped');
});

t.test('a listen host is judged by what it resolves to', async (t) => {
  const agent = await serveAgent(t, { config: { listen: { host: 'localhost', port: 0 } } });
  t.equal(await attempt(agent.url, { headers: agent.headers }), 'open', "'localhost' resolves to loopback only: served without TLS");
});

t.test('a malformed tokens file is refused without echoing it', async (t) => {
  const secret = 'SUPERSECRET-0123456789abcdef';
  for (const text of [
    `{"tokens": [{"name": "a", "token": "${secret}" oops`,
    `{"tokens": [{"name": "a", "token": "${secret}"}]} ${secret}`,
    secret,
    `{"tokens": [{"name": "a", "token": "${secret}", "x": "${secret}"}]}`,
    `{"tokens": [{"name": "${secret}", "token": "${'t'.repeat(32)}"}, {"name": "${secret}", "token": "${'u'.repeat(32)}"}]}`,
  ]) {
    const dir = stateDir(t);
    const f = join(dir, 'tokens.json');
    writeFileSync(f, text, { mode: 0o600 });
    chmodSync(f, 0o600);
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ auth: { tokensFile: f } }));
    const child = spawn(process.execPath, [CLI, 'serve', '--state-dir', dir, '--config', join(dir, 'c.json'), '--listen', '127.0.0.1:0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stderr.on('data', (d) => {
      out += d;
    });
    child.stdout.on('data', (d) => {
      out += d;
    });
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    t.equal(code, 1, 'refuses to start');
    t.match(out, /tokens file/, `says which file: ${out.trim().split('\n').pop()}`);
    t.notMatch(out, /SUPERSEC/, 'and quotes none of it');
  }
});

t.test('SIGHUP reloads the tokens: a revoked token is refused and its connections closed', async (t) => {
  const doomed = 'd'.repeat(40);
  const agent = await serveAgent(t, { tokens: [{ name: 'doomed', token: doomed }] });
  const doomedWs = await open(agent.url, { authorization: `Bearer ${doomed}` });
  doomedWs.on('error', () => {});
  const closed = closeOf(doomedWs);
  const admin = await agent.connect();
  const tokensFile = join(agent.stateDir, 'tokens.json');
  const fresh = 'f'.repeat(40);
  writeFileSync(
    tokensFile,
    JSON.stringify({
      tokens: [
        { name: 'test-admin', token: agent.token },
        { name: 'fresh', token: fresh },
      ],
    }),
    { mode: 0o600 },
  );
  const reloaded = logged(agent, /credentials reloaded/);
  agent.process.kill('SIGHUP');
  t.match(await reloaded, /"closedConnections":1/, 'the agent reloads and closes one connection');
  t.match(await closed, { code: 1008, reason: 'credentials revoked' }, 'the revoked connection is closed with 1008');
  t.equal(await attempt(agent.url, { headers: { authorization: `Bearer ${doomed}` } }), 'HTTP 401', 'the revoked token is refused');
  t.equal(await attempt(agent.url, { headers: { authorization: `Bearer ${fresh}` } }), 'open', 'a new token works at once');
  t.match(await admin.call('capabilities', {}), { agent: {} }, 'a connection whose token stayed is untouched');

  writeFileSync(tokensFile, `{"tokens": "${doomed}`, { mode: 0o600 });
  const failed = logged(agent, /reload failed/);
  agent.process.kill('SIGHUP');
  const line = await failed;
  t.notMatch(line, /ddddd/, 'a broken file on reload is reported without its content');
  t.equal(await attempt(agent.url, { headers: { authorization: `Bearer ${fresh}` } }), 'open', 'and the previous tokens stay in force');
  t.equal(agent.process.exitCode, null, 'SIGHUP does not end the agent');
});

t.test('SIGHUP reloads the TLS material', async (t) => {
  const [a, b] = [await makePki(t), await makePki(t)];
  const dir = stateDir(t);
  const tls = { cert: join(dir, 'server.pem'), key: join(dir, 'server.key'), ca: join(dir, 'ca.pem') };
  const install = (p: typeof a) => {
    copyFileSync(p.serverCert, tls.cert);
    copyFileSync(p.serverKey, tls.key);
    copyFileSync(p.ca, tls.ca);
  };
  install(a);
  const agent = await serveAgent(t, { dir, config: { tls } });
  const { port } = new URL(agent.url);
  const served = () =>
    new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: Number(port), rejectUnauthorized: false }, () => {
        resolve(s.getPeerCertificate().fingerprint256);
        s.destroy();
      });
      s.on('error', reject);
    });
  const fingerprint = async (file: string) => {
    const { X509Certificate } = await import('node:crypto');
    const { readFileSync } = await import('node:fs');
    return new X509Certificate(readFileSync(file)).fingerprint256;
  };
  t.equal(await served(), await fingerprint(a.serverCert), 'serves the first certificate');
  install(b);
  const reloaded = logged(agent, /credentials reloaded/);
  agent.process.kill('SIGHUP');
  t.match(await reloaded, /"tls":true/);
  t.equal(await served(), await fingerprint(b.serverCert), 'new connections get the new certificate');
});

/** Runs `stdio` against the daemon with this input; resolves with its output lines. */
function relay(dir: string, input: string): Promise<{ code: number | null; lines: string[] }> {
  const child = spawn(process.execPath, [CLI, 'stdio', '--state-dir', dir], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    out += d;
  });
  child.stderr.resume();
  child.stdin.end(input);
  return new Promise((r) => child.once('exit', (code) => r({ code, lines: out.split('\n').filter(Boolean) })));
}

t.test('the stdio relay answers everything it owes, ids exact', async (t) => {
  const daemon = await serveAgent(t);
  const invalidNoId = '{"jsonrpc":"2.0","method":"capabilities","params":"not structured"}\n';
  let answered = 0;
  for (let run = 0; run < 20; run++) {
    const { code, lines } = await relay(daemon.stateDir, invalidNoId);
    if (code === 0 && lines.length === 1 && JSON.parse(lines[0]!).error?.code === -32600) answered++;
  }
  t.equal(answered, 20, 'an invalid request without id, then end of input: answered in 20 of 20 runs');

  const { lines } = await relay(
    daemon.stateDir,
    [
      `{"jsonrpc":"2.0","method":"capabilities","params":{},"id":${BIG}}`,
      '{"jsonrpc":"2.0","method":"listJobs","params":{}}', // a notification: no answer
      `[{"jsonrpc":"2.0","method":"listJobs","params":{},"id":-${BIG}},{"jsonrpc":"2.0","method":"listJobs","params":{}}]`,
      '[]',
      'junk',
    ].join('\n'),
  );
  t.equal(lines.length, 4, 'one answer per line that is owed one');
  t.ok(
    lines.some((l) => l.startsWith(`{"jsonrpc":"2.0","id":${BIG},"result":`)),
    'a big id comes back digit for digit',
  );
  t.ok(
    lines.some((l) => l.startsWith(`[{"jsonrpc":"2.0","id":-${BIG},"result":`)),
    'also in a batch',
  );
});

t.test('stdio: a caller that does not read stdout is stopped, the agent exits', async (t) => {
  const dir = stateDir(t);
  writeFileSync(join(dir, 'c.json'), JSON.stringify({ limits: { maxBufferedBytes: 65536, slowReaderMs: 1000 } }));
  const child = spawn(process.execPath, [CLI, 'stdio', '--state-dir', dir, '--config', join(dir, 'c.json')], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  child.stdout.pause(); // never read
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  child.stdin.on('error', () => {});
  const line = JSON.stringify({ jsonrpc: '2.0', method: 'rpc.discover', id: 1 }) + '\n';
  child.stdin.write(line.repeat(2000));
  const code = await new Promise<number | null>((r) => {
    child.once('exit', r);
    setTimeout(() => r(-1), 60_000);
  });
  t.match(err, /does not read its answers/, 'the agent says why it stops');
  t.not(code, -1, `it exits (code ${code}) instead of holding the answers forever`);
});
