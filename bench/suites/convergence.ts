// Convergence under guest writes: the guest writes faster than the copy's bandwidth limit.
// Default mirroring vs synchronousWrites: time to ready, or none within the timeout, and what
// jobInfo tells the caller meanwhile.
import { RpcError } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';
import { BENCH_AGENT_CONFIG, fill } from './common.js';
import { MiB, Scope, now, round, type BenchContext, type SuiteResult } from '../lib.js';
import { isBlockJob } from '../../src/job-types.js';

export async function convergence(ctx: BenchContext): Promise<SuiteResult> {
  const scope = new Scope();
  try {
    const sizeMiB = ctx.quick ? 32 : 128;
    const limit = 8 * MiB;
    const timeoutS = ctx.quick ? 12 : 40;
    const agent = await serveAgent(scope, { config: BENCH_AGENT_CONFIG });
    const client = await agent.connect();
    const rows: SuiteResult['rows'] = [];
    const data: Record<string, unknown> = {};
    for (const mode of ['default', 'synchronousWrites'] as const) {
      const dom = await hv.createDomain(scope, { disks: [{ format: 'qcow2', sizeMiB }] });
      await fill(dom, 'vda', sizeMiB, 0x77);
      let writing = true;
      let written = 0;
      const w0 = now();
      // The guest rewrites the disk in 4 MiB pieces as fast as the monitor lets it.
      const writer = (async () => {
        for (let off = 0; writing; off = (off + 4) % sizeMiB) {
          await hv.guestWrite(dom, 'vda', { pattern: 0x78, offset: off * MiB, length: 4 * MiB });
          written += 4;
        }
      })();
      const samples: string[] = [];
      const t0 = now();
      const call = client.call('blockCopy', {
        domain: dom.name,
        disk: 'vda',
        destination: { path: `${dom.dir}/conv.qcow2`, format: 'qcow2' },
        bandwidth: limit,
        synchronousWrites: mode === 'synchronousWrites',
        wait: 'ready',
        timeout: timeoutS,
        jobId: `conv-${mode}`,
      });
      const sampler = setInterval(() => {
        void client.call('jobInfo', { jobId: `conv-${mode}` }).then(
          ({ job }) => {
            if (!isBlockJob(job)) return;
            samples.push(
              `${round((now() - t0) / 1000, 1)} s: ${job.state} ${round(Number(job.progress.cur) / MiB, 0)}/${round(Number(job.progress.end) / MiB, 0)} MiB, rate ${job.progress.rate === null ? '-' : round(job.progress.rate / MiB, 1) + ' MiB/s'}`,
            );
          },
          () => {},
        );
      }, 2000);
      const outcome = await call.then(
        () => `ready after ${round((now() - t0) / 1000, 1)} s`,
        (e) =>
          e instanceof RpcError && e.errorName === 'timeout'
            ? `no convergence within ${timeoutS} s (cancelled)`
            : `failed: ${(e as Error).message}`,
      );
      clearInterval(sampler);
      writing = false;
      await writer;
      const writeRate = written / ((now() - w0) / 1000);
      await client.call('abort', { jobId: `conv-${mode}` }).catch(() => {});
      rows.push({ metric: `${mode}: guest writing ${round(writeRate, 0)} MiB/s, copy limited to 8 MiB/s`, value: outcome });
      data[mode] = { outcome, guestWriteMiBps: writeRate, samples };
      ctx.log(`convergence ${mode}: ${outcome}`);
    }
    const trail = (data.default as { samples: string[] }).samples;
    return {
      name: 'Convergence under guest writes',
      rows,
      data,
      notes: [
        'What jobInfo showed while the default mode did not converge: ' + (trail.length ? trail.slice(-3).join('; ') : 'no sample'),
        'synchronousWrites mirrors each guest write to the destination before completing it; a guest that rewrites its whole disk therefore also copies it, which is why that mode can be ready sooner than the bandwidth limit alone allows.',
      ],
    };
  } finally {
    await scope.close();
  }
}
