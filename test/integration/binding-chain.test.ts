// The binding's chain calls against the real libvirtd: an external disk-only snapshot puts an
// overlay on top of the disk, an active commit reaches ready and pivots back onto the base, a
// pull flattens a two-layer chain. qemu-img, qemu-io and virsh are the independent witnesses.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { openConnection, LibvirtError, type SnapshotXml } from '../../src/libvirt/index.js';
import * as hv from '../../harness/hypervisor.js';
import { blockJob, eventRecorder } from '../helpers/events.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** The <disk> element of `target` in the live XML (virsh as the witness). */
async function diskElement(dom: hv.TestDomain, target: string): Promise<string> {
  const xml = await hv.liveXml(dom);
  const d = [...xml.matchAll(/<disk\b[\s\S]*?<\/disk>/g)].map((m) => m[0]).find((x) => x.includes(`<target dev='${target}'`));
  if (!d) throw new Error(`no disk ${target} in ${dom.name}`);
  return d;
}

/** The files of the disk's chain, top first, from the live XML. */
const chainFiles = (disk: string) => [...disk.matchAll(/<source file='([^']*)'/g)].map((m) => m[1]!);

/** qemu-img's view of an image's backing file (null: none). */
async function backingOf(path: string): Promise<string | null> {
  const out = await run('qemu-img', ['info', '-U', '--output=json', path]);
  return (JSON.parse(out.stdout) as { 'backing-filename'?: string })['backing-filename'] ?? null;
}

/** Flushes the guest's view of the disk, so that an outside reader (-U) sees QEMU's metadata. */
async function guestFlush(dom: hv.TestDomain, target: string): Promise<void> {
  const alias = await hv.diskAlias(dom, target);
  await hv.virsh('qemu-monitor-command', dom.name, '--hmp', `qemu-io -d ${alias}/virtio-backend "flush"`);
}

function snapshotXml(overlays: Record<string, string>, untouched: string[] = []): SnapshotXml {
  const disks = Object.entries(overlays).map(
    ([disk, path]) => `<disk name='${disk}' snapshot='external' type='file'><driver type='qcow2'/><source file='${path}'/></disk>`,
  );
  const rest = untouched.map((disk) => `<disk name='${disk}' snapshot='no'/>`);
  return `<domainsnapshot><disks>${[...disks, ...rest].join('')}</disks></domainsnapshot>` as SnapshotXml;
}

async function connect(t: Test) {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  return conn;
}

t.test('argument checks throw TypeErrors at once', async (t) => {
  const conn = await connect(t);
  t.throws(() => conn.blockCommit('x', 'vda', { base: 42 as unknown as string }), TypeError, 'a non-string base');
  t.throws(() => conn.blockCommit('x', 'vda', { top: '' }), TypeError, 'an empty top');
  t.throws(() => conn.blockCommit('x', 'vda', { bandwidth: -1n }), TypeError, 'a negative bandwidth');
  t.throws(() => conn.blockPull('x', 'vda', { base: 'a\0b' }), TypeError, 'a NUL in base');
  t.throws(() => conn.snapshotCreateXml('x', '' as SnapshotXml), TypeError, 'an empty snapshot XML');
  t.throws(() => conn.snapshotCreateXml('x', '<x/>' as SnapshotXml, { quiesce: 1 as unknown as boolean }), TypeError, 'a non-boolean flag');
});

t.test('external disk-only snapshot, then an active commit pivots back onto the base', async (t) => {
  const conn = await connect(t);
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 64 },
      { format: 'qcow2', sizeMiB: 16 },
    ],
  });
  const [vda, vdb] = [dom.disks[0]!, dom.disks[1]!];
  const rec = eventRecorder(conn);
  await rec.ready;
  await hv.guestWrite(dom, vda.target, { pattern: 0x11, offset: 0, length: 4 * MiB });

  const overlay = `${dom.dir}/vda-overlay.qcow2`;
  const name = await conn.snapshotCreateXml(dom.name, snapshotXml({ vda: overlay }, ['vdb']), {
    diskOnly: true,
    noMetadata: true,
    atomic: true,
  });
  t.type(name, 'string', 'resolves to the snapshot name');
  t.same(chainFiles(await diskElement(dom, 'vda')), [overlay, vda.path], 'live XML: the overlay on top of the old image');
  t.same(chainFiles(await diskElement(dom, 'vdb')), [vdb.path], 'the disk marked snapshot=no is untouched');
  t.equal(await backingOf(overlay), vda.path, 'qemu-img: the overlay is backed by the old image');
  t.notMatch(await hv.virsh('snapshot-list', dom.name, '--name'), /\S/, 'no snapshot metadata kept');

  // Writes now land in the overlay, not in the base.
  await hv.guestWrite(dom, vda.target, { pattern: 0x22, offset: 8 * MiB, length: 4 * MiB });
  t.notOk(
    await hv.readPattern(vda.path, 'qcow2', { pattern: 0x22, offset: 8 * MiB, length: 4 * MiB }),
    'the base does not hold the new write yet',
  );

  await conn.blockCommit(dom.name, vda.target, { active: true, bandwidth: 0n });
  const ev = await rec.next(blockJob(dom.name, 'ready'));
  t.match(ev, { kind: 'blockJob', disk: 'vda', type: 'activeCommit', status: 'ready' }, 'BLOCK_JOB_2 ready, type activeCommit');
  const info = await conn.getBlockJobInfo(dom.name, vda.target);
  t.equal(info?.type, 'activeCommit', 'getBlockJobInfo: type activeCommit');
  await conn.blockJobAbort(dom.name, vda.target, { pivot: true });
  t.same(chainFiles(await diskElement(dom, 'vda')), [vda.path], 'after the pivot the disk is back on the base, alone');
  t.equal(await conn.getBlockJobInfo(dom.name, vda.target), null, 'no job left');
  t.ok(await hv.readPattern(vda.path, 'qcow2', { pattern: 0x11, offset: 0, length: 4 * MiB }), 'the base holds the write from before');
  t.ok(
    await hv.readPattern(vda.path, 'qcow2', { pattern: 0x22, offset: 8 * MiB, length: 4 * MiB }),
    'the base holds the write into the overlay',
  );
});

t.test('a second snapshot of a disk in a block job is refused with libvirt code and message', async (t) => {
  const conn = await connect(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16, backing: true }] });
  await conn.blockPull(dom.name, 'vda', { bandwidth: 1024n });
  t.match(await conn.getBlockJobInfo(dom.name, 'vda'), { type: 'pull', bandwidth: 1024n }, 'a pull at the bandwidth asked (bytes/s)');
  try {
    await conn.snapshotCreateXml(dom.name, snapshotXml({ vda: `${dom.dir}/busy.qcow2` }), {
      diskOnly: true,
      noMetadata: true,
      atomic: true,
    });
    t.fail('a snapshot of a disk in a block job succeeded');
  } catch (e) {
    t.ok(e instanceof LibvirtError, `LibvirtError: ${(e as Error).message}`);
    t.ok((e as LibvirtError).code > 0, 'carries libvirt code');
    t.type((e as LibvirtError).domain, 'number', 'carries libvirt error domain');
  }
  await conn.blockJobAbort(dom.name, 'vda');
});

t.test('a commit of a disk without a backing chain: a LibvirtError', async (t) => {
  const conn = await connect(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  try {
    await conn.blockCommit(dom.name, 'vda', { active: true });
    t.fail('committed a one-layer chain');
  } catch (e) {
    t.ok(e instanceof LibvirtError, `LibvirtError: ${(e as Error).message}`);
  }
});

t.test('a pull flattens a two-layer chain into one layer with the same data', async (t) => {
  const conn = await connect(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32, backing: true }] });
  const vda = dom.disks[0]!;
  const rec = eventRecorder(conn);
  await rec.ready;
  t.same(chainFiles(await diskElement(dom, 'vda')), [vda.path, vda.backingPath], 'two layers before');
  await hv.guestWrite(dom, vda.target, { pattern: 0x33, offset: 4 * MiB, length: 2 * MiB });

  await conn.blockPull(dom.name, vda.target, { bandwidth: 0n });
  const ev = await rec.next(blockJob(dom.name, 'completed'));
  t.match(ev, { type: 'pull', disk: 'vda', status: 'completed' }, 'BLOCK_JOB_2 completed, type pull');
  t.same(chainFiles(await diskElement(dom, 'vda')), [vda.path], 'one layer after');
  t.equal(await backingOf(vda.path), null, 'qemu-img: no backing file left');
  await guestFlush(dom, vda.target);
  // harness: the base image holds 0x0b over its first MiB.
  t.ok(await hv.readPattern(vda.path, 'qcow2', { pattern: 0x0b, offset: 0, length: MiB }), "the base's data was pulled up");
  t.ok(await hv.readPattern(vda.path, 'qcow2', { pattern: 0x33, offset: 4 * MiB, length: 2 * MiB }), "the top's data is kept");
});

t.test("a commit below the top, named by libvirt's vda[N] indexes, shortens the chain", async (t) => {
  const conn = await connect(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16, backing: true }] });
  const vda = dom.disks[0]!;
  const rec = eventRecorder(conn);
  await rec.ready;
  const overlay = `${dom.dir}/top.qcow2`;
  await conn.snapshotCreateXml(dom.name, snapshotXml({ vda: overlay }), { diskOnly: true, noMetadata: true, atomic: true });
  const disk = await diskElement(dom, 'vda');
  t.same(chainFiles(disk), [overlay, vda.path, vda.backingPath], 'three layers');
  // libvirt's index of each layer, from the live XML (not the depth).
  const indexOf = (path: string) =>
    new RegExp(`<backingStore type='file' index='(\\d+)'>\\s*<format [^>]*/>\\s*<source file='${path}'`).exec(disk)?.[1];
  const mid = indexOf(vda.path);
  const base = indexOf(vda.backingPath!);
  t.ok(mid && base, `indexes: middle vda[${mid}], base vda[${base}]`);
  await conn.blockCommit(dom.name, 'vda', { top: `vda[${mid}]`, base: `vda[${base}]` });
  const ev = await rec.next(blockJob(dom.name, 'completed'));
  t.match(ev, { type: 'commit', disk: 'vda' }, 'BLOCK_JOB_2 completed, type commit');
  t.same(chainFiles(await diskElement(dom, 'vda')), [overlay, vda.backingPath], 'the middle layer is gone from the chain');
  t.equal(await backingOf(overlay), vda.backingPath, 'qemu-img: the top is now backed by the base');
});
