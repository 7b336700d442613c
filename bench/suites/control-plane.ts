// Control plane: jobInfo over WebSocket from 1, 10, 50 and 200 concurrent clients while 8 copies
// run; calls per second, p50/p99 latency, and the agent's CPU and memory meanwhile.
import { AgentClient } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';
import { BENCH_AGENT_CONFIG } from './common.js';
import { MiB, Scope, now, percentile, round, usage, type BenchContext, type SuiteResult } from '../lib.js';

export async function controlPlane(ctx: BenchContext): Promise<SuiteResult> {
  const scope = new Scope();
  try {
    const seconds = ctx.quick ? 1 : 5;
    const levels = [1, 10, 50, 200];
    const agent = await serveAgent(scope, { config: BENCH_AGENT_CONFIG });
    const admin = await agent.connect();
    // 8 copies kept in phase 1 by a 1 MiB/s limit for the whole measurement.
    const jobIds: string[] = [];
    for (let v = 0; v < 2; v++) {
      const dom = await hv.createDomain(scope, { disks: Array.from({ length: 4 }, () => ({ format: 'qcow2' as const, sizeMiB: 128 })) });
      for (const d of dom.disks) {
        await hv.guestWrite(dom, d.target, { pattern: 0x44, offset: 0, length: 96 * MiB });
        const { job } = await admin.call('blockCopy', {
          domain: dom.name,
          disk: d.target,
          destination: { path: `${d.path}.copy` },
          bandwidth: MiB,
        });
        jobIds.push(job.jobId);
      }
    }
    const pid = agent.process.pid!;
    const rows: SuiteResult['rows'] = [];
    const data: Record<string, unknown> = {};
    for (const c of levels) {
      const clients = await Promise.all(Array.from({ length: c }, () => AgentClient.connect(agent.url, { headers: agent.headers })));
      const lat: number[] = [];
      const u0 = usage(pid);
      const t0 = now();
      const end = t0 + seconds * 1000;
      await Promise.all(
        clients.map(async (cl, i) => {
          let k = i;
          while (now() < end) {
            const s = now();
            await cl.call('jobInfo', { jobId: jobIds[k++ % jobIds.length]! });
            lat.push(now() - s);
          }
        }),
      );
      const wall = (now() - t0) / 1000;
      const u1 = usage(pid);
      for (const cl of clients) cl.close();
      const rate = lat.length / wall;
      const cpu = ((u1.cpuSeconds - u0.cpuSeconds) / wall) * 100;
      const [p50, p99] = [percentile(lat, 50), percentile(lat, 99)];
      data[`clients${c}`] = {
        calls: lat.length,
        seconds: wall,
        callsPerSecond: rate,
        p50Ms: p50,
        p99Ms: p99,
        agentCpuPercent: cpu,
        agentRssMiB: u1.rssMiB,
      };
      const at50 = c === 50;
      rows.push({
        metric: `${c} client${c > 1 ? 's' : ''}: jobInfo calls/s`,
        value: `${round(rate, 0)}`,
        ...(at50 ? { target: '≥ 5000', met: rate >= 5000 } : {}),
      });
      rows.push({
        metric: `${c} client${c > 1 ? 's' : ''}: latency p50 / p99`,
        value: `${round(p50)} / ${round(p99)} ms`,
        ...(at50 ? { target: 'p99 ≤ 20 ms', met: p99 <= 20 } : {}),
      });
      rows.push({ metric: `${c} client${c > 1 ? 's' : ''}: agent CPU, RSS`, value: `${round(cpu, 0)} % of a core, ${u1.rssMiB} MiB` });
      ctx.log(`control plane: ${c} clients: ${round(rate, 0)} calls/s, p99 ${round(p99)} ms, agent ${round(cpu, 0)} % CPU`);
    }
    const peak = usage(pid).peakRssMiB;
    rows.push({ metric: 'agent peak RSS during the suite', value: `${peak} MiB`, target: '≤ 100 MiB', met: peak <= 100 });
    for (const id of jobIds) await admin.call('abort', { jobId: id });
    return {
      name: 'Control plane (8 copies running)',
      rows,
      data: { ...data, peakRssMiB: peak },
      notes: [
        'The clients run in the benchmark process on the same 2 cores as the agent (and QEMU): calls/s is a floor for the agent alone.',
      ],
    };
  } finally {
    await scope.close();
  }
}
