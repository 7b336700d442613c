// Jobs on different disks and domains run at once: two disks of one VM and a second VM,
// all copied concurrently, all pivoted, each verified in the live XML.
import t from 'tap';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';

const MiB = 1024 * 1024;

t.test('two disks of one VM and two VMs at once', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const a = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 64 },
      { format: 'raw', sizeMiB: 64 },
    ],
  });
  const b = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  const targets = [
    { dom: a, disk: 'vda', pattern: 0x81 },
    { dom: a, disk: 'vdb', pattern: 0x82 },
    { dom: b, disk: 'vda', pattern: 0x83 },
  ];
  for (const x of targets) await hv.guestWrite(x.dom, x.disk, { pattern: x.pattern, offset: 0, length: 32 * MiB });

  // Started together, rate-limited so that all three are in phase 1 at the same time.
  const started = await Promise.all(
    targets.map((x) =>
      client.call('blockCopy', {
        domain: x.dom.name,
        disk: x.disk,
        destination: { path: `${x.dom.dir}/${x.disk}-moved.img`, format: x.disk === 'vdb' ? 'raw' : 'qcow2' },
        bandwidth: 16 * MiB,
      }),
    ),
  );
  const { jobs: running } = await client.call('listJobs', { state: ['copying'] });
  const ours = new Set(started.map((s) => s.job.jobId));
  t.equal(running.filter((j) => ours.has(j.jobId)).length, 3, 'three copies in phase 1 at once');
  t.equal(new Set(started.map((s) => s.job.jobId)).size, 3, 'three distinct jobs');

  await Promise.all(started.map((s) => client.call('wait', { jobId: s.job.jobId, until: 'ready', timeout: 120 })));
  const pivots = await Promise.all(started.map((s) => client.call('pivot', { jobId: s.job.jobId })));
  t.same(
    pivots.map((p) => p.job.state),
    ['pivoted', 'pivoted', 'pivoted'],
    'all pivoted',
  );
  for (const x of targets) {
    const dest = `${x.dom.dir}/${x.disk}-moved.img`;
    t.match(await hv.liveXml(x.dom), `<source file='${dest}'`, `${x.dom.name}/${x.disk} runs on its copy`);
    t.ok(
      await hv.readPattern(dest, x.disk === 'vdb' ? 'raw' : 'qcow2', { pattern: x.pattern, offset: 0, length: 32 * MiB }),
      `${x.disk} data intact`,
    );
  }
  const { jobs: byDomain } = await client.call('listJobs', { domain: a.name });
  t.equal(byDomain.length, 2, 'listJobs filters by domain');
});

t.test('the host limit: refused (retryable) or queued when asked', async (t) => {
  const agent = await serveAgent(t, { config: { maxConcurrentCopies: 1 } });
  const client = await agent.connect();
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 128 },
      { format: 'qcow2', sizeMiB: 32 },
    ],
  });
  await hv.guestWrite(dom, 'vda', { pattern: 0x84, offset: 0, length: 96 * MiB });
  const first = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${dom.dir}/first.qcow2` },
    bandwidth: MiB,
  });
  const refused = await client.call('blockCopy', { domain: dom.name, disk: 'vdb', destination: { path: `${dom.dir}/second.qcow2` } }).then(
    () => null,
    (e) => e,
  );
  t.match(refused, { code: -32012, data: { name: 'tooManyJobs', retryable: true } }, 'a second copy is refused');
  const queued = client.call('blockCopy', {
    domain: dom.name,
    disk: 'vdb',
    destination: { path: `${dom.dir}/second.qcow2` },
    queue: true,
    wait: 'ready',
  });
  let settled = false;
  void queued.finally(() => {
    settled = true;
  });
  await new Promise((r) => setTimeout(r, 1000));
  t.notOk(settled, 'with queue: true it waits for a slot');
  t.notMatch((await hv.liveXml(dom)).replace(/<disk[\s\S]*?vda[\s\S]*?<\/disk>/, ''), /<mirror/, 'and has not started yet');
  await client.call('abort', { jobId: first.job.jobId });
  const second = await queued;
  t.equal(second.job.state, 'ready', 'it starts once the first copy ends');
  await client.call('abort', { jobId: second.job.jobId });
});
