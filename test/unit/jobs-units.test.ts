// The job layer's pure pieces: libvirt XML reading (on XML captured from libvirt 9),
// the state table, rate sampling, the journal (destinations: destination.test.ts).
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findDisk, parseDisks } from '../../src/libvirt/disk-xml.js';
import { isTerminal, reachedReady, STATES } from '../../src/jobs/state-machine.js';
import { canTransition } from '../../src/jobs/kinds/index.js';
import { conclude } from '../../src/jobs/kinds/copy/conclude.js';
import { STALE_MIRROR_MS } from '../../src/jobs/kinds/decision.js';
import { KeyedMutex } from '../../src/jobs/lock.js';
import { RateSampler } from '../../src/jobs/sampler.js';
import { Journal } from '../../src/jobs/journal.js';
import { fromByteCount, toByteCount } from '../../src/jobs/numbers.js';
import type { JobState } from '../../src/generated/api.js';
import type { ErrorName } from '../../src/errors.js';
import { sampleJob } from '../helpers/fake-service.js';

const readFixture = (name: string) => readFileSync(fileURLToPath(new URL(`../../../test/fixtures/${name}`, import.meta.url)), 'utf8');
const fixture = readFixture('domain-mirror.xml');

t.test('disk XML from libvirt', async (t) => {
  const disks = parseDisks(fixture);
  t.same(
    disks.map((d) => [d.target, d.device]),
    [
      ['vda', 'disk'],
      ['vdb', 'disk'],
      ['hdc', 'cdrom'],
    ],
  );
  const vda = findDisk(fixture, 'vda')!;
  t.match(vda, { type: 'file', sourcePath: '/var/tmp/bcfx/top.qcow2', format: 'qcow2', backingPaths: ['/var/tmp/bcfx/base.qcow2'] });
  t.match(vda.mirror, { job: 'copy', ready: null, type: 'file', path: '/var/tmp/bcfx/copy.qcow2', format: 'qcow2' }, 'phase-1 mirror');
  t.same(findDisk(fixture, 'vdb')!.mirror, null);
  t.equal(findDisk(fixture, 'hdc')!.sourcePath, null, 'an empty cdrom has no source');
  const ready = fixture.replace("job='copy'>", "job='copy' ready='yes'>");
  t.equal(findDisk(ready, 'vda')!.mirror!.ready, 'yes');
  t.equal(findDisk(fixture, 'vdz'), undefined);
  const escaped = `<domain><devices><disk type='file' device='disk'><source file='/a/it&apos;s &amp; x.img'/><target dev='vda'/></disk></devices></domain>`;
  t.equal(findDisk(escaped, 'vda')!.sourcePath, "/a/it's & x.img", 'entities decoded');
});

t.test("state table: exactly the design's edges plus the named refused/reconcile/outside ones", async (t) => {
  const expected: Record<string, string[]> = {
    copying: ['ready', 'cancelling', 'failed', 'cancelled', 'pivoted'],
    ready: ['pivoting', 'finishing', 'cancelling', 'failed', 'cancelled', 'pivoted'],
    pivoting: ['pivoted', 'failed', 'ready', 'copying'],
    finishing: ['finished', 'failed', 'ready', 'copying'],
    cancelling: ['cancelled', 'failed', 'copying', 'ready'],
    pivoted: [],
    finished: [],
    completed: [],
    cancelled: [],
    failed: [],
  };
  const copy = { kind: 'copy' } as const;
  const actual: Record<string, string[]> = {};
  for (const from of STATES) actual[from] = STATES.filter((to) => canTransition(copy, from, to));
  for (const k of Object.keys(expected)) expected[k]!.sort();
  for (const k of Object.keys(actual)) actual[k]!.sort();
  t.same(actual, expected, 'all 100 pairs');
  t.notOk(canTransition(copy, 'copying', 'finished'), 'never finished without finishing (a copy not ready is cancelled, not finished)');
  t.notOk(canTransition(copy, 'cancelling', 'finished'), 'an abort is never reported as a finish');
  for (const s of ['pivoted', 'finished', 'completed', 'cancelled', 'failed'] as const) t.ok(isTerminal(s));
  t.same(STATES.filter(reachedReady).sort(), ['finished', 'finishing', 'pivoted', 'pivoting', 'ready']);
});

t.test('rate and ETA from samples', async (t) => {
  const w = new RateSampler(1000);
  w.add(0, 0);
  w.add(500, 1000);
  w.add(3000, 1000);
  w.add(3500, 2000);
  t.equal(w.rate(), 2000, 'only the window counts (old fast samples dropped)');
  t.equal(w.eta(2000), 0);
  const s = new RateSampler(5000);
  t.equal(s.rate(), null);
  s.add(0, 0);
  s.add(1000, 10_000_000);
  t.equal(s.rate(), 10_000_000);
  t.equal(s.eta(30_000_000), 2);
  s.add(2000, 5); // went backwards: a new phase
  t.equal(s.rate(), null, 'restarts after cur goes back');
});

t.test('64-bit counts', async (t) => {
  t.equal(toByteCount(5n), 5);
  t.equal(toByteCount(2n ** 60n), '1152921504606846976', 'above 2^53 as a decimal string');
  t.equal(fromByteCount('1152921504606846976'), 2n ** 60n);
});

t.test('journal writes whole records atomically and reads them back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bc-journal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A crashed agent's half-written record: removed once, when the store opens.
  writeFileSync(join(dir, 'job-b.json.123.tmp'), 'partial');
  const j = new Journal(dir);
  await j.open();
  t.notOk(
    readdirSync(dir).some((f) => f.endsWith('.tmp')),
    'leftover temp files are removed at open',
  );
  await j.save({ job: sampleJob({ jobId: 'a' }), destinationXml: '<disk/>' });
  await j.save({ job: sampleJob({ jobId: 'a', state: 'ready' }), destinationXml: '<disk/>' });
  writeFileSync(join(dir, 'job-broken.json'), '{"job":');
  const bad: string[] = [];
  const recs = await j.load((f) => bad.push(f));
  t.same(
    recs.map((r) => [r.job.jobId, r.job.state]),
    [['a', 'ready']],
    'the latest record',
  );
  t.same(bad, ['job-broken.json'], 'a torn file is reported, not fatal');
  // Loads never touch temp files: one may be a write in flight (the group records are loaded
  // after the jobs are already being written).
  writeFileSync(join(dir, `job-a.json.${process.pid}.tmp`), 'in flight');
  await j.loadGroups(() => {});
  await j.load(() => {});
  t.same(
    readdirSync(dir).filter((f) => f.endsWith('.tmp')),
    [`job-a.json.${process.pid}.tmp`],
    'a write in flight is left alone',
  );
});

// Captured from libvirt 9.0 / QEMU 7.2: `virsh blockcopy --transient-job --wait` of a persistent
// domain's qcow2 disk (with a backing file) to a path holding an apostrophe and an ampersand,
// then `virsh blockjob --pivot`.
t.test('disk XML from libvirt: a ready mirror, then after the pivot', async (t) => {
  const ready = readFixture('jobs-mirror-ready.xml');
  const vda = findDisk(ready, 'vda')!;
  t.match(vda, { device: 'disk', type: 'file', format: 'qcow2', sourcePath: /\/disk0\.qcow2$/, backingPaths: [/\/base0\.qcow2$/] });
  t.match(
    vda.mirror,
    { job: 'copy', ready: 'yes', type: 'file', format: 'qcow2', path: /\/copy'a&b\.qcow2$/ },
    "ready='yes', entities decoded",
  );
  t.same(
    parseDisks(ready).map((d) => [d.target, d.device, d.format, !!d.mirror]),
    [
      ['vda', 'disk', 'qcow2', true],
      ['vdb', 'disk', 'raw', false],
      ['hdc', 'cdrom', 'raw', false],
    ],
  );
  const live = findDisk(readFixture('jobs-pivoted-live.xml'), 'vda')!;
  t.match(live, { sourcePath: /\/copy'a&b\.qcow2$/, mirror: null, backingPaths: [] }, 'live: the copy is the source, no mirror');
  const inactive = findDisk(readFixture('jobs-pivoted-inactive.xml'), 'vda')!;
  t.match(inactive, { sourcePath: /\/copy'a&b\.qcow2$/, mirror: null }, 'libvirt 9 updated the persistent definition too');
});

t.test('conclude: how a copy ended, from the live XML', async (t) => {
  const job = sampleJob({
    source: { path: '/src.qcow2', format: 'qcow2' },
    destination: { path: '/dst.qcow2', format: 'qcow2', type: 'file' },
  });
  const disk = (sourcePath: string, mirror: 'yes' | 'pivot' | 'abort' | null = null) => ({
    target: 'vda',
    device: 'disk',
    type: 'file',
    sourcePath,
    format: 'qcow2',
    backingPaths: [],
    mirror: mirror ? { job: 'copy', ready: mirror, type: 'file', path: '/dst.qcow2', format: 'qcow2' } : null,
  });
  const c = (state: JobState, d: ReturnType<typeof disk> | undefined, sawEnd: boolean) =>
    conclude({ ...job, state }, { disk: d, sawEnd, why: 'test' });
  t.match(c('pivoting', disk('/dst.qcow2'), true), { state: 'pivoted', outcome: 'observed' });
  t.match(c('pivoting', disk('/dst.qcow2'), false), { state: 'pivoted', outcome: 'inferred' });
  t.match(c('pivoting', disk('/src.qcow2'), true), {
    state: 'failed',
    error: { name: 'pivotFailed' },
    evidence: /source \/src\.qcow2 and no <mirror>/,
  });
  t.match(c('pivoting', disk('/src.qcow2', 'yes'), true), {
    state: 'failed',
    error: { name: 'pivotFailed', message: /mirror is still present/ },
  });
  t.match(c('pivoting', disk('/src.qcow2', 'pivot'), false), { state: null }, 'still pivoting, no event yet: nothing to conclude');
  const stale = (state: JobState, ready: 'yes' | 'pivot' | 'abort', ms: number) =>
    conclude({ ...job, state }, { disk: disk('/src.qcow2', ready), sawEnd: false, why: 'test', mirrorWithoutJobMs: ms });
  t.match(
    stale('pivoting', 'pivot', STALE_MIRROR_MS - 1),
    { state: null },
    'a <mirror> briefly outliving its job: libvirt is still concluding it',
  );
  t.match(
    stale('pivoting', 'pivot', STALE_MIRROR_MS),
    { state: 'failed', error: { name: 'pivotFailed', message: /libvirt lost track of the pivot.*either disk/ } },
    'a <mirror> long outliving its job: lost by libvirt, never a success',
  );
  t.match(stale('finishing', 'abort', STALE_MIRROR_MS), {
    state: 'failed',
    error: { name: 'libvirtError', message: /lost track of the finish/ },
  });
  t.match(stale('ready', 'yes', STALE_MIRROR_MS), { state: 'failed', error: { name: 'libvirtError', message: /lost track of the copy/ } });
  t.match(c('finishing', disk('/src.qcow2'), true), { state: 'finished', outcome: 'observed' });
  t.match(c('finishing', disk('/dst.qcow2'), true), { state: 'failed' }, 'a finish that switched the guest is not a finish');
  t.match(c('cancelling', disk('/src.qcow2'), true), { state: 'cancelled', outcome: 'observed' });
  t.match(c('ready', disk('/dst.qcow2'), false), { state: 'pivoted', outcome: 'inferred' }, 'pivoted by another tool');
  t.match(
    c('ready', disk('/src.qcow2'), true),
    { state: 'cancelled', outcome: 'inferred' },
    'ended outside on the source: never claimed finished',
  );
  t.match(c('copying', disk('/other.qcow2'), false), { state: 'failed', error: { name: 'invalidState' } });
  t.match(c('copying', undefined, false), { state: 'failed', evidence: /not in the live XML/ });
  t.match(c('copying', disk('/src.qcow2', 'yes'), false), { state: null });
});

t.test('keyed mutex: serial per key, concurrent across keys, failures do not block', async (t) => {
  const m = new KeyedMutex();
  const log: string[] = [];
  const step = (k: string, tag: string, ms: number, fail = false) =>
    m.run(k, async () => {
      log.push(`${tag}+`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${tag}-`);
      if (fail) throw new Error(tag);
      return tag;
    });
  const results = await Promise.allSettled([step('a', 'a1', 30, true), step('a', 'a2', 1), step('b', 'b1', 10)]);
  t.same(
    results.map((r) => r.status),
    ['rejected', 'fulfilled', 'fulfilled'],
  );
  t.ok(log.indexOf('a1-') < log.indexOf('a2+'), 'a2 waited for a1');
  t.ok(log.indexOf('b1+') < log.indexOf('a1-'), 'b ran while a1 held a');
  await new Promise((r) => setImmediate(r));
  t.notOk(m.busy('a'), 'the key is forgotten once drained');
});

t.test('journal: intent and timeout round-trip; records are fsynced files replaced by rename', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bc-journal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const j = new Journal(dir);
  await j.open();
  await j.save({ job: sampleJob({ jobId: 'x' }), destinationXml: '<disk/>', intent: { op: 'pivot', at: 't' }, timeoutAt: 5 });
  t.match(JSON.parse(readFileSync(j.path('x'), 'utf8')), { intent: { op: 'pivot' }, timeoutAt: 5 });
  t.same(readdirSync(dir), ['job-x.json'], 'no temp file left');
  await j.remove('x');
  t.same(readdirSync(dir), []);
});

t.test('journal: an error name another version wrote, unknown here, is read as libvirtError', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bc-journal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const j = new Journal(dir);
  await j.open();
  const error = (name: string) => ({ name: name as ErrorName, message: 'it ended' });
  await j.save({ job: sampleJob({ jobId: 'x', state: 'failed', error: error('fromTheFuture') }), destinationXml: '' });
  await j.save({ job: sampleJob({ jobId: 'y', state: 'failed', error: error('libvirtTimeout') }), destinationXml: '' });
  const now = new Date().toISOString();
  const disk = { disk: 'vda', jobId: 'x', outcome: 'failed' as const, error: error('toString') };
  const operation = 'pivot' as const;
  const lastSwitch = {
    operation,
    startedAt: now,
    pausedMs: 1,
    guestPause: 'agent' as const,
    freeze: { mode: 'never' as const, frozen: null },
    disks: [disk],
  };
  await j.saveGroup({
    ...{ groupId: 'g', domain: { name: 'vm1', uuid: 'u' }, jobIds: ['x'], whenReady: 'none', freeze: 'never', maxPause: 10 },
    ...{ createdAt: now, updatedAt: now, error: error('interrupted'), lastSwitch },
  });
  const jobs = await j.load(() => t.fail('no bad file'));
  const byId = new Map(jobs.map((r) => [r.job.jobId, r.job.error]));
  t.same(byId.get('x'), { name: 'libvirtError', message: "it ended (recorded as 'fromTheFuture', a name this agent does not know)" });
  t.same(byId.get('y'), { name: 'libvirtTimeout', message: 'it ended' }, 'a known name is kept');
  const [g] = await j.loadGroups(() => t.fail('no bad file'));
  t.same(g?.error, { name: 'interrupted', message: 'it ended' }, 'interrupted is a name of the table');
  t.equal(g?.lastSwitch?.disks[0]?.error?.name, 'libvirtError', "not a name: an Object.prototype key ('toString')");
});
