// Hostile clients: connections that flood cheap calls whose answers are large (rpc.discover,
// ~80 KiB each) and never read them, one or 200 at once, with the shipped limits and with the
// rate limit lifted (so that only the output bounds hold). Measures the agent's RSS meanwhile
// and a well-behaved client's latency beside them, against the same client on a quiet agent.
import { WebSocket } from 'ws';
import { AgentClient } from '../../src/client/index.js';
import { serveAgent } from '../../harness/agent.js';
import { Scope, now, percentile, round, usage, type BenchContext, type SuiteResult } from '../lib.js';

const RSS_TARGET_MIB = 150;

interface Hostile {
  ws: WebSocket;
  closedWith: number | null;
}

/** A client that floods and never reads: single calls, full batches, one 188 KiB frame. */
function hostile(url: string, headers: Record<string, string>): Promise<Hostile> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    const h: Hostile = { ws, closedWith: null };
    ws.on('error', () => {});
    ws.on('close', (code) => {
      h.closedWith = code;
    });
    ws.on('unexpected-response', (_q, res) => {
      res.destroy();
      resolve(h);
    });
    ws.on('open', () => {
      ws.pause();
      const one = { jsonrpc: '2.0', method: 'rpc.discover', id: 1 };
      for (let i = 0; i < 500; i++) ws.send(JSON.stringify(one));
      for (let i = 0; i < 20; i++) ws.send(JSON.stringify(Array.from({ length: 100 }, () => one)));
      ws.send(JSON.stringify(Array.from({ length: Math.floor((188 * 1024) / 45) }, () => one)));
      resolve(h);
    });
  });
}

/** A well-behaved client: one listJobs every 10 ms (100/s, within the default rate of 200/s). */
async function quietLatency(client: AgentClient, seconds: number): Promise<number[]> {
  const lat: number[] = [];
  const end = now() + seconds * 1000;
  while (now() < end) {
    const s = now();
    await client.call('listJobs', {});
    lat.push(now() - s);
    await new Promise((r) => setTimeout(r, 10));
  }
  return lat;
}

async function scenario(ctx: BenchContext, hostiles: number, rateLifted: boolean) {
  const scope = new Scope();
  try {
    const slowReaderMs = ctx.quick ? 2000 : 10_000;
    const limits = { slowReaderMs, maxConnections: 1024, ...(rateLifted ? { requestsPerSecond: 1_000_000, burst: 1_000_000 } : {}) };
    const agent = await serveAgent(scope, { config: { limits, logLevel: 'error' } });
    const pid = agent.process.pid!;
    const good = await agent.connect();
    const before = await quietLatency(good, ctx.quick ? 1 : 3);
    const rssBefore = usage(pid).rssMiB;
    let peak = rssBefore;
    const sampler = setInterval(() => {
      try {
        peak = Math.max(peak, usage(pid).rssMiB);
      } catch {
        /* exited */
      }
    }, 50);
    const t0 = now();
    const attackers = await Promise.all(Array.from({ length: hostiles }, () => hostile(agent.url, agent.headers)));
    const during = await quietLatency(good, (slowReaderMs + 3000) / 1000);
    clearInterval(sampler);
    // Read now, to see whether the agent ended each connection (a paused socket sees nothing):
    // 1008 if its close frame is still readable, 1006 once the agent has also cut the socket.
    for (const a of attackers) a.ws.resume();
    await new Promise((r) => setTimeout(r, 2000));
    const closed = attackers.filter((a) => a.closedWith !== null).length;
    for (const a of attackers) a.ws.terminate();
    const alive = agent.process.exitCode === null;
    return {
      hostiles,
      rateLifted,
      rssBeforeMiB: rssBefore,
      peakRssMiB: peak,
      seconds: round((now() - t0) / 1000, 1),
      closedByAgent: closed,
      agentAlive: alive,
      p50BeforeMs: percentile(before, 50),
      p99BeforeMs: percentile(before, 99),
      p50DuringMs: percentile(during, 50),
      p99DuringMs: percentile(during, 99),
      callsDuring: during.length,
    };
  } finally {
    await scope.close();
  }
}

export async function hostileClients(ctx: BenchContext): Promise<SuiteResult> {
  const levels = ctx.quick ? [1, 20] : [1, 200];
  const rows: SuiteResult['rows'] = [];
  const data: Record<string, unknown> = {};
  for (const rateLifted of [false, true]) {
    for (const n of levels) {
      const r = await scenario(ctx, n, rateLifted);
      const label = `${n} non-reading client${n > 1 ? 's' : ''}${rateLifted ? ', rate limit lifted' : ''}`;
      data[`${n}${rateLifted ? '-norate' : ''}`] = r;
      rows.push({
        metric: `${label}: agent peak RSS (quiet ${r.rssBeforeMiB} MiB)`,
        value: `${r.peakRssMiB} MiB`,
        target: `≤ ${RSS_TARGET_MIB} MiB`,
        met: r.peakRssMiB <= RSS_TARGET_MIB && r.agentAlive,
      });
      rows.push({
        metric: `${label}: other client p50 / p99 (quiet: ${round(r.p50BeforeMs)} / ${round(r.p99BeforeMs)} ms)`,
        value: `${round(r.p50DuringMs)} / ${round(r.p99DuringMs)} ms, ${r.callsDuring} calls, ×${round(r.p50DuringMs / Math.max(r.p50BeforeMs, 0.001), 1)} p50`,
      });
      rows.push({ metric: `${label}: closed by the agent within ${r.seconds} s`, value: `${r.closedByAgent} of ${n}` });
      ctx.log(`hostile: ${label}: peak ${r.peakRssMiB} MiB, other client p99 ${round(r.p99DuringMs)} ms, ${r.closedByAgent}/${n} closed`);
    }
  }
  return {
    name: 'Hostile clients (non-reading floods of rpc.discover)',
    rows,
    data,
    notes: [
      'Each hostile client sends 500 single rpc.discover calls, 20 batches of 100 and one 188 KiB batch (over maxBatch), and never reads: ~200 MiB of answers if all were produced.',
      'Defaults: limits.maxBufferedBytes 256 KiB, slowReaderMs 10 s (2 s in the quick run), maxBatch 100; the clients run in the benchmark process on the same cores.',
    ],
  };
}
