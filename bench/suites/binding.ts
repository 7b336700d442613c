// The libvirt binding under a hung libvirtd and under churn, against a private libvirtd (test
// driver behind a real daemon; test/helpers/private-libvirtd.ts) so the shared one is untouched.
//  - libvirtdHang: event-loop lag and journal-style write latency while libvirtd runs, then while
//    it is SIGSTOPped with calls in flight (the agent's shape: polls, reads, a pivot), as ratios.
//  - bindingChurn: RSS over 10,000 open/subscribe/unsubscribe/close cycles; 100 worker
//    environments and 100 process exits torn down under event load, counting crashes.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { LibvirtError, openConnection } from '../../src/libvirt/index.js';
import { startPrivateLibvirtd } from '../../test/helpers/private-libvirtd.js';
import { now, percentile, round, type BenchContext, type SuiteResult } from '../lib.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One phase of agent-shaped load: libvirt calls, journal writes; lag and write latency measured. */
async function phase(conn: Awaited<ReturnType<typeof openConnection>>, ms: number, dir: string) {
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  const writes: number[] = [];
  const failures = new Map<string, number>();
  let calls = 0;
  const end = Date.now() + ms;
  const callers = Array.from({ length: 4 }, async (_, k) => {
    while (Date.now() < end) {
      const p = k === 0 ? conn.listDomains() : k === 1 ? conn.getXml('test') : k === 2 ? conn.lookupDomain('test') : conn.versions();
      await p.then(
        () => calls++,
        (e: unknown) => {
          const name = e instanceof LibvirtError ? e.name : 'other';
          failures.set(name, (failures.get(name) ?? 0) + 1);
        },
      );
      await sleep(20);
    }
  });
  let i = 0;
  while (Date.now() < end) {
    const t0 = now();
    const f = await open(join(dir, `tmp-${i}`), 'w');
    await f.writeFile(JSON.stringify({ job: i, at: Date.now(), pad: 'x'.repeat(2048) }));
    await f.sync();
    await f.close();
    await rename(join(dir, `tmp-${i}`), join(dir, `job-${i % 16}.json`));
    writes.push(now() - t0);
    i++;
    await sleep(50);
  }
  await Promise.all(callers);
  h.disable();
  return {
    lagP50: h.percentile(50) / 1e6,
    lagP99: h.percentile(99) / 1e6,
    lagMax: h.max / 1e6,
    writeP50: percentile(writes, 50),
    writeP99: percentile(writes, 99),
    writes: writes.length,
    calls,
    failures: Object.fromEntries(failures),
  };
}

export async function libvirtdHang(ctx: BenchContext): Promise<SuiteResult> {
  const frozenMs = ctx.quick ? 5_000 : 60_000;
  const d = await startPrivateLibvirtd();
  const dir = mkdtempSync(join(tmpdir(), 'bench-journal-'));
  try {
    const conn = await openConnection(d.uri);
    await conn.onEvent(() => {});
    const base = await phase(conn, ctx.quick ? 3_000 : 15_000, dir);
    ctx.log(`baseline: ${JSON.stringify(base)}`);
    d.stop();
    let hung;
    try {
      hung = await phase(conn, frozenMs, dir);
    } finally {
      d.cont();
    }
    ctx.log(`frozen: ${JSON.stringify(hung)}`);
    await conn.close();
    const r = (x: number) => `${round(x, 1)} ms`;
    return {
      name: `libvirt binding: libvirtd frozen (SIGSTOP) ${frozenMs / 1000} s under agent-shaped load`,
      rows: [
        { metric: 'event-loop lag p50 / p99 / max, libvirtd running', value: `${r(base.lagP50)} / ${r(base.lagP99)} / ${r(base.lagMax)}` },
        {
          metric: 'event-loop lag p50 / p99 / max, libvirtd frozen',
          value: `${r(hung.lagP50)} / ${r(hung.lagP99)} / ${r(hung.lagMax)}`,
          target: 'p99 < 50 ms',
          met: hung.lagP99 < 50,
        },
        { metric: 'lag p99 ratio frozen / running', value: `${round(hung.lagP99 / base.lagP99, 2)}` },
        { metric: 'journal write (write+fsync+rename) p50 / p99, running', value: `${r(base.writeP50)} / ${r(base.writeP99)}` },
        {
          metric: 'journal write p50 / p99, frozen',
          value: `${r(hung.writeP50)} / ${r(hung.writeP99)}`,
          target: 'p50 within 2× running (p99 is disk noise on a shared host)',
          met: hung.writeP50 <= 2 * Math.max(base.writeP50, 1),
        },
        { metric: 'journal write p50 ratio frozen / running', value: `${round(hung.writeP50 / base.writeP50, 2)}` },
        {
          metric: "libvirt calls answered / failed named while frozen (versions() answers from the connection's first reply)",
          value: `${hung.calls} / ${JSON.stringify(hung.failures)}`,
        },
      ],
      data: { base, hung, frozenMs },
      notes: [
        'Private libvirtd (test driver) so the shared daemon is never frozen; the serial test test/serial/libvirtd-hang.serial.ts does the same to the system libvirtd with real copies.',
      ],
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await d.close();
  }
}

function runNode(script: string, args: string[] = []): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [...args, '--input-type=module', '-e', script],
      { timeout: 600_000, maxBuffer: 16 << 20 },
      (_e, out) => resolve({ code: child.exitCode, signal: child.signalCode, out }),
    );
  });
}

export async function bindingChurn(ctx: BenchContext): Promise<SuiteResult> {
  const facade = new URL('../../src/libvirt/index.js', import.meta.url).href;
  const cycles = ctx.quick ? 1_000 : 10_000;
  const runs = ctx.quick ? 10 : 100;
  const churn = await runNode(
    `
    const { openConnection } = await import(${JSON.stringify(facade)});
    const rss = () => process.memoryUsage().rss / 1048576;
    const marks = [];
    for (let i = 1; i <= ${cycles}; i++) {
      const c = await openConnection('test:///default');
      const off = await c.onEvent(() => {});
      await c.suspend('test'); await c.resume('test');
      await off();
      await c.close();
      if (i % ${cycles / 10} === 0) { gc(); marks.push(rss()); }
    }
    console.log(JSON.stringify(marks));`,
    ['--expose-gc'],
  );
  const marks = JSON.parse(churn.out.trim() || '[]') as number[];
  const load = `
    const { openConnection } = await import(${JSON.stringify(facade)});
    const c = await openConnection('test:///default');
    let n = 0;
    await c.onEvent(() => { n++; });
    (async () => { for (;;) { try { await c.suspend('test'); await c.resume('test'); } catch { return; } } })();
    while (n < 20) await new Promise((r) => setTimeout(r, 1));`;
  const workers = await runNode(`
    import { Worker } from 'node:worker_threads';
    let ok = 0;
    for (let i = 0; i < ${runs}; i++) {
      const w = new Worker(${JSON.stringify(`${load}; const { parentPort, workerData } = await import('node:worker_threads'); if (workerData % 2) process.exit(0); else parentPort.postMessage('x');`)}, { eval: true, workerData: i, type: 'module' });
      await new Promise((resolve) => { w.on('message', () => w.terminate()); w.on('error', resolve); w.on('exit', resolve); });
      ok++;
    }
    console.log(ok);`);
  let exitCrashes = 0;
  for (let i = 0; i < runs; i += 4) {
    const rs = await Promise.all(Array.from({ length: Math.min(4, runs - i) }, () => runNode(`${load}; process.exit(7);`)));
    exitCrashes += rs.filter((r) => r.code !== 7).length;
  }
  const workerCrash = workers.signal !== null || Number(workers.out.trim()) !== runs;
  const growth = marks.length > 1 ? marks[marks.length - 1]! - marks[0]! : NaN;
  return {
    name: 'libvirt binding: churn and teardown',
    rows: [
      {
        metric: `RSS after each tenth of ${cycles} open/subscribe/events/unsubscribe/close cycles (MiB)`,
        value: marks.map((m) => round(m, 0)).join(', '),
      },
      {
        metric: 'RSS growth from the first tenth to the last',
        value: `${round(growth, 1)} MiB`,
        target: '< 10 MiB (flat)',
        met: growth < 10,
      },
      {
        metric: `worker environments torn down under event load`,
        value: workerCrash ? `crashed (${workers.signal ?? workers.out.trim()})` : `${runs}, 0 crashes`,
        target: '0 crashes',
        met: !workerCrash,
      },
      { metric: `process exits under event load`, value: `${runs}, ${exitCrashes} crashes`, target: '0 crashes', met: exitCrashes === 0 },
    ],
    data: { marks, runs, exitCrashes, workerCrash },
  };
}
