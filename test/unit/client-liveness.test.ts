// The TS client's liveness bound: a WebSocket peer gone silent (a host cut off from the
// network closes nothing) fails the calls in flight within livenessMs, while a peer that answers
// pings may take its time over an answer (a long wait).
import t, { type Test } from 'tap';
import { WebSocketServer, type WebSocket } from 'ws';
import { AgentClient } from '../../src/client/index.js';

async function server(t: Test, opts: { autoPong: boolean; onMessage?: (ws: WebSocket, text: string) => void }) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong: opts.autoPong });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) => ws.on('message', (d) => opts.onMessage?.(ws, d.toString())));
  t.teardown(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });
  return `ws://127.0.0.1:${(wss.address() as { port: number }).port}`;
}

/** The call's outcome, or 'still waiting' after `ms` (so that a missing bound fails, not hangs). */
const settled = (p: Promise<unknown>, ms: number) =>
  Promise.race([
    p.then(
      (v) => ({ ok: v }),
      (e: Error) => ({ error: e.message }),
    ),
    new Promise((r) => setTimeout(() => r('still waiting'), ms).unref()),
  ]);

t.test('a silent peer fails the call in flight as a lost connection', async (t) => {
  const url = await server(t, { autoPong: false });
  const client = await AgentClient.connect(url, { livenessMs: 600 });
  t.teardown(() => client.close());
  t.match(await settled(client.call('capabilities', {}), 10_000), { error: /lost the connection to the agent at ws:\/\/127\.0\.0\.1:\d+/ });
});

t.test('a peer that answers pings may take longer than the bound to answer', async (t) => {
  const url = await server(t, {
    autoPong: true,
    onMessage: (ws, text) => {
      const { id } = JSON.parse(text) as { id: number };
      setTimeout(() => ws.send(JSON.stringify({ jsonrpc: '2.0', id, result: { late: true } })), 2000);
    },
  });
  const client = await AgentClient.connect(url, { livenessMs: 600 });
  t.teardown(() => client.close());
  t.same(await settled(client.call('capabilities', {}), 10_000), { ok: { late: true } });
});
