// removeSource against the real agent and libvirtd: after a verified pivot, the old files the
// guest no longer uses are deleted; a base image another (defined) domain uses is kept and
// named; a shallow copy deletes only the old top; a copy that is not pivoted deletes nothing;
// pivotGroup and blockCopyGroup delete each disk's old files; a crash between the journaled
// intent and the unlink is finished by the next start. virsh and qemu-img are the witnesses.
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { blockJob, CLI, serveAgent, stateDir } from '../../harness/agent.js';
import { killed } from '../helpers/faults.js';
import { otherDomainOn } from '../helpers/shared-base.js';
import type { Job } from '../../src/generated/api.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** Every <source file> of the domain's persistent definition. */
async function persistentSources(dom: hv.TestDomain): Promise<string[]> {
  const xml = await hv.virsh('dumpxml', '--inactive', dom.name);
  return [...xml.matchAll(/<source file='([^']+)'/g)].map((m) => m[1]!);
}

t.test('a full copy pivoted with removeSource: old top and base deleted, a shared base kept and named', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  // vda: disk0.qcow2 → base0.qcow2 (base0 shared with a defined domain); vdb: a lone raw disk.
  const dom = await hv.createDomain(t, {
    persistent: true,
    disks: [
      { format: 'qcow2', sizeMiB: 32, backing: true },
      { format: 'raw', sizeMiB: 16 },
    ],
  });
  const [vda, vdb] = dom.disks as [hv.TestDisk, hv.TestDisk];
  const other = await otherDomainOn(t, vda.backingPath!, dom.dir);
  await hv.guestWrite(dom, 'vda', { pattern: 0x3c, offset: 4 * MiB, length: 8 * MiB });
  await hv.guestWrite(dom, 'vdb', { pattern: 0x3d, offset: 0, length: 8 * MiB });

  const destA = `${dom.dir}/vda-new.qcow2`;
  const a = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: destA, format: 'qcow2' },
    whenReady: 'pivot',
    wait: 'done',
    removeSource: true,
  });
  const jobA: Job = a.job;
  t.equal(jobA.state, 'pivoted', 'vda pivoted');
  t.same(
    jobA.layers?.chain?.map((l) => l.path),
    [vda.path, vda.backingPath],
    'the job recorded the source chain at the start',
  );
  t.match(jobA.cleanup, { removeSource: true, state: 'done', removed: [vda.path] }, 'the old top was removed');
  const kept = jobA.cleanup?.kept ?? [];
  t.equal(kept.length, 1, `one file kept ${JSON.stringify(kept)}`);
  t.equal(kept[0]?.path, vda.backingPath, 'the shared base is kept');
  t.match(kept[0]?.reason, new RegExp(other), `the reason names the other domain: ${kept[0]?.reason}`);
  t.notOk(existsSync(vda.path), 'the old top is gone from disk');
  t.ok(existsSync(vda.backingPath!), 'the shared base is still there');
  t.match(await hv.liveXml(dom), `<source file='${destA}'`, 'virsh: the guest runs on the copy');
  t.ok((await persistentSources(dom)).includes(destA), 'virsh dumpxml --inactive: the next boot uses the copy');
  t.notOk((await persistentSources(dom)).includes(vda.path), 'the persistent definition no longer names the old top');
  t.ok(
    await hv.readPattern(destA, 'qcow2', { pattern: 0x3c, offset: 4 * MiB, length: 8 * MiB }),
    'qemu-io: the guest writes are in the copy',
  );
  t.ok(await hv.readPattern(destA, 'qcow2', { pattern: 0x0b, offset: 0, length: MiB }), "qemu-io: the base's data is in the (full) copy");

  // A copy that is not pivoted (finished) deletes nothing and says why.
  const destB = `${dom.dir}/vdb-backup.raw`;
  const b = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vdb',
    destination: { path: destB, format: 'raw' },
    whenReady: 'finish',
    wait: 'done',
    removeSource: true,
  });
  t.equal(b.job.state, 'finished', 'vdb finished');
  t.match(
    b.job.cleanup,
    { state: 'done', removed: [], kept: [{ path: vdb.path, reason: /not pivoted/ }] },
    'finished: the source is kept, with the reason',
  );
  t.ok(existsSync(vdb.path), 'the source of a finished copy stays');
  t.equal(await hv.compareImages(vdb.path, destB), 'identical', 'qemu-img: the backup equals the disk');
});

t.test('a shallow copy deletes only the old top; pivot removeSource on a running copy', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, { persistent: true, disks: [{ format: 'qcow2', sizeMiB: 32, backing: true }] });
  const vda = dom.disks[0]!;
  await hv.guestWrite(dom, 'vda', { pattern: 0x4e, offset: 2 * MiB, length: 4 * MiB });
  const dest = `${dom.dir}/shallow.qcow2`;
  // A shallow copy over a reused destination that already names the old base as its backing file.
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', vda.backingPath!, dest]);
  const started = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: dest, format: 'qcow2' },
    shallow: true,
    reuseExternal: true,
    wait: 'ready',
  });
  t.equal(started.job.state, 'ready', 'mirroring');
  const refused = await client.call('pivot', { jobId: started.job.jobId, deleteMerged: true }).catch((e: { errorName?: string }) => e);
  t.equal((refused as { errorName?: string }).errorName, 'unsupported', "deleteMerged is a commit's name: refused for a copy");
  t.match(await hv.liveXml(dom), /<mirror [^>]*ready='yes'/, 'the refusal changed nothing: still mirroring');
  const p = await client.call('pivot', { jobId: started.job.jobId, removeSource: true });
  t.equal(p.job.state, 'pivoted', 'pivoted');
  t.match(p.job.cleanup, { removeSource: true, state: 'done', removed: [vda.path], kept: [] }, 'only the old top was removed');
  t.notOk(existsSync(vda.path), 'old top gone');
  t.ok(existsSync(vda.backingPath!), 'the base the shallow copy still reads stays');
  t.same(await hv.liveChain(dom, 'vda'), [dest, vda.backingPath], 'virsh: the guest runs on the copy over the old base');
  t.ok(await hv.readPattern(dest, 'qcow2', { pattern: 0x4e, offset: 2 * MiB, length: 4 * MiB }), 'qemu-io: the writes are in the copy');
});

t.test('blockCopyGroup removeSource with whenReady pivot: every disk of a transient domain', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'raw', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16 },
    ],
  });
  const [vda, vdb] = dom.disks as [hv.TestDisk, hv.TestDisk];
  await hv.guestWrite(dom, 'vda', { pattern: 0x61, offset: 0, length: 4 * MiB });
  await hv.guestWrite(dom, 'vdb', { pattern: 0x62, offset: 0, length: 4 * MiB });
  const r = await client.call('blockCopyGroup', {
    domain: dom.name,
    disks: [
      { disk: 'vda', destination: { path: `${dom.dir}/a.raw`, format: 'raw' } },
      { disk: 'vdb', destination: { path: `${dom.dir}/b.qcow2`, format: 'qcow2' } },
    ],
    whenReady: 'pivot',
    wait: 'done',
    removeSource: true,
  });
  t.equal(r.group!.state, 'pivoted', 'the group pivoted');
  const jobs = await client.call('listJobs', { domain: dom.name, includeEnded: true });
  for (const [disk, old] of [
    ['vda', vda.path],
    ['vdb', vdb.path],
  ] as const) {
    const j = jobs.jobs.map(blockJob).find((x) => x.disk === disk)!;
    t.match(j.cleanup, { removeSource: true, state: 'done', removed: [old] }, `${disk}: the old source was removed`);
    t.notOk(existsSync(old), `${disk}: gone from disk`);
  }
  t.ok(await hv.readPattern(`${dom.dir}/a.raw`, 'raw', { pattern: 0x61, offset: 0, length: 4 * MiB }), 'vda data on the copy');
  t.ok(await hv.readPattern(`${dom.dir}/b.qcow2`, 'qcow2', { pattern: 0x62, offset: 0, length: 4 * MiB }), 'vdb data on the copy');
});

t.test('pivotGroup removeSource: the promise is journaled before the pause, the answer reports it', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, {
    persistent: true,
    disks: [
      { format: 'qcow2', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16 },
    ],
  });
  const [vda, vdb] = dom.disks as [hv.TestDisk, hv.TestDisk];
  const g = await client.call('blockCopyGroup', {
    domain: dom.name,
    disks: [
      { disk: 'vda', destination: { path: `${dom.dir}/ga.qcow2`, format: 'qcow2' } },
      { disk: 'vdb', destination: { path: `${dom.dir}/gb.qcow2`, format: 'qcow2' } },
    ],
    wait: 'ready',
  });
  const p = await client.call('pivotGroup', { groupId: g.group!.groupId, removeSource: true });
  t.equal(p.group.state, 'pivoted', 'pivoted');
  t.notOk(existsSync(vda.path), 'vda: old source gone');
  t.notOk(existsSync(vdb.path), 'vdb: old source gone');
  const jobs = (await client.call('listJobs', { domain: dom.name, includeEnded: true })).jobs as Job[];
  t.same(jobs.map((j) => j.cleanup?.removed).sort(), [[vda.path], [vdb.path]].sort(), 'each job reports its removed file');
  const inactive = await persistentSources(dom);
  t.ok(inactive.includes(`${dom.dir}/ga.qcow2`) && inactive.includes(`${dom.dir}/gb.qcow2`), 'the persistent definition names the copies');
});

t.test('the CLI: copy --wait --pivot --remove-source, as an operator types it', async (t) => {
  const agent = await serveAgent(t);
  const dom = await hv.createDomain(t, { persistent: true, disks: [{ format: 'qcow2', sizeMiB: 16, backing: true }] });
  const vda = dom.disks[0]!;
  const dest = `${dom.dir}/cli.qcow2`;
  const r = await run(
    process.execPath,
    [CLI, 'copy', dom.name, 'vda', dest, '--format', 'qcow2', '--wait', '--pivot', '--remove-source', '--url', agent.url, '--json'],
    { env: { ...process.env, BLOCKCOPY_TOKEN: agent.token } },
  );
  const last = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { event: string; job: Job };
  t.equal(last.event, 'pivoted', 'pivoted');
  t.same(last.job.cleanup?.removed.sort(), [vda.path, vda.backingPath].sort(), 'a full copy: old top and its base removed');
  t.notOk(existsSync(vda.path) || existsSync(vda.backingPath!), 'both gone');
  const usage = await run(process.execPath, [CLI, 'copy', dom.name, 'vda', `${dom.dir}/x.qcow2`, '--finish', '--remove-source']).catch(
    (e: { code: number }) => e,
  );
  t.equal((usage as { code: number }).code, 2, '--remove-source with --finish: a usage error');
  t.notOk(existsSync(`${dom.dir}/x.qcow2`), 'nothing started');
});

t.test('SIGKILL between the journaled intent and the unlink: the restarted agent finishes removeSource, once', async (t) => {
  const dir = stateDir(t);
  const first = await serveAgent(t, { dir, env: { BLOCKCOPY_FAULT_KILL_AT: 'cleanup:journaled' } });
  const client = await first.connect();
  const dom = await hv.createDomain(t, { persistent: true, disks: [{ format: 'qcow2', sizeMiB: 32, backing: true }] });
  const { path: top, backingPath: base } = dom.disks[0]!;
  const dest = `${dom.dir}/vda-moved.qcow2`;
  const r = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: dest, format: 'qcow2' },
    whenReady: 'pivot',
    removeSource: true,
  });
  // The source chain, each file with its identity, is journaled with the start.
  t.match(r.job, {
    layers: {
      chain: [
        { path: top, id: /^\d+:\d+$/ },
        { path: base, id: /^\d+:\d+$/ },
      ],
    },
    cleanup: { removeSource: true, state: 'pending' },
  });
  t.equal(await killed(first, 180_000), 'SIGKILL', 'the agent died at cleanup:journaled');
  t.ok(existsSync(top) && existsSync(base!), 'killed before the unlink: the old files are still there');
  t.same(await hv.liveChain(dom, 'vda'), [dest], 'the pivot happened');
  const client2 = await (await serveAgent(t, { dir })).connect();
  let job: Job | undefined;
  for (let i = 0; i < 600 && job?.cleanup?.state !== 'done'; i++) {
    const now = blockJob((await client2.call('jobInfo', { jobId: r.job.jobId })).job);
    job = now;
    if (now.cleanup?.state !== 'done') await new Promise((res) => setTimeout(res, 100));
  }
  t.match(job, { state: 'pivoted', cleanup: { state: 'done', removed: [top, base], kept: [] } });
  t.notOk(existsSync(top) || existsSync(base!), 'the restarted agent deleted them');
});

t.test('a persistent definition that does not name the copy after the pivot keeps every old file', async (t) => {
  const client = await (await serveAgent(t)).connect();
  const dom = await hv.createDomain(t, { persistent: true, disks: [{ format: 'qcow2', sizeMiB: 32, backing: true }] });
  const { path: top, backingPath: base } = dom.disks[0]!;
  const dest = `${dom.dir}/vda-moved.qcow2`;
  const r = await client.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest, format: 'qcow2' }, wait: 'ready' });
  // An operator redefines the domain meanwhile (another image for vda), so libvirt does not move
  // the definition onto the copy at the pivot: live and persistent disagree, and the agent does
  // not guess which old files the next cold boot may need (without the gate both were deleted).
  const elsewhere = `${dom.dir}/elsewhere.qcow2`;
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', elsewhere, '32M']);
  const xml = (await hv.virsh('dumpxml', '--inactive', dom.name)).replace(`<source file='${top}'`, `<source file='${elsewhere}'`);
  const xmlPath = join(dom.dir, 'redefined.xml');
  writeFileSync(xmlPath, xml);
  await hv.virsh('define', xmlPath);
  const p = await client.call('pivot', { jobId: r.job.jobId, removeSource: true });
  const why = /the persistent definition does not match live/;
  t.match(p.job, {
    state: 'pivoted',
    persistent: { defined: true, matchesLive: false },
    cleanup: {
      removeSource: true,
      state: 'done',
      removed: [],
      kept: [
        { path: top, reason: why },
        { path: base, reason: why },
      ],
    },
  });
  t.ok(existsSync(top) && existsSync(base!), 'both old files stay');
  t.same(await hv.liveChain(dom, 'vda'), [dest], 'the guest runs on the copy');
});
