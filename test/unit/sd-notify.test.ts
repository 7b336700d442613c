// The notify protocol's messages and environment (src/sd-notify.ts); the datagram itself and
// the agent's timing are tested against the real agent in test/integration/sd-notify.test.ts.
import t from 'tap';
import { fromEnvironment, monotonicUsec, notifyEnvironment, notifyMessage, ServiceNotifier, startWatchdog } from '../../src/sd-notify.js';
import { createLogger } from '../../src/log.js';

const log = createLogger({ level: 'error' });

t.test('messages: one KEY=value line per field, in order', async (t) => {
  t.equal(
    notifyMessage({ READY: 1, MAINPID: 42, STATUS: 'Serving on 127.0.0.1:8443' }),
    'READY=1\nMAINPID=42\nSTATUS=Serving on 127.0.0.1:8443\n',
  );
  t.equal(notifyMessage({ RELOADING: 1, MONOTONIC_USEC: 123n }), 'RELOADING=1\nMONOTONIC_USEC=123\n');
  t.equal(notifyMessage({ STATUS: 'bad file:\nline 2\r\nline 3' }), 'STATUS=bad file: line 2 line 3\n', 'line breaks cannot add fields');
  t.throws(() => notifyMessage({ 'READY=1\nX': 1 }), TypeError);
  t.throws(() => notifyMessage({ ready: 1 }), TypeError);
});

t.test('MONOTONIC_USEC is CLOCK_MONOTONIC in µs', async (t) => {
  const a = monotonicUsec();
  // /proc/uptime counts CLOCK_BOOTTIME; without a suspend it is within a second of MONOTONIC.
  t.ok(a > 0n && typeof a === 'bigint');
  t.ok(monotonicUsec() >= a, 'never goes back');
});

t.test('environment', async (t) => {
  t.same(notifyEnvironment({}, 7), { socket: null, watchdogUsec: null });
  t.same(notifyEnvironment({ NOTIFY_SOCKET: '/run/systemd/notify' }, 7), { socket: '/run/systemd/notify', watchdogUsec: null });
  t.same(notifyEnvironment({ NOTIFY_SOCKET: '@abstract/name' }, 7).socket, '@abstract/name');
  t.same(notifyEnvironment({ NOTIFY_SOCKET: 'relative' }, 7).socket, null, 'neither a path nor abstract');
  t.same(notifyEnvironment({ NOTIFY_SOCKET: '@' }, 7).socket, null);
  t.same(notifyEnvironment({ NOTIFY_SOCKET: '/n', WATCHDOG_USEC: '30000000' }, 7).watchdogUsec, 30_000_000);
  t.same(notifyEnvironment({ NOTIFY_SOCKET: '/n', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '7' }, 7).watchdogUsec, 30_000_000);
  t.same(
    notifyEnvironment({ NOTIFY_SOCKET: '/n', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '8' }, 7).watchdogUsec,
    null,
    'for another process',
  );
  for (const bad of ['0', '-1', 'x', '1.5', ''])
    t.same(notifyEnvironment({ NOTIFY_SOCKET: '/n', WATCHDOG_USEC: bad }, 7).watchdogUsec, null, `WATCHDOG_USEC=${bad}`);
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '/n', WATCHDOG_USEC: '4000000', WATCHDOG_PID: String(process.pid), OTHER: 'x' };
  const s = fromEnvironment(log, env);
  t.equal(s.notifier.socket, '/n');
  t.equal(s.watchdogUsec, 4_000_000);
  t.same(env, { OTHER: 'x' }, 'taken out of the environment, so children do not inherit them');
  t.equal(fromEnvironment(log, { WATCHDOG_USEC: '4000000' }).watchdogUsec, null, 'no socket, no watchdog');
});

t.test('notifier: the messages of each step; a failed send never throws', async (t) => {
  const sent: Array<[string, string]> = [];
  let errno = 0;
  const n = new ServiceNotifier('/n', log, (p, m) => (sent.push([p, m]), errno));
  t.ok(n.ready('Serving'));
  t.equal(sent[0]![0], '/n');
  t.equal(sent[0]![1], `READY=1\nMAINPID=${process.pid}\nSTATUS=Serving\n`);
  t.ok(n.reloading());
  t.match(sent[1]![1], /^RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=.+\n$/);
  t.ok(n.stopping());
  t.match(sent[2]![1], /^STOPPING=1\nSTATUS=.+\n$/);
  t.ok(n.watchdog());
  t.equal(sent[3]![1], 'WATCHDOG=1\n');
  errno = 111;
  t.notOk(n.status('x'), 'ECONNREFUSED: false');
  const throwing = new ServiceNotifier('/n', log, () => {
    throw new Error('boom');
  });
  t.notOk(throwing.ready('x'), 'a throwing sender is contained');
  const off = new ServiceNotifier(null, log, () => (t.fail('never sends'), 0));
  t.notOk(off.ready('x'));
  t.notOk(off.enabled);
});

t.test('watchdog: pinged only while libvirt loop ticks move', async (t) => {
  const pings: string[] = [];
  const n = new ServiceNotifier('/n', log, (_p, m) => (pings.push(m), 0));
  let ticks = 0;
  // 40 ms period: checked every 10 ms.
  const stop = startWatchdog(n, { usec: 40_000, ticks: () => ticks, log });
  t.equal(pings.length, 1, 'one ping at once');
  const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
  await wait(100);
  t.equal(pings.length, 1, 'no ping while the counter stands still');
  const until = async (ok: () => boolean) => {
    for (let i = 0; i < 500 && !ok(); i++) await wait(10);
  };
  ticks = 1;
  await until(() => pings.length >= 2);
  await wait(100);
  t.equal(pings.length, 2, 'one ping once it moved, then none until it moves again');
  const timer = setInterval(() => ticks++, 5);
  await until(() => pings.length > 4);
  clearInterval(timer);
  t.ok(pings.length > 4, `pinging while it moves (${pings.length})`);
  stop();
  const after = pings.length;
  ticks += 10;
  await wait(50);
  t.equal(pings.length, after, 'stopped');
});

t.test('watchdog without a libvirt counter: the event loop alone is proven', async (t) => {
  const pings: string[] = [];
  const n = new ServiceNotifier('/n', log, (_p, m) => (pings.push(m), 0));
  const stop = startWatchdog(n, { usec: 40_000, ticks: () => -1, log });
  for (let i = 0; i < 500 && pings.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
  stop();
  t.ok(pings.length >= 3, `pinged (${pings.length})`);
});
