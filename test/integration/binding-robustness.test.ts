// The binding under a hung libvirtd (a private daemon, SIGSTOPped), at environment teardown,
// under open/close and subscribe/unsubscribe churn, and with close notifications in every order.
// Issue 16: each item has a check here against a real daemon or test:///default.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { native } from '../../src/libvirt/binding.js';
import { LibvirtBusy, LibvirtError, LibvirtTimeout, openConnection, type CloseReason, type DomainEvent } from '../../src/libvirt/index.js';
import { startPrivateLibvirtd } from '../helpers/private-libvirtd.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const facade = new URL('../../src/libvirt/index.js', import.meta.url).href;

function runNode(
  args: string[],
  script: string,
  timeoutMs = 120_000,
): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [...args, '--input-type=module', '-e', script],
      { timeout: timeoutMs, maxBuffer: 16 << 20 },
      (e, out, err) =>
        resolve({ code: child.exitCode, signal: child.signalCode ?? (e as { signal?: string } | null)?.signal ?? null, out, err }),
    );
  });
}

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

t.test('hung libvirtd: bounded, named errors; JS thread and fs pool stay free; keepalive close; no crash after SIGCONT', async (t) => {
  const d = await startPrivateLibvirtd();
  t.teardown(() => d.close());
  const timeoutMs = 1500;
  const conn = await openConnection(d.uri, { callTimeoutMs: timeoutMs, maxPendingCalls: 8, keepaliveInterval: 1, keepaliveCount: 3 });
  const other = await openConnection(d.uri, { callTimeoutMs: timeoutMs });
  t.teardown(() => conn.close());
  // Dropped without close() while libvirtd hangs: its finalizer must not wait on libvirtd.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  let finalized = 0;
  const registry = new FinalizationRegistry(() => finalized++);
  await (async () => {
    const doomed = await openConnection(d.uri, { callTimeoutMs: timeoutMs });
    await doomed.onEvent(() => {}).then((off) => off());
    registry.register(doomed, 0);
  })();
  const reasons: CloseReason[] = [];
  conn.onClose((r) => reasons.push(r));
  const unsubscribe = await conn.onEvent(() => {});
  t.equal((await conn.listDomains()).length, 1, 'the test driver answers through the private daemon');

  d.stop();
  try {
    const t0 = Date.now();
    // A read (its own queue per domain), a domain-less call and a monitor call are each sent
    // and time out; resume('test') waits behind suspend('test') (one such call per domain at a
    // time): that wait is the agent's own queue, named busy, never a libvirtd timeout.
    const first = await Promise.allSettled([conn.getXml('test'), conn.listDomains(), conn.suspend('test'), conn.resume('test')]);
    const waited = Date.now() - t0;
    for (const r of first.slice(0, 3))
      t.ok(
        r.status === 'rejected' && r.reason instanceof LibvirtTimeout,
        `rejected with LibvirtTimeout: ${r.status === 'rejected' ? r.reason.message : 'resolved'}`,
      );
    const queued = first[3]!;
    t.ok(
      queued.status === 'rejected' && queued.reason instanceof LibvirtBusy && /queue/.test(queued.reason.message),
      `the call queued behind it is LibvirtBusy: ${queued.status === 'rejected' ? queued.reason.message : 'resolved'}`,
    );
    t.ok(
      waited < 2 * timeoutMs + 3000,
      `answered within the bounds (${waited} ms for a ${timeoutMs} ms call bound and a ${2 * timeoutMs} ms queue bound), libvirtd still stopped`,
    );
    t.ok(
      first.every((r) => r.status === 'rejected' && r.reason instanceof LibvirtError),
      'still LibvirtErrors for callers that branch on that',
    );
    t.equal((await conn.versions()).hypervisorType, 'TEST', "versions() answers from the connection's first reply");

    // More calls than the cap: the excess is refused at once, never queued.
    const flood = await Promise.allSettled(Array.from({ length: 20 }, () => conn.lookupDomain('test')));
    const busy = flood.filter((r) => r.status === 'rejected' && r.reason instanceof LibvirtBusy).length;
    const timedOut = flood.filter((r) => r.status === 'rejected' && r.reason instanceof LibvirtTimeout).length;
    t.equal(busy + timedOut, 20, `every call failed named: ${busy} busy, ${timedOut} timed out`);
    t.ok(busy >= 12, 'the calls beyond the cap of 8 were refused as busy');
    t.ok(conn.pendingCalls() <= 8, `calls waiting on the connection stay under the cap (${conn.pendingCalls()})`);

    // The fs pool is not shared with libvirt calls: journal-style writes complete meanwhile.
    const dir = mkdtempSync(join(tmpdir(), 'bctest-fs-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    for (let i = 0; i < 20; i++) {
      const f = await openFile(join(dir, `j${i}`), 'w');
      await f.writeFile('x'.repeat(4096));
      await f.sync();
      await f.close();
    }
    t.pass(`20 fsynced journal-style writes done while ${conn.pendingCalls()} libvirt calls wait`);

    // Opening, closing and unsubscribing never wait on libvirtd from the JS thread.
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    const opened = await openConnection(d.uri, { callTimeoutMs: timeoutMs }).then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(opened instanceof LibvirtTimeout, 'an open to the stopped daemon fails with LibvirtTimeout');
    await other.close();
    t.ok(other.closed, 'close() of a connection to the stopped daemon returns');
    const unsub = await unsubscribe().then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(unsub === null || unsub instanceof LibvirtTimeout, 'unsubscribe returns (or is named as timed out)');
    // Bounded by seconds, not by a few GCs: a loaded host runs the finalizers later.
    for (let i = 0; i < 250 && finalized === 0; i++) {
      gc();
      await sleep(20);
    }
    t.equal(finalized, 1, 'a connection dropped while libvirtd hangs is finalized without blocking');
    clearInterval(ticker);
    t.ok(ticks > 10, `the event loop kept running meanwhile (${ticks} ticks)`);

    // Keepalive drops the connection while a call waits on it.
    const waiting = conn.getXml('test').catch((e: unknown) => e);
    await until(() => reasons.length > 0, 20_000, 'the keepalive close');
    t.same(reasons, ['keepalive'], 'libvirt closed the connection by keepalive and the listener heard it once');
    t.ok((await waiting) instanceof LibvirtError, 'the call in flight failed');
  } finally {
    d.cont();
  }
  await sleep(1000);
  t.ok(conn.closed, 'the dropped connection stays closed');
  const fresh = await openConnection(d.uri);
  t.equal((await fresh.versions()).hypervisorType, 'TEST', 'after SIGCONT a new connection works (and this process is alive)');
  await fresh.close();
  await conn.close();
});

t.test('keepalive drops every domain lane while each waits on a stopped daemon: no crash after SIGCONT', async (t) => {
  // In a child process, so that a crash shows as its signal. Calls on four domain keys keep four
  // lanes (each its own connection) and the main lane waiting when keepalive drops them all.
  const d = await startPrivateLibvirtd();
  t.teardown(() => d.close());
  const r = await runNode(
    [],
    `
    const { openConnection } = await import(${JSON.stringify(facade)});
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const keys = ['test', 'a', 'b', 'c'];
    const conn = await openConnection(${JSON.stringify(d.uri)}, { callTimeoutMs: 60000, keepaliveInterval: 1, keepaliveCount: 3, domainThreads: 4 });
    const reasons = [];
    conn.onClose((r) => reasons.push(r));
    for (let i = 0; i < 3; i++) await Promise.allSettled(keys.map((k) => conn.lookupDomain(k)));
    process.kill(${d.pid}, 'SIGSTOP');
    const waiting = [...keys.map((k) => conn.getXml(k)), conn.listDomains()].map((p) => p.then(() => 'ok', (e) => e.name));
    for (let i = 0; i < 400 && reasons.length === 0; i++) await sleep(50);
    const results = await Promise.all(waiting);
    process.kill(${d.pid}, 'SIGCONT');
    await sleep(3000);
    const fresh = await openConnection(${JSON.stringify(d.uri)});
    const type = (await fresh.versions()).hypervisorType;
    await fresh.close();
    await conn.close();
    console.log(JSON.stringify({ reasons, results, type }));`,
    120_000,
  );
  t.equal(r.signal, null, `no signal (${r.signal ?? 'none'}): ${r.err.slice(-500)}`);
  const out = JSON.parse(r.out.trim().split('\n').pop() ?? '{}') as { reasons?: string[]; results?: string[]; type?: string };
  t.equal(out.reasons?.[0], 'keepalive', 'the connection was dropped by keepalive');
  t.same(
    out.results,
    ['LibvirtError', 'LibvirtError', 'LibvirtError', 'LibvirtError', 'LibvirtError'],
    'every waiting call failed with the drop',
  );
  t.equal(out.type, 'TEST', 'after SIGCONT a new connection works and the process lived on');
});

t.test('a close before anyone listens is kept and replayed; none after close()', async (t) => {
  // Native level: libvirt closes the connection before the handlers exist.
  const d1 = await startPrivateLibvirtd();
  t.teardown(() => d1.close());
  const n = await native.open(d1.uri, { callTimeoutMs: 5000 });
  await d1.close();
  await sleep(500);
  let replayed: string | null = null;
  n.setHandlers(
    () => {},
    (r) => {
      replayed = r;
    },
  );
  t.equal(replayed, 'eof', 'the close that came first is delivered when the handler is installed');
  t.throws(() => new (Object.getPrototypeOf(n).constructor)({}), TypeError, 'the constructor refuses anything but what open() made');
  // The raw binding never keeps the process alive by itself (the facade's call timers do).
  const keepAlive = setInterval(() => {}, 1000);
  await n.close();
  clearInterval(keepAlive);

  // Facade level: a listener added after libvirt closed the connection still hears it.
  const d2 = await startPrivateLibvirtd();
  t.teardown(() => d2.close());
  const c2 = await openConnection(d2.uri);
  await d2.close();
  await until(() => c2.closed, 5000, 'the close');
  const late = await new Promise<CloseReason>((resolve) => c2.onClose(resolve));
  t.equal(late, 'eof', 'a late listener is told');
  await c2.close();

  // After close(): no close notification, even if libvirt's arrives.
  const d3 = await startPrivateLibvirtd();
  t.teardown(() => d3.close());
  const c3 = await openConnection(d3.uri);
  const heard: CloseReason[] = [];
  c3.onClose((r) => heard.push(r));
  const closing = c3.close();
  await d3.close();
  await closing;
  await sleep(500);
  c3.onClose((r) => heard.push(r));
  t.same(heard, [], 'close listeners never fire after close()');
});

t.test('event subscriptions: unsubscribe and subscribe interleaved, concurrently', async (t) => {
  const conn = await openConnection('test:///default');
  t.teardown(() => conn.close());
  for (let i = 0; i < 100; i++) {
    const a: DomainEvent[] = [];
    const b: DomainEvent[] = [];
    const offA = await conn.onEvent((e) => a.push(e));
    const leaving = offA();
    // Added while the last listener's deregistration is under way: must still get events.
    const offB = await conn.onEvent((e) => b.push(e));
    await leaving;
    await conn.suspend('test');
    await conn.resume('test');
    await until(() => b.some((e) => e.kind === 'lifecycle' && e.event === 'resumed'), 5000, `round ${i}: events for the new listener`);
    if (a.length > 0) t.fail(`round ${i}: the removed listener got events`);
    await offB();
  }
  const offs = await Promise.all(Array.from({ length: 30 }, () => conn.onEvent(() => {})));
  await Promise.all([...offs.map((f) => f()), ...Array.from({ length: 10 }, () => conn.onEvent(() => {}).then((f) => f()))]);
  t.pass('100 interleaved rounds and 40 concurrent subscriptions without "already tracked" or lost events');
});

const LOAD = `
  const { openConnection } = await import(${JSON.stringify(facade)});
  async function load() {
    const c = await openConnection('test:///default');
    let n = 0;
    await c.onEvent(() => { n++; });
    (async () => { for (;;) { try { await c.suspend('test'); await c.resume('test'); } catch { return; } } })();
    while (n < 20) await new Promise((r) => setTimeout(r, 1));
    return c;
  }`;

t.test('teardown under event load: worker environments and process exits, no crash (100 of each: bench teardown)', async (t) => {
  const workers = await runNode(
    [],
    `
    import { Worker } from 'node:worker_threads';
    const body = ${JSON.stringify(`${LOAD}
      const { parentPort, workerData } = await import('node:worker_threads');
      await load();
      if (workerData % 2) process.exit(0); else parentPort.postMessage('loaded');`)};
    for (let i = 0; i < 30; i++) {
      const w = new Worker(body, { eval: true, workerData: i, type: 'module' });
      await new Promise((resolve, reject) => {
        w.on('message', () => w.terminate());
        w.on('error', reject);
        w.on('exit', resolve);
      });
    }
    console.log('workers done');`,
  );
  t.equal(workers.signal, null, `no signal (${workers.signal ?? 'none'}): ${workers.err.slice(-500)}`);
  t.equal(workers.out.trim(), 'workers done', '30 worker environments torn down (terminate and process.exit in the worker) mid-load');

  let crashes = 0;
  const details: string[] = [];
  for (let batch = 0; batch < 6; batch++) {
    const runs = await Promise.all(
      Array.from({ length: 4 }, () =>
        runNode(
          [],
          `${LOAD}
      await load(); process.exit(7);`,
          30_000,
        ),
      ),
    );
    for (const r of runs) {
      if (r.code !== 7) {
        crashes++;
        details.push(`code ${r.code} signal ${r.signal}: ${r.err.slice(-300)}`);
      }
    }
  }
  t.equal(crashes, 0, `24 process exits under event load, none crashed ${details.slice(0, 3).join(' | ')}`);
});

t.test('churn: open/close and subscribe/unsubscribe keep RSS flat; dropped connections are finalized', async (t) => {
  const r = await runNode(
    ['--expose-gc'],
    `
    const { openConnection } = await import(${JSON.stringify(facade)});
    const { readdirSync } = await import('node:fs');
    const threads = () => readdirSync('/proc/self/task').length;
    async function cycles(n) {
      for (let i = 0; i < n; i++) {
        const c = await openConnection('test:///default');
        const off = await c.onEvent(() => { throw new Error('listener bug'); });
        if (i % 2) await off();
        await c.close();
      }
    }
    await cycles(500); gc();
    const base = process.memoryUsage().rss;
    await cycles(2000); gc();
    const grown = (process.memoryUsage().rss - base) / 1048576;
    const before = threads();
    const finalized = [];
    const registry = new FinalizationRegistry((i) => finalized.push(i));
    async function openAndDrop() {
      for (let i = 0; i < 20; i++) {
        const c = await openConnection('test:///default');
        c.onClose(() => {});
        registry.register(c, i);
      }
    }
    await openAndDrop();
    const during = threads();
    await new Promise((r) => setTimeout(r, 10));
    for (let i = 0; i < 500 && finalized.length < 20; i++) { gc(); await new Promise((r) => setTimeout(r, 20)); }
    for (let i = 0; i < 500 && threads() > before; i++) await new Promise((r) => setTimeout(r, 20));
    console.log(JSON.stringify({ grown, finalized: finalized.length, before, during, after: threads() }));`,
    240_000,
  );
  t.equal(r.signal, null, `no crash: ${r.err.slice(-300)}`);
  const m = JSON.parse(r.out.trim()) as { grown: number; finalized: number; before: number; during: number; after: number };
  t.ok(m.grown < 16, `2,000 open/subscribe/close cycles after warm-up grew RSS by ${m.grown.toFixed(1)} MiB`);
  t.equal(m.finalized, 20, 'unclosed connections with close listeners are collected');
  t.ok(m.during >= m.before + 20, `each open connection has its own call thread (${m.before} → ${m.during})`);
  t.equal(m.after, m.before, 'finalizing closed them: their threads ended');
});
