// Copy throughput: the same disk copied and pivoted through the agent and through
// `virsh blockcopy --wait --pivot`, alternating, and `cp` of the same image as the storage limit.
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';
import * as hv from '../../test/helpers/hypervisor.js';
import { serveAgent } from '../../test/helpers/agent.js';
import { BENCH_AGENT_CONFIG, fill } from './common.js';
import { MiB, Scope, median, now, round, type BenchContext, type SuiteResult } from '../lib.js';

const run = promisify(execFile);

export async function throughput(ctx: BenchContext): Promise<SuiteResult> {
  const scope = new Scope();
  try {
    const sizeMiB = ctx.quick ? 256 : 2048;
    const runs = ctx.quick ? 2 : 5;
    const agent = await serveAgent(scope, { config: BENCH_AGENT_CONFIG });
    const client = await agent.connect();
    const viaAgent = await hv.createDomain(scope, { disks: [{ format: 'raw', sizeMiB }] });
    const viaVirsh = await hv.createDomain(scope, { disks: [{ format: 'raw', sizeMiB }] });
    ctx.log(`throughput: filling two ${sizeMiB} MiB disks with non-zero data`);
    await fill(viaAgent, 'vda', sizeMiB, 0x5a);
    await fill(viaVirsh, 'vda', sizeMiB, 0x5a);
    const agentTimes: number[] = [];
    const virshTimes: number[] = [];
    const cpTimes: number[] = [];
    let srcA = viaAgent.disks[0]!.path;
    let srcB = viaVirsh.disks[0]!.path;
    for (let i = 0; i < runs; i++) {
      const destA = `${viaAgent.dir}/agent-${i}.raw`;
      let t0 = now();
      await client.call('blockCopy', { domain: viaAgent.name, disk: 'vda', destination: { path: destA, format: 'raw' }, whenReady: 'pivot', wait: 'done' });
      agentTimes.push((now() - t0) / 1000);
      rmSync(srcA);
      srcA = destA;

      const destB = `${viaVirsh.dir}/virsh-${i}.raw`;
      t0 = now();
      await run('virsh', ['-q', 'blockcopy', viaVirsh.name, 'vda', destB, '--format', 'raw', '--transient-job', '--wait', '--pivot']);
      virshTimes.push((now() - t0) / 1000);
      rmSync(srcB);
      srcB = destB;

      const copy = `${viaAgent.dir}/cp-${i}.raw`;
      t0 = now();
      await run('cp', ['--sparse=never', srcA, copy]);
      cpTimes.push((now() - t0) / 1000);
      rmSync(copy);
      ctx.log(`throughput run ${i + 1}/${runs}: agent ${agentTimes[i]!.toFixed(2)} s, virsh ${virshTimes[i]!.toFixed(2)} s, cp ${cpTimes[i]!.toFixed(2)} s`);
    }
    const [a, v, c] = [median(agentTimes), median(virshTimes), median(cpTimes)];
    const mibps = (s: number) => `${round(sizeMiB / s, 0)} MiB/s`;
    return {
      name: 'Copy throughput',
      rows: [
        { metric: `copy + pivot of ${sizeMiB} MiB, median of ${runs}: agent`, value: `${round(a)} s (${mibps(a)})` },
        { metric: '… `virsh blockcopy --wait --pivot`', value: `${round(v)} s (${mibps(v)})` },
        { metric: '… `cp` of the same image (storage limit)', value: `${round(c)} s (${mibps(c)})` },
        { metric: 'ratio agent / virsh (time)', value: `${round(a / v, 3)}`, target: '≤ 1.02', met: a / v <= 1.02 },
        { metric: 'ratio agent / cp (time)', value: `${round(a / c, 3)}` },
      ],
      data: { sizeMiB, runs, agentSeconds: agentTimes, virshSeconds: virshTimes, cpSeconds: cpTimes, ratioAgentVirsh: a / v, ratioAgentCp: a / c },
      notes: ['virsh --wait polls the job every 500 ms; the agent pivots on the READY event, which is why it can beat virsh here.',
        'cp writes through the page cache without fsync, like the mirror; both end with data in the page cache.'],
    };
  } finally {
    await scope.close();
  }
}
