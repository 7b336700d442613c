// Sparse by default: the default copy of a mostly empty disk (1 GiB virtual, 8 MiB written by the
// guest) allocates on the destination no more than the source holds, for raw and qcow2 sources,
// to a new destination (libvirt creates it) and to a reused one (`qemu-img create`, or a raw file
// allocated in full beforehand). Allocation is what the filesystem reports (st_blocks × 512, as
// `du` and `qemu-img info`'s disk size), read after the pivot; the data is checked with
// `qemu-img compare`. The figures are printed (docs/performance.md, "Sparse copies").
import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';
import type { AgentClient } from '../../src/client/index.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SIZE_MIB = 1024;
/** What a destination may hold beyond the source: qcow2 metadata laid out differently (L2 and refcount tables). */
const SLACK = 2 * MiB;
/** The guest's data: 4 MiB at the start, 4 MiB in the middle. */
const WRITES = [
  { pattern: 0x5a, offset: 0, length: 4 * MiB },
  { pattern: 0x33, offset: 512 * MiB, length: 4 * MiB },
];

const allocated = (path: string) => statSync(path).blocks * 512;
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

async function copyAndMeasure(
  t: Test,
  client: AgentClient,
  dom: hv.TestDomain,
  disk: string,
  dest: string,
  format: hv.ImageFormat,
  reuse: 'new' | 'qemu-img create' | 'fallocate',
): Promise<void> {
  const source = (await hv.liveChain(dom, disk))[0]!;
  await run('sync');
  const before = allocated(source);
  if (reuse === 'qemu-img create') await hv.createImage(dest, format, SIZE_MIB);
  if (reuse === 'fallocate') await run('fallocate', ['-l', `${SIZE_MIB}M`, dest]);
  if (reuse === 'fallocate') t.ok(allocated(dest) >= SIZE_MIB * MiB, 'the reused destination starts fully allocated');
  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk,
    destination: { path: dest, format },
    ...(reuse === 'new' ? {} : { reuseExternal: true }),
    whenReady: 'pivot',
    wait: 'done',
    timeout: 300,
  });
  t.equal(job.state, 'pivoted', `${disk} (${format}, ${reuse} destination) pivoted`);
  await run('sync');
  const after = allocated(dest);
  t.comment(`sparse: ${format} source ${mib(before)} allocated → ${reuse} ${format} destination ${mib(after)} allocated`);
  t.ok(after <= before + SLACK, `destination allocates ${mib(after)}, at most the source's ${mib(before)} + ${mib(SLACK)}`);
  t.ok(after < (SIZE_MIB * MiB) / 16, `the destination stays sparse (${mib(after)} of ${SIZE_MIB} MiB)`);
  t.equal(await hv.compareImages(source, dest, [format, format]), 'identical', 'qemu-img compare: the copy equals the source');
}

t.test('the default copy of a mostly empty disk stays sparse (raw and qcow2, new and reused)', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'raw', sizeMiB: SIZE_MIB },
      { format: 'qcow2', sizeMiB: SIZE_MIB },
    ],
  });
  for (const disk of ['vda', 'vdb']) for (const w of WRITES) await hv.guestWrite(dom, disk, w);

  await copyAndMeasure(t, client, dom, 'vda', `${dom.dir}/vda-new.raw`, 'raw', 'new');
  await copyAndMeasure(t, client, dom, 'vda', `${dom.dir}/vda-reused.raw`, 'raw', 'qemu-img create');
  await copyAndMeasure(t, client, dom, 'vda', `${dom.dir}/vda-allocated.raw`, 'raw', 'fallocate');
  await copyAndMeasure(t, client, dom, 'vdb', `${dom.dir}/vdb-new.qcow2`, 'qcow2', 'new');
  await copyAndMeasure(t, client, dom, 'vdb', `${dom.dir}/vdb-reused.qcow2`, 'qcow2', 'qemu-img create');
  for (const disk of ['vda', 'vdb']) {
    const path = (await hv.liveChain(dom, disk))[0]!;
    for (const w of WRITES)
      t.ok(await hv.readPattern(path, disk === 'vda' ? 'raw' : 'qcow2', w), `${disk}: the guest's data at ${w.offset}`);
  }
});
