// The domain goes away in the middle of a copy: destroyed by the operator, or its QEMU process
// killed (an emulator crash, as libvirt sees it). The job ends failed with that reason and the
// evidence, the agent serves on, and the source disk holds every byte the guest wrote.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { serveAgent, untilState } from '../../harness/agent.js';
import { Reference, report } from '../helpers/faults.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;

const HOW = {
  destroyed: { kill: (dom: hv.TestDomain) => hv.virsh('destroy', dom.name), reason: /stopped during the copy \(destroyed\)/ },
  'QEMU killed': {
    kill: (dom: hv.TestDomain) => {
      const pid = Number(readFileSync(`/run/libvirt/qemu/${dom.name}.pid`, 'utf8'));
      process.kill(pid, 'SIGKILL');
    },
    reason: /stopped during the copy \(QEMU exited unexpectedly\)/,
  },
};

for (const [how, { kill, reason }] of Object.entries(HOW)) {
  t.test(`the domain ${how} mid-copy → failed with the reason, source intact`, async (t) => {
    const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
    const src = dom.disks[0]!.path;
    const ref = Reference.create(dom, 64);
    await ref.write(dom, 'vda', { pattern: 0x3c, offset: 0, length: 32 * MiB });
    const agent = await serveAgent(t);
    const client = await agent.connect();
    const { job } = await client.call('blockCopy', {
      domain: dom.name,
      disk: 'vda',
      destination: { path: `${dom.dir}/copy.qcow2` },
      bandwidth: 2 * MiB,
    });
    await ref.write(dom, 'vda', { pattern: 0x4d, offset: 40 * MiB, length: 1 * MiB });
    await kill(dom);
    const end = await untilState(client, job.jobId, ['failed', 'cancelled', 'pivoted', 'finished'], 30_000);
    t.match(
      end,
      { state: 'failed', error: { name: 'invalidState', message: reason }, evidence: /lifecycle event stopped/ },
      `the reason: ${end.error?.message}`,
    );
    t.equal((await client.call('capabilities', {})).agent.version.length > 0, true, 'the agent serves on');
    const same = await ref.compare(src, 'qcow2');
    t.equal(same, 'identical', 'qemu-img compare: the source holds every guest write');
    report(t, {
      fault: 'domain gone mid-copy',
      at: how,
      recovered: end.state === 'failed' && reason.test(end.error?.message ?? ''),
      mismatches: same === 'identical' ? 0 : 1,
    });
  });
}
