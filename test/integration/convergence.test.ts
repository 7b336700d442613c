// Convergence (docs/jobs.md) against the real agent, libvirtd and a guest that writes without
// pause: the guest rewrites its whole disk through the QEMU monitor (qemu-io in the guest's own
// block backend) while a copy runs at a tiny bandwidth limit. jobInfo must say notConverging,
// with advice, within 10 s of the start (and /metrics must say so too); once the limit is lifted
// with setSpeed the same copy converges or gets ready while the guest keeps writing.
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer } from 'node:net';
import t from 'tap';
import type { Job } from '../../src/generated/api.js';
import { blockJob, serveAgent } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;
const SIZE_MIB = 16;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** The guest rewrites its whole disk, again and again, until stopped; resolves with the rounds. */
function writer(dom: hv.TestDomain, alias: string) {
  let stop = false;
  let rounds = 0;
  const done = (async () => {
    while (!stop) {
      const out = await hv.virsh(
        'qemu-monitor-command',
        dom.name,
        '--hmp',
        `qemu-io -d ${alias}/virtio-backend "write -P 0x${(0x10 + (rounds % 200)).toString(16)} 0 ${SIZE_MIB}M"`,
      );
      if (/error|fail/i.test(out)) throw new Error(`guest write failed: ${out.trim()}`);
      rounds++;
    }
    return rounds;
  })();
  return {
    get rounds() {
      return rounds;
    },
    stop: () => {
      stop = true;
      return done;
    },
  };
}

t.test('a guest writing faster than the bandwidth limit: notConverging within 10 s, then converging once raised', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: SIZE_MIB }] });
  const port = await freePort();
  const agent = await serveAgent(t, { config: { metrics: { enabled: true, port }, allowedRoots: [dom.dir] } });
  const client = await agent.connect();
  const alias = await hv.diskAlias(dom, 'vda');
  const w = writer(dom, alias);
  t.teardown(() => w.stop().catch(() => {}));
  while (w.rounds < 1) await sleep(100);

  const started = Date.now();
  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: join(dom.dir, 'copy.qcow2'), format: 'qcow2' },
    // No bufSize: under a limit the agent asks for about one second's worth (QEMU's 16 MiB
    // default would keep its counters still for 16 s at a time, docs/jobs.md).
    bandwidth: 1 * MiB,
  });
  t.equal(job.options?.bufSize, 1 * MiB, 'a 1 MiB/s copy gets a 1 MiB buffer');
  let info: Job = job;
  const seen: string[] = [];
  while (Date.now() - started < 10_000) {
    info = blockJob((await client.call('jobInfo', { jobId: job.jobId })).job);
    const s = info.convergence?.state ?? 'absent';
    if (seen[seen.length - 1] !== s) seen.push(s);
    if (s === 'notConverging') break;
    await sleep(500);
  }
  const c = info.convergence;
  t.comment(`after ${Date.now() - started} ms (guest rounds ${w.rounds}): ${seen.join(' → ')}; ${JSON.stringify(c)}`);
  t.equal(info.state, 'copying', 'still copying');
  t.equal(c?.state, 'notConverging', 'jobInfo says notConverging within 10 s of the start');
  t.equal(c?.etaSeconds, null, 'no ETA');
  t.equal(c?.bandwidthBytesPerSecond, 1 * MiB, 'the limit in force');
  t.ok((c?.dirtyRateBytesPerSecond ?? 0) > 0, 'a dirty rate is estimated');
  t.match(c?.advice, /raise the bandwidth well above .* MiB\/s.*synchronousWrites/, 'advice: raise the bandwidth, or synchronousWrites');
  t.notOk(seen.includes('converging'), 'never called converging on the way');

  const listed = (await client.call('listJobs', { kind: ['copy'] })).jobs.map(blockJob).find((j) => j.jobId === job.jobId);
  t.match(listed?.convergence, { state: 'notConverging' }, 'listJobs carries it too');
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const labels = `{domain="${dom.name}",disk="vda",job_id="${job.jobId}",kind="copy"}`;
  t.ok(text.includes(`blockcopy_job_converging${labels} 0`), 'metrics: converging 0');
  t.match(text, new RegExp(`blockcopy_job_dirty_rate_bytes_per_second${labels.replace(/[{}]/g, '\\$&')} [1-9]`), 'metrics: a dirty rate');

  await client.call('setSpeed', { jobId: job.jobId, bandwidth: 0 });
  const raised = Date.now();
  let after: Job = info;
  const later: string[] = [];
  while (Date.now() - raised < 120_000) {
    after = blockJob((await client.call('jobInfo', { jobId: job.jobId })).job);
    const s = after.convergence?.state ?? 'absent';
    if (later[later.length - 1] !== s) later.push(s);
    if (s === 'converging' || s === 'ready') break;
    await sleep(300);
  }
  t.comment(
    `after setSpeed, ${Date.now() - raised} ms (guest rounds ${w.rounds}): ${later.join(' → ')}; ${JSON.stringify(after.convergence)}`,
  );
  t.ok(['converging', 'ready'].includes(after.convergence?.state ?? ''), 'converging or ready once the limit is lifted');
  t.equal(after.convergence?.bandwidthBytesPerSecond, null, 'unlimited now');
  t.equal(after.convergence?.advice, null, 'no advice any more');
  t.ok(w.rounds > 2, 'the guest kept writing all along');

  await w.stop();
  await client.call('abort', { jobId: job.jobId });
});
