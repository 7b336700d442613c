// The native binding against the real libvirtd: copy → READY (event) → pivot, finish,
// cancel in phase 1, set speed, job info shapes, libvirt error codes, and data checked
// with qemu-img as an independent witness.
import t, { type Test } from 'tap';
import { openConnection, LibvirtError, VirErrorCode } from '../../src/libvirt/index.js';
import * as hv from '../../harness/hypervisor.js';
import { blockJob, eventRecorder } from '../helpers/events.js';
import { toDiskXml } from '../../src/destination/xml.js';

const MiB = 1024n * 1024n;

async function rejectsWith(t: Test, p: Promise<unknown>, code: number, what: string) {
  try {
    await p;
    t.fail(`${what}: expected libvirt error ${code}, got success`);
  } catch (e) {
    t.ok(e instanceof LibvirtError, `${what}: rejects with LibvirtError`);
    const le = e as LibvirtError;
    t.equal(le.code, code, `${what}: libvirt code ${code} (${le.message})`);
    t.type(le.domain, 'number', `${what}: carries the libvirt error domain`);
    t.ok(le.message.length > 0, `${what}: carries libvirt's message`);
  }
}

t.test('connection basics', async (t) => {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const v = await conn.versions();
  t.match(v, { libvirt: /^\d+\.\d+\.\d+$/, hypervisorType: 'QEMU', hypervisor: /^\d+\.\d+\.\d+$/ });
  t.ok(Array.isArray(await conn.listDomains()), 'lists domains');
  await rejectsWith(t, conn.lookupDomain('bctest-no-such-domain'), VirErrorCode.NO_DOMAIN, 'unknown domain');
  await rejectsWith(t, conn.lookupDomain('00000000-0000-0000-0000-000000000000'), VirErrorCode.NO_DOMAIN, 'unknown UUID');
  t.throws(() => conn.getXml(42 as unknown as string), TypeError, 'a non-string domain throws a TypeError at once');
  t.throws(() => conn.blockCopy('x', 'vda', toDiskXml({ path: '/x' }), { bandwidth: -1n }), TypeError, 'negative bandwidth throws');
  t.throws(
    () => conn.blockCopy('x', 'vda', toDiskXml({ path: '/x' }), { granularity: 2 ** 40 }),
    TypeError,
    'granularity above 32 bits throws',
  );
  t.throws(() => conn.getXml('a\0b'), TypeError, 'embedded NUL throws');
  await conn.close();
  await conn.close();
  t.ok(conn.closed, 'close is idempotent');
  await rejectsWith(t, conn.versions(), VirErrorCode.INVALID_CONN, 'call after close');
});

t.test('bogus URI rejects with a libvirt error', async (t) => {
  try {
    await openConnection('bogus+unix:///nowhere');
    t.fail('opened a bogus URI');
  } catch (e) {
    t.ok(e instanceof LibvirtError, 'LibvirtError');
    t.ok((e as LibvirtError).code > 0, `code ${(e as LibvirtError).code}: ${(e as Error).message}`);
  }
});

t.test('copy reaches READY by event, then pivots; guest writes during the copy land on the copy', async (t) => {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 128 }] });
  const disk = dom.disks[0]!;
  await hv.guestWrite(dom, disk.target, { pattern: 0x11, offset: 0, length: 32 * 1024 * 1024 });
  const rec = eventRecorder(conn);
  await rec.ready;

  const dest = `${dom.dir}/pivot-dest.qcow2`;
  // Slow enough that phase 1 is observable and the guest can write into it.
  await conn.blockCopy(dom.name, disk.target, toDiskXml({ path: `${dest}`, format: 'qcow2' }), {
    transientJob: true,
    bandwidth: 20n * MiB,
  });
  const info = await conn.getBlockJobInfo(dom.name, disk.target);
  t.ok(info, 'a job exists');
  t.equal(info!.type, 'copy');
  t.type(info!.cur, 'bigint');
  t.type(info!.end, 'bigint');
  t.equal(info!.bandwidth, 20n * MiB, 'bandwidth reported in bytes/s');
  t.equal(info!.bandwidthSource, 'bytes');
  await hv.guestWrite(dom, disk.target, { pattern: 0x22, offset: 64 * 1024 * 1024, length: 8 * 1024 * 1024 });

  await rejectsWith(t, conn.blockJobAbort(dom.name, disk.target, { pivot: true }), VirErrorCode.BLOCK_COPY_ACTIVE, 'pivot before ready');
  await rejectsWith(
    t,
    conn.blockCopy(dom.name, disk.target, toDiskXml({ path: `${dom.dir}/second.qcow2` }), {}),
    VirErrorCode.BLOCK_COPY_ACTIVE,
    'second copy on a busy disk',
  );

  await conn.blockJobSetSpeed(dom.name, disk.target, 0n);
  t.equal((await conn.getBlockJobInfo(dom.name, disk.target))!.bandwidth, 0n, 'set speed to unlimited');

  const ready = await rec.next(blockJob(dom.name, 'ready'));
  t.match(ready, { kind: 'blockJob', disk: disk.target, type: 'copy', status: 'ready', domain: { uuid: dom.uuid } }, 'READY event');
  t.match(await conn.getXml(dom.name), /<mirror [^>]*ready='yes'/, 'live XML agrees: mirror ready');

  await conn.blockJobAbort(dom.name, disk.target, { pivot: true, async: true });
  await rec.next(blockJob(dom.name, 'completed'));
  const xml = await conn.getXml(dom.name);
  t.match(xml, new RegExp(`<source file='${dest}'`), 'guest now runs on the destination');
  t.notMatch(xml, /<mirror/, 'no mirror left');
  t.equal(await conn.getBlockJobInfo(dom.name, disk.target), null, 'no job left');
  t.equal(
    await hv.readPattern(dest, 'qcow2', { pattern: 0x11, offset: 0, length: 32 * 1024 * 1024 }),
    true,
    'data written before the copy is on the copy',
  );
  t.equal(
    await hv.readPattern(dest, 'qcow2', { pattern: 0x22, offset: 64 * 1024 * 1024, length: 8 * 1024 * 1024 }),
    true,
    'data written during the copy is on the copy',
  );
});

t.test('finish: abort on ready leaves an identical point-in-time copy; raw source', async (t) => {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 64 }] });
  const disk = dom.disks[0]!;
  await hv.guestWrite(dom, disk.target, { pattern: 0x33, offset: 1024 * 1024, length: 16 * 1024 * 1024 });
  const rec = eventRecorder(conn);
  await rec.ready;
  const dest = `${dom.dir}/finish-dest.raw`;
  await conn.blockCopy(dom.name, disk.target, toDiskXml({ path: `${dest}`, format: 'raw' }), {
    transientJob: true,
    granularity: 65536,
    bufSize: 4n * MiB,
  });
  await hv.guestWrite(dom, disk.target, { pattern: 0x44, offset: 40 * 1024 * 1024, length: 4 * 1024 * 1024 });
  await rec.next(blockJob(dom.name, 'ready'));
  await conn.blockJobAbort(dom.name, disk.target);
  t.equal(await conn.getBlockJobInfo(dom.name, disk.target), null, 'no job after finish');
  t.match(await conn.getXml(dom.name), new RegExp(`<source file='${disk.path}'`), 'guest stays on its source');
  t.equal(await hv.compareImages(disk.path, dest), 'identical', 'qemu-img compare: the copy equals the source');
});

t.test('cancel in phase 1', async (t) => {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 256 }] });
  const disk = dom.disks[0]!;
  await hv.guestWrite(dom, disk.target, { pattern: 0x55, offset: 0, length: 128 * 1024 * 1024 });
  const rec = eventRecorder(conn);
  await rec.ready;
  await conn.blockCopy(dom.name, disk.target, toDiskXml({ path: `${dom.dir}/cancel.qcow2`, format: 'qcow2' }), {
    transientJob: true,
    bandwidth: 1n * MiB,
  });
  await conn.blockJobAbort(dom.name, disk.target, { async: true });
  await rec.next(blockJob(dom.name, 'canceled'));
  t.equal(await conn.getBlockJobInfo(dom.name, disk.target), null, 'no job after cancel');
  t.notOk(rec.seen.some(blockJob(dom.name, 'ready')), 'never became ready');
  t.match(await conn.getXml(dom.name), new RegExp(`<source file='${disk.path}'`), 'guest stays on its source');
});

t.test('shallow copy of a disk with a backing file onto a pre-created destination', async (t) => {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64, backing: true }] });
  const disk = dom.disks[0]!;
  t.ok(disk.backingPath, 'the disk has a backing file');
  const dest = `${dom.dir}/shallow.qcow2`;
  await hv.createImage(dest, 'qcow2', 64, { backingPath: disk.backingPath!, backingFormat: 'qcow2' });
  const rec = eventRecorder(conn);
  await rec.ready;
  await conn.blockCopy(dom.name, disk.target, toDiskXml({ path: `${dest}`, format: 'qcow2' }), {
    transientJob: true,
    shallow: true,
    reuseExternal: true,
  });
  await rec.next(blockJob(dom.name, 'ready'));
  await conn.blockJobAbort(dom.name, disk.target, { pivot: true });
  const xml = await conn.getXml(dom.name);
  t.match(xml, new RegExp(`<source file='${dest}'`), 'pivoted onto the shallow copy');
  t.match(xml, new RegExp(`<source file='${disk.backingPath}'`), 'the backing chain is kept');
});

t.test('errors on a running domain: unknown disk', async (t) => {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  await rejectsWith(t, conn.getBlockJobInfo(dom.name, 'vdz'), VirErrorCode.INVALID_ARG, 'unknown disk');
  await rejectsWith(
    t,
    conn.blockCopy(dom.name, 'vdz', toDiskXml({ path: `${dom.dir}/x.qcow2` }), {}),
    VirErrorCode.INVALID_ARG,
    'copy of an unknown disk',
  );
  await rejectsWith(t, conn.blockJobAbort(dom.name, dom.disks[0]!.target), VirErrorCode.INVALID_ARG, 'abort with no job');
});

t.test("getBlockInfo: the disk's capacity and allocation as libvirt (QEMU) reports them", async (t) => {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x21, offset: 0, length: 4 * 1024 * 1024 });
  const info = await conn.getBlockInfo(dom.uuid, 'vda');
  t.equal(info.capacity, 16n << 20n, 'capacity: the virtual size');
  t.ok(info.allocation >= 4n << 20n && info.allocation < 16n << 20n, `allocation: what the qcow2 holds (${info.allocation})`);
  t.ok(info.physical > 0n, 'physical: the file size');
  await rejectsWith(t, conn.getBlockInfo(dom.uuid, 'vdz'), VirErrorCode.INVALID_ARG, 'unknown disk');
});

t.test('lifecycle events and unsubscribe', async (t) => {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const rec = eventRecorder(conn);
  const unsubscribe = await rec.ready;
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  await rec.next((e) => e.kind === 'lifecycle' && e.domain.name === dom.name && e.event === 'started');
  await unsubscribe();
  await unsubscribe();
  const before = rec.seen.length;
  await hv.destroy(dom);
  await new Promise((r) => setTimeout(r, 500));
  t.equal(rec.seen.length, before, 'no events after unsubscribing');
});

t.test('subscribing, unsubscribing and closing repeatedly neither leaks nor crashes', async (t) => {
  const rssBefore = process.memoryUsage().rss;
  for (let i = 0; i < 50; i++) {
    const conn = await openConnection();
    const unsubs = await Promise.all([
      conn.onEvent(() => {}),
      conn.onEvent(() => {
        throw new Error('listener bug');
      }),
    ]);
    if (i % 2 === 0) for (const u of unsubs) await u();
    // Odd rounds close with subscriptions still registered: close must drop them itself.
    await conn.close();
  }
  const grownMiB = (process.memoryUsage().rss - rssBefore) / 1024 / 1024;
  t.ok(grownMiB < 64, `50 open/subscribe/close cycles grew RSS by ${grownMiB.toFixed(1)} MiB`);
});

t.test('libvirt never prints to stderr, even when every call fails', async (t) => {
  const { execFile } = await import('node:child_process');
  const facade = new URL('../../src/libvirt/index.js', import.meta.url).href;
  const script = `
    const { openConnection } = await import(${JSON.stringify(facade)});
    await openConnection('bogus+unix:///nowhere').catch(() => {});
    const c = await openConnection();
    await c.lookupDomain('bctest-no-such').catch(() => {});
    await c.getBlockJobInfo('bctest-no-such', 'vda').catch(() => {});
    await c.close();
    await c.versions().catch(() => {});
    console.log('done');`;
  const r = await new Promise<{ out: string; err: string }>((resolve) =>
    execFile(process.execPath, ['--input-type=module', '-e', script], (_e, out, err) => resolve({ out, err })),
  );
  t.equal(r.out.trim(), 'done');
  t.equal(r.err, '', 'nothing on stderr');
});
