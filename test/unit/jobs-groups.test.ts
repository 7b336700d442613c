// The group layer on the fake connection: all-or-nothing start, the pause around a group
// switch, and one retention rule with the job manager (a group and its jobs are kept or dropped
// together). Proof of logic only; test/integration/groups.test.ts runs real guests.
import t, { type Test } from 'tap';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../../src/errors.js';
import type { JobManagerOptions } from '../../src/jobs/manager.js';
import { fakeHost, ownRoot } from './fake-connection.js';
import { readyGroup, startGroups, type GroupSetup } from './jobs-fixture.js';
import { rejects } from '../helpers/rejects.js';

type Setup = GroupSetup;

async function setup(t: Test, opts: Partial<JobManagerOptions> = {}): Promise<Setup> {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-groups-');
  const dom = conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }, { target: 'vdb' }, { target: 'vdc' }] });
  return { conn, stateDir, destDir, dom, ...(await startGroups(t, conn, stateDir, { checkDestination: ownRoot(destDir), ...opts })) };
}

const files = (dir: string, prefix: string) =>
  readdirSync(dir)
    .filter((f) => f.startsWith(prefix))
    .sort();

t.test('a group pivots every disk inside one pause', async (t) => {
  const s = await setup(t);
  await readyGroup(s, 'g1');
  const r = await s.groups.pivotGroup({ groupId: 'g1' });
  t.match(r, { changed: true, group: { state: 'pivoted' } });
  const order = s.conn
    .sideEffects()
    .map((c) => c.method)
    .filter((m) => m !== 'blockCopy');
  t.same(order, ['suspend', 'blockJobAbort', 'blockJobAbort', 'resume'], 'pause, both pivots, resume');
  t.equal(s.conn.paused.size, 0, 'the guest runs');
  t.match(await s.groups.pivotGroup({ groupId: 'g1' }), { changed: false }, 'again: unchanged');
});

t.test('all or nothing: a member that cannot start cancels the others', async (t) => {
  const s = await setup(t);
  await rejects(
    t,
    s.groups.blockCopyGroup({
      domain: 'vm1',
      groupId: 'g2',
      disks: [
        { disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } },
        { disk: 'vdz', destination: { path: join(s.destDir, 'z.qcow2') } },
      ],
    }),
    'notFound',
    'an unknown disk',
  );
  t.same(s.conn.sideEffects(), [], 'checked before any copy started');
  s.conn.failNext.set('blockCopy', new AgentError('libvirtError', 'refused'));
  const second = s.groups.blockCopyGroup({
    domain: 'vm1',
    groupId: 'g3',
    disks: [
      { disk: 'vdb', destination: { path: join(s.destDir, 'b.qcow2') } },
      { disk: 'vdc', destination: { path: join(s.destDir, 'c.qcow2') } },
    ],
  });
  await t.rejects(second, 'the first member refused by libvirt fails the group');
  t.equal(s.conn.disk(s.dom, 'vdc').job, null, 'the other disk was never left copying');
});

t.test('one retention rule: a group and its jobs are kept or dropped together', async (t) => {
  const s = await setup(t, { keepEnded: 2 });
  await readyGroup(s, 'old');
  await s.groups.finishGroup({ groupId: 'old' });
  t.equal((await s.groups.groupInfo({ groupId: 'old' })).group.state, 'finished');
  // One more ended job than kept: the oldest unit, the whole group, goes.
  const { job } = await s.jobs.blockCopy({ domain: 'vm1', disk: 'vdc', destination: { path: join(s.destDir, 'c.qcow2') } });
  s.conn.makeReady(s.dom, 'vdc');
  await s.jobs.wait({ jobId: job.jobId, until: 'ready' });
  await s.jobs.finish({ jobId: job.jobId });
  await s.jobs.blockCopy({ domain: 'vm1', disk: 'vdc', destination: { path: join(s.destDir, 'c2.qcow2') } });
  await new Promise((r) => setTimeout(r, 50));
  await rejects(t, s.groups.groupInfo({ groupId: 'old' }), 'noJob', 'the group is gone');
  t.same(s.jobs.groupJobs('old'), [], 'with all its jobs');
  t.same(files(s.stateDir, 'group-'), [], 'its record removed');
  t.equal(files(s.stateDir, 'job-').length, 2, 'the standalone jobs kept: the ended one and the running one');
});

t.test('a running group keeps its ended members', async (t) => {
  const s = await setup(t, { keepEnded: 0 });
  await readyGroup(s, 'live');
  // One member ends by itself (another tool cancelled it); the group cancels the other, which
  // takes its time: the group has not ended yet.
  s.conn.endDelayMs = 1000;
  s.conn.disk(s.dom, 'vda').mirror = null;
  s.conn.disk(s.dom, 'vda').job = null;
  s.conn.blockEvent(s.dom, 'vda', 'canceled');
  const end = Date.now() + 3000;
  while (!s.jobs.groupJobs('live').some((j) => j.state === 'cancelling')) {
    if (Date.now() > end) throw new Error('member never cancelled');
    await new Promise((r) => setTimeout(r, 5));
  }
  await s.jobs.blockCopy({ domain: 'vm1', disk: 'vdc', destination: { path: join(s.destDir, 'c.qcow2') } });
  t.equal(s.jobs.groupJobs('live').length, 2, 'both members still there');
  t.not((await s.groups.groupInfo({ groupId: 'live' })).group.state, 'copying', 'the group never reads copying from a lost member');
  // Let the group's own cancel end before the teardown stops the manager.
  while (s.jobs.groupJobs('live').some((j) => j.state === 'cancelling')) await new Promise((r) => setTimeout(r, 20));
});

t.test('at start-up a group record whose jobs are gone is removed, never read as copying', async (t) => {
  const s = await setup(t);
  await readyGroup(s, 'orphan');
  await s.groups.abortGroup({ groupId: 'orphan' });
  await s.groups.stop();
  await s.jobs.stop();
  for (const f of files(s.stateDir, 'job-')) rmSync(join(s.stateDir, f));
  t.ok(existsSync(join(s.stateDir, 'group-orphan.json')), 'the group record is there');
  const again = await startGroups(t, s.conn, s.stateDir, {});
  await rejects(t, again.groups.groupInfo({ groupId: 'orphan' }), 'noJob', 'the group is gone');
  t.notOk(existsSync(join(s.stateDir, 'group-orphan.json')), 'and so is its record');
});

t.test('a group record that cannot be written: stateUnavailable, no copy started, no group left', async (t) => {
  const s = await setup(t);
  rmSync(s.stateDir, { recursive: true });
  writeFileSync(s.stateDir, 'not a directory');
  await rejects(
    t,
    s.groups.blockCopyGroup({
      domain: 'vm1',
      groupId: 'nospace',
      disks: [
        { disk: 'vda', destination: { path: join(s.destDir, 'a.qcow2') } },
        { disk: 'vdb', destination: { path: join(s.destDir, 'b.qcow2') } },
      ],
    }),
    'stateUnavailable',
    'blockCopyGroup',
  );
  t.same(s.conn.sideEffects(), [], 'nothing sent to libvirt');
  await rejects(t, s.groups.groupInfo({ groupId: 'nospace' }), 'noJob', 'no group left behind');
});
