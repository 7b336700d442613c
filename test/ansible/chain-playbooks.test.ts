// The collection's snapshot-chain modules (disk_snapshot, block_commit, block_pull) as real
// playbooks (Debian's ansible-core) against localhost, the real agent (through `blockcopy-agent
// stdio`, as on a managed host) and the real libvirtd: check mode says changed and changes
// nothing, the real run changes, a rerun does not; failures carry the agent's error name.
import t from 'tap';
import { existsSync } from 'node:fs';
import * as hv from '../../harness/hypervisor.js';
import { CLI, stateDir } from '../../harness/agent.js';
import { Reference } from '../helpers/faults.js';
import { camelCaseKeys, expectFailures, playbook } from '../helpers/ansible.js';

const MiB = 1024 * 1024;
const SIZE_MIB = 32;

const chain = hv.liveChain;

t.test('playbooks: snapshot → commit --pivot, pull; check mode, idempotent reruns, failures', async (t) => {
  const dom = await hv.createDomain(t, { disks: ['vda', 'vdb', 'vdc'].map(() => ({ format: 'qcow2' as const, sizeMiB: SIZE_MIB })) });
  const [a, b, c] = dom.disks.map((d) => d.path) as [string, string, string];
  const ref = Reference.create(dom, SIZE_MIB);
  await ref.write(dom, 'vda', { pattern: 0x61, offset: 0, length: 8 * MiB });
  await hv.guestWrite(dom, 'vdb', { pattern: 0x62, offset: 0, length: 8 * MiB });
  const vars = { domain: dom.name, dir: dom.dir, agent_command: [process.execPath, CLI, 'stdio', '--state-dir', stateDir(t)] };
  const overlay = `${dom.dir}/vda.snap.qcow2`;
  const [snap1, snap2] = [`${dom.dir}/vdb.snap1.qcow2`, `${dom.dir}/vdb.snap2.qcow2`];

  // disk_snapshot
  const dry = await playbook('snapshot', vars, { check: true });
  t.equal(dry.stats.changed, 1, 'check mode: the snapshot would be taken');
  t.match(dry.tasks['Snapshot vda and vdb']!.diff, { before: { vda: a, vdb: b }, after: { vda: overlay, vdb: snap1 } }, 'check mode: a diff');
  t.notOk(existsSync(overlay), 'check mode: no overlay created');
  t.same(await chain(dom, 'vda'), [a], 'check mode: vda untouched');
  const snap = await playbook('snapshot', vars);
  t.equal(snap.stats.failures, 0, `snapshot succeeds ${JSON.stringify(snap.tasks)}`.slice(0, 500));
  t.match(snap.tasks['Snapshot vda and vdb'], {
    changed: true,
    disks: [
      { disk: 'vda', overlay: { path: overlay }, backing: a },
      { disk: 'vdb', overlay: { path: snap1 }, backing: b },
    ],
  });
  t.same([await chain(dom, 'vda'), await chain(dom, 'vdb'), await chain(dom, 'vdc')], [[overlay, a], [snap1, b], [c]], 'virsh: two overlays, vdc alone');
  t.equal((await playbook('snapshot', vars)).stats.changed, 0, 'snapshot again: changed=0');
  t.equal((await playbook('snapshot', vars, { check: true })).stats.changed, 0, 'check mode after the snapshot: changed=0');
  await ref.write(dom, 'vda', { pattern: 0x63, offset: 12 * MiB, length: 4 * MiB });

  // block_commit: the active layer, pivoted
  const dryCommit = await playbook('commit', vars, { check: true });
  t.equal(dryCommit.stats.changed, 1, 'check mode: the commit would run');
  t.match(dryCommit.tasks['Vda committed and pivoted onto its base']!.diff, {
    before: { state: 'absent', chain: [overlay, a] },
    after: { state: 'pivoted', kind: 'activeCommit' },
  });
  t.same(await chain(dom, 'vda'), [overlay, a], 'check mode: the chain is unchanged');
  const commit = await playbook('commit', vars);
  t.equal(commit.stats.failures, 0, `commit succeeds ${JSON.stringify(commit.tasks)}`.slice(0, 500));
  t.match(commit.tasks['Vda committed and pivoted onto its base'], {
    changed: true,
    chain: [a],
    job: { kind: 'activeCommit', state: 'pivoted', destination: { path: a } },
  });
  t.match(commit.tasks['Vda committed and pivoted onto its base'], { job: { job_id: String, created_at: String, when_ready: 'pivot' } }, 'snake_case');
  t.same(camelCaseKeys(commit), [], 'no camelCase key in any task result (job.layers too)');
  t.same(await chain(dom, 'vda'), [a], 'virsh: vda runs on its base again');
  await ref.write(dom, 'vda', { pattern: 0x64, offset: 20 * MiB, length: 2 * MiB });
  t.equal(await ref.compare(a, 'qcow2'), 'identical', 'qemu-img compare: the base holds every write');
  t.equal((await playbook('commit', vars)).stats.changed, 0, 'commit again: changed=0');
  t.equal((await playbook('commit', vars, { check: true })).stats.changed, 0, 'check mode after the commit: changed=0');

  // block_pull: vdb with two overlays, into one layer
  await hv.virsh('snapshot-create-as', dom.name, '--disk-only', '--no-metadata', '--atomic', '--diskspec', `vdb,file=${snap2}`, '--diskspec', 'vda,snapshot=no', '--diskspec', 'vdc,snapshot=no');
  const dryPull = await playbook('pull', vars, { check: true });
  t.equal(dryPull.stats.changed, 1, 'check mode: the pull would run');
  t.same(await chain(dom, 'vdb'), [snap2, snap1, b], 'check mode: the chain is unchanged');
  const pull = await playbook('pull', vars);
  t.equal(pull.stats.failures, 0, `pull succeeds ${JSON.stringify(pull.tasks)}`.slice(0, 500));
  t.match(pull.tasks['Vdb pulled into one layer'], { changed: true, chain: [snap2], job: { kind: 'pull', state: 'completed' } });
  t.same(await chain(dom, 'vdb'), [snap2], 'virsh: one layer left');
  const pullAgain = await playbook('pull', vars);
  t.equal(pullAgain.stats.failures, 0, 'pull.yml again succeeds (block_copy_info filters by kind and state)');
  t.equal(pullAgain.stats.changed, 0, 'pull again: changed=0');
  t.equal((await playbook('pull', vars, { check: true })).stats.changed, 0, 'check mode after the pull: changed=0');

  // failures: by name, nothing changed
  const bad = await playbook('chain_failures', vars);
  const expect: Array<[string, RegExp, string]> = [
    ['Only some disks on their overlays', /only vdb of .* already run on their overlays/, 'invalidState'],
    ['Overlay that already exists', /already exists/, 'destinationRejected'],
    ['Relative overlay', /absolute path/, 'invalidParams'],
    ['Commit of an unknown domain', /bctest-no-such-domain/, 'notFound'],
    ['Commit of a top on a one-layer disk', /nothing to commit/, 'invalidState'],
    ['Pivot of a commit below the top', /needs an active commit/, 'invalidParams'],
    ['Pull of a one-layer disk', /nothing to pull/, 'invalidState'],
  ];
  expectFailures(t, bad, expect);
  t.same([await chain(dom, 'vda'), await chain(dom, 'vdb'), await chain(dom, 'vdc')], [[a], [snap2], [c]], 'virsh: no chain changed');
});
