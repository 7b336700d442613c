// The main job, end to end on this host: a throwaway VM's disk is live-copied while the guest
// writes, then the guest is pivoted onto the copy, and the result is checked independently.
import { openConnection, type DomainEvent } from '../src/libvirt/index.js';
import * as hv from '../test/helpers/hypervisor.js';
import { draw, progressLine } from './progress.js';

const MiB = 1024 * 1024;
const cleanups: Array<() => unknown> = [];
const host: hv.TeardownHost = { teardown: (fn) => cleanups.push(fn) };

async function main(): Promise<void> {
  const dom = await hv.createDomain(host, { disks: [{ format: 'qcow2', sizeMiB: 1024 }] });
  const disk = dom.disks[0]!;
  console.log(`VM ${dom.name} (${hv.domainType()}) runs on ${disk.path}`);
  await hv.guestWrite(dom, disk.target, { pattern: 0xa1, offset: 0, length: 384 * MiB });
  console.log('guest wrote 384 MiB (pattern 0xa1)');

  const conn = await openConnection();
  cleanups.push(() => conn.close());
  const events: DomainEvent[] = [];
  const waiters: Array<() => void> = [];
  const unsubscribe = await conn.onEvent((e) => {
    if (e.kind === 'blockJob' && e.domain.uuid === dom.uuid) {
      events.push(e);
      waiters.splice(0).forEach((w) => w());
    }
  });
  cleanups.push(unsubscribe);
  const nextStatus = async (status: string) => {
    while (!events.some((e) => e.kind === 'blockJob' && e.status === status)) await new Promise<void>((r) => waiters.push(r));
  };

  const dest = `${dom.dir}/moved.qcow2`;
  // A bandwidth cap keeps phase 1 long enough to watch, and to write into while it runs.
  const cap = 96 * MiB;
  console.log(`copying ${disk.target} → ${dest} at ≤ ${cap / MiB} MiB/s`);
  await conn.blockCopy(dom.uuid, disk.target, `<disk type='file'><source file='${dest}'/><driver type='qcow2'/></disk>`,
    { transientJob: true, bandwidth: BigInt(cap) });

  // Rate over a 2 s window: QEMU's throttle moves in bursts, so instant rates jitter.
  const samples: Array<{ t: number; cur: number }> = [];
  let wroteDuringCopy = false;
  const ready = nextStatus('ready');
  let isReady = false;
  void ready.then(() => { isReady = true; });
  while (!isReady) {
    const info = await conn.getBlockJobInfo(dom.uuid, disk.target);
    if (info) {
      const now = Date.now();
      const cur = Number(info.cur);
      samples.push({ t: now, cur });
      while (samples.length > 2 && now - samples[0]!.t > 2000) samples.shift();
      const first = samples[0]!;
      const rate = now - first.t >= 500 ? ((cur - first.cur) * 1000) / (now - first.t) : null;
      draw(progressLine('phase 1', cur, Number(info.end), rate));
      if (!wroteDuringCopy && cur > 64 * MiB) {
        wroteDuringCopy = true;
        await hv.guestWrite(dom, disk.target, { pattern: 0xb2, offset: 512 * MiB, length: 64 * MiB });
      }
    }
    await Promise.race([ready, new Promise((r) => setTimeout(r, process.stdout.isTTY ? 250 : 1000))]);
  }
  if (process.stdout.isTTY) process.stdout.write('\n');
  console.log('READY (BLOCK_JOB_2 event): source and destination are in sync, mirroring');
  if (wroteDuringCopy) console.log('the guest wrote 64 MiB (pattern 0xb2) during phase 1');

  const t0 = Date.now();
  await conn.blockJobAbort(dom.uuid, disk.target, { pivot: true, async: true });
  await nextStatus('completed');
  const xml = await conn.getXml(dom.uuid);
  const onDest = xml.includes(`<source file='${dest}'`) && !xml.includes('<mirror');
  console.log(`pivot: ${onDest ? 'the guest now runs on ' + dest : 'NOT verified'} (${Date.now() - t0} ms)`);

  const okBefore = await hv.readPattern(dest, 'qcow2', { pattern: 0xa1, offset: 0, length: 384 * MiB });
  const okDuring = !wroteDuringCopy || await hv.readPattern(dest, 'qcow2', { pattern: 0xb2, offset: 512 * MiB, length: 64 * MiB });
  console.log(`data check (qemu-io on the copy): before-copy data ${okBefore ? 'ok' : 'MISSING'}, during-copy data ${okDuring ? 'ok' : 'MISSING'}`);
  if (!onDest || !okBefore || !okDuring) process.exitCode = 1;
}

async function cleanup(): Promise<void> {
  for (const fn of cleanups.reverse()) await Promise.resolve().then(fn).catch(() => {});
  console.log('cleaned up: VM destroyed, files removed');
}

main()
  .catch((e) => {
    console.error('demo failed:', e instanceof Error ? e.message : e);
    process.exitCode = 1;
  })
  .finally(cleanup);
