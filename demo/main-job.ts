// The main job, end to end on this host, through the agent's JSON-RPC API: start the agent,
// live-copy a throwaway VM's disk while the guest writes, pivot, verify independently, clean up.
import type { Job } from '../src/generated/api.js';
import * as hv from '../harness/hypervisor.js';
import { serveAgent } from '../harness/agent.js';
import { draw, progressLine } from './progress.js';

const MiB = 1024 * 1024;
const cleanups: Array<() => unknown> = [];
const host: hv.TeardownHost = { teardown: (fn) => cleanups.push(fn) };

async function main(): Promise<void> {
  const agent = await serveAgent(host);
  console.log(`agent: blockcopy-agent serve, listening on ${agent.url} (state in ${agent.stateDir})`);
  const client = await agent.connect();
  cleanups.push(() => client.close());
  const caps = await client.call('capabilities', {});
  console.log(`host: libvirt ${caps.libvirt.version}, ${caps.hypervisor.type} ${caps.hypervisor.version}`);

  const dom = await hv.createDomain(host, { disks: [{ format: 'qcow2', sizeMiB: 1024 }] });
  const disk = dom.disks[0]!;
  console.log(`VM ${dom.name} (${hv.domainType()}) runs on ${disk.path}`);
  await hv.guestWrite(dom, disk.target, { pattern: 0xa1, offset: 0, length: 384 * MiB });
  console.log('guest wrote 384 MiB (pattern 0xa1)');

  await client.call('subscribe', { domain: dom.uuid });
  let wroteDuringCopy: Promise<void> | null = null;
  client.on('job.changed', (job: Job) => {
    const cur = Number(job.progress.cur);
    if (job.state === 'copying') draw(progressLine('phase 1', cur, Number(job.progress.end), job.progress.rate));
    else {
      if (process.stdout.isTTY) process.stdout.write('\n');
      console.log(`job.changed: ${job.state}`);
    }
    // The guest keeps writing while the copy runs: this must end up on the copy too.
    if (!wroteDuringCopy && job.state === 'copying' && cur > 64 * MiB) {
      wroteDuringCopy = hv.guestWrite(dom, disk.target, { pattern: 0xb2, offset: 512 * MiB, length: 64 * MiB });
    }
  });

  const dest = `${dom.dir}/moved.qcow2`;
  const cap = 96 * MiB;
  console.log(`blockCopy ${disk.target} → ${dest}, bandwidth ${cap / MiB} MiB/s, wait: ready`);
  // A bandwidth cap keeps phase 1 long enough to watch, and to write into while it runs.
  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: disk.target,
    destination: { path: dest, format: 'qcow2' },
    bandwidth: cap,
    wait: 'ready',
  });
  await wroteDuringCopy;
  if (wroteDuringCopy) console.log('the guest wrote 64 MiB (pattern 0xb2) during phase 1');

  const t0 = Date.now();
  const pivoted = await client.call('pivot', { jobId: job.jobId });
  console.log(`pivot: ${pivoted.job.state} (${pivoted.job.outcome}) in ${Date.now() - t0} ms`);

  const xml = await hv.liveXml(dom);
  const onDest = xml.includes(`<source file='${dest}'`) && !xml.includes('<mirror');
  console.log(`virsh dumpxml: ${onDest ? 'the guest now runs on ' + dest : 'NOT on the destination'}`);
  const okBefore = await hv.readPattern(dest, 'qcow2', { pattern: 0xa1, offset: 0, length: 384 * MiB });
  const okDuring = !wroteDuringCopy || (await hv.readPattern(dest, 'qcow2', { pattern: 0xb2, offset: 512 * MiB, length: 64 * MiB }));
  console.log(`qemu-io on the copy: before-copy data ${okBefore ? 'ok' : 'MISSING'}, during-copy data ${okDuring ? 'ok' : 'MISSING'}`);
  if (pivoted.job.state !== 'pivoted' || !onDest || !okBefore || !okDuring) process.exitCode = 1;
}

async function cleanup(): Promise<void> {
  for (const fn of cleanups.reverse())
    await Promise.resolve()
      .then(fn)
      .catch(() => {});
  console.log('cleaned up: agent stopped, VM destroyed, files removed');
}

main()
  .catch((e) => {
    console.error('demo failed:', e instanceof Error ? e.message : e);
    process.exitCode = 1;
  })
  .finally(cleanup);
