// The commit and pull kinds (src/jobs/kinds/) against the real libvirtd, before the job core
// serves them: virsh takes disk-only snapshots and runs blockcommit / blockpull, as an operator
// would; the kinds' plan names the layers virsh is given, and mismatch, adopted and conclude
// read what libvirt really shows while the job runs and after it ends. The data is checked with
// qemu-io as an independent witness: "completed" and "pivoted" must mean the data is there.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { openConnection, type Connection } from '../../src/libvirt/index.js';
import { findDisk, type DiskInfo } from '../../src/libvirt/disk-xml.js';
import * as commit from '../../src/jobs/kinds/commit/index.js';
import * as pull from '../../src/jobs/kinds/pull/index.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;
const NOW = () => new Date().toISOString();

async function setup(t: Test) {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64, backing: true }] });
  return { conn, dom };
}

async function vda(conn: Connection, name: string): Promise<DiskInfo> {
  const d = findDisk(await conn.getXml(name), 'vda');
  if (!d) throw new Error('no vda');
  return d;
}

async function snapshot(dom: hv.TestDomain, file: string): Promise<string> {
  const path = join(dom.dir, file);
  await hv.virsh('snapshot-create-as', dom.name, '--disk-only', '--no-metadata', '--diskspec', `vda,file=${path}`);
  return path;
}

async function until<T>(what: string, f: () => Promise<T | null | undefined | false>, ms = 120_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms / 1000} s`);
    await sleep(200);
  }
}

const write = (dom: hv.TestDomain, pattern: number, offsetMiB: number, lengthMiB = 8) =>
  hv.guestWrite(dom, 'vda', { pattern, offset: offsetMiB * MiB, length: lengthMiB * MiB });
/** Flushes the guest's disk (QEMU keeps a qcow2's metadata cached after a pull until then), then reads as a witness. */
async function holds(dom: hv.TestDomain, path: string, pattern: number, offsetMiB: number, lengthMiB = 8): Promise<boolean> {
  const alias = await hv.diskAlias(dom, 'vda');
  await hv.virsh('qemu-monitor-command', dom.name, '--hmp', `qemu-io -d ${alias}/virtio-backend "flush"`);
  return hv.readPattern(path, 'qcow2', { pattern, offset: offsetMiB * MiB, length: lengthMiB * MiB });
}

const facts = (disk: DiskInfo | undefined, sawEnd: boolean) => ({ disk, sawEnd, why: 'integration' });

t.test('a commit below the active layer: planned by index and path, adopted while it runs, completed by the chain', async (t) => {
  const { conn, dom } = await setup(t);
  const base0 = dom.disks[0]!.backingPath!;
  await write(dom, 0x11, 2);
  const s1 = await snapshot(dom, 's1.qcow2');
  await write(dom, 0x22, 12);
  await snapshot(dom, 's2.qcow2');
  const start = await vda(conn, dom.name);
  t.same(
    [start.sourcePath, ...start.backingPaths].map((p) => p!.replace(`${dom.dir}/`, '')),
    ['s2.qcow2', 's1.qcow2', 'disk0.qcow2', 'base0.qcow2'],
  );
  const s1Index = start.backing![0]!.index!;
  const plan = await commit.plan({ disk: 'vda', top: `vda[${s1Index}]`, base: base0 }, start);
  t.match(plan, { active: false, top: { path: s1 }, base: { path: base0 } });
  const job = {
    kind: 'commit' as const,
    disk: 'vda',
    state: 'copying',
    owner: 'agent' as const,
    ...commit.planFields('commit', start, plan),
  };

  t.notOk(await holds(dom, base0, 0x22, 12), 'not in the base before the commit (the witness can tell)');
  await hv.virsh(
    'blockcommit',
    dom.name,
    'vda',
    '--top',
    `vda[${plan.top.index}]`,
    '--base',
    `vda[${plan.base!.index}]`,
    '--bandwidth',
    '1',
  );
  const info = await conn.getBlockJobInfo(dom.name, 'vda');
  t.equal(info?.type, 'commit', 'libvirt runs a commit');
  const running = await vda(conn, dom.name);
  t.equal(running.mirror, null, 'no mirror while a commit below the active layer runs');
  t.equal(commit.mismatch(job, running, info), null, 'the job is what libvirt runs');
  const found = commit.adopted(dom, running, info, NOW())!;
  t.match(found, { kind: 'commit', state: 'copying', layers: { top: null, base: null } });
  t.equal(commit.mismatch(found, running, info), null);

  await hv.virsh('blockjob', dom.name, 'vda', '--bandwidth', '0');
  await until('the commit ends', async () => (await conn.getBlockJobInfo(dom.name, 'vda')) === null);
  const done = await vda(conn, dom.name);
  t.match(commit.conclude(job, facts(done, true)), { state: 'completed', outcome: 'observed' });
  t.match(commit.conclude(found, facts(done, false)), { state: 'completed', evidence: /merged into .*base0\.qcow2/ });
  t.same(
    [done.sourcePath, ...done.backingPaths].map((p) => p!.replace(`${dom.dir}/`, '')),
    ['s2.qcow2', 'base0.qcow2'],
  );
  t.ok(await holds(dom, base0, 0x22, 12), "s1's data is in the base");
  t.ok(await holds(dom, base0, 0x11, 2), "disk0's data is in the base");
});

t.test('an active commit: copying, ready, pivoted onto the base; an aborted one is cancelled', async (t) => {
  const { conn, dom } = await setup(t);
  const base0 = dom.disks[0]!.backingPath!;
  await snapshot(dom, 's1.qcow2');
  await write(dom, 0x33, 24, 16);
  const start = await vda(conn, dom.name);
  const plan = await commit.plan({ disk: 'vda' }, start);
  t.match(plan, { active: true, top: { path: join(dom.dir, 's1.qcow2') }, base: { path: base0 } });
  const job = (state: string) => ({
    kind: 'activeCommit' as const,
    disk: 'vda',
    state,
    owner: 'agent' as const,
    ...commit.planFields('activeCommit', start, plan),
  });

  // Aborted before ready: the chain as it was.
  await hv.virsh('blockcommit', dom.name, 'vda', '--active', '--bandwidth', '1');
  const copying = await vda(conn, dom.name);
  const info = await conn.getBlockJobInfo(dom.name, 'vda');
  t.equal(info?.type, 'activeCommit');
  t.match(copying.mirror, { job: 'active-commit', path: base0, index: plan.base!.index });
  t.equal(commit.mismatch(job('copying'), copying, info), null);
  t.match(commit.adopted(dom, copying, info, NOW()), { kind: 'activeCommit', state: 'copying', layers: { base: { path: base0 } } });
  t.match(commit.conclude(job('copying'), facts(copying, false)), { state: null }, 'still merging');
  await hv.virsh('blockjob', dom.name, 'vda', '--abort');
  await until('the abort ends', async () => (await conn.getBlockJobInfo(dom.name, 'vda')) === null);
  t.match(commit.conclude(job('cancelling'), facts(await vda(conn, dom.name), true)), { state: 'cancelled', outcome: 'observed' });

  // Again, to ready and the pivot.
  await hv.virsh('blockcommit', dom.name, 'vda', '--active');
  const ready = await until('ready', async () => {
    const d = await vda(conn, dom.name);
    return d.mirror?.ready === 'yes' ? d : null;
  });
  const readyInfo = await conn.getBlockJobInfo(dom.name, 'vda');
  t.equal(commit.mismatch(job('ready'), ready, readyInfo), null);
  t.match(commit.adopted(dom, ready, readyInfo, NOW()), { state: 'ready' });
  t.match(commit.conclude(job('pivoting'), facts(await vda(conn, dom.name), false)), { state: null }, 'not pivoted on request alone');
  await hv.virsh('blockjob', dom.name, 'vda', '--pivot');
  await until('the pivot ends', async () => (await conn.getBlockJobInfo(dom.name, 'vda')) === null);
  const pivoted = await vda(conn, dom.name);
  t.equal(pivoted.sourcePath, base0, 'the guest runs on the base');
  t.match(commit.conclude(job('pivoting'), facts(pivoted, true)), { state: 'pivoted', outcome: 'observed' });
  t.ok(await holds(dom, base0, 0x33, 24, 16), "the overlay's data is in the base");
});

t.test('a pull down to a base, then a full pull: completed by the chain', async (t) => {
  const { conn, dom } = await setup(t);
  const base0 = dom.disks[0]!.backingPath!;
  await snapshot(dom, 's1.qcow2');
  await write(dom, 0x44, 4, 16);
  const s2 = await snapshot(dom, 's2.qcow2');
  const start = await vda(conn, dom.name);
  const plan = await pull.plan({ disk: 'vda', base: base0 }, start);
  t.match(plan, { top: { path: s2 }, base: { path: base0 } });
  const job = { kind: 'pull' as const, disk: 'vda', state: 'copying', owner: 'agent' as const, ...commit.planFields('pull', start, plan) };
  t.equal(job.destination.path, s2, 'the data lands in the active layer');

  await hv.virsh('blockpull', dom.name, 'vda', '--base', `vda[${plan.base!.index}]`, '--bandwidth', '1');
  const info = await conn.getBlockJobInfo(dom.name, 'vda');
  t.equal(info?.type, 'pull');
  const running = await vda(conn, dom.name);
  t.equal(pull.mismatch(job, running, info), null);
  t.match(commit.mismatch({ ...job, kind: 'commit' }, running, info), /runs a pull/, 'not a commit');
  const found = pull.adopted(dom, running, info, NOW())!;
  t.match(found, { kind: 'pull', layers: { base: null } });
  await hv.virsh('blockjob', dom.name, 'vda', '--bandwidth', '0');
  await until('the pull ends', async () => (await conn.getBlockJobInfo(dom.name, 'vda')) === null);
  const done = await vda(conn, dom.name);
  t.match(pull.conclude(job, facts(done, true)), { state: 'completed', outcome: 'observed' });
  t.match(pull.conclude(found, facts(done, false)), { state: 'completed', evidence: /pulled down to .*base0\.qcow2/ });
  t.same(done.backingPaths, [base0]);
  t.ok(await holds(dom, s2, 0x44, 4, 16), "s1's data is in the active layer");

  const full = await pull.plan({ disk: 'vda' }, done);
  const fullJob = {
    kind: 'pull' as const,
    disk: 'vda',
    state: 'copying',
    owner: 'agent' as const,
    ...commit.planFields('pull', done, full),
  };
  await hv.virsh('blockpull', dom.name, 'vda', '--wait');
  const flat = await vda(conn, dom.name);
  t.same(flat.backingPaths, [], 'no backing layer');
  t.match(pull.conclude(fullJob, facts(flat, true)), { state: 'completed' });
  t.match(pull.conclude(job, facts(flat, true)), { state: 'failed' }, 'the first pull (to a base) is not what this chain shows');
  t.ok(await holds(dom, s2, 0x0b, 0, 1), "the base's data is in the active layer");
});
