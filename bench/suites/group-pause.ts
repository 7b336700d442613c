// Group pivot pause: how long the guest's vCPUs stay paused while the agent pivots 1, 2 and 4
// disks of a guest that writes to all of them (the real writer guest), side by side with the
// same switch scripted with virsh (suspend, blockjob --pivot per disk, resume).
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';
import { createWriterDomain, waitUntilWriting } from '../../harness/writer-guest.js';
import { BENCH_AGENT_CONFIG } from './common.js';
import { Scope, median, now, round, type BenchContext, type SuiteResult } from '../lib.js';

const target = (i: number) => `vd${String.fromCharCode(98 + i)}`; // vdb, vdc, …: the writer's data disks

export async function groupPause(ctx: BenchContext): Promise<SuiteResult> {
  const scope = new Scope();
  try {
    const agent = await serveAgent(scope, { config: BENCH_AGENT_CONFIG });
    const client = await agent.connect();
    const runs = ctx.quick ? 1 : 5;
    const rows: SuiteResult['rows'] = [];
    const data: Record<string, { agentMs: number[]; virshMs: number[] }> = {};
    for (const n of [1, 2, 4]) {
      const agentMs: number[] = [];
      const virshMs: number[] = [];
      for (let r = 0; r < runs; r++) {
        const dom = await createWriterDomain(scope, { dataDisks: n, sizeMiB: 32 });
        await waitUntilWriting(dom);
        const disks = Array.from({ length: n }, (_, i) => ({
          disk: target(i),
          destination: { path: `${dom.dir}/g-${target(i)}.raw`, format: 'raw' as const },
        }));
        const { group } = await client.call('blockCopyGroup', { domain: dom.name, disks, wait: 'ready' });
        const piv = await client.call('pivotGroup', { groupId: group!.groupId });
        agentMs.push(piv.group.lastSwitch!.pausedMs);
        // A writer guest keeps a vCPU busy: stop each before the next boots, or boots starve.
        await hv.destroy(dom);

        const twin = await createWriterDomain(scope, { dataDisks: n, sizeMiB: 32 });
        await waitUntilWriting(twin);
        for (let i = 0; i < n; i++)
          await hv.virsh(
            'blockcopy',
            twin.name,
            target(i),
            `${twin.dir}/v-${target(i)}.raw`,
            '--format',
            'raw',
            '--transient-job',
            '--wait',
          );
        const t0 = now();
        await hv.virsh('suspend', twin.name);
        for (let i = 0; i < n; i++) await hv.virsh('blockjob', twin.name, target(i), '--pivot');
        await hv.virsh('resume', twin.name);
        virshMs.push(now() - t0);
        await hv.destroy(twin);
      }
      data[n] = { agentMs, virshMs };
      const a = median(agentMs);
      const v = median(virshMs);
      rows.push({
        metric: `${n} disk${n > 1 ? 's' : ''}: guest paused, agent pivotGroup (median of ${runs})`,
        value: `${round(a, 1)} ms (virsh script ${round(v, 1)} ms, ratio ${round(a / v)})`,
      });
    }
    return {
      name: 'Group pivot pause',
      rows,
      notes: [
        'The agent measures from its suspend request to the end of its resume; the virsh script from `virsh suspend` to the end of `virsh resume` (each virsh call also starts a process). The guest writes to every disk throughout.',
      ],
      data,
    };
  } finally {
    await scope.close();
  }
}
