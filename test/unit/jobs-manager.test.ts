// The job manager's logic against a fake libvirt connection: validation, idempotency, the
// journal written before each side effect, ready/pivot/finish/abort semantics, inferred ends,
// reconcile and adoption, notifications. Fast, and proof of logic only: the real copies are
// in test/integration/jobs.test.ts.
import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentError } from '../../src/errors.js';
import type { Job } from '../../src/generated/api.js';
import { JobManager, type JobManagerOptions } from '../../src/jobs/manager.js';
import { LibvirtError } from '../../src/libvirt/index.js';
import { silentLogger } from '../../src/log.js';
import { FakeConnection, fakeHost, ownRoot, type FakeDomain } from './fake-connection.js';
import { FastClock, ManualClock } from './manual-clock.js';

interface Setup {
  conn: FakeConnection;
  jobs: JobManager;
  stateDir: string;
  destDir: string;
  changes: Job[];
  dom: FakeDomain;
}

/** Destinations go to the test's own directory: it is the allowed root (owned by whoever runs the test). */

async function setup(
  t: Test,
  opts: Partial<JobManagerOptions> & { prepare?: (c: FakeConnection) => void; noStart?: boolean } = {},
): Promise<Setup> {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-jobs-');
  const dom = conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }, { target: 'vdb' }] });
  opts.prepare?.(conn);
  const checkDestination = ownRoot(destDir);
  const jobs = new JobManager({ connection: conn, stateDir, log: silentLogger, pollIntervalMs: 50, checkDestination, ...opts });
  const changes: Job[] = [];
  jobs.on('job.changed', (j: Job) => changes.push(j));
  if (!opts.noStart) await jobs.start();
  t.teardown(() => jobs.stop());
  return { conn, jobs, stateDir, destDir, changes, dom };
}

async function rejects(t: Test, p: Promise<unknown>, name: string, msg: string): Promise<AgentError> {
  try {
    await p;
  } catch (e) {
    t.ok(e instanceof AgentError, `${msg}: an AgentError`);
    t.equal((e as AgentError).errorName, name, msg);
    return e as AgentError;
  }
  t.fail(`${msg}: expected ${name}, resolved`);
  return new AgentError('notFound', 'unreachable');
}

/** A copy of `disk` that has reached ready. */
async function readyCopy(s: Setup, disk: string, file: string): Promise<Job> {
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk, destination: { path: join(s.destDir, file) } });
  s.conn.makeReady(s.dom, disk);
  return (await s.jobs.wait({ jobId: job.jobId, until: 'ready' })).job;
}

const until = async (cond: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
};

t.test('validation happens before any side effect', async (t) => {
  const s = await setup(t, {
    prepare: (c) => {
      c.addDomain({ name: 'vm-cd', disks: [{ target: 'hdc', device: 'cdrom', format: 'raw' }] });
      c.addDomain({ name: 'vm-net', disks: [{ target: 'vda', type: 'network' }] });
      c.addDomain({ name: 'vm-off', active: false, persistent: true });
    },
  });
  const dest = { path: join(s.destDir, 'copy.qcow2') };
  await rejects(t, s.jobs.blockCopy({ domain: 'nope', disk: 'vda', destination: dest }), 'notFound', 'unknown domain');
  await rejects(t, s.jobs.blockCopy({ domain: 'vm1', disk: 'vdz', destination: dest }), 'notFound', 'unknown disk');
  await rejects(t, s.jobs.blockCopy({ domain: 'vm-cd', disk: 'hdc', destination: dest }), 'unsupported', 'a cdrom');
  await rejects(t, s.jobs.blockCopy({ domain: 'vm-net', disk: 'vda', destination: dest }), 'unsupported', 'a network disk');
  await rejects(
    t,
    s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: '/images/vm1-vda.qcow2' } }),
    'destinationRejected',
    'the source itself',
  );
  await rejects(
    t,
    s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: '/images/vm1-vdb.qcow2' } }),
    'destinationRejected',
    'another disk in use',
  );
  await rejects(t, s.jobs.blockCopy({ domain: 'vm-off', disk: 'vda', destination: dest }), 'invalidState', 'a domain that is not running');
  await rejects(
    t,
    s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destinationXml: "<disk type='network'><source protocol='nbd'/></disk>" }),
    'destinationRejected',
    'unsupported destinationXml',
  );
  t.same(s.conn.sideEffects(), [], 'libvirt was never asked to change anything');
  t.same(readdirSync(s.stateDir), [], 'nothing journaled');
  t.same(readdirSync(s.destDir), [], 'nothing created');
  t.same(s.changes, [], 'no notifications');
});

t.test('libvirt refusing the copy leaves no job behind', async (t) => {
  const s = await setup(t);
  s.conn.failNext.set(
    'blockCopy',
    new LibvirtError(1, 10, 'internal error: unable to execute QEMU command \'blockdev-add\': Failed to get "write" lock'),
  );
  const e = await rejects(
    t,
    s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'c.qcow2') } }),
    'libvirtError',
    'refused',
  );
  t.match(e.data, { libvirt: { code: 1, message: /write" lock/ } }, "libvirt's own error in data");
  t.same((await s.jobs.listJobs({})).jobs, []);
  t.same(readdirSync(s.stateDir), [], 'the journal record is removed');
});

t.test('a persistent domain gets a transient job by default; refusing non-transient is "unsupported"', async (t) => {
  const s = await setup(t, {
    prepare: (c) => {
      c.addDomain({ name: 'pvm', persistent: true });
    },
  });
  const r = await s.jobs.blockCopy({ domain: 'pvm', disk: 'vda', destination: { path: join(s.destDir, 'p.qcow2') } });
  t.equal(r.job.options?.transientJob, true);
  t.match(s.conn.sideEffects()[0]!.args[3], { transientJob: true });
  const r2 = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 't.qcow2') } });
  t.equal(r2.job.options?.transientJob, false, 'transient domain: not needed');
  s.conn.addDomain({ name: 'pvm2', persistent: true });
  await rejects(
    t,
    s.jobs.blockCopy({ domain: 'pvm2', disk: 'vda', transientJob: false, destination: { path: join(s.destDir, 'q.qcow2') } }),
    'unsupported',
    'libvirt 9: domain is not transient',
  );
});

t.test('the journal is written before each libvirt side effect', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({
    domain: 'vm1',
    disk: 'vda',
    destination: { path: join(s.destDir, 'c.qcow2'), format: 'qcow2' },
    bandwidth: 1048576,
  });
  const [copy] = s.conn.sideEffects();
  t.equal(copy!.method, 'blockCopy');
  t.match(
    copy!.journal,
    [{ job: { jobId: job.jobId, state: 'copying' }, intent: { op: 'blockCopy' }, destinationXml: /<source file=/ }],
    'record with intent on disk before blockCopy',
  );
  t.match(copy!.args[3], { bandwidth: 1048576n });

  await s.jobs.setSpeed({ jobId: job.jobId, bandwidth: '2097152' });
  const speed = s.conn.sideEffects()[1]!;
  t.match(speed.journal, [{ intent: { op: 'setSpeed', bandwidth: '2097152' } }], 'before setSpeed');

  s.conn.makeReady(s.dom);
  await until(() => s.changes.some((c) => c.state === 'ready'));
  await s.jobs.pivot({ jobId: job.jobId });
  const pivot = s.conn.sideEffects()[2]!;
  t.equal(pivot.method, 'blockJobAbort');
  t.match(pivot.journal, [{ job: { state: 'pivoting' }, intent: { op: 'pivot' } }], 'state pivoting and intent on disk before the pivot');
  await s.jobs.stop();
  const after = s.conn.readJournal();
  t.match(after, [{ job: { state: 'pivoted' } }]);
  t.notOk(after[0]!.intent, 'the intent is cleared once libvirt answered');
});

t.test('a journal that cannot be written stops the side effect', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'c.qcow2') } });
  s.conn.makeReady(s.dom);
  await until(() => s.changes.some((c) => c.state === 'ready'));
  // Replace the record file by a directory: the rename fails.
  await s.jobs.stop();
  const { rmSync } = await import('node:fs');
  rmSync(join(s.stateDir, `job-${job.jobId}.json`));
  mkdirSync(join(s.stateDir, `job-${job.jobId}.json`));
  const jobs2 = new JobManager({ connection: s.conn, stateDir: s.stateDir, log: silentLogger, pollIntervalMs: 50 });
  await jobs2.start();
  t.teardown(() => jobs2.stop());
  // The directory is not a readable record, so the copy was adopted under a new id.
  const [adopted] = (await jobs2.listJobs({})).jobs;
  t.equal(adopted!.owner, 'adopted');
  const before = s.conn.sideEffects().length;
  rmSync(s.stateDir, { recursive: true });
  writeFileSync(s.stateDir, 'not a directory');
  await t.rejects(jobs2.pivot({ jobId: adopted!.jobId }), 'pivot fails when its record cannot be written');
  t.equal(s.conn.sideEffects().length, before, 'libvirt was not asked to pivot');
  t.equal((await jobs2.jobInfo({ jobId: adopted!.jobId })).job.state, 'ready', 'the job is back to ready');
});

t.test('idempotency', async (t) => {
  const s = await setup(t);
  const dest = { path: join(s.destDir, 'c.qcow2') };
  const first = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest, jobId: 'key-1' });
  t.equal(first.changed, true);
  const again = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest });
  t.same([again.changed, again.job.jobId], [false, 'key-1'], 'same destination: the existing job');
  const byKey = await s.jobs.blockCopy({ domain: s.dom.uuid, disk: 'vda', destination: dest, jobId: 'key-1' });
  t.same([byKey.changed, byKey.job.jobId], [false, 'key-1'], 'same key, domain by UUID');
  await rejects(
    t,
    s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'other.qcow2') } }),
    'jobExists',
    'a different destination',
  );
  await rejects(
    t,
    s.jobs.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(s.destDir, 'b.qcow2') }, jobId: 'key-1' }),
    'jobExists',
    'a key already naming a job on another disk',
  );
  t.equal(s.conn.sideEffects().length, 1, 'one copy started');

  await rejects(t, s.jobs.abort({ domain: 'vm1', disk: 'vdb' }), 'noJob', 'abort with no job');
  await rejects(t, s.jobs.jobInfo({ jobId: 'nope' }), 'noJob', 'unknown jobId');
  const ab = await s.jobs.abort({ jobId: 'key-1' });
  t.same([ab.changed, ab.job.state], [true, 'cancelled']);
  const ab2 = await s.jobs.abort({ domain: 'vm1', disk: 'vda' });
  t.same([ab2.changed, ab2.job.state], [false, 'cancelled'], 'abort on cancelled');
  const rerun = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest, jobId: 'key-1' });
  t.same([rerun.changed, rerun.job.state], [false, 'cancelled'], 'the same key again: the same (ended) job, nothing started');
  const fresh = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest });
  t.equal(fresh.changed, true, 'without the key, a cancelled copy can be started again');
});

t.test('concurrent identical calls start one copy', async (t) => {
  const s = await setup(t);
  const p = { domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'c.qcow2') }, jobId: 'k' };
  const results = await Promise.all([s.jobs.blockCopy(p), s.jobs.blockCopy(p), s.jobs.blockCopy({ ...p, jobId: undefined })]);
  t.same(results.map((r) => r.changed).sort(), [false, false, true]);
  t.same(new Set(results.map((r) => r.job.jobId)), new Set(['k']));
  t.equal(s.conn.sideEffects().length, 1);
  t.equal(readdirSync(s.stateDir).filter((f) => f.endsWith('.json')).length, 1, 'one record');
});

t.test('ready is the event or the live XML, never cur == end alone', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'c.qcow2') } });
  s.conn.progress(s.dom, 'vda', 0n, 1n);
  await new Promise((r) => setTimeout(r, 150));
  s.conn.progress(s.dom, 'vda', 1000n, 1000n);
  await new Promise((r) => setTimeout(r, 200));
  t.equal((await s.jobs.jobInfo({ jobId: job.jobId })).job.state, 'copying', 'cur == end without ready stays copying');
  t.equal((await s.jobs.jobInfo({ jobId: job.jobId })).job.progress.percent, 100);
  s.conn.makeReady(s.dom, 'vda', { event: false });
  const w = await s.jobs.wait({ jobId: job.jobId, until: 'ready', timeout: 3 });
  t.equal(w.job.state, 'ready', "a missed READY event is caught from <mirror ready='yes'>");
  t.ok(w.job.readyAt);

  const b = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(s.destDir, 'b.qcow2') } });
  s.conn.makeReady(s.dom, 'vdb');
  t.equal((await s.jobs.wait({ jobId: b.job.jobId, until: 'ready', timeout: 3 })).job.state, 'ready', 'by the READY event');
});

t.test('pivot', async (t) => {
  const s = await setup(t, {
    prepare: (c) => {
      c.addDomain({ name: 'pvm', persistent: true });
    },
  });
  const pdom = s.conn.domains[1]!;
  const dest = join(s.destDir, 'c.qcow2');
  const { job } = await s.jobs.blockCopy({ domain: 'pvm', disk: 'vda', destination: { path: dest } });
  const t0 = Date.now();
  await rejects(t, s.jobs.pivot({ jobId: job.jobId, timeout: 0.3 }), 'notReady', 'before ready, after its deadline');
  t.ok(Date.now() - t0 >= 250, 'waited for ready until the deadline');
  t.equal(s.conn.sideEffects().length, 1, 'no pivot was sent before ready');

  s.conn.makeReady(pdom);
  s.conn.pivotNotReady = 2; // QEMU dropped out of ready under writes, twice
  const r = await s.jobs.pivot({ domain: 'pvm', disk: 'vda' });
  t.same([r.changed, r.job.state, r.job.outcome], [true, 'pivoted', 'observed']);
  t.equal(s.conn.sideEffects().filter((c) => c.method === 'blockJobAbort').length, 3, 'retried twice after "not ready for pivot yet"');
  t.match(s.conn.sideEffects()[1]!.args[2], { async: true, pivot: true });
  t.equal(s.conn.disk(pdom).source, dest, 'the fake switched');
  t.same(
    r.job.persistent,
    { defined: true, source: '/images/pvm-vda.qcow2', matchesLive: false },
    'the persistent definition was read and compared',
  );
  const again = await s.jobs.pivot({ jobId: job.jobId });
  t.same([again.changed, again.job.state], [false, 'pivoted'], 'pivot on pivoted');
  await rejects(t, s.jobs.finish({ jobId: job.jobId }), 'invalidState', 'finish after pivot');
  t.same(
    s.changes
      .filter((c) => c.jobId === job.jobId)
      .map((c) => c.state)
      .filter((x, i, a) => a[i - 1] !== x),
    ['copying', 'ready', 'pivoting', 'ready', 'pivoting', 'ready', 'pivoting', 'pivoted'],
    'every state change notified, in order',
  );
});

t.test('two pivots at once: one request to libvirt, one changed: true', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'c.qcow2') } });
  s.conn.makeReady(s.dom);
  await s.jobs.wait({ jobId: job.jobId, until: 'ready' });
  s.conn.endDelayMs = 200;
  const rs = await Promise.all([s.jobs.pivot({ jobId: job.jobId }), s.jobs.pivot({ domain: 'vm1', disk: 'vda' })]);
  t.same(
    rs.map((r) => r.job.state),
    ['pivoted', 'pivoted'],
  );
  t.same(rs.map((r) => r.changed).sort(), [false, true]);
  t.equal(s.conn.sideEffects().filter((c) => c.method === 'blockJobAbort').length, 1);
});

t.test('pivot: QEMU never ready in time → notReady (retryable) with libvirt data, after backing off to the deadline', async (t) => {
  // On a manual clock: the minute of retries takes no real time, and the schedule is exact.
  const clock = new ManualClock();
  const s = await setup(t, { time: clock });
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'c.qcow2') } });
  s.conn.makeReady(s.dom);
  await s.jobs.wait({ jobId: job.jobId, until: 'ready' });
  s.conn.pivotNotReady = 1000;
  const start = clock.now();
  const e = await rejects(t, s.jobs.pivot({ jobId: job.jobId, timeout: 60 }), 'notReady', 'deadline passed');
  t.equal(e.retryable, true);
  t.match(e.data, { libvirt: { code: 83, message: /not ready for pivot yet/ }, job: { state: 'ready' } });
  // Backoff 200, 400, 800, 1600 ms, then every 2 s: asks at 0, 0.2, 0.6, 1.4, 3, 5, …, 59 s.
  const asked = s.conn.sideEffects().filter((c) => c.method === 'blockJobAbort').length;
  t.equal(asked, 33, 'asked 33 times within the 60 s budget');
  t.equal(clock.now() - start, 59_000, 'and gave up at the last retry that fits the budget');
});

t.test('a pivot that libvirt reports done but the live XML does not show → pivotFailed with evidence', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'c.qcow2') } });
  s.conn.makeReady(s.dom);
  await s.jobs.wait({ jobId: job.jobId, until: 'ready' });
  s.conn.pivotSwitches = false;
  const e = await rejects(t, s.jobs.pivot({ jobId: job.jobId }), 'pivotFailed', 'not verified');
  t.match(e.data, {
    job: { state: 'failed', error: { name: 'pivotFailed' } },
    evidence: /completed event.*source \/images\/vm1-vda\.qcow2/,
  });
});

t.test('finish and abort', async (t) => {
  const s = await setup(t);
  const a = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } });
  await rejects(t, s.jobs.finish({ jobId: a.job.jobId, timeout: 0.1 }), 'notReady', 'finish before ready');
  t.equal(s.conn.sideEffects().length, 1, 'no abort sent before ready (it would cancel, not finish)');
  s.conn.makeReady(s.dom);
  const f = await s.jobs.finish({ jobId: a.job.jobId });
  t.same([f.changed, f.job.state, f.job.outcome], [true, 'finished', 'observed']);
  t.match(s.conn.sideEffects()[1]!.args[2], { async: true, pivot: false });
  t.equal(s.conn.disk(s.dom).source, '/images/vm1-vda.qcow2', 'the guest stays on its source');
  t.same((await s.jobs.finish({ jobId: a.job.jobId })).changed, false, 'finish on finished');
  await rejects(t, s.jobs.pivot({ jobId: a.job.jobId }), 'invalidState', 'pivot after finish');

  const b = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(s.destDir, 'b.qcow2') } });
  const ab = await s.jobs.abort({ jobId: b.job.jobId });
  t.same([ab.changed, ab.job.state, ab.job.outcome], [true, 'cancelled', 'observed'], 'abort in phase 1');
});

t.test('abort is not held up by a pivot waiting for ready', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } });
  const pivot = s.jobs.pivot({ jobId: job.jobId, timeout: 30 }).then(
    () => null,
    (e: unknown) => e,
  );
  const t0 = Date.now();
  const ab = await s.jobs.abort({ jobId: job.jobId });
  t.equal(ab.job.state, 'cancelled');
  t.ok(Date.now() - t0 < 2000, 'the abort did not wait for the pivot deadline');
  await rejects(
    t,
    pivot.then((e) => {
      throw e;
    }),
    'invalidState',
    'the waiting pivot learns the job was cancelled',
  );
});

t.test('jobs on different disks run concurrently', async (t) => {
  const s = await setup(t);
  const a = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } });
  const b = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(s.destDir, 'b.qcow2') } });
  s.conn.makeReady(s.dom, 'vda');
  s.conn.makeReady(s.dom, 'vdb');
  await s.jobs.wait({ jobId: a.job.jobId, until: 'ready' });
  await s.jobs.wait({ jobId: b.job.jobId, until: 'ready' });
  s.conn.endDelayMs = 300;
  const t0 = Date.now();
  const [pa, pb] = await Promise.all([s.jobs.pivot({ jobId: a.job.jobId }), s.jobs.finish({ jobId: b.job.jobId })]);
  t.same([pa.job.state, pb.job.state], ['pivoted', 'finished']);
  t.ok(Date.now() - t0 < 550, `both ends overlapped (${Date.now() - t0} ms for two 300 ms ends)`);
});

t.test('whenReady and wait', async (t) => {
  const s = await setup(t);
  const p = s.jobs.blockCopy({
    domain: 'vm1',
    disk: 'vda',
    destination: { path: join(s.destDir, 'a.qcow2') },
    whenReady: 'pivot',
    wait: 'done',
  });
  await until(() => s.conn.disk(s.dom).mirror !== null);
  s.conn.makeReady(s.dom);
  const r = await p;
  t.same([r.changed, r.job.state, r.job.whenReady], [true, 'pivoted', 'pivot'], 'one call: copy, pivot when ready, answer when done');

  const q = s.jobs.blockCopy({
    domain: 'vm1',
    disk: 'vdb',
    destination: { path: join(s.destDir, 'b.qcow2') },
    whenReady: 'finish',
    wait: 'ready',
  });
  await until(() => s.conn.disk(s.dom, 'vdb').mirror !== null);
  s.conn.makeReady(s.dom, 'vdb');
  const rq = await q;
  t.ok(['ready', 'finishing', 'finished'].includes(rq.job.state), `wait: ready answers at ready (${rq.job.state})`);
  t.equal((await s.jobs.wait({ jobId: rq.job.jobId, until: 'done', timeout: 3 })).job.state, 'finished', 'then finishes by itself');
});

t.test('timeout cancels the copy like virsh --timeout', async (t) => {
  const clock = new ManualClock();
  const s = await setup(t, { time: clock });
  const call = s.jobs.blockCopy({
    domain: 'vm1',
    disk: 'vda',
    destination: { path: join(s.destDir, 'a.qcow2') },
    wait: 'ready',
    timeout: 600,
  });
  await until(() => clock.timers > 0);
  clock.advance(599_000);
  t.not(s.conn.disk(s.dom).mirror, null, 'a second before the deadline the copy runs');
  clock.advance(1000);
  const e = await rejects(t, call, 'timeout', 'expired');
  t.match(e.data, { job: { state: 'cancelled', error: { name: 'timeout' } } }, 'the job, cancelled, in data');
  t.equal(s.conn.disk(s.dom).mirror, null, 'libvirt was asked to cancel');
  t.match(s.conn.sideEffects()[1]!.args[2], { async: true }, 'an abort without pivot');
});

t.test('a caller that goes away stops waiting; the copy goes on', async (t) => {
  const s = await setup(t);
  const ac = new AbortController();
  const p = s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') }, wait: 'done' }, ac.signal);
  await until(() => s.conn.disk(s.dom).mirror !== null);
  ac.abort();
  await t.rejects(p, /went away/);
  const [job] = (await s.jobs.listJobs({})).jobs;
  t.equal(job!.state, 'copying', 'still copying');
  t.notOk(
    s.conn.sideEffects().some((c) => c.method === 'blockJobAbort'),
    'not cancelled',
  );
  const ac2 = new AbortController();
  const w = s.jobs.wait({ jobId: job!.jobId, until: 'ready' }, ac2.signal);
  ac2.abort();
  await t.rejects(w, /went away/);
});

t.test('failures: FAILED event, domain stopped', async (t) => {
  const s = await setup(t);
  const a = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } });
  s.conn.disk(s.dom).job = null;
  s.conn.disk(s.dom).mirror = null;
  s.conn.blockEvent(s.dom, 'vda', 'failed');
  const fa = (await s.jobs.wait({ jobId: a.job.jobId, until: 'done', timeout: 2 })).job;
  t.match(fa, { state: 'failed', error: { name: 'libvirtError', message: /failed/ }, evidence: /failed event/ });

  const b = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(s.destDir, 'b.qcow2') } });
  s.conn.stopDomain(s.dom);
  const fb = (await s.jobs.wait({ jobId: b.job.jobId, until: 'done', timeout: 2 })).job;
  t.match(fb, { state: 'failed', error: { name: 'invalidState', message: /stopped/ }, evidence: /lifecycle event stopped/ });

  const other = s.conn.addDomain({ name: 'vm2' });
  const c = await s.jobs.blockCopy({ domain: 'vm2', disk: 'vda', destination: { path: join(s.destDir, 'c.qcow2') } });
  other.active = false; // stopped, and the lifecycle event is lost
  const fc = (await s.jobs.wait({ jobId: c.job.jobId, until: 'done', timeout: 2 })).job;
  t.match(
    fc,
    { state: 'failed', error: { name: 'invalidState' }, evidence: /no lifecycle event received; the poll got: .*not running/ },
    'the poll is the safety net',
  );
});

t.test(
  "a late end event of the disk's previous job, arriving while the next copy starts, is not taken for the new job's end",
  async (t) => {
    // The pivot's wait for its end event (a grace of seconds) on a clock 20 times faster than real time.
    const s = await setup(t, { time: new FastClock(20) });
    const a = await readyCopy(s, 'vda', 'a.qcow2');
    // The pivot is concluded from the live XML before its event (the event is late, e.g. a busy host)…
    s.conn.sendEndEvents = false;
    await s.jobs.pivot({ jobId: a.jobId });
    // …and the event turns up while the next copy of the disk is being started, before libvirt shows its <mirror>.
    s.conn.duringBlockCopy = async () => {
      s.conn.blockEvent(s.dom, 'vda', 'completed');
      await new Promise((r) => setTimeout(r, 100));
    };
    const b = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'b.qcow2') } });
    s.conn.duringBlockCopy = undefined;
    await new Promise((r) => setTimeout(r, 300));
    t.equal((await s.jobs.jobInfo({ jobId: b.job.jobId })).job.state, 'copying', 'the new copy is still copying');
    s.conn.makeReady(s.dom);
    s.conn.sendEndEvents = true;
    t.equal((await s.jobs.pivot({ jobId: b.job.jobId })).job.state, 'pivoted', 'and pivots');
  },
);

t.test('a copy that vanishes without an event: concluded from the live XML, marked inferred', async (t) => {
  const s = await setup(t);
  const a = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } });
  s.conn.makeReady(s.dom);
  await s.jobs.wait({ jobId: a.job.jobId, until: 'ready' });
  // Someone pivots with virsh while the event is lost.
  s.conn.sendEndEvents = false;
  await s.conn.blockJobAbort(s.dom.uuid, 'vda', { pivot: true });
  const ja = (await s.jobs.wait({ jobId: a.job.jobId, until: 'done', timeout: 3 })).job;
  t.match(ja, { state: 'pivoted', outcome: 'inferred', evidence: /disappeared without an event.*source .*a\.qcow2 and no <mirror>/ });

  const b = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(s.destDir, 'b.qcow2') } });
  s.conn.disk(s.dom, 'vdb').job = null;
  s.conn.disk(s.dom, 'vdb').mirror = null;
  const jb = (await s.jobs.wait({ jobId: b.job.jobId, until: 'done', timeout: 3 })).job;
  t.match(
    jb,
    { state: 'cancelled', outcome: 'inferred', evidence: /source \/images\/vm1-vdb\.qcow2/ },
    'back on the source: cancelled, never claimed finished',
  );
});

t.test('recovering until reconcile is done; adoption; reconcile of the journal', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'bc-jobs-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const stateDir = join(root, 'state');
  const conn = new FakeConnection(stateDir);
  const dom = conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }, { target: 'vdb' }, { target: 'vdc' }] });
  const first = new JobManager({ connection: conn, stateDir, log: silentLogger, pollIntervalMs: 50, checkDestination: ownRoot(root) });
  await first.start();
  const a = await first.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(root, 'a.qcow2') }, whenReady: 'pivot' });
  const b = await first.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(root, 'b.qcow2') } });
  await first.stop();
  t.equal(conn.sideEffects().length, 2, 'stop() touched no copy');

  // While the agent is down: vda gets ready (event lost), vdb is pivoted by someone, vdc gets a virsh copy.
  conn.makeReady(dom, 'vda', { event: false });
  conn.makeReady(dom, 'vdb', { event: false });
  conn.sendEndEvents = false;
  await conn.blockJobAbort(dom.uuid, 'vdb', { pivot: true });
  conn.sendEndEvents = true;
  conn.startOutside(dom, 'vdc', '/elsewhere/c.qcow2', true);

  conn.listDelayMs = 200;
  const second = new JobManager({ connection: conn, stateDir, log: silentLogger, pollIntervalMs: 50 });
  const started = second.start();
  await new Promise((r) => setTimeout(r, 50));
  await rejects(t, second.abort({ jobId: b.job.jobId }), 'recovering', 'mutating calls wait for reconcile');
  await rejects(
    t,
    second.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(root, 'x.qcow2') } }),
    'recovering',
    'blockCopy too',
  );
  await started;
  t.teardown(() => second.stop());
  const jb = (await second.jobInfo({ jobId: b.job.jobId })).job;
  t.match(jb, { state: 'pivoted', outcome: 'inferred', evidence: /ended while the agent was not running/ });
  const ja = (await second.wait({ jobId: a.job.jobId, until: 'done', timeout: 3 })).job;
  t.match(ja, { state: 'pivoted', outcome: 'observed' }, 'ready found at start-up; whenReady: pivot carried out');
  const adopted = (await second.listJobs({ domain: 'vm1' })).jobs.find((j) => j.disk === 'vdc')!;
  t.match(adopted, { owner: 'adopted', state: 'ready', destination: { path: '/elsewhere/c.qcow2', format: 'qcow2', type: 'file' } });
  const again = await second.blockCopy({ domain: 'vm1', disk: 'vdc', destination: { path: '/elsewhere/c.qcow2' } });
  t.same([again.changed, again.job.jobId], [false, adopted.jobId], 'asking for the copy virsh started: the adopted job');
  t.equal((await second.finish({ jobId: adopted.jobId })).job.state, 'finished', 'an adopted copy can be finished');
});

t.test('a copy started by another tool while the agent runs is adopted on its READY event', async (t) => {
  const s = await setup(t);
  s.conn.startOutside(s.dom, 'vdb', '/elsewhere/b.qcow2', true);
  s.conn.blockEvent(s.dom, 'vdb', 'ready');
  await until(() => s.changes.some((c) => c.owner === 'adopted'));
  t.match((await s.jobs.jobInfo({ domain: 'vm1', disk: 'vdb' })).job, { owner: 'adopted', state: 'ready' });
});

t.test('a stopped manager writes and sends nothing more: an adoption in flight at stop() is dropped', async (t) => {
  const s = await setup(t);
  s.conn.startOutside(s.dom, 'vdb', '/elsewhere/x.qcow2', true);
  s.conn.infoDelayMs = 200;
  s.conn.blockEvent(s.dom, 'vdb', 'ready'); // adoption starts; its libvirt read is slow
  await until(() => s.conn.calls.some((c) => c.method === 'getBlockJobInfo'));
  await s.jobs.stop();
  // The next agent may own the directory now (the lock goes with the stop).
  await new Promise((r) => setTimeout(r, 400));
  t.same(
    readdirSync(s.stateDir).filter((f) => f.startsWith('job-')),
    [],
    'no journal record written after stop()',
  );
  t.notOk(s.conn.sideEffects().length, 'and nothing sent to libvirt');
});

t.test('progress notifications are bounded to one per second per job', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } });
  const before = s.changes.length;
  let cur = 0n;
  const timer = setInterval(() => s.conn.progress(s.dom, 'vda', (cur += 1000n), 1_000_000n), 10);
  await new Promise((r) => setTimeout(r, 1500));
  clearInterval(timer);
  const n = s.changes.length - before;
  t.ok(n >= 1 && n <= 2, `${n} progress notifications in 1.5 s`);
  const j = (await s.jobs.jobInfo({ jobId: job.jobId })).job;
  t.ok(typeof j.progress.rate === 'number' && j.progress.rate > 0, `rate from the agent's samples: ${j.progress.rate} B/s`);
  t.ok(typeof j.progress.eta === 'number', 'an ETA');
});

t.test('64-bit values above 2^53 become decimal strings', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({
    domain: 'vm1',
    disk: 'vda',
    destination: { path: join(s.destDir, 'a.qcow2') },
    bandwidth: '18014398509481984',
  });
  t.equal(job.bandwidth, '18014398509481984');
  t.match(s.conn.sideEffects()[0]!.args[3], { bandwidth: 18014398509481984n });
  s.conn.progress(s.dom, 'vda', 2n ** 60n, 2n ** 61n);
  await new Promise((r) => setTimeout(r, 120));
  const j = (await s.jobs.jobInfo({ jobId: job.jobId })).job;
  t.same([j.progress.cur, j.progress.end, j.progress.percent], [String(2n ** 60n), String(2n ** 61n), 50]);
  s.conn.progress(s.dom, 'vda', 5n, 10n);
  await new Promise((r) => setTimeout(r, 120));
  t.same((await s.jobs.jobInfo({ jobId: job.jobId })).job.progress.cur, 5, 'numbers when they fit');
});

t.test('capabilities', async (t) => {
  const s = await setup(t, { agentVersion: '1.2.3' });
  t.same(await s.jobs.capabilities(), {
    agent: { name: 'blockcopy-agent', version: '1.2.3', mode: 'daemon' },
    libvirt: { version: '9.0.0' },
    hypervisor: { type: 'QEMU', version: '7.2.0' },
    flags: { shallow: true, reuseExternal: true, transientJob: true, synchronousWrites: true },
  });
});

t.test('connection lost and back: recovering in between, then reconciled', async (t) => {
  const s = await setup(t);
  const conn: Array<{ state: string; downMs?: number }> = [];
  s.jobs.on('agent.connection', (e) => conn.push(e));
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'r.qcow2') } });
  s.conn.makeReady(s.dom);
  await until(() => s.changes.some((j) => j.state === 'ready'));

  s.jobs.connectionLost('libvirtd restarted');
  t.same(
    conn.map((e) => e.state),
    ['lost'],
    'lost is announced',
  );
  await rejects(t, s.jobs.pivot({ jobId: job.jobId }), 'recovering', 'mutating calls wait for the reconcile');
  t.equal((await s.jobs.jobInfo({ jobId: job.jobId })).job.state, 'ready', 'reads answer from memory');

  // While the agent had no connection, someone pivoted the copy (the same domains, seen through a new connection).
  const next = new FakeConnection(s.stateDir);
  next.domains = s.conn.domains;
  const disk = s.dom.disks[0]!;
  disk.source = disk.mirror!.path;
  disk.mirror = null;
  disk.job = null;
  await s.jobs.reconnect(next);
  t.same(
    conn.map((e) => e.state),
    ['lost', 'restored'],
    'restored once reconciled',
  );
  t.type(conn[1]!.downMs, 'number', 'with how long it was down');
  const after = (await s.jobs.jobInfo({ jobId: job.jobId })).job;
  t.same([after.state, after.outcome], ['pivoted', 'inferred'], 'the reconcile found the pivot, and says it inferred it');
  t.equal(s.jobs.connection, next, 'calls now go through the new connection');
  const r2 = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(s.destDir, 'r2.qcow2') } });
  t.equal(r2.changed, true, 'and mutating calls are served again');
  t.ok(
    next.calls.some((c) => c.method === 'blockCopy'),
    'through it',
  );
});

t.test('a domain libvirt forgot across its restart, mid-pivot: failed, and the message says what may have happened', async (t) => {
  const s = await setup(t);
  const job = await readyCopy(s, 'vda', 'p.qcow2');
  s.conn.failNext.set('blockJobAbort', new LibvirtError(38, 7, 'End of file while reading data: Input/output error'));
  const pivot = s.jobs.pivot({ jobId: job.jobId, timeout: 10 }).catch((e: unknown) => e);
  // The request has reached the old connection (and died with it) before the connection is replaced.
  await until(() => s.conn.calls.some((c) => c.method === 'blockJobAbort'));
  s.jobs.connectionLost('eof');
  const next = new FakeConnection(s.stateDir); // the restarted libvirtd knows no domain
  await s.jobs.reconnect(next);
  const end = (await s.jobs.jobInfo({ jobId: job.jobId })).job;
  t.match(end, {
    state: 'failed',
    error: {
      name: 'invalidState',
      message:
        /libvirt no longer knows the domain after its restart, although a pivot was under way: if its QEMU process still runs, libvirtd lost track of it/,
    },
    evidence: /found at reconnect: /,
  });
  t.match(await pivot, { errorName: 'pivotFailed' }, 'the waiting pivot call is answered with the failure');
});

t.test('a <mirror> libvirt keeps after the block job ended: the pivot fails as lost by libvirt, never reported done', async (t) => {
  // Graces of seconds (the end event's, the settle's): on a clock 20 times faster than real time.
  const s = await setup(t, { staleMirrorMs: 300, time: new FastClock(20) });
  const job = await readyCopy(s, 'vda', 'p.qcow2');
  s.conn.dropJobs = true;
  const err = await rejects(t, s.jobs.pivot({ jobId: job.jobId, timeout: 30 }), 'pivotFailed', 'the pivot call');
  t.match(
    err.message,
    /libvirt lost track of the pivot: libvirt still shows <mirror ready='pivot'> \d+ s after the block job ended in QEMU.*the guest may be running on either disk/,
  );
  t.match((await s.jobs.jobInfo({ jobId: job.jobId })).job, {
    state: 'failed',
    evidence: /disappeared without an event.*<mirror ready='pivot'>/,
  });
});

t.test('a pivot whose request dies with the connection is decided by the reconcile', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'p.qcow2') } });
  s.conn.makeReady(s.dom);
  await until(() => s.changes.some((j) => j.state === 'ready'));
  s.conn.failNext.set('blockJobAbort', new LibvirtError(38, 7, 'End of file while reading data: Input/output error'));
  const pivot = s.jobs.pivot({ jobId: job.jobId, timeout: 10 });
  // The request has reached the old connection (and died with it) before the connection is replaced.
  await until(() => s.conn.calls.some((c) => c.method === 'blockJobAbort'));
  s.jobs.connectionLost('eof');
  t.equal((await s.jobs.jobInfo({ jobId: job.jobId })).job.state, 'pivoting', 'unknown outcome: still pivoting, not reverted');
  const next = new FakeConnection(s.stateDir);
  next.domains = s.conn.domains;
  await s.jobs.reconnect(next);
  // The request never reached libvirt: the reconcile puts the job back to ready and the call sends it again.
  const r = await pivot;
  t.same([r.job.state, r.changed], ['pivoted', true], 'the same pivot call ends pivoted');
  t.ok(
    next.calls.some((c) => c.method === 'blockJobAbort'),
    'sent again over the new connection',
  );
});

t.test('pivot with deleteMerged is refused by name for a copy; nothing sent, nothing promised', async (t) => {
  const s = await setup(t);
  const job = await readyCopy(s, 'vda', 'dm.qcow2');
  const before = s.conn.sideEffects().length;
  const e = await rejects(t, s.jobs.pivot({ jobId: job.jobId, deleteMerged: true }), 'unsupported', 'a copy merges no layers');
  t.match(e.message, /deleteMerged does not apply/);
  t.equal(s.conn.sideEffects().length, before, 'no pivot was sent');
  t.equal((await s.jobs.jobInfo({ jobId: job.jobId })).job.cleanup, undefined, 'no cleanup recorded');
});
