// The WebSocket listener against the real agent and real clients: Python's websocket-client
// with its defaults (it sends Origin: http://HOST:PORT) drives a copy end to end; the `ws`
// client connects; a foreign Origin and a DNS-rebinding Host are refused; the relay token is
// worth nothing from a non-loopback peer; a listen name that resolves differently the second
// time never makes the agent serve plaintext off loopback.
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';
import { attempt } from '../helpers/ws-probe.js';
import { makePki } from '../helpers/pki.js';

const run = promisify(execFile);

/** A hand-written upgrade (as a browser sends it): the status line of the answer. */
function rawUpgrade(port: number, headers: string[]): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1', () => {
      sock.write(
        [
          'GET / HTTP/1.1',
          'Upgrade: websocket',
          'Connection: Upgrade',
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
          'Sec-WebSocket-Version: 13',
          ...headers,
          '',
          '',
        ].join('\r\n'),
      );
    });
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) {
        resolve(buf.split('\r\n')[0]!);
        sock.destroy();
      }
    });
    sock.on('error', (e) => resolve(`error: ${e.message}`));
    sock.on('close', () => resolve(buf.split('\r\n')[0] || 'closed'));
  });
}

// Python's websocket-client with its defaults (Debian's python3-websocket, hence Debian's
// python3): blockCopy (wait ready), then pivot.
const PYTHON = `
import json, sys, websocket
url, token, domain, dest = sys.argv[1:5]
ws = websocket.create_connection(url, header=["Authorization: Bearer " + token], timeout=300)
def call(id, method, params):
    ws.send(json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == id:
            return msg
copy = call(1, "blockCopy", {"domain": domain, "disk": "vda", "destination": {"path": dest}, "wait": "ready"})
pivot = call(2, "pivot", {"jobId": copy["result"]["job"]["jobId"]})
print(json.dumps({"copy": copy, "pivot": pivot}))
ws.close()
`;

t.test("Python's websocket-client with its defaults drives a copy end to end", async (t) => {
  const agent = await serveAgent(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  const dest = `${dom.dir}/by-python.qcow2`;
  const { stdout } = await run('/usr/bin/python3', ['-c', PYTHON, agent.url, agent.token, dom.name, dest], { timeout: 300_000 });
  const out = JSON.parse(stdout);
  t.match(out.copy, { result: { job: { state: 'ready' } } }, 'blockCopy reached ready');
  t.match(out.pivot, { result: { job: { state: 'pivoted' } } }, 'and pivoted');
  t.match(await hv.liveXml(dom), `<source file='${dest}'`, 'the guest runs on the copy');
});

t.test("Python's websocket-client over wss:// (it sends an http:// Origin)", async (t) => {
  const pki = await makePki(t);
  const agent = await serveAgent(t, { config: { tls: { cert: pki.serverCert, key: pki.serverKey } } });
  const script = [
    'import json, ssl, sys, websocket',
    'ws = websocket.create_connection(sys.argv[1], header=["Authorization: Bearer " + sys.argv[2]], sslopt={"ca_certs": sys.argv[3]})',
    'ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "capabilities", "params": {}}))',
    'print(ws.recv())',
  ].join('\n');
  const { stdout } = await run('/usr/bin/python3', ['-c', script, agent.url, agent.token, pki.ca], { timeout: 60_000 });
  t.match(JSON.parse(stdout), { id: 1, result: { agent: { name: 'blockcopy-agent' } } }, 'served');
});

t.test('Origin and Host: own accepted, foreign refused', async (t) => {
  const agent = await serveAgent(t);
  const port = Number(new URL(agent.url).port);
  const auth = `Authorization: Bearer ${agent.token}`;
  const cases: Array<[string, string, string[]]> = [
    ['ws client, no Origin', 'open', []],
    ['own origin by address', 'HTTP/1.1 101 Switching Protocols', [`Host: 127.0.0.1:${port}`, `Origin: http://127.0.0.1:${port}`]],
    ['own origin by localhost', 'HTTP/1.1 101 Switching Protocols', [`Host: localhost:${port}`, `Origin: http://localhost:${port}`]],
    ['foreign Origin (a page elsewhere)', 'HTTP/1.1 403 Forbidden', [`Host: 127.0.0.1:${port}`, 'Origin: http://evil.example']],
    ['another local origin (other port)', 'HTTP/1.1 403 Forbidden', [`Host: 127.0.0.1:${port}`, 'Origin: http://127.0.0.1:3000']],
    ['an https origin on a ws:// listener', 'HTTP/1.1 403 Forbidden', [`Host: 127.0.0.1:${port}`, `Origin: https://127.0.0.1:${port}`]],
    [
      'DNS rebinding: evil.example resolving to 127.0.0.1',
      'HTTP/1.1 403 Forbidden',
      [`Host: evil.example:${port}`, `Origin: http://evil.example:${port}`],
    ],
    ['a foreign Host without Origin', 'HTTP/1.1 403 Forbidden', [`Host: evil.example:${port}`]],
    ['no Host at all', 'HTTP/1.1 403 Forbidden', []],
  ];
  for (const [what, want, headers] of cases) {
    const got = what.startsWith('ws client')
      ? await attempt(agent.url, { headers: agent.headers })
      : await rawUpgrade(port, [...headers, auth]);
    t.comment(`${what} → ${got}`);
    t.equal(got, want, what);
  }
  t.equal(
    await attempt(agent.url, { headers: agent.headers, origin: `http://127.0.0.1:${port}` }),
    'open',
    'the ws client with its own origin',
  );
  const named = await serveAgent(t, { config: { listen: { host: '127.0.0.1', port: 0, allowedHostNames: ['agent.test'] } } });
  const namedPort = Number(new URL(named.url).port);
  t.equal(
    await rawUpgrade(namedPort, [
      `Host: agent.test:${namedPort}`,
      `Origin: http://agent.test:${namedPort}`,
      `Authorization: Bearer ${named.token}`,
    ]),
    'HTTP/1.1 101 Switching Protocols',
    'a configured host name is the agent own',
  );
});

const nonLoopback = Object.values(networkInterfaces())
  .flat()
  .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;

t.test('the relay token is refused from a non-loopback peer', { skip: !nonLoopback && 'no non-loopback IPv4 address here' }, async (t) => {
  const local = nonLoopback!;
  const pki = await makePki(t);
  const agent = await serveAgent(t, {
    config: { tls: { cert: pki.serverCert, key: pki.serverKey }, listen: { host: '0.0.0.0', port: 0 } },
  });
  const port = Number(new URL(agent.url).port);
  const { relayToken } = JSON.parse(readFileSync(join(agent.stateDir, 'agent.lock'), 'utf8'));
  t.ok(relayToken, 'the lock file holds a relay token');
  const ca = readFileSync(pki.ca);
  const via = (host: string, token: string) =>
    attempt(`wss://${host}:${port}`, {
      ca,
      checkServerIdentity: (() => undefined) as never,
      headers: { authorization: `Bearer ${token}` },
    });
  t.equal(await via(local, relayToken), 'HTTP 401', `from ${local} (not loopback): refused`);
  t.equal(await via('127.0.0.1', relayToken), 'open', 'from loopback: accepted');
  t.equal(await via(local, agent.token), 'open', `a real token from ${local} is accepted`);
});

t.test('a listen name resolved twice never serves plaintext off loopback', async (t) => {
  // The agent's resolver answers 127.0.0.1 the first time and 0.0.0.0 every time after.
  const preload = fileURLToPath(new URL('../helpers/dns-flip.js', import.meta.url));
  const agent = await serveAgent(t, {
    config: { listen: { host: 'flip.invalid', port: 0 } },
    env: { NODE_OPTIONS: `--import=${preload}`, BLOCKCOPY_TEST_FLIP_NAME: 'flip.invalid' },
  }).catch((e: Error) => e);
  if (agent instanceof Error) {
    t.match(agent.message, /without TLS/, 'the agent refused to start');
    return;
  }
  const { listen } = JSON.parse(readFileSync(join(agent.stateDir, 'agent.lock'), 'utf8'));
  t.comment(`listening on ${listen.host}:${listen.port}`);
  t.equal(listen.host, '127.0.0.1', 'bound to the address it checked');
});
