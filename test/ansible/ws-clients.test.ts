// The collection's two WebSocket clients against the real agent: websocket-client (Debian's
// python3-websocket, used wherever it can be imported) and the built-in RFC 6455 client (used
// where it cannot). Both over ws:// with a token, wss:// with a token and a CA, and mutual TLS,
// as the modules build them (AgentClient.from_module_params); both refuse a wrong token and a
// missing client certificate. The handshake checks themselves are unit-tested against a fake
// server (tests/unit/plugins/module_utils/test_websocket_handshake.py).
import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { serveAgent } from '../../harness/agent.js';
import { makePki } from '../helpers/pki.js';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../../', import.meta.url));

// Prints which transport class served the call and the agent's name, or the error.
const PROBE = `
import json, sys
from ansible_collections.blockcopy.agent.plugins.module_utils.agent_client import AgentClient, AgentError
params = json.loads(sys.argv[1])
try:
    client = AgentClient.from_module_params(params)
    caps = client.call("capabilities")
    jobs = client.call("listJobs", {})
    client.close()
    print(json.dumps({"transport": type(client.transport).__name__, "agent": caps["agent"]["name"], "jobs": len(jobs["jobs"])}))
except AgentError as e:
    print(json.dumps({"error": e.name, "msg": e.message}))
`;

interface Probe {
  transport?: string;
  agent?: string;
  error?: string;
  msg?: string;
}

async function probe(client: 'library' | 'builtin', params: Record<string, unknown>): Promise<Probe> {
  const env = { ...process.env, PYTHONPATH: join(repo, 'ansible'), BLOCKCOPY_WEBSOCKET_CLIENT: client };
  const { stdout } = await run('/usr/bin/python3', ['-c', PROBE, JSON.stringify(params)], { env });
  return JSON.parse(stdout) as Probe;
}

const CLASSES = { library: 'LibraryWebSocketTransport', builtin: 'WebSocketTransport' } as const;

t.test('websocket-client is importable by the system python (python3-websocket)', async (t) => {
  const { stdout } = await run('/usr/bin/python3', ['-c', 'import websocket; print(websocket.__version__)']);
  t.match(stdout, /^\d+\.\d+/, `websocket-client ${stdout.trim()}`);
});

t.test('ws:// with a token: both clients', async (t) => {
  const agent = await serveAgent(t);
  for (const client of ['library', 'builtin'] as const) {
    t.match(await probe(client, { endpoint: agent.url, token: agent.token }), { transport: CLASSES[client], agent: 'blockcopy-agent' }, `${client}: calls answered`);
    const bad = await probe(client, { endpoint: agent.url, token: 'not-the-token' });
    t.match(bad, { error: 'transport', msg: /WebSocket handshake refused: .*401/ }, `${client}: a wrong token is refused (${bad.msg})`);
  }
});

t.test('wss:// with a token and a CA, and mutual TLS: both clients', async (t) => {
  const pki = await makePki(t);
  const tlsAgent = await serveAgent(t, { config: { tls: { cert: pki.serverCert, key: pki.serverKey } } });
  const mtlsAgent = await serveAgent(t, { config: { tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requireClientCert: true } } });
  for (const client of ['library', 'builtin'] as const) {
    t.match(
      await probe(client, { endpoint: tlsAgent.url, token: tlsAgent.token, ca_path: pki.ca }),
      { transport: CLASSES[client], agent: 'blockcopy-agent' },
      `${client}: wss:// with a token`,
    );
    const unknownCa = await probe(client, { endpoint: tlsAgent.url, token: tlsAgent.token });
    t.match(unknownCa, { error: 'transport', msg: /certificate verify failed/ }, `${client}: a server the CA did not sign is refused`);
    t.match(
      await probe(client, { endpoint: mtlsAgent.url, ca_path: pki.ca, client_cert: pki.client.cert, client_key: pki.client.key }),
      { transport: CLASSES[client], agent: 'blockcopy-agent' },
      `${client}: mutual TLS`,
    );
    const bare = await probe(client, { endpoint: mtlsAgent.url, ca_path: pki.ca });
    t.match(bare, { error: 'transport' }, `${client}: no client certificate, refused (${bare.msg})`);
  }
});
