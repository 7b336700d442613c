// The one job surface (src/jobs/all-jobs.ts) over a real JobManager on the fake libvirt and a
// stand-in for the domain-job side: one id space, one list, one stream, calls by jobId reaching
// either kind, block-only requests refused by name for a backup.
import t, { type Test } from 'tap';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { AgentError } from '../../src/errors.js';
import type { AnyJob, BackupJob } from '../../src/generated/api.js';
import { AllJobs, type DomainJobs } from '../../src/jobs/all-jobs.js';
import { fakeHost } from './fake-connection.js';
import { startJobs } from './jobs-fixture.js';

function backupJob(over: Partial<BackupJob> = {}): BackupJob {
  return {
    jobId: 'bk-1',
    kind: 'backup',
    domain: { name: 'vm1', uuid: 'u-vm1' },
    state: 'running',
    mode: 'full',
    since: null,
    checkpoint: null,
    dir: '/backups',
    manifest: null,
    disks: [{ disk: 'vda', file: '/backups/vm1-vda.full.qcow2', format: 'qcow2' }],
    progress: { processed: '0', total: '0', percent: null },
    owner: 'agent',
    createdAt: '2026-12-07T10:00:00.000Z',
    updatedAt: '2026-12-07T10:00:00.000Z',
    ...over,
  };
}

/** The domain-job side as AllJobs sees it, with its calls counted. */
class Backups extends EventEmitter implements DomainJobs {
  aborted: string[] = [];
  constructor(readonly jobs: BackupJob[]) {
    super();
  }
  get(jobId: string) {
    return this.jobs.find((j) => j.jobId === jobId);
  }
  list(f: { domain?: string; states?: readonly string[]; includeEnded: boolean }) {
    return this.jobs.filter((j) => (!f.domain || j.domain.name === f.domain) && (!f.states || f.states.includes(j.state)));
  }
  async wait(jobId: string) {
    return this.get(jobId)!;
  }
  async abort(jobId: string) {
    this.aborted.push(jobId);
    return { job: { ...this.get(jobId)!, state: 'cancelled' as const }, changed: true };
  }
}

async function setup(t: Test) {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-alljobs-');
  conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }, { target: 'vdb' }] });
  const backups = new Backups([backupJob()]);
  const jobs = await startJobs(t, conn, stateDir, destDir, { otherJob: (id) => backups.get(id) });
  return { all: new AllJobs(jobs, backups), backups, jobs, destDir };
}

const nameOf = async (p: Promise<unknown>) =>
  p.then(
    () => 'resolved',
    (e: unknown) => (e instanceof AgentError ? e.errorName : String(e)),
  );

t.test('one id space: a block job with a backup id is jobExists, and nothing is started', async (t) => {
  const { all, destDir } = await setup(t);
  t.equal(
    await nameOf(all.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(destDir, 'c.qcow2') }, jobId: 'bk-1' })),
    'jobExists',
  );
  t.equal((await all.listJobs({ kind: ['copy'] })).jobs.length, 0, 'no copy was started');
});

t.test('calls by jobId reach either kind; the list merges both, oldest first, by the same filters', async (t) => {
  const { all, backups, destDir } = await setup(t);
  const copy = await all.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(destDir, 'c.qcow2') }, jobId: 'cp-1' });
  t.equal((await all.jobInfo({ jobId: 'bk-1' })).job.kind, 'backup', 'jobInfo of the backup');
  t.equal((await all.jobInfo({ jobId: 'cp-1' })).job.kind, 'copy', 'jobInfo of the copy');
  const every = (await all.listJobs({})).jobs.map((j: AnyJob) => j.jobId);
  t.same(every, ['bk-1', 'cp-1'], 'both kinds, oldest first');
  t.same(
    (await all.listJobs({ kind: ['backup'] })).jobs.map((j) => j.jobId),
    ['bk-1'],
    'kind backup: the backups only',
  );
  t.same(
    (await all.listJobs({ kind: ['copy'] })).jobs.map((j) => j.jobId),
    ['cp-1'],
    'kind copy: the copies only',
  );
  t.same(
    (await all.listJobs({ state: ['running'] })).jobs.map((j) => j.jobId),
    ['bk-1'],
    'a backup state filters both sides',
  );
  t.same(
    (await all.listJobs({ state: [copy.job.state] })).jobs.map((j) => j.jobId),
    ['cp-1'],
    "a block job's state filters both sides",
  );
  for (const request of ['pivot', 'finish'] as const)
    t.equal(await nameOf(all[request]({ jobId: 'bk-1' })), 'unsupported', `${request} of a backup: unsupported`);
  t.equal(await nameOf(all.setSpeed({ jobId: 'bk-1', bandwidth: 1 })), 'unsupported', 'setSpeed of a backup: unsupported');
  const ab = await all.abort({ jobId: 'bk-1' });
  t.same([ab.changed, ab.job.state, backups.aborted], [true, 'cancelled', ['bk-1']], 'abort of a backup: the backup side aborts it');
  t.same((await all.abort({ jobId: 'cp-1' })).job.state, 'cancelled', 'abort of a copy: the job manager');
  t.equal(await nameOf(all.jobInfo({ jobId: 'nope' })), 'noJob', 'an unknown id: noJob');
});

t.test('one job.changed stream: both kinds reach a listener, and off detaches it from both', async (t) => {
  const { all, backups, destDir } = await setup(t);
  const seen: string[] = [];
  const listener = (j: AnyJob) => seen.push(`${j.kind}:${j.jobId}`);
  all.on('job.changed', listener);
  backups.emit('job.changed', backupJob());
  await all.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(destDir, 'c.qcow2') }, jobId: 'cp-2' });
  t.ok(seen.includes('backup:bk-1') && seen.includes('copy:cp-2'), `both kinds heard: ${seen.join(' ')}`);
  all.off('job.changed', listener);
  const before = seen.length;
  backups.emit('job.changed', backupJob());
  await all.abort({ jobId: 'cp-2' });
  t.equal(seen.length, before, 'nothing after off');
});
