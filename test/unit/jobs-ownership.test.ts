// Ownership logic on the fake connection: a job acts only on the copy that matches it
// (destination, kind, format), outside copies are jobs from their first moment, promises are
// journaled before the answer, jobId is an exact key, and a journal that cannot be written is a
// named refusal. The proof on real libvirt is test/integration/ownership.test.ts.
import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Job } from '../../src/generated/api.js';
import { JobManager, type JobManagerOptions } from '../../src/jobs/manager.js';
import { silentLogger } from '../../src/log.js';
import { FakeConnection, fakeHost, ownRoot, type FakeDomain } from './fake-connection.js';
import { qcow2 } from './qcow2-header.js';
import { rejects } from '../helpers/rejects.js';

interface Setup {
  conn: FakeConnection;
  jobs: JobManager;
  stateDir: string;
  destDir: string;
  dom: FakeDomain;
  changes: Job[];
}

async function setup(t: Test, opts: Partial<JobManagerOptions> = {}): Promise<Setup> {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-own-');
  const dom = conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }, { target: 'vdb' }] });
  const jobs = new JobManager({
    connection: conn,
    stateDir,
    log: silentLogger,
    pollIntervalMs: 50,
    checkDestination: ownRoot(destDir),
    ...opts,
  });
  const changes: Job[] = [];
  jobs.on('job.changed', (j: Job) => changes.push(j));
  await jobs.start();
  t.teardown(() => jobs.stop());
  return { conn, jobs, stateDir, destDir, dom, changes };
}

const until = async (cond: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
};

/** What an operator does with virsh: abort the disk's copy, start one elsewhere. */
function swap(conn: FakeConnection, dom: FakeDomain, disk: string, dest: string): void {
  const d = conn.disk(dom, disk);
  d.mirror = null;
  d.job = null;
  conn.startOutside(dom, disk, dest);
}

t.test('reconcile matches a journaled job to the <mirror> by identity, not by "a block job exists"', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'bc-own-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const stateDir = join(root, 'state');
  const conn = new FakeConnection(stateDir);
  const dom = conn.addDomain({ name: 'vm1' });
  const first = new JobManager({ connection: conn, stateDir, log: silentLogger, pollIntervalMs: 50, checkDestination: ownRoot(root) });
  await first.start();
  const { job } = await first.blockCopy({
    domain: 'vm1',
    disk: 'vda',
    destination: { path: join(root, 'mine.qcow2') },
    timeout: 1,
    whenReady: 'pivot',
  });
  await first.stop();
  swap(conn, dom, 'vda', '/elsewhere/theirs.qcow2');
  conn.makeReady(dom, 'vda', { event: false });
  const sent = conn.sideEffects().length;

  const second = new JobManager({ connection: conn, stateDir, log: silentLogger, pollIntervalMs: 50, checkDestination: ownRoot(root) });
  await second.start();
  t.teardown(() => second.stop());
  const old = (await second.jobInfo({ jobId: job.jobId })).job;
  t.match(old, { state: 'cancelled', outcome: 'inferred', evidence: /goes to \/elsewhere\/theirs\.qcow2, not to this job's destination/ });
  const other = (await second.listJobs({})).jobs.find((j) => j.jobId !== job.jobId);
  t.match(other, { owner: 'adopted', state: 'ready', destination: { path: '/elsewhere/theirs.qcow2' } }, 'the other copy is adopted');
  await new Promise((r) => setTimeout(r, 1500)); // past the old job's deadline
  t.equal(conn.sideEffects().length, sent, 'no pivot (whenReady) and no deadline abort reached the other copy');
  t.equal(conn.disk(dom).mirror?.path, '/elsewhere/theirs.qcow2', 'which still runs');
});

for (const op of ['pivot', 'finish', 'abort', 'setSpeed'] as const) {
  t.test(`${op}: the live XML is checked right before the call; a swapped copy gets nothing`, async (t) => {
    const s = await setup(t);
    const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'mine.qcow2') } });
    s.conn.makeReady(s.dom);
    await s.jobs.wait({ jobId: job.jobId, until: 'ready' });
    // Swapped faster than the poll, and without events.
    swap(s.conn, s.dom, 'vda', '/elsewhere/theirs.qcow2');
    s.conn.makeReady(s.dom, 'vda', { event: false });
    const sent = s.conn.sideEffects().length;
    const call = op === 'setSpeed' ? s.jobs.setSpeed({ jobId: job.jobId, bandwidth: 1000 }) : s.jobs[op]({ jobId: job.jobId });
    const e = await rejects(t, call, 'invalidState', `${op} refused`);
    t.match(e?.message, /no longer owns the copy.*nothing was sent to libvirt/);
    t.equal(s.conn.sideEffects().length, sent, 'nothing sent to libvirt');
    t.match((await s.jobs.jobInfo({ jobId: job.jobId })).job, { state: 'cancelled', outcome: 'inferred' });
    t.match((await s.jobs.jobInfo({ domain: 'vm1', disk: 'vda' })).job, {
      owner: 'adopted',
      destination: { path: '/elsewhere/theirs.qcow2' },
    });
  });
}

t.test('the poll notices a swapped copy by itself', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'mine.qcow2') } });
  swap(s.conn, s.dom, 'vda', '/elsewhere/theirs.qcow2');
  await until(() => s.changes.some((c) => c.jobId === job.jobId && c.state === 'cancelled'));
  await until(() => s.changes.some((c) => c.owner === 'adopted'));
  t.pass('old job ended, other copy adopted, without any call');
});

t.test('a format or kind that differs is another copy too', async (t) => {
  const s = await setup(t);
  const path = join(s.destDir, 'same-path');
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path, format: 'raw' } });
  swap(s.conn, s.dom, 'vda', path); // same path, qcow2
  s.conn.makeReady(s.dom, 'vda', { event: false });
  await rejects(t, s.jobs.abort({ jobId: job.jobId }), 'invalidState', 'abort refused');
  t.match((await s.jobs.jobInfo({ jobId: job.jobId })).job, { state: 'cancelled', evidence: /writes qcow2, this job raw/ });
});

t.test('a copy started outside is a job from its first moment (poll, listJobs, lookup)', async (t) => {
  const s = await setup(t, { pollIntervalMs: 60_000 });
  s.conn.startOutside(s.dom, 'vda', '/elsewhere/a.qcow2');
  t.match((await s.jobs.listJobs({ domain: 'vm1' })).jobs, [{ owner: 'adopted', state: 'copying', disk: 'vda' }], 'listJobs');
  s.conn.startOutside(s.dom, 'vdb', '/elsewhere/b.qcow2');
  t.match((await s.jobs.jobInfo({ domain: 'vm1', disk: 'vdb' })).job, { owner: 'adopted', state: 'copying' }, 'jobInfo by domain and disk');
  t.match(await s.jobs.setSpeed({ domain: 'vm1', disk: 'vdb', bandwidth: 4096 }), { job: { bandwidth: 4096 } }, 'setSpeed');
  const polled = await setup(t);
  polled.conn.startOutside(polled.dom, 'vdb', '/elsewhere/c.qcow2');
  await until(() => polled.changes.some((c) => c.owner === 'adopted' && c.state === 'copying'));
  t.pass('the poll adopts it in phase 1');
});

t.test('everything the answer promises is journaled before it is sent', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({
    domain: 'vm1',
    disk: 'vda',
    destination: { path: join(s.destDir, 'a.qcow2') },
    timeout: 60,
    whenReady: 'finish',
    bandwidth: 2048,
  });
  const atCall = s.conn.calls.find((c) => c.method === 'blockCopy')!.journal.find((r) => r.job.jobId === job.jobId);
  t.ok(atCall?.timeoutAt, 'the deadline is in the record libvirt was called after');
  t.match(atCall?.job, { whenReady: 'finish', bandwidth: 2048 });
  await s.jobs.setSpeed({ jobId: job.jobId, bandwidth: 8192 });
  t.equal(
    s.conn.readJournal().find((r) => r.job.jobId === job.jobId)?.job.bandwidth,
    8192,
    'setSpeed: the bandwidth is journaled when it answers',
  );
});

t.test('jobId is an exact idempotency key', async (t) => {
  const s = await setup(t);
  const dest = { path: join(s.destDir, 'a.qcow2'), format: 'qcow2' as const };
  const a = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest, jobId: 'a' });
  await rejects(
    t,
    s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest, jobId: 'b' }),
    'jobExists',
    'a new jobId while a copy to the same destination runs',
  );
  t.match(
    await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest, jobId: 'a' }),
    { changed: false, job: { jobId: 'a' } },
    'the same jobId: that job',
  );
  t.match(
    await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest }),
    { changed: false, job: { jobId: a.job.jobId } },
    "no jobId: the disk's job to that destination",
  );
  s.conn.makeReady(s.dom);
  await s.jobs.wait({ jobId: 'a', until: 'ready' });
  await s.jobs.finish({ jobId: 'a' });
  writeFileSync(dest.path, qcow2()); // the finished copy the next one reuses
  const b = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest, reuseExternal: true, jobId: 'b' });
  t.match(b, { changed: true, job: { jobId: 'b', state: 'copying' } }, 'a new jobId after the first finished: a new copy');
});

t.test('a journal that cannot be written: stateUnavailable with the errno, reads go on, and it recovers', async (t) => {
  const s = await setup(t);
  rmSync(s.stateDir, { recursive: true });
  writeFileSync(s.stateDir, 'not a directory');
  const e = await rejects(
    t,
    s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } }),
    'stateUnavailable',
    'blockCopy',
  );
  t.match(e?.data, { errno: 'ENOTDIR' });
  t.equal(e?.retryable, true, 'retryable');
  t.same(s.conn.sideEffects(), [], 'nothing sent to libvirt');
  t.same((await s.jobs.listJobs({})).jobs, [], 'reads are served, no job left behind');
  rmSync(s.stateDir);
  mkdirSync(s.stateDir);
  t.match(
    await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } }),
    { changed: true },
    'works again once writable',
  );
});

t.test("mirrorMismatch: identity fields, and libvirt 9.0's job='' while an end is processed", async (t) => {
  const { mirrorMismatch } = await import('../../src/jobs/kinds/copy/job.js');
  const job = { disk: 'vda', destination: { path: '/d/a.qcow2', format: 'qcow2', type: 'file' } } as unknown as Job;
  const m = { job: 'copy', ready: 'yes', type: 'file', path: '/d/a.qcow2', format: 'qcow2' };
  t.equal(mirrorMismatch(job, m), null, 'the same copy');
  t.equal(mirrorMismatch(job, { ...m, path: '/d/./a.qcow2' }), null, 'the same path spelled otherwise');
  t.equal(mirrorMismatch(job, { ...m, job: '', ready: 'pivot' }), null, "job='' during a pivot is still the copy");
  t.match(mirrorMismatch(job, { ...m, job: 'active-commit' }), /active-commit job/);
  t.match(mirrorMismatch(job, { ...m, path: '/d/b.qcow2' }), /goes to \/d\/b\.qcow2/);
  t.match(mirrorMismatch(job, { ...m, type: 'block' }), /block destination/);
  t.match(mirrorMismatch(job, { ...m, format: 'raw' }), /writes raw/);
  t.equal(
    mirrorMismatch({ ...job, destination: { ...job.destination, format: null } } as Job, { ...m, format: 'raw' }),
    null,
    'a format the job left open matches any',
  );
});
