// deleteMerged (src/jobs/cleanup.ts, cleanup-files.ts, kinds/commit/merged.ts) on a stub
// libvirt: which layers leave the chain at which end, what may be deleted, that the intent is
// journaled before the first unlink, and that a resumed cleanup neither deletes twice nor
// deletes a file whose identity changed.
import t from 'tap';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Job } from '../../src/generated/api.js';
import type { Connection } from '../../src/libvirt/index.js';
import { Cleanup, cleanupPromise } from '../../src/jobs/cleanup.js';
import type { JobContext } from '../../src/jobs/context.js';
import { track } from '../../src/jobs/job.js';
import { mergedLayers } from '../../src/jobs/kinds/commit/merged.js';
import { KINDS } from '../../src/jobs/kinds/index.js';
import { silentLogger } from '../../src/log.js';
import { planCommit } from '../../src/jobs/kinds/commit/index.js';
import { planPull } from '../../src/jobs/kinds/pull/index.js';
import { disk, EXP, jobOf } from './kinds-fixture.js';

t.test('the layers that leave the chain, by kind and end', async (t) => {
  const snap2 = disk('snap2'); // snap2[5] → snap1[4] → base[3]
  const active = jobOf('activeCommit', planCommit({ disk: 'vda' }, snap2), snap2);
  t.same(
    mergedLayers('activeCommit', 'pivoted', active.layers)!.map((l) => l.path),
    [`${EXP}/snap2.qcow2`, `${EXP}/snap1.qcow2`],
    'an active commit pivoted: the old top and the layers between top and base',
  );
  for (const end of ['finished', 'cancelled', 'failed']) t.same(mergedLayers('activeCommit', end, active.layers), [], `${end}: none`);
  const start = disk('commit-start'); // snap1[4] → top[1] → mid[2] → base[3]
  const commit = jobOf('commit', planCommit({ disk: 'vda', top: 'vda[1]', base: 'vda[3]' }, start), start);
  t.same(
    mergedLayers('commit', 'completed', commit.layers)!.map((l) => l.path),
    [`${EXP}/top.qcow2`, `${EXP}/mid.qcow2`],
    'a commit below the top: top and the layers between',
  );
  const pstart = disk('pull-start'); // snap3[6] → snap1[4] → base[3]
  const pull = jobOf('pull', planPull({ disk: 'vda', base: 'vda[3]' }, pstart), pstart);
  t.same(
    mergedLayers('pull', 'completed', pull.layers)!.map((l) => l.path),
    [`${EXP}/snap1.qcow2`],
    'a pull: between active and base',
  );
  const full = jobOf('pull', planPull({ disk: 'vda' }, pstart), pstart);
  t.same(
    mergedLayers('pull', 'completed', full.layers)!.map((l) => l.path),
    [`${EXP}/snap1.qcow2`, `${EXP}/base.qcow2`],
    'a full pull: every layer below the active one',
  );
  t.equal(mergedLayers('pull', 'completed', { top: null, base: null }), null, 'layers unknown (adopted): null');
  // A copy's cleanup is removeSource (deleteMerged is refused for it by name): what it takes out of use.
  t.equal(KINDS.copy.cleanupOption, 'removeSource', "a copy's cleanup is named removeSource");
  t.equal(KINDS.commit.cleanupOption, 'deleteMerged', "a commit's is deleteMerged");
  const L = (path: string, index: number) => ({ path, format: 'qcow2', index });
  const chain = [L('/c/top', 3), L('/c/mid', 2), L('/c/base', 1)];
  const copy = (base: ReturnType<typeof L> | null, c: typeof chain | undefined) =>
    ({ kind: 'copy', layers: { top: chain[0], base, ...(c ? { chain: c } : {}) } }) as unknown as Job;
  t.same(
    KINDS.copy.mergedPaths!(copy(null, chain), 'pivoted'),
    ['/c/top', '/c/mid', '/c/base'],
    'a full copy pivoted: the whole old chain',
  );
  t.same(KINDS.copy.mergedPaths!(copy(chain[1]!, chain), 'pivoted'), ['/c/top'], 'a shallow copy pivoted: the old top only');
  t.same(KINDS.copy.mergedPaths!(copy(null, chain), 'finished'), [], 'a finished copy: nothing');
  t.same(KINDS.copy.mergedPaths!(copy(null, chain), 'cancelled'), [], 'a cancelled copy: nothing');
  t.equal(KINDS.copy.mergedPaths!(copy(null, undefined), 'pivoted'), null, 'chain not recorded (adopted): null');
});

/** A terminal active commit over files in `dir`, a stub libvirt whose domains are `doms`. */
function harness(dir: string, paths: string[], doms: Array<{ name: string; xml: string }> = []) {
  const job = {
    jobId: 'j1',
    kind: 'activeCommit',
    owner: 'agent',
    state: 'pivoted',
    disk: 'vda',
    layers: {
      top: { path: paths[0]!, format: 'qcow2', index: 5 },
      base: { path: join(dir, 'base.qcow2'), format: 'qcow2', index: 3 },
      chain: [
        ...paths.map((p, i) => ({ path: p, format: 'qcow2', index: 5 - i })),
        { path: join(dir, 'base.qcow2'), format: 'qcow2', index: 3 },
      ],
    },
    ...cleanupPromise(true),
  } as unknown as Job;
  const entry = track({ job, destinationXml: '' });
  const saved: Array<{ cleanup: NonNullable<Job['cleanup']>; present: boolean[] }> = [];
  const conn = {
    listDomains: async () => doms.map((d, i) => ({ name: d.name, uuid: `u${i}`, id: -1, active: false, persistent: true })),
    getXml: async (uuid: string) => doms[Number(uuid.slice(1))]!.xml,
  } as unknown as Connection;
  const ctx = {
    conn,
    log: silentLogger,
    entries: new Map([['j1', entry]]),
    recorder: {
      persist: async () => {
        saved.push({ cleanup: structuredClone(job.cleanup!), present: paths.map((p) => existsSync(p)) });
      },
      emitChanged: () => {},
    },
  } as unknown as JobContext;
  const cleanup = new Cleanup(ctx, { roots: [dir], trustedOwners: new Set() });
  return { job, entry, saved, cleanup };
}

const domXml = (file: string) =>
  `<domain><name>other</name><devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${file}'/><target dev='vda' bus='virtio'/></disk></devices></domain>`;

t.test('the intent is journaled before the first unlink; kept files say why', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cleanup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [top, mid, shared, link] = ['top', 'mid', 'shared', 'link'].map((n) => join(dir, `${n}.qcow2`)) as [string, string, string, string];
  for (const f of [top, mid, shared]) writeFileSync(f, 'x');
  symlinkSync(mid, link);
  const outside = join(tmpdir(), `cleanup-outside-${process.pid}.qcow2`);
  writeFileSync(outside, 'x');
  t.teardown(() => rmSync(outside, { force: true }));
  const { job, entry, saved, cleanup } = harness(dir, [top, mid, shared, link, outside], [{ name: 'other', xml: domXml(shared) }]);
  cleanup.afterEnd(entry);
  await entry.cleaning;
  t.equal(saved[0]!.cleanup.state, 'deleting', 'first write: the intent');
  t.same(
    saved[0]!.cleanup.files!.map((f) => f.path),
    [top, mid],
    'the files to delete, with their identities',
  );
  t.same(saved[0]!.present.slice(0, 2), [true, true], 'journaled while both still exist');
  t.match(job.cleanup, {
    state: 'done',
    removed: [top, mid],
    kept: [
      { path: shared, reason: /^used by domain other \(/ },
      { path: link, reason: /symbolic link/ },
      { path: outside, reason: /not under the destination policy's roots/ },
    ],
  });
  t.notOk(existsSync(top) || existsSync(mid), 'deleted');
  t.ok(existsSync(shared) && existsSync(outside), 'kept');
  t.equal(job.cleanup!.files, undefined, 'no intent left');
});

t.test('a cleanup that could not read every domain is tried again, and then done', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cleanup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const top = join(dir, 'top.qcow2');
  writeFileSync(top, 'x');
  const { job, entry, cleanup } = harness(dir, [top]);
  const conn = (cleanup as unknown as { ctx: JobContext }).ctx.conn as unknown as { listDomains: () => Promise<unknown> };
  const list = conn.listDomains;
  conn.listDomains = async () => {
    throw new Error('libvirtd did not answer');
  };
  cleanup.afterEnd(entry);
  await entry.cleaning;
  t.equal(job.cleanup!.state, 'pending', 'failed: still pending');
  t.ok(existsSync(top), 'nothing deleted');
  conn.listDomains = list;
  cleanup.resumeAll();
  await entry.cleaning;
  t.match(job.cleanup, { state: 'done', removed: [top] }, 'tried again: done');
  t.notOk(existsSync(top));
});

t.test('resumed after a crash: a file already gone is removed, a replaced one kept', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cleanup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'sub'), { mode: 0o755 });
  const [gone, replaced, kept] = ['gone', 'replaced', 'sub/kept'].map((n) => join(dir, `${n}.qcow2`)) as [string, string, string];
  for (const f of [replaced, kept]) writeFileSync(f, 'x');
  const { job, entry, cleanup } = harness(dir, [gone, replaced, kept]);
  const id = (p: string) => `${lstatSync(p).dev}:${lstatSync(p).ino}`;
  const keptId = id(kept);
  // The journal as a crash left it: the intent written, `gone` unlinked before its removal was recorded.
  job.cleanup = {
    deleteMerged: true,
    state: 'deleting',
    files: [
      { path: gone, id: '1:1' },
      { path: replaced, id: '1:2' },
      { path: kept, id: keptId },
    ],
    removed: [],
    kept: [],
  };
  cleanup.resumeAll();
  await entry.cleaning;
  t.match(job.cleanup, { state: 'done', removed: [gone, kept], kept: [{ path: replaced, reason: /identity changed/ }] });
  t.ok(existsSync(replaced), 'a file that is not the one chosen stays');
  t.notOk(existsSync(kept));
});

t.test('a job that ended otherwise, or promised nothing, deletes nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cleanup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const top = join(dir, 'top.qcow2');
  writeFileSync(top, 'x');
  const a = harness(dir, [top]);
  a.job.state = 'cancelled';
  a.cleanup.afterEnd(a.entry);
  await a.entry.cleaning;
  t.match(a.job.cleanup, { state: 'done', removed: [], kept: [] });
  const b = harness(dir, [top]);
  delete b.job.cleanup;
  b.cleanup.afterEnd(b.entry);
  t.equal(b.entry.cleaning, undefined, 'no cleanup started');
  t.ok(existsSync(top));
});
