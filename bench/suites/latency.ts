// Readiness latency: from libvirt's READY event (seen by an independent libvirt connection in
// this process) to the job.changed notification reaching a WebSocket client; and from a pivot
// request to a verified `pivoted`, against `virsh blockjob --pivot` on the same kind of job.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { openConnection, type DomainEvent } from '../../src/libvirt/index.js';
import type { Job } from '../../src/generated/api.js';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';
import { BENCH_AGENT_CONFIG } from './common.js';
import { MiB, Scope, median, now, percentile, round, type BenchContext, type SuiteResult } from '../lib.js';

const run = promisify(execFile);

function waitFor<T>(register: (resolve: (v: T) => void) => void, ms = 60_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out')), ms);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

export async function latency(ctx: BenchContext): Promise<SuiteResult> {
  const scope = new Scope();
  const observer = await openConnection();
  scope.teardown(() => observer.close());
  try {
    const n = ctx.quick ? 5 : 30;
    const agent = await serveAgent(scope, { config: BENCH_AGENT_CONFIG });
    const client = await agent.connect();
    await client.call('subscribe', {});
    const dom = await hv.createDomain(scope, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
    await hv.guestWrite(dom, 'vda', { pattern: 0x33, offset: 0, length: 16 * MiB });
    const readyEvents = new Map<string, number>();
    const eventWaiters: Array<() => void> = [];
    const unsub = await observer.onEvent((e: DomainEvent) => {
      if (e.kind === 'blockJob' && e.status === 'ready' && e.domain.uuid === dom.uuid) {
        readyEvents.set(e.disk, now());
        eventWaiters.splice(0).forEach((w) => w());
      }
    });
    scope.teardown(unsub);

    const notify: number[] = [];
    const pivots: number[] = [];
    for (let i = 0; i < n; i++) {
      readyEvents.clear();
      let tNotify = 0;
      const notified = waitFor<void>((resolve) => {
        const on = (job: Job) => {
          if (job.domain.uuid === dom.uuid && job.state === 'ready') {
            tNotify = now();
            client.off('job.changed', on);
            resolve();
          }
        };
        client.on('job.changed', on);
      });
      const { job } = await client.call('blockCopy', {
        domain: dom.uuid,
        disk: 'vda',
        destination: { path: `${dom.dir}/lat-${i}.qcow2`, format: 'qcow2' },
      });
      await notified;
      if (!readyEvents.has('vda')) await waitFor<void>((resolve) => eventWaiters.push(resolve));
      notify.push(tNotify - readyEvents.get('vda')!);
      const t0 = now();
      await client.call('pivot', { jobId: job.jobId });
      pivots.push(now() - t0);
    }

    // The same measurement with virsh: its process start-up is part of what a script pays.
    const virshPivots: number[] = [];
    const spawnOnly: number[] = [];
    for (let i = 0; i < Math.min(n, 10); i++) {
      readyEvents.clear();
      await run('virsh', ['-q', 'blockcopy', dom.name, 'vda', `${dom.dir}/virsh-${i}.qcow2`, '--format', 'qcow2', '--transient-job']);
      if (!readyEvents.has('vda')) await waitFor<void>((resolve) => eventWaiters.push(resolve));
      let t0 = now();
      await run('virsh', ['-q', 'blockjob', dom.name, 'vda', '--pivot']);
      virshPivots.push(now() - t0);
      t0 = now();
      await run('virsh', ['-q', 'version']);
      spawnOnly.push(now() - t0);
    }
    const p99 = percentile(notify, 99);
    return {
      name: 'Readiness and pivot latency',
      rows: [
        { metric: `READY event → job.changed at a WebSocket client (n=${n}), p50`, value: `${round(median(notify))} ms` },
        { metric: '… p99', value: `${round(p99)} ms`, target: '≤ 10 ms', met: p99 <= 10 },
        { metric: 'pivot request → verified `pivoted` answer, p50', value: `${round(median(pivots))} ms` },
        { metric: '`virsh blockjob --pivot` wall time, p50', value: `${round(median(virshPivots))} ms` },
        { metric: '… of which starting virsh (`virsh version`), p50', value: `${round(median(spawnOnly))} ms` },
      ],
      data: { notifyMs: notify, pivotMs: pivots, virshPivotMs: virshPivots, virshSpawnMs: spawnOnly },
      notes: [
        'The agent reads the job once more before announcing ready (so the notification carries final progress): that libvirt round trip is part of the latency.',
        "The agent's pivot includes verifying the live XML (and the persistent definition); virsh only waits for libvirt.",
      ],
    };
  } finally {
    await scope.close();
  }
}
