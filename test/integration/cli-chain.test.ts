// The snapshot-chain verbs of the command-line client (snapshot, commit, pull) against the real
// agent and libvirtd, with the guest writing between steps; virsh dumpxml and qemu-img compare
// (against a reference that receives every guest write too) are the witnesses.
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as hv from '../../harness/hypervisor.js';
import { stateDir } from '../../harness/agent.js';
import { runCli as cli, type CliRun } from '../helpers/cli.js';
import { Reference } from '../helpers/faults.js';

const MiB = 1024 * 1024;
const SIZE_MIB = 64;

/** The disk's chain in the live XML, active layer first (virsh as the witness). */
async function chain(dom: hv.TestDomain, target: string): Promise<string[]> {
  const xml = await hv.liveXml(dom);
  const disk = xml.split('<disk ').find((d) => d.includes(`<target dev='${target}'`)) ?? '';
  return [...disk.matchAll(/<source file='([^']+)'/g)].map((m) => m[1]!);
}

const allJson = (r: CliRun) => r.lines.length > 0 && r.lines.every((l) => !('notJson' in l));

t.test('snapshot, guest writes, commit --active --pivot --wait --verbose --json: back on the base with every write', async (t) => {
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: SIZE_MIB },
      { format: 'qcow2', sizeMiB: 16 },
    ],
  });
  const base = dom.disks[0]!.path;
  const ref = Reference.create(dom, SIZE_MIB);
  await ref.write(dom, 'vda', { pattern: 0x41, offset: 0, length: 24 * MiB });
  const sd = stateDir(t);
  const overlay = `${dom.dir}/vda.snap1.qcow2`;
  const snap = await cli(['snapshot', dom.name, '--diskspec', `vda,file=${overlay}`, '--json', '--state-dir', sd]);
  t.equal(snap.code, 0, `snapshot: exit 0 ${snap.stderr}`);
  t.ok(allJson(snap), 'snapshot: JSON lines');
  t.match(snap.lines.at(-1), { event: 'snapshot', quiesced: false, disks: [{ disk: 'vda', overlay: { path: overlay }, backing: base }] });
  t.same(await chain(dom, 'vda'), [overlay, base], 'virsh: vda runs on the overlay above its base');
  t.same(await chain(dom, 'vdb'), [dom.disks[1]!.path], 'virsh: vdb, not listed, is left alone');
  await ref.write(dom, 'vda', { pattern: 0x42, offset: 20 * MiB, length: 8 * MiB });

  const again = await cli(['snapshot', dom.name, '--diskspec', `vda,file=${overlay}`, '--state-dir', sd]);
  t.equal(again.code, 1, 'the same overlay again: the agent refuses, exit 1');
  t.match(JSON.parse(again.stderr.trim()), { error: 'destinationRejected' }, 'the error name on stderr');

  const r = await cli([
    'commit',
    dom.name,
    'vda',
    '--active',
    '--pivot',
    '--wait',
    '--verbose',
    '--bandwidth',
    '16M',
    '--json',
    '--state-dir',
    sd,
  ]);
  t.equal(r.code, 0, `commit: exit 0 ${r.stderr}`);
  t.ok(allJson(r), 'commit: every line is JSON');
  t.ok(
    r.lines.some((l) => l.event === 'job.changed' && (l.job as { kind: string }).kind === 'activeCommit'),
    'progress lines name the kind',
  );
  t.match(
    r.lines.at(-1),
    { event: 'pivoted', job: { kind: 'activeCommit', state: 'pivoted', destination: { path: base }, layers: { top: { path: overlay } } } },
    'the last line says pivoted onto the base',
  );
  t.same(await chain(dom, 'vda'), [base], 'virsh: the guest runs on its base again');
  await ref.write(dom, 'vda', { pattern: 0x43, offset: 40 * MiB, length: 2 * MiB });
  t.equal(await ref.compare(base, 'qcow2'), 'identical', 'qemu-img compare: the base holds every write');

  const jobId = (r.lines.at(-1)!.job as { jobId: string }).jobId;
  const info = await cli(['info', '--job', jobId, '--json', '--state-dir', sd]);
  t.match(JSON.parse(info.stdout), { job: { jobId, kind: 'activeCommit', state: 'pivoted' } }, 'info shows the kind');
  const commits = await cli(['jobs', dom.name, '--kind', 'activeCommit', '--json', '--state-dir', sd]);
  t.same(
    (JSON.parse(commits.stdout) as { jobs: Array<{ jobId: string }> }).jobs.map((j) => j.jobId),
    [jobId],
    'jobs --kind activeCommit lists it',
  );
  const pulls = await cli(['jobs', dom.name, '--kind', 'pull,copy', '--json', '--state-dir', sd]);
  t.same(JSON.parse(pulls.stdout), { jobs: [] }, 'jobs --kind pull,copy: none');
  const pivotAgain = await cli(['pivot', '--job', jobId, '--json', '--state-dir', sd]);
  t.match(JSON.parse(pivotAgain.stdout), { changed: false, job: { state: 'pivoted' } }, 'pivot again: changed false');
});

t.test('commit below the top (--top vda[N] --wait) and pull --wait; refusals by name', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: SIZE_MIB }] });
  const base = dom.disks[0]!.path;
  const ref = Reference.create(dom, SIZE_MIB);
  await ref.write(dom, 'vda', { pattern: 0x51, offset: 0, length: 16 * MiB });
  const sd = stateDir(t);
  const [mid, top, top2] = ['mid', 'top', 'top2'].map((n) => `${dom.dir}/${n}.qcow2`) as [string, string, string];
  for (const [i, file] of [mid, top].entries()) {
    const s = await cli(['snapshot', dom.name, '--diskspec', `vda,snapshot=external,file=${file}`, '--state-dir', sd]);
    t.equal(s.code, 0, `snapshot ${file}: exit 0 ${s.stderr}`);
    await ref.write(dom, 'vda', { pattern: 0x52 + i, offset: (16 + 8 * i) * MiB, length: 4 * MiB });
  }
  t.same(await chain(dom, 'vda'), [top, mid, base]);
  const midIndex = new RegExp(`index='(\\d+)'>\\s*<format type='qcow2'/>\\s*<source file='${mid}'`).exec(await hv.liveXml(dom))?.[1];

  const piv = await cli(['commit', dom.name, 'vda', '--top', mid, '--pivot', '--state-dir', sd]);
  t.equal(piv.code, 2, '--pivot on a commit below the top: usage error');
  const refused = await cli(['commit', dom.name, 'vda', '--top', `${dom.dir}/nowhere.qcow2`, '--state-dir', sd]);
  t.equal(refused.code, 1, 'a top that is not a layer: exit 1');
  t.match(JSON.parse(refused.stderr.trim()), { error: 'notFound' });

  const c = await cli(['commit', dom.name, 'vda', '--top', `vda[${midIndex}]`, '--base', base, '--wait', '--json', '--state-dir', sd]);
  t.equal(c.code, 0, `commit --top vda[${midIndex}] --wait: exit 0 ${c.stderr}`);
  t.ok(allJson(c), 'commit: every line is JSON');
  t.match(c.lines.at(-1), { event: 'completed', job: { kind: 'commit', state: 'completed', layers: { top: { path: mid } } } });
  t.same(await chain(dom, 'vda'), [top, base], 'virsh: mid left the chain');
  const jobId = (c.lines.at(-1)!.job as { jobId: string }).jobId;
  const noPivot = await cli(['pivot', '--job', jobId, '--state-dir', sd]);
  t.equal(noPivot.code, 1, 'pivot of a commit below the top: exit 1');
  t.match(JSON.parse(noPivot.stderr.trim()), { error: 'unsupported' }, 'refused by name');

  await ref.write(dom, 'vda', { pattern: 0x55, offset: 36 * MiB, length: 4 * MiB });
  const s2 = await cli(['snapshot', dom.name, '--diskspec', `vda,file=${top2}`, '--state-dir', sd]);
  t.equal(s2.code, 0, `snapshot top2 ${s2.stderr}`);
  const p = await cli(['pull', dom.name, 'vda', '--wait', '--json', '--state-dir', sd]);
  t.equal(p.code, 0, `pull --wait: exit 0 ${p.stderr}`);
  t.ok(allJson(p), 'pull: every line is JSON');
  t.match(p.lines.at(-1), { event: 'completed', job: { kind: 'pull', state: 'completed', destination: { path: top2 } } });
  t.same(await chain(dom, 'vda'), [top2], 'virsh: one layer left');
  await ref.write(dom, 'vda', { pattern: 0x56, offset: 50 * MiB, length: 2 * MiB });
  t.equal(await ref.compare(top2, 'qcow2'), 'identical', 'qemu-img compare: the active layer alone holds every write');
  t.ok(existsSync(mid) && existsSync(top), 'the merged layers stay on disk (nothing asked to delete them)');

  const nothing = await cli(['pull', dom.name, 'vda', '--job-id', 'another', '--state-dir', sd]);
  t.equal(nothing.code, 1, 'nothing left to pull: exit 1');
  t.match(JSON.parse(nothing.stderr.trim()), { error: 'invalidState' });
  const listed = await cli(['jobs', dom.name, '--kind', 'commit', '--kind', 'pull', '--json', '--state-dir', sd]);
  t.same(
    (JSON.parse(listed.stdout) as { jobs: Array<{ kind: string }> }).jobs.map((j) => j.kind).sort(),
    ['commit', 'pull'],
    'jobs --kind commit --kind pull',
  );
});

t.test('commit --wait --timeout: cancelled on expiry, exit 4, the guest stays on its overlay', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: SIZE_MIB }] });
  const base = dom.disks[0]!.path;
  const sd = stateDir(t);
  const overlay = `${dom.dir}/slow.qcow2`;
  t.equal((await cli(['snapshot', dom.name, '--diskspec', `vda,file=${overlay}`, '--state-dir', sd])).code, 0, 'snapshot');
  await hv.guestWrite(dom, 'vda', { pattern: 0x57, offset: 0, length: 48 * MiB });
  const r = await cli(['commit', dom.name, 'vda', '--wait', '--bandwidth', '1M', '--timeout', '1', '--json', '--state-dir', sd]);
  t.equal(r.code, 4, `timeout: exit 4 ${r.stderr}`);
  t.match(r.lines.at(-1), { event: 'timeout', job: { kind: 'activeCommit', state: 'cancelled', error: { name: 'timeout' } } });
  t.same(await chain(dom, 'vda'), [overlay, base], 'virsh: the chain is unchanged');
  t.notMatch(await hv.liveXml(dom), /<mirror/, 'no job left');
});

t.test('usage errors of the chain verbs start nothing', async (t) => {
  const dir = join(stateDir(t), 'never-created');
  const usage = [
    ['snapshot', 'dom'],
    ['snapshot', 'dom', '--diskspec', 'vda'],
    ['snapshot', 'dom', '--diskspec', 'vda,file=/x', '--quiesce', 'maybe'],
    ['snapshot', 'dom', '--diskspec', 'vda,stype=block,file=/x'],
    ['commit', 'dom'],
    ['commit', 'dom', 'vda', '--pivot', '--keep-overlay'],
    ['commit', 'dom', 'vda', '--active', '--top', 'vda[2]'],
    ['commit', 'dom', 'vda', '--shallow', '--base', '/x'],
    ['commit', 'dom', 'vda', '--bandwidth', 'fast'],
    ['pull', 'dom'],
    ['pull', 'dom', 'vda', '--pivot'],
    ['jobs', '--kind', 'snapshot'],
  ];
  for (const args of usage) {
    const r = await cli([...args, '--state-dir', dir]);
    t.equal(r.code, 2, `usage error, exit 2: ${args.join(' ')}`);
  }
  t.notOk(existsSync(dir), 'no agent was started for a usage error');
});
