// A destination on a filesystem that fills up during the copy (a tmpfs with room for the copy
// when it starts, so the pre-flight check lets it through, then filled by another writer),
// with the guest writing during the copy: the job fails cleanly with the reason, the guest
// keeps running on its source, and the source holds every byte the guest wrote, before,
// during and after. (A filesystem without room at the start: test/integration/preflight-space.)
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { statfsSync } from 'node:fs';
import { serveAgent, untilState } from '../../harness/agent.js';
import { Reference, report } from '../helpers/faults.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;

/** Allocates `file` so that about `leave` bytes stay free on `dir`'s filesystem (the copy writes meanwhile). */
function fillUpTo(file: string, dir: string, leave: number): void {
  for (let tries = 0; tries < 8; tries++) {
    const s = statfsSync(dir);
    const bytes = Math.floor((s.bavail * s.bsize - leave) / MiB) * MiB;
    if (bytes <= 0) return;
    try {
      execFileSync('fallocate', ['-l', String(bytes), file], { stdio: 'ignore' });
      return;
    } catch {
      // The copy took some of it in between: measure again.
    }
  }
}

for (const format of ['qcow2', 'raw'] as const) {
  t.test(`ENOSPC on a ${format} destination: failed with the reason, guest and source unharmed`, async (t) => {
    // Mounted before QEMU starts: QEMU runs in its own mount namespace (libvirt's default),
    // which does not see mounts made later.
    // Room for the pre-flight figure (raw: 64 MiB + the 16 MiB margin), filled once the copy runs.
    const small = hv.smallFilesystem(t, 96);
    const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
    const src = dom.disks[0]!.path;
    const ref = Reference.create(dom, 64);
    await ref.write(dom, 'vda', { pattern: 0x5a, offset: 0, length: 40 * MiB });
    const dest = `${small}/copy.${format}`;

    const agent = await serveAgent(t);
    const client = await agent.connect();
    const { job } = await client.call('blockCopy', {
      domain: dom.name,
      disk: 'vda',
      destination: { path: dest, format },
      bandwidth: 16 * MiB,
    });
    // Another writer takes all but a few MiB of the filesystem while the copy runs.
    fillUpTo(`${small}/filler`, small, 4 * MiB);
    // The guest goes on writing while the destination fills.
    await ref.write(dom, 'vda', { pattern: 0x6b, offset: 44 * MiB, length: 2 * MiB });
    const end = await untilState(client, job.jobId, ['failed', 'ready', 'cancelled', 'pivoted', 'finished'], 60_000);
    t.equal(end.state, 'failed', 'the job failed');
    t.match(end.error, { name: 'libvirtError', message: /destination filesystem is full/ }, `the reason: ${end.error?.message}`);
    t.match(end.evidence, /statfs\(.*\): \d+ bytes free/, 'with what the agent saw');
    const waited = (await client.call('wait', { jobId: job.jobId, until: 'done', timeout: 5 })).job;
    t.match(
      waited,
      { state: 'failed', error: { message: /destination filesystem is full/ } },
      'wait until done answers with the failed job and its reason',
    );

    t.equal((await hv.virsh('domstate', dom.name)).trim(), 'running', 'the guest keeps running');
    const xml = await hv.liveXml(dom);
    t.match(xml, `<source file='${src}'`, 'on its source');
    t.notMatch(xml, /<mirror /, 'with no copy left');
    await ref.write(dom, 'vda', { pattern: 0x7c, offset: 50 * MiB, length: 1 * MiB });
    const same = await ref.compare(src, 'qcow2');
    t.equal(same, 'identical', 'qemu-img compare: the source holds every guest write');
    report(t, {
      fault: 'destination full (ENOSPC)',
      at: `${format} destination on a tmpfs filled during the copy`,
      recovered: end.state === 'failed' && same === 'identical',
      mismatches: same === 'identical' ? 0 : 1,
    });

    // The agent still works after the failure: the same disk copies fine to roomy storage.
    const again = await client.call('blockCopy', {
      domain: dom.name,
      disk: 'vda',
      destination: { path: `${dom.dir}/retry.qcow2` },
      whenReady: 'finish',
      wait: 'done',
    });
    t.equal(again.job.state, 'finished', 'a new copy of the disk succeeds after the failure');
  });
}
