// The job and group managers on a fake libvirt, as the unit tests start them: one place for
// the options they share, the teardown, and a group brought to ready.
import type { Test } from 'tap';
import { join } from 'node:path';
import { JobManager, type JobManagerOptions } from '../../src/jobs/manager.js';
import { GroupManager } from '../../src/jobs/groups/manager.js';
import { silentLogger } from '../../src/log.js';
import { ownRoot, type FakeConnection, type FakeDomain } from './fake-connection.js';

/** A started JobManager on `conn`, destinations allowed under destDir, stopped at teardown. */
export async function startJobs(
  t: Test,
  conn: FakeConnection,
  stateDir: string,
  destDir: string,
  opts: Partial<JobManagerOptions> = {},
): Promise<JobManager> {
  const jobs = new JobManager({
    connection: conn,
    stateDir,
    log: silentLogger,
    pollIntervalMs: 60_000,
    checkDestination: ownRoot(destDir),
    ...opts,
  });
  await jobs.start();
  t.teardown(() => jobs.stop());
  return jobs;
}

/** A JobManager (fast poll) and a GroupManager over it, both stopped at teardown (groups first). */
export async function startGroups(
  t: Test,
  conn: FakeConnection,
  stateDir: string,
  opts: Partial<JobManagerOptions>,
): Promise<{ jobs: JobManager; groups: GroupManager }> {
  const jobs = new JobManager({ connection: conn, stateDir, log: silentLogger, pollIntervalMs: 50, ...opts });
  await jobs.start();
  const groups = new GroupManager({ jobs, log: silentLogger });
  await groups.start();
  t.teardown(async () => {
    await groups.stop();
    await jobs.stop();
  });
  return { jobs, groups };
}

/** What the group tests set up: the fake host, vm1 on it and both managers. */
export interface GroupSetup {
  conn: FakeConnection;
  jobs: JobManager;
  groups: GroupManager;
  stateDir: string;
  destDir: string;
  dom: FakeDomain;
}

/** A two-disk group (vda, vdb) of vm1 that has reached ready. */
export async function readyGroup(s: GroupSetup, groupId: string): Promise<void> {
  await s.groups.blockCopyGroup({
    domain: 'vm1',
    groupId,
    disks: [
      { disk: 'vda', destination: { path: join(s.destDir, `${groupId}-a.qcow2`) } },
      { disk: 'vdb', destination: { path: join(s.destDir, `${groupId}-b.qcow2`) } },
    ],
  });
  s.conn.makeReady(s.dom, 'vda');
  s.conn.makeReady(s.dom, 'vdb');
  const end = Date.now() + 3000;
  while ((await s.groups.groupInfo({ groupId })).group.state !== 'ready') {
    if (Date.now() > end) throw new Error('group never ready');
    await new Promise((r) => setTimeout(r, 5));
  }
}
