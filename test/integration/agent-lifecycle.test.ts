// The agent end to end, over WebSocket and over stdio, against the real libvirtd:
// copy → ready → pivot, → finish, abort in phase 1, whenReady+wait in one call, timeout,
// setSpeed, and the notifications of every state change in order.
import t from 'tap';
import { RpcError } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { agentClient, JobWatch, untilState, type Transport } from '../../harness/agent.js';

const MiB = 1024 * 1024;

for (const transport of ['ws', 'stdio'] as Transport[]) {
  t.test(`over ${transport}`, async (t) => {
    const client = await agentClient(t, transport);
    const watch = new JobWatch(client);
    t.same(await client.call('subscribe', {}), { subscribed: true }, 'subscribed to notifications');

    t.test('copy → ready → pivot, notifications in order', async (t) => {
      const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
      await hv.guestWrite(dom, 'vda', { pattern: 0x61, offset: 0, length: 16 * MiB });
      const dest = `${dom.dir}/pivot.qcow2`;
      const started = await client.call('blockCopy', {
        domain: dom.name,
        disk: 'vda',
        destination: { path: dest, format: 'qcow2' },
        wait: 'ready',
      });
      t.equal(started.changed, true, 'a new job');
      t.equal(started.job.state, 'ready', 'wait: ready answers once ready');
      t.equal(started.job.source.path, dom.disks[0]!.path, 'source recorded');
      const again = await client.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest, format: 'qcow2' } });
      t.same([again.changed, again.job.jobId], [false, started.job.jobId], 'the same blockCopy again returns the job, changed=false');
      const pivoted = await client.call('pivot', { domain: dom.name, disk: 'vda' });
      t.same([pivoted.changed, pivoted.job.state, pivoted.job.outcome], [true, 'pivoted', 'observed']);
      const xml = await hv.liveXml(dom);
      t.match(xml, `<source file='${dest}'`, 'virsh dumpxml: the guest runs on the destination');
      t.notMatch(xml, /<mirror/, 'virsh dumpxml: no mirror left');
      t.equal((await client.call('pivot', { jobId: started.job.jobId })).changed, false, 'pivot again: changed=false');
      t.ok(await hv.readPattern(dest, 'qcow2', { pattern: 0x61, offset: 0, length: 16 * MiB }), 'the guest data is on the copy');
      t.same(watch.states(started.job.jobId), ['copying', 'ready', 'pivoting', 'pivoted'], 'job.changed for every state, in order');
    });

    t.test('copy → ready → finish: a consistent copy including writes made during the copy', async (t) => {
      const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 96 }] });
      await hv.guestWrite(dom, 'vda', { pattern: 0x62, offset: 0, length: 32 * MiB });
      const dest = `${dom.dir}/finish.raw`;
      const { job } = await client.call('blockCopy', {
        domain: dom.name,
        disk: 'vda',
        destination: { path: dest, format: 'raw' },
        bandwidth: 16 * MiB,
      });
      await hv.guestWrite(dom, 'vda', { pattern: 0x63, offset: 64 * MiB, length: 8 * MiB });
      await untilState(client, job.jobId, ['ready']);
      const fin = await client.call('finish', { jobId: job.jobId });
      t.same([fin.changed, fin.job.state], [true, 'finished']);
      t.match(await hv.liveXml(dom), `<source file='${dom.disks[0]!.path}'`, 'the guest stays on its source');
      t.equal(await hv.compareImages(dom.disks[0]!.path, dest), 'identical', 'qemu-img compare: the copy equals the source');
      t.ok(
        await hv.readPattern(dest, 'raw', { pattern: 0x63, offset: 64 * MiB, length: 8 * MiB }),
        'writes made during the copy are in it',
      );
      t.same(watch.states(job.jobId), ['copying', 'ready', 'finishing', 'finished'], 'notifications in order');
    });

    t.test('abort in phase 1', async (t) => {
      const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 128 }] });
      await hv.guestWrite(dom, 'vda', { pattern: 0x64, offset: 0, length: 96 * MiB });
      const { job } = await client.call('blockCopy', {
        domain: dom.name,
        disk: 'vda',
        destination: { path: `${dom.dir}/abort.qcow2` },
        bandwidth: MiB,
      });
      const aborted = await client.call('abort', { jobId: job.jobId });
      t.same([aborted.changed, aborted.job.state], [true, 'cancelled']);
      t.match(await hv.liveXml(dom), `<source file='${dom.disks[0]!.path}'`, 'the guest stays on its source');
      t.equal((await client.call('abort', { jobId: job.jobId })).changed, false, 'abort again: changed=false');
      t.same(watch.states(job.jobId), ['copying', 'cancelling', 'cancelled'], 'notifications in order');
    });

    t.test('whenReady: pivot with wait: done in one call', async (t) => {
      const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }], persistent: true });
      const dest = `${dom.dir}/auto.qcow2`;
      const r = await client.call('blockCopy', {
        domain: dom.uuid,
        disk: 'vda',
        destination: { path: dest, format: 'qcow2' },
        whenReady: 'pivot',
        wait: 'done',
        jobId: `auto-${transport}`,
      });
      t.same(
        [r.job.state, r.job.jobId, r.job.options?.transientJob],
        ['pivoted', `auto-${transport}`, true],
        'pivoted in one call; persistent domains get a transient job',
      );
      t.match(r.job.persistent, { defined: true }, 'the persistent definition was checked');
      t.match(await hv.liveXml(dom), `<source file='${dest}'`);
    });

    t.test('timeout cancels a copy that does not get ready in time', async (t) => {
      const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 128 }] });
      await hv.guestWrite(dom, 'vda', { pattern: 0x65, offset: 0, length: 96 * MiB });
      const err = await client
        .call('blockCopy', {
          domain: dom.name,
          disk: 'vda',
          destination: { path: `${dom.dir}/slow.qcow2` },
          bandwidth: MiB,
          wait: 'ready',
          timeout: 1,
        })
        .then(
          () => null,
          (e: unknown) => e,
        );
      t.ok(err instanceof RpcError, 'the call fails');
      t.equal((err as RpcError).errorName, 'timeout');
      t.equal((err as RpcError).retryable, true);
      const job = (err as RpcError).data?.job;
      t.equal(job?.state, 'cancelled', 'the copy was cancelled, like virsh --timeout');
      t.notMatch(await hv.liveXml(dom), /<mirror/, 'no copy left running');
    });

    t.test('setSpeed changes the limit libvirt applies', async (t) => {
      const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 128 }] });
      await hv.guestWrite(dom, 'vda', { pattern: 0x66, offset: 0, length: 96 * MiB });
      const { job } = await client.call('blockCopy', {
        domain: dom.name,
        disk: 'vda',
        destination: { path: `${dom.dir}/speed.qcow2` },
        bandwidth: MiB,
      });
      const witness = async () => /Bandwidth limit:\s*(\d+)/.exec(await hv.virsh('blockjob', dom.name, 'vda', '--info', '--bytes'))?.[1];
      t.equal(await witness(), String(MiB), 'virsh sees 1 MiB/s');
      const r = await client.call('setSpeed', { jobId: job.jobId, bandwidth: 64 * MiB });
      t.equal(r.job.bandwidth, 64 * MiB, 'the job reports the new limit');
      t.equal(await witness(), String(64 * MiB), 'virsh sees 64 MiB/s');
      const ready = await untilState(client, job.jobId, ['ready']);
      t.equal(ready.state, 'ready', 'the faster copy completes phase 1');
      await client.call('abort', { jobId: job.jobId });
    });
  });
}
