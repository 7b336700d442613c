// The agent under systemd's notify protocol, with this test playing systemd's side exactly (no
// systemd is PID 1 here; docs/testing.md): READY=1 only once the WebSocket answers, from the
// main pid; RELOADING=1 + MONOTONIC_USEC … READY=1 around SIGHUP with a rotated token; STOPPING=1
// at SIGTERM; WATCHDOG=1 pings at the period asked; an abstract socket name.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { serveAgent, stateDir } from '../../harness/agent.js';
import { AgentClient } from '../../src/client/index.js';
import { notifySocket } from '../helpers/notify-socket.js';
import { attempt } from '../helpers/ws-probe.js';

const mono = () => Number(process.hrtime.bigint() / 1000n);

t.test('readiness, reload, stop', async (t) => {
  const dir = stateDir(t);
  const sock = await notifySocket(t, join(dir, 'notify.sock'));
  const token = randomBytes(24).toString('hex');
  // Checked the moment READY=1 arrives, before anything else of the agent is awaited.
  const answeredAtReady = sock
    .next((n) => n.fields.READY === '1')
    .then(async (n) => {
      const port = /^Serving on 127\.0\.0\.1:(\d+)$/.exec(n.fields.STATUS ?? '')?.[1];
      if (!port) return { n, answer: `STATUS names no port: ${n.fields.STATUS}` };
      const client = await AgentClient.connect(`ws://127.0.0.1:${port}`, { headers: { authorization: `Bearer ${token}` } });
      try {
        return { n, answer: await client.call('listJobs', {}).then(() => 'answered') };
      } finally {
        client.close();
      }
    });
  const agent = await serveAgent(t, { dir, token, env: { NOTIFY_SOCKET: sock.path } });
  const { n: ready, answer } = await answeredAtReady;
  t.equal(answer, 'answered', 'at READY=1 the WebSocket answers at once');
  t.equal(ready.fields.MAINPID, String(agent.process.pid), 'MAINPID is the agent');
  t.equal(ready.pid, agent.process.pid, 'sent by the main process (NotifyAccess=main)');
  t.equal(sock.received.filter((n) => n.fields.READY === '1').length, 1, 'one READY=1');
  t.notOk(
    sock.received.some((n) => 'WATCHDOG' in n.fields),
    'no watchdog pings without WATCHDOG_USEC',
  );

  // systemctl reload: a rotated token.
  const fresh = randomBytes(24).toString('hex');
  writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ tokens: [{ name: 'test-admin', token: fresh }] }), { mode: 0o600 });
  const from = sock.received.length;
  const before = mono();
  agent.process.kill('SIGHUP');
  const reloading = await sock.next((n) => n.fields.RELOADING === '1', from);
  const reloaded = await sock.next((n) => n.fields.READY === '1', from);
  const after = mono();
  t.ok(sock.received.indexOf(reloading) < sock.received.indexOf(reloaded), 'RELOADING=1 before READY=1');
  const at = Number(reloading.fields.MONOTONIC_USEC);
  t.ok(at >= before && at <= after, `MONOTONIC_USEC on CLOCK_MONOTONIC (${before} ≤ ${at} ≤ ${after})`);
  t.match(reloaded.fields.STATUS, /^Credentials reloaded/, `STATUS: ${reloaded.fields.STATUS}`);
  t.equal(reloaded.pid, agent.process.pid);
  // Right after READY=1, as systemctl reload returns under Type=notify-reload.
  t.equal(await attempt(agent.url, { headers: { authorization: `Bearer ${token}` } }), 'HTTP 401', 'the old token is refused');
  t.equal(await attempt(agent.url, { headers: { authorization: `Bearer ${fresh}` } }), 'open', 'the new token is accepted');

  // A reload that fails still ends the reload (READY=1), saying why.
  writeFileSync(join(dir, 'tokens.json'), '{"tokens": ', { mode: 0o600 });
  const from2 = sock.received.length;
  agent.process.kill('SIGHUP');
  await sock.next((n) => n.fields.RELOADING === '1', from2);
  const failed = await sock.next((n) => n.fields.READY === '1', from2);
  t.match(failed.fields.STATUS, /^Reload failed, previous credentials in force/, `STATUS: ${failed.fields.STATUS}`);
  t.equal(await attempt(agent.url, { headers: { authorization: `Bearer ${fresh}` } }), 'open', 'the previous tokens stay');

  // systemctl stop.
  const from3 = sock.received.length;
  t.equal(await agent.stop('SIGTERM'), 0, 'exits 0');
  const stopping = sock.received.slice(from3).find((n) => n.fields.STOPPING === '1');
  t.ok(stopping, 'STOPPING=1 before the exit');
  t.equal(stopping?.pid, agent.process.pid);
});

t.test('watchdog pings and an abstract socket name', async (t) => {
  const name = `@blockcopy-test-notify-${process.pid}-${randomBytes(4).toString('hex')}`;
  const sock = await notifySocket(t, name);
  // 2 s: checked every 500 ms, pinged each time libvirt's one-second timer has run since the last.
  const agent = await serveAgent(t, { env: { NOTIFY_SOCKET: name, WATCHDOG_USEC: '2000000' } });
  const ready = await sock.next((n) => n.fields.READY === '1');
  t.equal(ready.pid, agent.process.pid, 'READY=1 over the abstract name');
  const at = sock.received.indexOf(ready);
  // Three pings after READY=1: the pings go on (their cadence is the unit test's business).
  const pingsAfterReady = () => sock.received.slice(at + 1).filter((n) => n.fields.WATCHDOG === '1');
  for (let i = 0; pingsAfterReady().length < 3; i++) await sock.next((n) => n.fields.WATCHDOG === '1', sock.received.length);
  t.ok(pingsAfterReady().length >= 3, `${pingsAfterReady().length} WATCHDOG=1 pings after READY=1`);
  t.ok(
    sock.received.every((n) => n.pid === agent.process.pid),
    'all from the main process',
  );
  t.equal(await agent.stop(), 0);
});

t.test('no NOTIFY_SOCKET, or one nobody listens on: the agent serves as before', async (t) => {
  const dir = stateDir(t);
  const agent = await serveAgent(t, { dir, env: { NOTIFY_SOCKET: join(dir, 'nobody.sock'), WATCHDOG_USEC: '2000000' } });
  t.equal(await attempt(agent.url, { headers: agent.headers }), 'open', 'serves');
  agent.process.kill('SIGHUP');
  t.equal(await attempt(agent.url, { headers: agent.headers }), 'open', 'reloads');
  t.equal(await agent.stop(), 0, 'stops cleanly');
});
