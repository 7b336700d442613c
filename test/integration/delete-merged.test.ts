// deleteMerged against the real agent and libvirtd, with a guest writing throughout: the files
// that left a chain are deleted only after the end is verified, the base (or active layer)
// holds every write (qemu-img compare against a reference), a layer another domain still uses
// is kept with the reason, and a crash between the journaled intent and the unlink is finished
// by the next start of the agent.
import t, { type Test } from 'tap';
import { existsSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { killed } from '../helpers/faults.js';
import type { AgentClient } from '../../src/client/index.js';
import type { Job } from '../../src/generated/api.js';
import { blockJob, serveAgent, stateDir, untilState } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';
import { layered } from '../helpers/chain.js';

const MiB = 1024 * 1024;

async function chain(dom: hv.TestDomain, target: string): Promise<string[]> {
  const xml = await hv.liveXml(dom);
  const disk = xml.split('<disk ').find((d) => d.includes(`<target dev='${target}'`)) ?? '';
  return [...disk.matchAll(/<source file='([^']+)'/g)].map((m) => m[1]!);
}

async function setup(t: Test, layers: number, persistent = false) {
  const { dom, ref, files } = await layered(t, layers, { persistent });
  return { dom, ref, base: files.at(-1)!, overlays: files.slice(0, -1).reverse() };
}

async function untilCleaned(client: AgentClient, jobId: string): Promise<Job> {
  for (let i = 0; i < 600; i++) {
    const job = blockJob((await client.call('jobInfo', { jobId })).job);
    if (job.cleanup?.state === 'done') return job;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the cleanup of job ${jobId} did not finish`);
}

t.test('active commit, pivot with deleteMerged: the overlay is gone, the base holds every write', async (t) => {
  const { dom, ref, base, overlays } = await setup(t, 1);
  const client = await (await serveAgent(t)).connect();
  const r = await client.call('blockCommit', { domain: dom.name, disk: 'vda' });
  await ref.write(dom, 'vda', { pattern: 0x33, offset: 40 * MiB, length: 2 * MiB });
  await untilState(client, r.job.jobId, ['ready']);
  const p = await client.call('pivot', { jobId: r.job.jobId, deleteMerged: true });
  t.match(p.job, { state: 'pivoted', cleanup: { deleteMerged: true, state: 'done', removed: [overlays[0]], kept: [] } });
  t.notOk(existsSync(overlays[0]!), 'the overlay file is deleted');
  t.same(await chain(dom, 'vda'), [base], 'the guest runs on its base');
  await ref.write(dom, 'vda', { pattern: 0x35, offset: 48 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(base, 'qcow2'), 'identical', 'qemu-img compare: the base holds every write');
});

t.test('persistent domain: blockCommit whenReady pivot with deleteMerged, once the definition names the base', async (t) => {
  const { dom, ref, base, overlays } = await setup(t, 1, true);
  const client = await (await serveAgent(t)).connect();
  const r = await client.call('blockCommit', { domain: dom.name, disk: 'vda', whenReady: 'pivot', deleteMerged: true, wait: 'done' });
  t.match(r.job, {
    state: 'pivoted',
    persistent: { defined: true, matchesLive: true },
    cleanup: { state: 'done', removed: [overlays[0]], kept: [] },
  });
  t.match(await hv.virsh('dumpxml', '--inactive', dom.name), new RegExp(`<source file='${base}'`), 'the definition names the base');
  t.notOk(existsSync(overlays[0]!), 'the overlay file is deleted');
  await ref.write(dom, 'vda', { pattern: 0x36, offset: 50 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(base, 'qcow2'), 'identical', 'qemu-img compare: the base holds every write');
});

t.test('pull with deleteMerged removes the pulled middle layer', async (t) => {
  const { dom, ref, base, overlays } = await setup(t, 2);
  const [mid, top] = overlays as [string, string];
  const client = await (await serveAgent(t)).connect();
  const r = await client.call('blockPull', { domain: dom.name, disk: 'vda', base, deleteMerged: true, wait: 'done' });
  t.match(r.job, { kind: 'pull', state: 'completed', cleanup: { state: 'done', removed: [mid], kept: [] } });
  t.notOk(existsSync(mid), 'the pulled layer is deleted');
  t.ok(existsSync(base) && existsSync(top), 'the active layer and base stay');
  t.same(await chain(dom, 'vda'), [top, base]);
  await ref.write(dom, 'vda', { pattern: 0x39, offset: 56 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(top, 'qcow2'), 'identical', 'qemu-img compare: top and base hold every write');
});

t.test('a merged layer another (stopped) domain still uses is kept, with the reason', async (t) => {
  const { dom, ref, base, overlays } = await setup(t, 2);
  const [mid, top] = overlays as [string, string];
  // A second domain, defined and stopped, whose disk is an overlay over the same middle layer.
  const other = `${hv.PREFIX}${process.pid}-shared`;
  const otherDisk = `${dom.dir}/other.qcow2`;
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', otherDisk]);
  const xmlPath = `${dom.dir}/other.xml`;
  writeFileSync(
    xmlPath,
    `<domain type='${hv.domainType()}'><name>${other}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>` +
      `<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><disk type='file' device='disk'>` +
      `<driver name='qemu' type='qcow2'/><source file='${otherDisk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>`,
  );
  await hv.virsh('define', xmlPath);
  t.teardown(() => hv.virsh('undefine', other).catch(() => {}));
  const client = await (await serveAgent(t)).connect();
  const r = await client.call('blockPull', { domain: dom.name, disk: 'vda', base, deleteMerged: true, wait: 'done' });
  t.match(r.job, {
    state: 'completed',
    cleanup: { state: 'done', removed: [], kept: [{ path: mid, reason: new RegExp(`^used by domain ${other} \\(`) }] },
  });
  t.ok(existsSync(mid), 'the shared layer stays on disk');
  t.same(await chain(dom, 'vda'), [top, base]);
  await ref.write(dom, 'vda', { pattern: 0x3a, offset: 56 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(top, 'qcow2'), 'identical', 'qemu-img compare: top and base hold every write');
});

t.test('SIGKILL between the journaled intent and the unlink: the restarted agent finishes the cleanup', async (t) => {
  const { dom, ref, base, overlays } = await setup(t, 1);
  const dir = stateDir(t);
  const first = await serveAgent(t, { dir, env: { BLOCKCOPY_FAULT_KILL_AT: 'cleanup:journaled' } });
  const client = await first.connect();
  const r = await client.call('blockCommit', { domain: dom.name, disk: 'vda', whenReady: 'pivot', deleteMerged: true });
  t.match(r.job, { cleanup: { deleteMerged: true, state: 'pending' } }, 'the promise is in the answer (journaled before it)');
  await ref.write(dom, 'vda', { pattern: 0x33, offset: 40 * MiB, length: 2 * MiB });
  t.equal(await killed(first, 180_000), 'SIGKILL', 'the agent died at cleanup:journaled');
  t.ok(existsSync(overlays[0]!), 'killed before the unlink: the overlay is still there');
  t.same(await chain(dom, 'vda'), [base], 'the pivot happened');
  const second = await serveAgent(t, { dir });
  const client2 = await second.connect();
  const job = await untilCleaned(client2, r.job.jobId);
  t.match(job, { state: 'pivoted', cleanup: { state: 'done', removed: [overlays[0]], kept: [] } });
  t.notOk(existsSync(overlays[0]!), 'the restarted agent deleted the overlay');
  await ref.write(dom, 'vda', { pattern: 0x35, offset: 48 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(base, 'qcow2'), 'identical', 'qemu-img compare: the base holds every write');
});
