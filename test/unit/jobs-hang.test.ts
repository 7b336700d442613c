// libvirtd hung, on the fake connection: reads answer from what the agent knows while every
// libvirt call waits (a read that waited would never answer here: the calls wait until thaw),
// outside copies are still adopted once libvirtd answers, and a libvirt call that times out
// during a mutating call is named as a timeout, not as a dropped connection. The proof with a
// real (private, SIGSTOPped) libvirtd is test/integration/agent-hang-reads.test.ts.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { errorOf } from '../../src/jobs/groups/params.js';
import { outcomeUnknown } from '../../src/jobs/libvirt-errors.js';
import { JobManager } from '../../src/jobs/manager.js';
import { LibvirtError, LibvirtTimeout, VirErrorCode } from '../../src/libvirt/index.js';
import { silentLogger } from '../../src/log.js';
import { fakeHost, ownRoot } from './fake-connection.js';
import { failure } from '../helpers/rejects.js';

async function setup(t: Test) {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-hang-');
  const dom = conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }, { target: 'vdb' }] });
  conn.addDomain({ name: 'vm2' });
  // The poll's own scan stays out of the way: what adopts here is the reads' scan.
  const jobs = new JobManager({
    connection: conn,
    stateDir,
    log: silentLogger,
    pollIntervalMs: 60_000,
    checkDestination: ownRoot(destDir),
  });
  await jobs.start();
  t.teardown(async () => {
    conn.thaw();
    await jobs.stop();
  });
  return { conn, jobs, dom, destDir };
}

const until = async (cond: () => Promise<boolean>, ms = 5000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

t.test('while every libvirt call hangs, reads answer from memory; the outside copy is adopted once libvirtd answers', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } });
  s.conn.freeze();
  s.conn.startOutside(s.dom, 'vdb', '/elsewhere/b.qcow2');

  const all = await s.jobs.listJobs({});
  t.same(
    all.jobs.map((j) => j.jobId),
    [job.jobId],
    'listJobs answers with the jobs the agent knows',
  );
  t.equal(all.incomplete, true, '... and says it may miss a copy started outside the agent');
  t.match(await s.jobs.listJobs({ domain: 'vm1' }), { jobs: [{ jobId: job.jobId }], incomplete: true }, 'listJobs of a known domain');
  t.same(await s.jobs.listJobs({ domain: 'vm2' }), { jobs: [], incomplete: true }, 'listJobs of a domain the agent knows no job on');
  t.equal((await s.jobs.jobInfo({ jobId: job.jobId })).job.state, 'copying', 'jobInfo by id');
  t.equal((await s.jobs.jobInfo({ domain: 'vm1', disk: 'vda' })).job.jobId, job.jobId, 'jobInfo by domain and disk with an active job');
  const calls = s.conn.calls.length;
  for (let i = 0; i < 5; i++) {
    const e = await failure(s.jobs.jobInfo({ domain: 'vm1', disk: 'vdb' }));
    t.equal(e.errorName, 'libvirtTimeout', `jobInfo of a disk libvirtd has not said anything about: ${e.message}`);
    t.equal(e.retryable, true, 'retryable');
  }
  t.ok(
    s.conn.calls.length <= calls + 1,
    `repeated reads share one check of the disk (${s.conn.calls.length - calls} libvirt calls for 5 reads)`,
  );
  t.equal(
    (await failure(s.jobs.jobInfo({ domain: 'vm2', disk: 'vda' }))).errorName,
    'libvirtTimeout',
    'jobInfo on a domain the agent knows no job on',
  );
  t.equal(
    (await failure(s.jobs.wait({ domain: 'vm1', disk: 'vda', until: 'done', timeout: 0.05 }))).errorName,
    'timeout',
    'wait finds the job and waits only its own timeout',
  );
  t.match(await s.jobs.capabilities(), { libvirt: { version: '9.0.0' } }, 'capabilities');

  s.conn.thaw();
  await until(async () => {
    const r = await s.jobs.listJobs({});
    return !r.incomplete && r.jobs.some((j) => j.disk === 'vdb' && j.owner === 'adopted');
  });
  t.pass('once libvirtd answers, the outside copy is listed and the list is complete again');
  t.match(
    (await s.jobs.jobInfo({ domain: 'vm1', disk: 'vdb' })).job,
    { owner: 'adopted', state: 'copying', destination: { path: '/elsewhere/b.qcow2' } },
    'and found by disk',
  );
});

t.test('calls that time out (the binding bound): reads do not wait again while libvirtd stays silent', async (t) => {
  const s = await setup(t);
  s.conn.freeze({ timeoutMs: 30 });
  s.conn.startOutside(s.dom, 'vda', '/elsewhere/a.qcow2');
  t.equal((await s.jobs.listJobs({})).incomplete, true, 'the first read during the hang');
  // Let that scan fail with its timeout: libvirtd is now known not to answer.
  await new Promise((r) => setTimeout(r, 100));
  const calls = s.conn.calls.length;
  t.equal((await s.jobs.listJobs({})).incomplete, true, 'the next read answers at once, incomplete');
  t.ok(s.conn.calls.length - calls <= 1, 'while one scan runs in the background');
  s.conn.thaw();
  await until(async () => (await s.jobs.listJobs({})).jobs.some((j) => j.owner === 'adopted'));
  t.pass('the copy is adopted once libvirtd answers again');
});

t.test('while the agent reconnects, reads say what they cannot know', async (t) => {
  const s = await setup(t);
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } });
  s.jobs.connectionLost('test: libvirtd went away');
  t.match(await s.jobs.listJobs({}), { jobs: [{ jobId: job.jobId }], incomplete: true }, 'listJobs: the known jobs, incomplete');
  t.equal((await s.jobs.jobInfo({ domain: 'vm1', disk: 'vda' })).job.jobId, job.jobId, 'jobInfo of a disk with a job');
  const e = await failure(s.jobs.jobInfo({ domain: 'vm1', disk: 'vdb' }));
  t.match(
    { name: e.errorName, retryable: e.retryable },
    { name: 'unavailable', retryable: true },
    `jobInfo of a disk it cannot check: ${e.message}`,
  );
});

t.test('a mutating call mid-lookup of a disk that libvirtd cannot check gets the named error, not noJob', async (t) => {
  const s = await setup(t);
  s.conn.failNext.set('getXml', new LibvirtTimeout('libvirtd did not answer getXml within 10000 ms; it may still take effect'));
  const e = await failure(s.jobs.abort({ domain: 'vm1', disk: 'vda' }));
  t.equal(e.errorName, 'libvirtTimeout', `abort by domain and disk: ${e.message}`);
  t.equal((await failure(s.jobs.abort({ domain: 'vm1', disk: 'vda' }))).errorName, 'noJob', 'once libvirtd answers: noJob');
});

t.test("a libvirt timeout during blockCopy is a timeout: the job stays, libvirt's words are carried, retrying returns it", async (t) => {
  const s = await setup(t);
  const dest = { path: join(s.destDir, 'a.qcow2') };
  s.conn.failNext.set('blockCopy', new LibvirtTimeout('libvirtd did not answer blockCopy within 10000 ms; it may still take effect'));
  const e = await failure(s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest }));
  t.equal(e.errorName, 'libvirtTimeout', 'named libvirtTimeout');
  t.equal(e.retryable, true, 'retryable');
  t.match(e.message, /did not answer the copy request in time/, e.message);
  t.notMatch(e.message, /connection dropped/, 'not a dropped connection');
  t.match(
    e.data,
    { libvirt: { code: VirErrorCode.OPERATION_TIMEOUT, message: /did not answer blockCopy/ }, job: { state: 'copying' } },
    "libvirt's code and message, and the job",
  );
  const jobId = (e.data.job as { jobId: string }).jobId;
  t.match(
    await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: dest }),
    { changed: false, job: { jobId } },
    'the same call again returns that job',
  );

  // libvirtd never started that copy: the poll, finding no block job behind the unanswered
  // request, says so (not "cancelled", which would claim somebody cancelled a running copy).
  await until(async () => (await s.jobs.jobInfo({ jobId })).job.state !== 'copying');
  t.match(
    (await s.jobs.jobInfo({ jobId })).job,
    { state: 'failed', error: { name: 'libvirtError', message: /never started \(libvirtd did not answer the request/ } },
    'the poll: never started',
  );

  s.conn.failNext.set('blockCopy', new LibvirtError(VirErrorCode.RPC, 7, 'End of file while reading data: Input/output error'));
  const dropped = await failure(s.jobs.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(s.destDir, 'b.qcow2') } }));
  t.equal(dropped.errorName, 'unavailable', 'a dropped connection is still named unavailable');
  t.match(dropped.message, /connection dropped during the copy request/);
  t.match(dropped.data, { libvirt: { code: VirErrorCode.RPC } });

  s.conn.failNext.set(
    'blockJobSetSpeed',
    new LibvirtTimeout('libvirtd did not answer blockJobSetSpeed within 10000 ms; it may still take effect'),
  );
  const running = (await s.jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(s.destDir, 'c.qcow2') } })).job.jobId;
  const speed = await failure(s.jobs.setSpeed({ jobId: running, bandwidth: 1024 }));
  t.equal(speed.errorName, 'libvirtTimeout', `setSpeed: ${speed.message}`);
});

t.test('the shared naming: every request left without an answer, group disks included', async (t) => {
  const timeout = new LibvirtTimeout('libvirtd did not answer blockJobAbort within 10000 ms; it may still take effect');
  const dropped = new LibvirtError(VirErrorCode.NO_CONNECT, 7, 'no connection driver available');
  for (const request of ['pivot request', 'finish request', 'abort request']) {
    t.match(
      outcomeUnknown(timeout, request, 'job x stays'),
      { errorName: 'libvirtTimeout', data: { libvirt: { code: VirErrorCode.OPERATION_TIMEOUT } } },
      `${request}: timeout`,
    );
    t.match(
      outcomeUnknown(dropped, request, 'job x stays'),
      { errorName: 'unavailable', message: /connection dropped/ },
      `${request}: dropped`,
    );
  }
  t.match(
    errorOf(timeout),
    { name: 'libvirtTimeout', libvirt: { code: VirErrorCode.OPERATION_TIMEOUT } },
    'a group disk whose switch timed out',
  );
});
