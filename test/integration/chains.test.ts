// Commit and pull jobs through the agent, against the real libvirtd with a guest writing
// throughout (QEMU's monitor), checked with independent witnesses: virsh dumpxml for the chain
// and qemu-img compare against a reference image that receives every guest write too.
import t, { type Test } from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient } from '../../src/client/index.js';
import type { Job } from '../../src/generated/api.js';
import { blockJob, serveAgent, stateDir, untilState, type ServedAgent } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';
import type { Reference } from '../helpers/faults.js';
import { layered } from '../helpers/chain.js';
import { errorName } from '../helpers/rejects.js';

const MiB = 1024 * 1024;

const chain = hv.liveChain;

interface Setup {
  agent: ServedAgent;
  client: AgentClient;
  dom: hv.TestDomain;
  ref: Reference;
  base: string;
}

async function setup(t: Test, layers: number, agentOpts: Parameters<typeof serveAgent>[1] = {}): Promise<Setup & { overlays: string[] }> {
  const { dom, ref, files } = await layered(t, layers);
  // Oldest overlay first, as the tests name them; the base is the chain's last layer.
  const overlays = files.slice(0, -1).reverse();
  const agent = await serveAgent(t, agentOpts);
  return { client: await agent.connect(), dom, ref, base: files.at(-1)!, overlays, agent };
}

t.test('active commit: snapshot, guest writes, commit, pivot: the guest runs on the base with every write', async (t) => {
  const { client, dom, ref, base, overlays } = await setup(t, 1);
  t.same(await chain(dom, 'vda'), [overlays[0], base], 'the guest runs on the overlay above its base');
  const before = await client.call('diskInfo', { domain: dom.name, disk: 'vda' });
  t.match(before, { disk: 'vda', type: 'file', mirror: null, chain: [{ path: overlays[0], format: 'qcow2' }, { path: base }] });
  t.ok(
    before.chain.every((l: { index: number | null }) => Number.isInteger(l.index)),
    `diskInfo gives each layer libvirt's index (${before.chain.map((l: { index: number | null }) => l.index).join(', ')})`,
  );
  const r = await client.call('blockCommit', { domain: dom.name, disk: 'vda' });
  t.equal(r.changed, true);
  t.match((await client.call('diskInfo', { domain: dom.name, disk: 'vda' })).mirror, { job: 'active-commit', path: base });
  t.match(r.job, { kind: 'activeCommit', destination: { path: base }, layers: { top: { path: overlays[0] }, base: { path: base } } });
  await ref.write(dom, 'vda', { pattern: 0x33, offset: 40 * MiB, length: 2 * MiB });
  const again = await client.call('blockCommit', { domain: dom.name, disk: 'vda' });
  t.same([again.changed, again.job.jobId], [false, r.job.jobId], 'the same call again: the same job, unchanged');
  t.equal(
    await errorName(client.call('blockPull', { domain: dom.name, disk: 'vda' })),
    'jobExists',
    'a pull while the commit runs: jobExists',
  );
  await untilState(client, r.job.jobId, ['ready']);
  await ref.write(dom, 'vda', { pattern: 0x34, offset: 44 * MiB, length: 2 * MiB });
  const listed = (await client.call('listJobs', { kind: ['activeCommit'], domain: dom.name })).jobs.map((j) => j.jobId);
  t.same(listed, [r.job.jobId], 'listJobs filters by kind');
  const p = await client.call('pivot', { jobId: r.job.jobId });
  t.match(p, { changed: true, job: { state: 'pivoted', outcome: 'observed' } });
  t.same(await chain(dom, 'vda'), [base], 'the guest runs on its base again; the overlay left the chain');
  await ref.write(dom, 'vda', { pattern: 0x35, offset: 48 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(base, 'qcow2'), 'identical', 'qemu-img compare: the base holds every write');
  t.equal((await client.call('pivot', { jobId: r.job.jobId })).changed, false, 'pivot again: changed false');
});

t.test('active commit: abort leaves the guest on the overlay; finish is refused before ready', async (t) => {
  const { client, dom, ref, overlays, base } = await setup(t, 1);
  const r = await client.call('blockCommit', { domain: dom.name, disk: 'vda', bandwidth: 1 * MiB });
  const a = await client.call('abort', { jobId: r.job.jobId });
  t.match(a.job, { state: 'cancelled' });
  t.same(await chain(dom, 'vda'), [overlays[0], base], 'the chain is unchanged');
  await ref.write(dom, 'vda', { pattern: 0x36, offset: 50 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(overlays[0]!, 'qcow2'), 'identical', 'the guest view holds every write');
});

t.test('commit below the active layer completes on its own and shortens the chain', async (t) => {
  const { client, dom, ref, base, overlays } = await setup(t, 2);
  const [mid, top] = overlays as [string, string];
  t.same(await chain(dom, 'vda'), [top, mid, base]);
  const r = await client.call('blockCommit', { domain: dom.name, disk: 'vda', top: mid, base, wait: 'done' });
  t.match(r.job, { kind: 'commit', state: 'completed', layers: { top: { path: mid }, base: { path: base } } });
  t.same(await chain(dom, 'vda'), [top, base], 'mid left the chain: top now sits on base');
  t.equal(await errorName(client.call('pivot', { jobId: r.job.jobId })), 'unsupported', 'pivot does not apply to a commit');
  await ref.write(dom, 'vda', { pattern: 0x37, offset: 52 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(top, 'qcow2'), 'identical', 'qemu-img compare: the guest view holds every write');
  const again = await client.call('blockCommit', { domain: dom.name, disk: 'vda', top: mid, base });
  t.same([again.changed, again.job.jobId], [false, r.job.jobId], 'the same commit again: the completed job, unchanged');
});

t.test('commit layers named as libvirt does (vda[N]) and refused names', async (t) => {
  const { client, dom, overlays } = await setup(t, 2);
  const xml = await hv.liveXml(dom);
  const midIndex = new RegExp(`<backingStore type='file' index='(\\d+)'>\\s*<format type='qcow2'/>\\s*<source file='${overlays[0]}'`).exec(
    xml,
  )?.[1];
  t.ok(midIndex, `the live XML gives the middle layer an index (${midIndex})`);
  t.equal(await errorName(client.call('blockCommit', { domain: dom.name, disk: 'vda', top: 'vda[99]' })), 'notFound', 'no such index');
  t.equal(
    await errorName(client.call('blockCommit', { domain: dom.name, disk: 'vda', top: `${dom.dir}/nowhere.qcow2` })),
    'notFound',
    'a path that is not a layer',
  );
  t.equal(
    await errorName(client.call('blockCommit', { domain: dom.name, disk: 'vda', top: `vda[${midIndex}]`, base: overlays[1]! })),
    'invalidState',
    'base above top',
  );
  const r = await client.call('blockCommit', { domain: dom.name, disk: 'vda', top: `vda[${midIndex}]`, shallow: true, wait: 'done' });
  // The evidence names how the end was decided, should this ever end otherwise.
  t.match(r.job, { kind: 'commit', state: 'completed', layers: { top: { path: overlays[0] } } }, `evidence: ${r.job.evidence}`);
});

t.test('pull: the whole chain into the active layer, verified by a one-layer chain', async (t) => {
  const { client, dom, ref, overlays } = await setup(t, 2);
  const top = overlays[1]!;
  const r = await client.call('blockPull', { domain: dom.name, disk: 'vda', wait: 'done' });
  t.match(r.job, { kind: 'pull', state: 'completed', destination: { path: top }, layers: { base: null } });
  t.same(await chain(dom, 'vda'), [top], 'one layer left');
  await ref.write(dom, 'vda', { pattern: 0x38, offset: 54 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(top, 'qcow2'), 'identical', 'qemu-img compare: the active layer alone holds every write');
  const again = await client.call('blockPull', { domain: dom.name, disk: 'vda' });
  t.same([again.changed, again.job.jobId], [false, r.job.jobId], 'the same pull again: the completed job, unchanged');
  t.equal(
    await errorName(client.call('blockPull', { domain: dom.name, disk: 'vda', jobId: 'another-pull' })),
    'invalidState',
    'a new pull (another jobId): nothing left to pull',
  );
});

t.test('pull down to a base keeps that base', async (t) => {
  const { client, dom, ref, base, overlays } = await setup(t, 2);
  const [mid, top] = overlays as [string, string];
  const r = await client.call('blockPull', { domain: dom.name, disk: 'vda', base, wait: 'done' });
  t.match(r.job, { kind: 'pull', state: 'completed', layers: { base: { path: base } } });
  t.same(await chain(dom, 'vda'), [top, base], 'mid pulled into top');
  t.ok(existsSync(mid), 'the pulled layer is left on disk (deleting it is not asked for)');
  // A guest write flushes QEMU's image metadata, which qemu-img reads from the file.
  await ref.write(dom, 'vda', { pattern: 0x39, offset: 56 * MiB, length: 1 * MiB });
  t.equal(await ref.compare(top, 'qcow2'), 'identical', 'qemu-img compare: top and base hold every write');
});

t.test('commits and pulls started with virsh are adopted, with their kind', async (t) => {
  const { client, dom, overlays, base } = await setup(t, 1);
  await hv.virsh('blockcommit', dom.name, 'vda', '--active', '--bandwidth', '1');
  // listJobs adopts it by its scan, or says `incomplete` when the scan outlasts the read bound.
  let adopted: Job | undefined;
  for (let i = 0; i < 50 && !adopted; i++) {
    const { jobs } = await client.call('listJobs', { domain: dom.name, kind: ['activeCommit'] });
    adopted = jobs[0] && blockJob(jobs[0]);
    if (!adopted) await new Promise((r) => setTimeout(r, 200));
  }
  t.match(adopted, { kind: 'activeCommit', owner: 'adopted', layers: { top: { path: overlays[0] }, base: { path: base } } });
  await client.call('setSpeed', { jobId: adopted!.jobId, bandwidth: 0 });
  await untilState(client, adopted!.jobId, ['ready']);
  t.match((await client.call('pivot', { jobId: adopted!.jobId })).job, { state: 'pivoted' });
  t.same(await chain(dom, 'vda'), [base]);
});

t.test('commits and pulls are audited and refused to a read-only principal, like every mutating call', async (t) => {
  const dir = stateDir(t);
  const auditFile = join(dir, 'audit.log');
  const viewer = 'viewer-token-0123456789abcdef';
  const { agent, client, dom } = await setup(t, 1, {
    dir,
    config: { audit: { file: auditFile } },
    tokens: [{ name: 'viewer', token: viewer, readOnly: true }],
  });
  const reader = await AgentClient.connect(agent.url, { headers: { authorization: `Bearer ${viewer}` } });
  t.teardown(() => reader.close());
  for (const [method, params] of [
    ['blockCommit', { domain: dom.name, disk: 'vda' }],
    ['blockPull', { domain: dom.name, disk: 'vda' }],
  ] as const) {
    t.equal(await errorName(reader.call(method, params)), 'unauthorized', `${method} refused to a read-only token`);
  }
  t.same(await chain(dom, 'vda'), [`${dom.dir}/overlay1.qcow2`, dom.disks[0]!.path], 'nothing started');
  const r = await client.call('blockPull', { domain: dom.name, disk: 'vda', wait: 'done' });
  t.equal(r.job.state, 'completed');
  const entries = readFileSync(auditFile, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { method: string; principal: string; outcome: string; error?: { name: string } });
  t.match(
    entries.filter((e) => e.method === 'blockCommit' || e.method === 'blockPull'),
    [
      { method: 'blockCommit', principal: 'viewer', outcome: 'error', error: { name: 'unauthorized' } },
      { method: 'blockPull', principal: 'viewer', outcome: 'error', error: { name: 'unauthorized' } },
      { method: 'blockPull', principal: 'test-admin', outcome: 'accepted' },
      { method: 'blockPull', principal: 'test-admin', outcome: 'ok' },
    ],
    'each call audited with its principal and outcome',
  );
});
