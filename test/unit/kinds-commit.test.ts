// The commit and active-commit kinds (src/jobs/kinds/commit/) on the XML libvirt 9.0 wrote
// during real commits on this host (test/fixtures/chain-*.xml; see kinds-fixture.ts): which
// layers a call addresses, whether what libvirt runs is the job's, how it ended, and the job
// for a commit found running.
import t, { type Test } from 'tap';
import { linkSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentError } from '../../src/errors.js';
import type { DiskInfo } from '../../src/libvirt/disk-xml.js';
import { adopted, conclude, mismatch, plan, planCommit, planFields, samePlan, type ChainJob } from '../../src/jobs/kinds/commit/index.js';
import { disk, EXP, facts, info, jobOf } from './kinds-fixture.js';
import { rejects } from '../helpers/rejects.js';

const NOW = '2026-12-07T04:30:00.000Z';
const DOM = { name: 'kindsexp-1', uuid: '1ac07b93-2a6f-4607-aba7-3dfc55532720' };

function refused(t: Test, fn: () => unknown, name: string, msg: string, match?: RegExp) {
  try {
    fn();
    t.fail(`${msg}: expected ${name}, nothing thrown`);
  } catch (e) {
    t.ok(e instanceof AgentError && e.errorName === name, `${msg}: ${name} (got ${(e as AgentError).errorName}: ${(e as Error).message})`);
    if (match) t.match((e as Error).message, match, `${msg}: the message says why`);
  }
}

const layer = (name: string, index: number | null, format: string | null = 'qcow2') => ({ path: `${EXP}/${name}`, format, index });

t.test('plan: defaults as virsh (active commit into the deepest layer; shallow: right below top)', async (t) => {
  const snap2 = disk('snap2');
  const p = planCommit({ disk: 'vda' }, snap2);
  t.same(p.top, layer('snap2.qcow2', 5), 'top: the active layer, with its own index');
  t.same(p.base, layer('base.qcow2', 3), 'base: the deepest layer');
  t.equal(p.active, true);
  t.same(
    p.chain.map((l) => l.index),
    [5, 4, 3],
  );
  const shallow = planCommit({ disk: 'vda', shallow: true }, snap2);
  t.same(shallow.base, layer('snap1.qcow2', 4), 'shallow: the layer right below top');
  t.equal(shallow.active, true);
  const f = planFields('activeCommit', snap2, p);
  t.same(f.source, { path: `${EXP}/snap2.qcow2`, format: 'qcow2' }, 'source: the active layer at start');
  t.same(f.destination, { path: `${EXP}/base.qcow2`, format: 'qcow2', type: 'file' }, 'destination: the base');
  t.same(f.layers, { top: p.top, base: p.base, chain: p.chain });
});

t.test('plan: vda[N] is libvirt’s index, not the depth; paths by spelling', async (t) => {
  const start = disk('commit-start'); // snap1[4] → top[1] → mid[2] → base[3]
  const p = planCommit({ disk: 'vda', top: 'vda[1]', base: 'vda[3]' }, start);
  t.same(p.top, layer('top.qcow2', 1), 'vda[1] is top.qcow2, two layers down, not the layer at depth 1');
  t.same(p.base, layer('base.qcow2', 3));
  t.equal(p.active, false, 'a commit below the active layer');
  t.same(planCommit({ disk: 'vda', top: 'vda[4]' }, start).active, true, 'vda[4] is the active layer: an active commit');
  const byPath = planCommit({ disk: 'vda', top: `${EXP}/mid.qcow2`, base: `${EXP}/./base.qcow2` }, start);
  t.same([byPath.top.index, byPath.base!.index], [2, 3], 'paths compared as normalized absolute paths');
  t.same(planCommit({ disk: 'vda', top: 'vda[1]', shallow: true }, start).base, layer('mid.qcow2', 2), 'shallow below a given top');
  const raw = disk('raw-acommit-ready');
  const rawPlan = planCommit({ disk: 'vda' }, raw);
  t.same(planFields('activeCommit', raw, rawPlan).destination, { path: `${EXP}/p-base.raw`, format: 'raw', type: 'file' }, 'a raw base');
});

t.test('plan: names that are not layers of the disk, and impossible pairs', async (t) => {
  const start = disk('commit-start');
  refused(t, () => planCommit({ disk: 'vda', top: 'vda[9]' }, start), 'notFound', 'no such index', /no layer with index 9/);
  refused(t, () => planCommit({ disk: 'vda', base: 'vdb[3]' }, start), 'notFound', "another disk's name", /disk vdb, not of disk vda/);
  refused(t, () => planCommit({ disk: 'vda', base: 'base.qcow2' }, start), 'notFound', 'a relative path', /neither an absolute path/);
  refused(
    t,
    () => planCommit({ disk: 'vda', base: '/var/tmp/other.qcow2' }, start),
    'notFound',
    'a path not in the chain',
    /not a layer of disk vda/,
  );
  refused(t, () => planCommit({ disk: 'vda', top: 'vda[2]', base: 'vda[1]' }, start), 'invalidState', 'base above top', /not below top/);
  refused(t, () => planCommit({ disk: 'vda', top: 'vda[2]', base: 'vda[2]' }, start), 'invalidState', 'base is top', /not below top/);
  refused(t, () => planCommit({ disk: 'vda', top: 'vda[3]' }, start), 'invalidState', 'top is the deepest', /nothing below it/);
  refused(t, () => planCommit({ disk: 'vda', shallow: true, base: 'vda[3]' }, start), 'unsupported', 'shallow with base', /exclude/);
  refused(t, () => planCommit({ disk: 'vda' }, disk('raw-pivoted')), 'invalidState', 'a one-layer disk', /no backing layer/);
  refused(t, () => planCommit({ disk: 'vda' }, { ...disk('snap2'), device: 'cdrom' }), 'unsupported', 'a cdrom');
  const volumeBase: DiskInfo = {
    ...disk('snap2'),
    backing: [
      { index: 4, path: `${EXP}/snap1.qcow2`, format: 'qcow2', type: 'file', volume: null },
      { index: 3, path: null, format: 'qcow2', type: 'volume', volume: { pool: 'p', volume: 'v' } },
    ],
  };
  refused(t, () => planCommit({ disk: 'vda' }, volumeBase), 'unsupported', 'a base with no path', /volume layer/);
  t.equal(planCommit({ disk: 'vda', base: 'vda[4]' }, volumeBase).base!.index, 4, 'a volume below base does not matter');
});

t.test('plan: a path names a layer by identity (hard link, symlinked directory), as the destination policy compares files', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kinds-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const f of ['top.qcow2', 'base.qcow2', 'other.qcow2']) writeFileSync(join(dir, f), f);
  linkSync(join(dir, 'base.qcow2'), join(dir, 'base-link.qcow2'));
  symlinkSync(dir, join(dir, 'via'));
  const d: DiskInfo = {
    target: 'vda',
    device: 'disk',
    type: 'file',
    sourcePath: join(dir, 'top.qcow2'),
    format: 'qcow2',
    mirror: null,
    backingPaths: [join(dir, 'base.qcow2')],
    backing: [{ index: 7, path: join(dir, 'base.qcow2'), format: 'qcow2', type: 'file', volume: null }],
    index: 8,
  };
  t.equal((await plan({ disk: 'vda', base: join(dir, 'base-link.qcow2') }, d)).base!.index, 7, 'a hard link to the base');
  t.equal((await plan({ disk: 'vda', base: join(dir, 'via', 'base.qcow2') }, d)).base!.index, 7, 'through a symlinked directory');
  t.equal((await plan({ disk: 'vda', top: join(dir, 'via', 'top.qcow2') }, d)).active, true, 'top through a symlink');
  await rejects(t, plan({ disk: 'vda', base: join(dir, 'other.qcow2') }, d), 'notFound', 'another file');
  await rejects(t, plan({ disk: 'vda', base: join(dir, 'missing.qcow2') }, d), 'notFound', 'no such file');
  t.equal(planCommit({ disk: 'vda', base: join(dir, 'base-link.qcow2') }, d, () => [1]).base!.index, 7, 'plan is pure given a matcher');
});

const activeJob = (state = 'copying', shallow = false) => {
  const snap2 = disk('snap2');
  return jobOf('activeCommit', planCommit({ disk: 'vda', shallow }, snap2), snap2, state);
};
const belowJob = (state = 'copying', top = 'vda[1]', base = 'vda[3]') => {
  const start = disk('commit-start');
  return jobOf('commit', planCommit({ disk: 'vda', top, base }, start), start, state);
};

t.test('mismatch: an active commit is its <mirror job=active-commit> to its base', async (t) => {
  const job = activeJob('ready');
  t.equal(mismatch(job, disk('acommit-copying'), info('activeCommit')), null, 'copying, the same base');
  t.equal(mismatch(job, disk('acommit-ready'), info('activeCommit')), null, 'ready, the same base');
  t.match(
    mismatch(job, disk('acommit-shallow-ready'), info('activeCommit')),
    /merges into vda\[4\].*not into this job's base vda\[3\]/,
    'another base',
  );
  t.equal(
    mismatch(activeJob('ready', true), disk('acommit-shallow-ready'), info('activeCommit')),
    null,
    'the shallow job on its own mirror',
  );
  t.match(mismatch(job, disk('acommit-ready'), info('commit')), /runs a commit on disk vda, not this job's active commit/, 'another type');
  const copy = { ...disk('acommit-ready') };
  copy.mirror = { ...copy.mirror!, job: 'copy', path: '/var/tmp/elsewhere.qcow2', index: 9 };
  t.match(mismatch(job, copy, null), /runs a copy job/, 'a copy mirror');
  const ending = { ...disk('acommit-ready') };
  ending.mirror = { ...ending.mirror!, job: '' };
  t.equal(mismatch(job, ending, info('activeCommit')), null, "job='' while libvirt processes the end");
  t.equal(mismatch(job, disk('snap2'), null), null, 'nothing runs: conclude decides');
  t.match(mismatch(job, disk('pull-start'), info('activeCommit')), /active layer of disk vda is vda\[6\]/, 'another active layer');
});

t.test('mismatch: a commit below the active layer shows no mirror; its layers must be in the chain', async (t) => {
  const job = belowJob();
  t.equal(mismatch(job, disk('commit-start'), info('commit')), null, 'running (the XML does not change while it runs)');
  t.equal(mismatch(job, disk('commit-start'), null), null, 'nothing runs');
  t.match(mismatch(job, disk('commit-start'), info('pull')), /runs a pull on disk vda, not this job's commit/);
  t.match(mismatch(job, disk('commit-start'), info('activeCommit')), /active commit/);
  t.match(
    mismatch(job, disk('commit-done'), info('commit')),
    /top layer vda\[1\].*no longer in disk vda's chain/,
    'another commit, after this one',
  );
  t.match(mismatch(job, disk('acommit-ready'), info('commit')), /active-commit job on disk vda/, 'a mirror is not this commit');
  // The same file name under a new index: libvirt opened a new image there (committed away, then
  // created again by a snapshot): not this job's layer.
  const start = disk('commit-start');
  const reborn: DiskInfo = { ...start, backing: start.backing!.map((l) => (l.index === 1 ? { ...l, index: 7 } : l)) };
  t.match(
    mismatch(job, reborn, info('commit')),
    /top layer vda\[1\].*no longer in disk vda's chain.*vda\[7\] \(.*top\.qcow2\)/,
    'same path, new index',
  );
  t.equal(mismatch({ ...job, kind: 'copy' }, disk('acommit-ready'), info('activeCommit')), null, 'not a chain job: not this module’s');
});

t.test('conclude: a commit below the active layer completes by the shortened chain', async (t) => {
  const done = conclude(belowJob(), facts(disk('commit-done')));
  t.match(done, { state: 'completed', outcome: 'observed' });
  t.match(done.evidence, /test; live XML shows the chain vda\[4\] .* → vda\[3\] .* and no <mirror>/);
  t.match(conclude(belowJob(), facts(disk('commit-done'), false)), { state: 'completed', outcome: 'inferred' }, 'no event: inferred');
  t.match(conclude(belowJob('cancelling'), facts(disk('commit-start'))), { state: 'cancelled', outcome: 'observed' }, 'aborted');
  const late = conclude(belowJob('cancelling'), facts(disk('commit-done')));
  t.match(late, { state: 'completed', evidence: /completed before the abort took effect/ }, 'what the chain shows, not the request');
  t.match(conclude(belowJob(), facts(disk('commit-start'))), {
    state: 'cancelled',
    outcome: 'inferred',
    evidence: /without changing the chain/,
  });
  // top vda[1] into mid vda[2]: the chain shows mid gone as well, which this commit does not do.
  t.match(conclude(belowJob('copying', 'vda[1]', 'vda[2]'), facts(disk('commit-done'))), {
    state: 'failed',
    error: { name: 'invalidState', message: /layers gone \(.*vda\[1\].*vda\[2\].*\) are not those from top/ },
  });
  t.match(conclude(belowJob(), facts(disk('pull-start'))), { state: 'failed', error: { message: /not the one the commit started on/ } });
  t.match(conclude(belowJob(), facts(undefined)), { state: 'failed', error: { name: 'invalidState' } }, 'the disk is gone');
  const noChain: ChainJob = { ...belowJob(), layers: { ...belowJob().layers, chain: undefined } };
  t.match(conclude(noChain, facts(disk('commit-done'))), { state: 'completed' }, 'without the starting chain: by top and base');
  t.match(conclude(noChain, facts(disk('commit-start'))), { state: 'cancelled' });
  t.match(conclude(noChain, facts(disk('pull-base-done'))), { state: 'completed' }, 'top gone, base there');
});

t.test('conclude: an active commit is pivoted only when the source is the base and the mirror is gone', async (t) => {
  t.match(conclude(activeJob('copying'), facts(disk('acommit-copying'), false)), { state: null }, 'still merging');
  t.match(conclude(activeJob('ready'), facts(disk('acommit-ready'), false)), { state: null }, 'ready');
  t.match(conclude(activeJob('pivoting'), facts(disk('acommit-ready'))), {
    state: 'failed',
    error: { name: 'pivotFailed', message: /mirror is still present/ },
  });
  t.match(conclude(activeJob('cancelling'), facts(disk('acommit-ready'))), {
    state: 'failed',
    error: { name: 'libvirtError', message: /abort could not be verified/ },
  });
  t.match(
    conclude(activeJob('ready'), facts(disk('acommit-ready'), false, 60_000)),
    { state: 'failed', error: { message: /lost track/ } },
    'a stale mirror',
  );
  t.match(conclude(activeJob('pivoting'), facts(disk('acommit-ready'), false, 60_000)), {
    state: 'failed',
    error: { name: 'pivotFailed' },
  });

  const shallow = (state: string) => activeJob(state, true);
  t.match(
    conclude(shallow('pivoting'), facts(disk('acommit-pivoted'))),
    { state: 'pivoted', outcome: 'observed' },
    'on base vda[4], no mirror',
  );
  t.match(
    conclude(shallow('ready'), facts(disk('acommit-pivoted'), false)),
    { state: 'pivoted', outcome: 'inferred' },
    'pivoted by another tool',
  );
  t.match(conclude(shallow('cancelling'), facts(disk('acommit-pivoted'))), {
    state: 'failed',
    error: { message: /switched onto base instead/ },
  });
  const pivoted = disk('acommit-pivoted');
  t.match(
    conclude(shallow('pivoting'), facts({ ...pivoted, index: 9 })),
    { state: 'failed', error: { name: 'pivotFailed' } },
    "the base's path under another index is not the base",
  );
  t.match(
    conclude(activeJob('pivoting'), facts(disk('acommit-pivoted'))),
    {
      state: 'failed',
      error: { name: 'pivotFailed', message: /runs on vda\[4\].*neither top vda\[5\].*nor base vda\[3\]/ },
    },
    'the guest on another layer than the base',
  );

  const snap2 = disk('snap2'); // what an abort (ready or not) leaves: the chain as before
  t.match(conclude(activeJob('cancelling'), facts(snap2)), { state: 'cancelled', outcome: 'observed' });
  t.match(conclude(activeJob('finishing'), facts(snap2)), { state: 'finished', outcome: 'observed' });
  t.match(
    conclude(activeJob('pivoting'), facts(snap2)),
    { state: 'failed', error: { name: 'pivotFailed', message: /still runs on top/ } },
    'never from the request alone',
  );
  t.match(conclude(activeJob('ready'), facts(snap2, false)), { state: 'cancelled', outcome: 'inferred' });
  t.match(conclude(activeJob('ready'), facts(disk('pull-start'))), {
    state: 'failed',
    error: { name: 'invalidState', message: /changed outside/ },
  });

  const raw = disk('raw-acommit-ready');
  const rawJob = jobOf('activeCommit', planCommit({ disk: 'vda' }, raw), raw, 'pivoting');
  t.match(conclude(rawJob, facts(disk('raw-pivoted'))), { state: 'pivoted' }, 'onto a raw base');
  t.equal(mismatch(rawJob, raw, info('activeCommit')), null);
});

t.test('adopted: what virsh started, from the live XML and the block job type', async (t) => {
  const ready = adopted(DOM, disk('acommit-ready'), info('activeCommit', 33554432n, 33554432n), NOW)!;
  t.match(ready, {
    kind: 'activeCommit',
    state: 'ready',
    readyAt: NOW,
    owner: 'adopted',
    source: { path: `${EXP}/snap2.qcow2`, format: 'qcow2' },
    destination: { path: `${EXP}/base.qcow2`, format: 'qcow2', type: 'file' },
    progress: { cur: 33554432, end: 33554432 },
    bandwidth: 1048576,
  });
  t.same(ready.layers.top, layer('snap2.qcow2', 5));
  t.same(ready.layers.base, layer('base.qcow2', 3), 'base from the mirror, by its index');
  t.equal(mismatch(ready, disk('acommit-ready'), info('activeCommit')), null, 'the adopted job is what it was adopted from');
  t.match(conclude({ ...ready, state: 'pivoting' }, facts(disk('snap2'))), { state: 'failed', error: { name: 'pivotFailed' } });

  const copying = adopted(DOM, disk('acommit-copying'), info('activeCommit'), NOW)!;
  t.match(copying, { kind: 'activeCommit', state: 'copying' });
  t.notOk('readyAt' in copying);
  t.match(adopted(DOM, disk('acommit-copying'), null, NOW), { kind: 'activeCommit' }, 'no block job info: the mirror tells');
  t.match(adopted(DOM, disk('raw-acommit-ready'), info('activeCommit'), NOW), { destination: { format: 'raw' } });

  const below = adopted(DOM, disk('commit-start'), info('commit'), NOW)!;
  t.match(below, { kind: 'commit', state: 'copying', destination: { path: '' }, layers: { top: null, base: null } });
  t.match(below.evidence, /does not show a commit's top and base/);
  t.equal(below.layers.chain!.length, 4);
  t.equal(mismatch(below, disk('commit-start'), info('commit')), null);
  const end = conclude(below, facts(disk('commit-done')));
  t.match(
    end,
    { state: 'completed', evidence: /vda\[1\].*vda\[2\].* merged into vda\[3\].*deduced/ },
    'top and base deduced from the chain',
  );
  t.match(conclude(below, facts(disk('commit-start'))), { state: 'cancelled', outcome: 'inferred' });

  t.equal(adopted(DOM, disk('snap2'), null, NOW), null, 'nothing runs');
  t.equal(adopted(DOM, disk('snap2'), info('copy'), NOW), null, 'a copy is not this kind’s');
  t.equal(adopted(DOM, disk('snap2'), info('backup'), NOW), null);
});

t.test('samePlan: the same call again is the same job (idempotent re-runs)', async (t) => {
  const snap2 = disk('snap2');
  const job = activeJob('ready');
  t.ok(samePlan(job.layers, planCommit({ disk: 'vda' }, snap2)), 'defaults again');
  t.ok(samePlan(job.layers, planCommit({ disk: 'vda', top: `${EXP}/snap2.qcow2`, base: 'vda[3]' }, snap2)), 'spelled out');
  t.notOk(samePlan(job.layers, planCommit({ disk: 'vda', shallow: true }, snap2)), 'another base');
  t.notOk(samePlan(belowJob().layers, planCommit({ disk: 'vda', top: 'vda[2]', base: 'vda[3]' }, disk('commit-start'))), 'another top');
  const found = adopted(DOM, disk('commit-start'), info('commit'), NOW)!;
  t.notOk(samePlan(found.layers, planCommit({ disk: 'vda', top: 'vda[1]' }, disk('commit-start'))), 'unknown layers are no match');
});
