// Data integrity: the guest writes a known pattern continuously (sequence-numbered writes at
// random offsets, each recorded in a reference image once QEMU has done it) while its disk is
// copied and pivoted through the agent, again and again; after every pivot the disk the guest
// runs on must equal the reference byte for byte. BLOCKCOPY_SOAK_CYCLES sets the count
// (default 20) for a longer soak.
import { rm } from 'node:fs/promises';
import t from 'tap';
import { serveAgent } from '../../harness/agent.js';
import { Reference, report } from '../helpers/faults.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;
const SIZE_MIB = 64;
const CYCLES = Number(process.env.BLOCKCOPY_SOAK_CYCLES ?? 20);

/** Deterministic, so a failing run can be replayed. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

/** Writes until stopped; stop() resolves after the write in flight has been recorded. */
function writer(dom: hv.TestDomain, ref: Reference, seed: number) {
  const rnd = lcg(seed);
  let running = true;
  let count = 0;
  const done = (async () => {
    while (running) {
      const length = (1 + Math.floor(rnd() * 16)) * 64 * 1024;
      const offset = Math.floor(rnd() * ((SIZE_MIB * MiB - length) / 65536)) * 65536;
      await ref.write(dom, 'vda', { pattern: 1 + (count % 254), offset, length });
      count++;
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return count;
    },
  };
}

t.test(`${CYCLES} copy-and-pivot cycles under continuous guest writes: 0 mismatches`, async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: SIZE_MIB }] });
  const ref = Reference.create(dom, SIZE_MIB);
  // Data to copy, so that every copy spends a while in phase 1 with the guest writing into it.
  await ref.write(dom, 'vda', { pattern: 0xee, offset: 0, length: 32 * MiB });
  const agent = await serveAgent(t);
  const client = await agent.connect();
  let current = dom.disks[0]!.path;
  let mismatches = 0;
  let writes = 0;
  let pivots = 0;
  for (let i = 0; i < CYCLES; i++) {
    const format = i % 2 === 0 ? 'qcow2' : 'raw';
    const dest = `${dom.dir}/cycle-${i}.${format}`;
    const w = writer(dom, ref, 1000 + i);
    // Let the guest write for a moment before the copy starts, then through the copy and pivot.
    await new Promise((r) => setTimeout(r, 200));
    const { job } = await client.call('blockCopy', {
      domain: dom.name,
      disk: 'vda',
      destination: { path: dest, format },
      whenReady: 'pivot',
      wait: 'done',
      timeout: 120,
      bandwidth: 32 * MiB,
      ...(i % 4 === 3 ? { synchronousWrites: true } : {}),
    });
    writes += await w.stop();
    if (job.state === 'pivoted') pivots++;
    t.equal(job.state, 'pivoted', `cycle ${i + 1}: pivoted onto ${format}${i % 4 === 3 ? ' (synchronous writes)' : ''}`);
    const xml = await hv.liveXml(dom);
    t.notMatch(xml, /<mirror /, `cycle ${i + 1}: no copy left running`);
    t.match(xml, `<source file='${dest}'`, `cycle ${i + 1}: the guest runs on the new copy`);
    const same = await ref.compare(dest, format);
    if (same !== 'identical') mismatches++;
    t.equal(same, 'identical', `cycle ${i + 1}: qemu-img compare against what the guest wrote`);
    report(t, {
      fault: 'copy + pivot under continuous guest writes',
      at: `cycle ${i + 1}`,
      recovered: job.state === 'pivoted',
      mismatches: same === 'identical' ? 0 : 1,
    });
    // The disk the guest left is no longer used by anything.
    if (current !== dom.disks[0]!.path) await rm(current, { force: true });
    current = dest;
  }
  t.comment(`${CYCLES} cycles, ${pivots} pivots, ${writes} guest writes during copies and pivots, ${mismatches} mismatches`);
});
