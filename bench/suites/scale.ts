// Scale: many copies across several VMs at once, all to ready and all pivoted; aggregate
// throughput against a single copy of the same size, and the agent's memory.
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';
import { BENCH_AGENT_CONFIG, fill } from './common.js';
import { Scope, now, round, usage, type BenchContext, type SuiteResult } from '../lib.js';

export async function scale(ctx: BenchContext): Promise<SuiteResult> {
  const scope = new Scope();
  try {
    const vms = ctx.quick ? 2 : 8;
    // --scale-copies N: N copies over the same VMs (up to 16 disks each, vda…vdp).
    const disksPerVm = ctx.scaleCopies ? Math.ceil(ctx.scaleCopies / vms) : ctx.quick ? 2 : 4;
    if (disksPerVm > 16) throw new Error(`${ctx.scaleCopies} copies need more than 16 disks per VM`);
    const sizeMiB = ctx.quick ? 32 : 128;
    const agent = await serveAgent(scope, { config: BENCH_AGENT_CONFIG });
    const client = await agent.connect();
    const doms: hv.TestDomain[] = [];
    for (let v = 0; v < vms; v++) {
      const dom = await hv.createDomain(scope, {
        disks: Array.from({ length: disksPerVm }, () => ({ format: 'qcow2' as const, sizeMiB })),
        memoryMiB: 32,
      });
      for (const d of dom.disks) await fill(dom, d.target, sizeMiB, 0x66);
      doms.push(dom);
    }
    const single = await hv.createDomain(scope, { disks: [{ format: 'qcow2', sizeMiB }] });
    await fill(single, 'vda', sizeMiB, 0x66);
    let t0 = now();
    await client.call('blockCopy', {
      domain: single.name,
      disk: 'vda',
      destination: { path: `${single.dir}/single.qcow2`, format: 'qcow2' },
      whenReady: 'pivot',
      wait: 'done',
    });
    const singleS = (now() - t0) / 1000;

    const n = vms * disksPerVm;
    ctx.log(`scale: ${n} copies across ${vms} VMs`);
    // One connection per VM, as an orchestrator per guest would: a connection runs at most
    // limits.maxPendingCalls (8) calls at once, and each of these holds its call until pivoted.
    const clients = await Promise.all(doms.map(() => agent.connect()));
    t0 = now();
    const results = await Promise.all(
      doms.flatMap((dom, v) =>
        dom.disks.map((d) =>
          clients[v]!.call('blockCopy', {
            domain: dom.name,
            disk: d.target,
            destination: { path: `${d.path}.moved`, format: 'qcow2' },
            whenReady: 'pivot',
            wait: 'done',
          }),
        ),
      ),
    );
    const allS = (now() - t0) / 1000;
    const pivoted = results.filter((r) => r.job.state === 'pivoted').length;
    const rss = usage(agent.process.pid!);
    const aggregate = (n * sizeMiB) / allS;
    return {
      name: `Scale (${n} copies, ${vms} VMs)`,
      rows: [
        { metric: `copies that reached ready and pivoted`, value: `${pivoted} / ${n}`, target: `${n} / ${n}`, met: pivoted === n },
        {
          metric: `all ${n} copies of ${sizeMiB} MiB, start to last pivot`,
          value: `${round(allS)} s (${round(aggregate, 0)} MiB/s aggregate)`,
        },
        { metric: 'one copy of the same size', value: `${round(singleS)} s (${round(sizeMiB / singleS, 0)} MiB/s)` },
        { metric: 'aggregate / single throughput', value: `${round(aggregate / (sizeMiB / singleS))}` },
        { metric: 'agent RSS after (peak)', value: `${rss.rssMiB} MiB (${rss.peakRssMiB} MiB)` },
      ],
      data: { vms, disksPerVm, sizeMiB, singleSeconds: singleS, allSeconds: allS, pivoted, rssMiB: rss.rssMiB, peakRssMiB: rss.peakRssMiB },
    };
  } finally {
    await scope.close();
  }
}
