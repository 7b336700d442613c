// A domain name resolves to the domain that has it now, against the real agent and libvirtd: a
// domain destroyed, undefined and re-created under its name (a new UUID) while the agent was
// down, with a `virsh blockcopy` started on the new one, is what jobInfo and listJobs by name
// answer; the old domain's job is found by its jobId or the old UUID.
import { join } from 'node:path';
import t from 'tap';
import { serveAgent, stateDir, untilState } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';

t.test('jobInfo by name answers the copy on the live domain of that name, not an earlier one', async (t) => {
  const dir = stateDir(t);
  const dom = await hv.createDomain(t, { persistent: true, disks: [{ format: 'raw', sizeMiB: 16 }] });
  const oldUuid = dom.uuid;
  const first = await serveAgent(t, { dir });
  const client = await first.connect();
  const { job: oldJob } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: join(dom.dir, 'ours.raw'), format: 'raw' },
  });
  await untilState(client, oldJob.jobId, ['ready']);
  await first.stop();

  // While the agent is down: the domain goes, and another of the same name comes with a copy by virsh.
  await hv.virsh('destroy', dom.name);
  await hv.virsh('undefine', dom.name);
  await hv.virsh('define', join(dom.dir, 'domain.xml'));
  await hv.virsh('start', dom.name);
  const newUuid = (await hv.virsh('domuuid', dom.name)).trim();
  t.not(newUuid, oldUuid, 'the new domain has a new UUID');
  const theirs = join(dom.dir, 'theirs.raw');
  await hv.virsh('blockcopy', dom.name, 'vda', theirs, '--format', 'raw', '--transient-job', '--bandwidth', '1');

  const second = await serveAgent(t, { dir });
  const client2 = await second.connect();
  const { job } = await client2.call('jobInfo', { domain: dom.name, disk: 'vda' });
  t.match(job, { domain: { uuid: newUuid }, owner: 'adopted', destination: { path: theirs } }, 'jobInfo by name: the live copy');
  const listed = await client2.call('listJobs', { domain: dom.name, includeEnded: true });
  t.same([...new Set(listed.jobs.map((j) => j.domain.uuid))], [newUuid], 'listJobs by name: the live domain only');
  t.match((await client2.call('jobInfo', { jobId: oldJob.jobId })).job, { domain: { uuid: oldUuid } }, 'the old job by its jobId');
  t.match((await client2.call('jobInfo', { domain: oldUuid, disk: 'vda' })).job, { jobId: oldJob.jobId }, 'and by the old UUID');
  await hv.virsh('blockjob', dom.name, 'vda', '--abort');
});
