// The pull kind (src/jobs/kinds/pull/) on the XML libvirt 9.0 wrote during real pulls on this
// host (test/fixtures/chain-pull-*.xml; see kinds-fixture.ts): the layers a call addresses,
// whether the block job libvirt runs is the job's, how it ended, and a pull found running.
import t from 'tap';
import { AgentError } from '../../src/errors.js';
import { planFields, samePlan, type ChainJob } from '../../src/jobs/kinds/commit/index.js';
import { adopted, conclude, mismatch, plan, planPull } from '../../src/jobs/kinds/pull/index.js';
import { disk, EXP, facts, info, jobOf } from './kinds-fixture.js';

const NOW = '2026-12-07T04:30:00.000Z';
const DOM = { name: 'kindsexp-1', uuid: '1ac07b93-2a6f-4607-aba7-3dfc55532720' };
const start = disk('pull-start'); // snap3[6] → snap1[4] → base[3]

const pullJob = (base?: string, state = 'copying'): ChainJob =>
  jobOf('pull', planPull({ disk: 'vda', ...(base !== undefined ? { base } : {}) }, start), start, state);

function refusedWith(fn: () => unknown): AgentError | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof AgentError) return e;
    throw e;
  }
  return undefined;
}

t.test('plan: the data lands in the active layer; base stays (none: a full pull)', async (t) => {
  const full = planPull({ disk: 'vda' }, start);
  t.same(full.top, { path: `${EXP}/snap3.qcow2`, format: 'qcow2', index: 6 });
  t.equal(full.base, null);
  t.equal(full.active, false);
  t.same(
    full.chain.map((l) => l.index),
    [6, 4, 3],
  );
  t.same(
    planFields('pull', start, full).destination,
    { path: `${EXP}/snap3.qcow2`, format: 'qcow2', type: 'file' },
    'destination: the active layer',
  );
  t.same(planPull({ disk: 'vda', base: 'vda[3]' }, start).base, { path: `${EXP}/base.qcow2`, format: 'qcow2', index: 3 });
  t.equal(planPull({ disk: 'vda', base: `${EXP}/base.qcow2` }, start).base!.index, 3, 'by path');
  t.equal((await plan({ disk: 'vda', base: `${EXP}/base.qcow2` }, start)).base!.index, 3, 'by path, files absent: by spelling');
  for (const [base, name, why] of [
    ['vda[4]', 'invalidState', /already the active layer's backing file/],
    ['vda[6]', 'invalidState', /is the active layer/],
    ['vda[1]', 'notFound', /no layer with index 1/],
    [`${EXP}/top.qcow2`, 'notFound', /not a layer of disk vda/],
  ] as const) {
    const e = refusedWith(() => planPull({ disk: 'vda', base }, start));
    t.equal(e?.errorName, name, `base ${base}: ${name}`);
    t.match(e?.message, why);
  }
  t.equal(
    refusedWith(() => planPull({ disk: 'vda' }, disk('pull-full-done')))?.errorName,
    'invalidState',
    'nothing below the active layer',
  );
});

t.test('mismatch: a pull shows no mirror; its active layer and base must be the disk’s', async (t) => {
  const job = pullJob('vda[3]');
  t.equal(mismatch(job, start, info('pull')), null, 'running (the XML does not change while it runs)');
  t.equal(mismatch(job, start, null), null, 'nothing runs: conclude decides');
  t.match(mismatch(job, start, info('commit')), /runs a commit on disk vda, not this job's pull/);
  t.match(
    mismatch(job, disk('snap2'), info('pull')),
    /active layer of disk vda is vda\[5\].*not this job's vda\[6\]/,
    'another active layer',
  );
  t.match(mismatch(job, disk('acommit-ready'), null), /active-commit job on disk vda/, 'a mirror is not a pull');
  const noBase = { ...start, backing: start.backing!.slice(0, 1) };
  t.match(mismatch(job, noBase, info('pull')), /base layer vda\[3\].*no longer in disk vda's chain/);
});

t.test('conclude: completed when exactly base and what lay below it remain', async (t) => {
  t.match(conclude(pullJob('vda[3]'), facts(disk('pull-base-done'))), { state: 'completed', outcome: 'observed' });
  t.match(conclude(pullJob('vda[3]'), facts(disk('pull-base-done'), false)), { state: 'completed', outcome: 'inferred' });
  t.match(conclude(pullJob(), facts(disk('pull-full-done'))), { state: 'completed', outcome: 'observed' }, 'a full pull');
  t.match(conclude(pullJob('vda[3]'), facts(disk('pull-full-done'))), {
    state: 'failed',
    error: { name: 'invalidState', message: /ends with no backing layer, not at the base vda\[3\]/ },
  });
  t.match(conclude(pullJob(), facts(disk('pull-base-done'))), { state: 'failed', error: { message: /ends at vda\[3\].*not with none/ } });
  t.match(conclude(pullJob('vda[3]', 'cancelling'), facts(start)), { state: 'cancelled', outcome: 'observed' }, 'aborted: unchanged');
  t.match(conclude(pullJob('vda[3]', 'cancelling'), facts(disk('pull-base-done'))), {
    state: 'completed',
    evidence: /completed before the abort took effect/,
  });
  t.match(conclude(pullJob(), facts(start)), { state: 'cancelled', outcome: 'inferred' }, 'ended elsewhere without pulling');
  t.match(conclude(pullJob(), facts(disk('snap2'))), { state: 'failed', error: { message: /active layer is vda\[5\]/ } });
  t.match(conclude(pullJob(), facts(undefined)), { state: 'failed', error: { name: 'invalidState' } });
  const noChain = (base?: string): ChainJob => {
    const j = pullJob(base);
    return { ...j, layers: { top: j.layers.top, base: j.layers.base } };
  };
  t.match(conclude(noChain('vda[3]'), facts(disk('pull-base-done'))), { state: 'completed' }, 'without the starting chain');
  t.match(conclude(noChain('vda[3]'), facts(start)), { state: 'cancelled' });
  t.match(conclude(noChain(), facts(disk('pull-full-done'))), { state: 'completed' });
  t.match(conclude(noChain(), facts(start)), { state: 'cancelled' });
});

t.test('adopted: a pull virsh started; its base is deduced from the chain at the end', async (t) => {
  const job = adopted(DOM, start, info('pull'), NOW)!;
  t.match(job, {
    kind: 'pull',
    state: 'copying',
    owner: 'adopted',
    source: { path: `${EXP}/snap3.qcow2` },
    destination: { path: `${EXP}/snap3.qcow2`, format: 'qcow2', type: 'file' },
    layers: { top: { index: 6 }, base: null },
    evidence: /does not show a pull's base/,
  });
  t.equal(mismatch(job, start, info('pull')), null);
  t.match(conclude(job, facts(disk('pull-base-done'))), { state: 'completed', evidence: /pulled down to vda\[3\].*deduced/ });
  t.match(conclude(job, facts(disk('pull-full-done'))), { state: 'completed', evidence: /pulled down to no backing layer/ });
  t.match(conclude(job, facts(start)), { state: 'cancelled', outcome: 'inferred' });
  t.match(
    conclude({ ...job, layers: { top: job.layers.top, base: null } }, facts(disk('pull-full-done'))),
    {
      state: 'failed',
      error: { message: /base is unknown/ },
    },
    'no chain and no base: no claim',
  );
  t.equal(adopted(DOM, start, null, NOW), null, 'no block job, no mirror: nothing to adopt');
});

t.test('samePlan: the same pull again', async (t) => {
  t.ok(samePlan(pullJob().layers, planPull({ disk: 'vda' }, start)), 'full, again');
  t.ok(samePlan(pullJob('vda[3]').layers, planPull({ disk: 'vda', base: `${EXP}/base.qcow2` }, start)), 'the same base, spelled otherwise');
  t.notOk(samePlan(pullJob('vda[3]').layers, planPull({ disk: 'vda' }, start)), 'a full pull is not a pull to a base');
  t.notOk(samePlan(pullJob().layers, planPull({ disk: 'vda', base: 'vda[3]' }, start)));
});
