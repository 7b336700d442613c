// The collection's backup modules (block_backup, checkpoint_info) and the example playbook
// docs/backup.yml as real playbooks (Debian's ansible-core) against localhost, the real agent
// (through `blockcopy-agent stdio`, as on a managed host) and the real libvirtd with a running
// domain: a full backup then an incremental with checkpoint retention; check mode starts nothing,
// writes no file and deletes no checkpoint; a rerun with the same job_id reports changed=false;
// `blockcopy-agent restore` of full + incremental equals the disk (the guest wrote known data
// before each backup and nothing after the last), and up to the full holds only the first write.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { CLI, stateDir } from '../../harness/agent.js';
import { camelCaseKeys, expectFailures, fleetPlaybook, playbook, type TaskResult } from '../helpers/ansible.js';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../../', import.meta.url));
const MiB = 1024 * 1024;
const A = { pattern: 0xa1, offset: 0, length: 4 * MiB };
const B = { pattern: 0xb2, offset: 8 * MiB, length: 2 * MiB };
const C = { pattern: 0xc3, offset: 20 * MiB, length: 1 * MiB };

interface BackupResult extends TaskResult {
  checkpoints: string[];
  checkpoints_deleted: string[];
  job?: NonNullable<TaskResult['job']> & {
    job_id: string; mode: string; since: string | null; checkpoint: string | null; manifest: string | null; checksum?: string;
    disks: Array<{ disk: string; file: string; sha256?: string }> };
}

/** The domain's checkpoints as libvirt lists them (parents first). */
async function checkpoints(dom: hv.TestDomain): Promise<string[]> {
  const out = await hv.virsh('checkpoint-list', dom.name, '--name', '--topological');
  return out.split('\n').map((l) => l.trim()).filter(Boolean);
}

/** The backup files in dir (the manifest and everything else too), sorted. */
const files = (dir: string): string[] => readdirSync(dir).sort();

/** `blockcopy-agent restore` of disk vda from the manifest, up to a backup (default the latest). */
async function restore(manifest: string, output: string, upto?: string): Promise<void> {
  await run(process.execPath, [CLI, 'restore', manifest, '--disk', 'vda', '--output', output, '--json', ...(upto ? ['--upto', upto] : [])]);
}

async function backupDomain(t: Test) {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  const backups = join(dom.dir, 'backups');
  mkdirSync(backups, { mode: 0o755 });
  return { dom, backups };
}

t.test('block_backup: full, incremental with retention; check mode, reruns by job_id; restore equals the disk', async (t) => {
  const { dom, backups } = await backupDomain(t);
  const vars = { domain: dom.name, dir: dom.dir, backup_dir: backups, agent_command: [process.execPath, CLI, 'stdio', '--state-dir', stateDir(t)] };
  const step = async (extra: Record<string, unknown>, check = false) => {
    const r = await playbook('backup', { ...vars, ...extra }, { check });
    t.equal(r.stats.failures, 0, `backup target succeeds ${JSON.stringify(r.tasks)}`.slice(0, 600));
    return { run: r, backup: r.tasks['Back up'] as BackupResult, names: (r.tasks.Checkpoints as unknown as { names: string[] }).names };
  };
  const full = { backup_mode: 'full', backup_job_id: 'full-1' };
  const manifest = join(backups, `${dom.name}.backups.json`);
  await hv.guestWrite(dom, 'vda', A);

  // Check mode: changed, no job, no file, no checkpoint.
  const dry = await step(full, true);
  t.match(dry.backup, { changed: true, checkpoints_deleted: [], msg: /would make a full backup/ }, 'check mode: a backup would start');
  t.notOk(dry.backup.job, 'check mode: no backup job');
  t.same(files(backups), [], 'check mode: no file written');
  t.same(await checkpoints(dom), [], 'check mode: no checkpoint');

  // The full backup.
  const first = await step(full);
  t.match(first.backup, {
    changed: true,
    checkpoints_deleted: [],
    job: { job_id: 'full-1', kind: 'backup', state: 'completed', mode: 'full', since: null, checkpoint: String, manifest, created_at: String, owner: 'agent' },
  });
  t.same(camelCaseKeys(first.run), [], 'no camelCase key in any task result');
  t.equal(first.backup.job!.checksum, 'sha256', 'checksum sha256 by default');
  t.match(first.backup.job!.disks[0]!.sha256, /^[0-9a-f]{64}$/, 'and the file\'s SHA-256 returned');
  const cp1 = first.backup.job!.checkpoint!;
  const fullFile = first.backup.job!.disks[0]!.file;
  t.ok(existsSync(fullFile), 'the full backup file exists');
  t.same(await checkpoints(dom), [cp1], 'virsh: the full backup created its checkpoint');
  t.same(first.names, [cp1], 'checkpoint_info lists it');
  const afterFull = files(backups);

  // The same job_id again: the same backup, changed=false, nothing new; check mode too.
  const again = await step(full);
  t.equal(again.run.stats.changed, 0, 'the full again: changed=0');
  t.match(again.backup, { job: { job_id: 'full-1', state: 'completed' }, msg: /already completed/ });
  t.equal((await step(full, true)).run.stats.changed, 0, 'check mode after it: changed=0');
  t.same(files(backups), afterFull, 'no new file');
  t.same(await checkpoints(dom), [cp1], 'no new checkpoint');

  // The incremental with retention (keep 1): in check mode it would delete cp1, and does nothing.
  await hv.guestWrite(dom, 'vda', B);
  // The incremental without the read-back (checksum none): the restore below still rebuilds it.
  const inc = { backup_mode: 'incremental', backup_job_id: 'inc-1', keep: 1, checksum: 'none' };
  const dryInc = await step(inc, true);
  t.match(dryInc.backup, { changed: true, checkpoints_deleted: [cp1], msg: /would make an incremental backup .* since .*would delete checkpoint/ });
  t.same(await checkpoints(dom), [cp1], 'check mode: no checkpoint deleted or created');
  t.same(files(backups), afterFull, 'check mode: no file written');
  const second = await step(inc);
  t.match(second.backup, { changed: true, checkpoints_deleted: [cp1], job: { job_id: 'inc-1', state: 'completed', mode: 'incremental', since: cp1, checkpoint: String } });
  const cp2 = second.backup.job!.checkpoint!;
  t.equal(second.backup.job!.checksum, 'none', 'checksum none asked and returned');
  t.notOk(second.backup.job!.disks[0]!.sha256, 'no SHA-256 read for it');
  t.same(second.backup.checkpoints, [cp2], 'the result lists the checkpoint kept');
  t.same(await checkpoints(dom), [cp2], 'virsh: only the incremental\'s checkpoint is left');
  const incAgain = await step(inc);
  t.equal(incAgain.run.stats.changed, 0, 'the incremental again: changed=0 (retention has nothing to delete)');
  t.same(incAgain.backup.checkpoints_deleted, []);
  t.equal((await step(inc, true)).run.stats.changed, 0, 'check mode after it: changed=0');
  const listed = (incAgain.run.tasks.Backups as unknown as { jobs: Array<{ job_id: string; kind: string; mode: string }> }).jobs;
  t.same(
    listed.map((j) => [j.job_id, j.kind, j.mode]),
    [
      ['full-1', 'backup', 'full'],
      ['inc-1', 'backup', 'incremental'],
    ],
    'block_copy_info kinds=[backup] lists both backups',
  );

  // Restore (offline verb): full + incremental equals the disk (no guest write since); up to the
  // full it holds A but not B.
  const restored = join(dom.dir, 'restored.qcow2');
  await restore(manifest, restored);
  t.equal(await hv.compareImages(restored, dom.disks[0]!.path), 'identical', 'qemu-img compare: full + incremental = the disk');
  const upToFull = join(dom.dir, 'restored-full.qcow2');
  await restore(manifest, upToFull, 'full-1');
  t.ok(await hv.readPattern(upToFull, 'qcow2', A), 'up to the full: the first write');
  t.notOk(await hv.readPattern(upToFull, 'qcow2', B), 'up to the full: not the write made after it');
});

t.test('block_backup refuses clearly and starts nothing', async (t) => {
  const { dom, backups } = await backupDomain(t);
  const vars = { domain: dom.name, dir: dom.dir, backup_dir: backups, agent_command: [process.execPath, CLI, 'stdio', '--state-dir', stateDir(t)] };
  const bad = await playbook('backup_failures', vars);
  const expect: Array<[string, RegExp, string]> = [
    ['Incremental with no checkpoint', /has no checkpoint/, 'notFound'],
    ['Backup outside the allowed roots', /\/var\/lib/, 'destinationRejected'],
    ['Retention without waiting', /keep_checkpoints needs wait=true/, 'invalidParams'],
    ['Backup of an unknown domain', /bctest-no-such-domain/, 'notFound'],
    ['Relative directory', /absolute path/, 'invalidParams'],
    ['Quiesce required without a guest agent', /no QEMU guest agent channel/, 'quiesceFailed'],
  ];
  expectFailures(t, bad, expect);
  t.same(files(backups), [], 'no file written');
  t.same(await checkpoints(dom), [], 'no checkpoint created');
});

t.test('docs/backup.yml, unmodified: a full, then an incremental, restorable', async (t) => {
  const { dom, backups } = await backupDomain(t);
  // The example uses the module's default agent_command, `blockcopy-agent stdio`, from PATH.
  const bin = join(dom.dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'blockcopy-agent'), `#!/bin/sh\nBLOCKCOPY_STATE_DIR=${stateDir(t)} exec ${process.execPath} ${CLI} "$@"\n`, { mode: 0o755 });
  const path = process.env.PATH;
  process.env.PATH = `${bin}:${path}`;
  t.teardown(() => {
    process.env.PATH = path;
  });
  const inventory = join(dom.dir, 'inventory');
  writeFileSync(inventory, 'localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n');
  const example = join(repo, 'ansible/ansible_collections/blockcopy/agent/docs/backup.yml');
  const play = async (vars: Record<string, unknown>, check = false) => {
    const varsFile = join(dom.dir, 'example-vars.json');
    writeFileSync(varsFile, JSON.stringify({ vm: dom.name, backup_root: backups, ...vars }));
    const r = await fleetPlaybook(example, inventory, ['-e', `@${varsFile}`, ...(check ? ['--check'] : [])], 600_000);
    t.equal(r.stats.localhost!.failures, 0, `docs/backup.yml succeeds ${JSON.stringify(r.tasks['Back up'])}`.slice(0, 600));
    return { stats: r.stats.localhost!, backup: r.tasks['Back up']!.localhost as BackupResult };
  };
  const dir = join(backups, dom.name);
  const manifest = join(dir, `${dom.name}.backups.json`);
  await hv.guestWrite(dom, 'vda', A);

  const first = await play({});
  t.match(first.backup, { changed: true, job: { mode: 'full', state: 'completed', manifest } }, 'the first run: a full backup');
  t.match(first.backup.job!.job_id, new RegExp(`^${dom.name}-\\d{8}$`), 'the default id: the VM and the UTC date');
  const sameDay = await play({});
  t.equal(sameDay.stats.changed, 0, 'again the same day: changed=0');

  await hv.guestWrite(dom, 'vda', B);
  const filesBefore = files(dir);
  const dry = await play({ backup_id: 'second' }, true);
  t.match(dry.backup, { changed: true, msg: /would make an incremental backup/ }, 'check mode: an incremental would start');
  t.same(files(dir), filesBefore, 'check mode: no file written');
  const second = await play({ backup_id: 'second' });
  t.match(second.backup, { changed: true, job: { job_id: 'second', mode: 'incremental', since: first.backup.job!.checkpoint, state: 'completed' } });
  t.equal(files(dir).length, filesBefore.length + 1, 'one new file');
  await hv.guestWrite(dom, 'vda', C);
  const third = await play({ backup_id: 'third' });
  t.match(third.backup, { job: { mode: 'incremental', since: second.backup.job!.checkpoint } }, 'the next one: incremental since the last');

  const restored = join(dom.dir, 'restored.qcow2');
  await restore(manifest, restored);
  t.equal(await hv.compareImages(restored, dom.disks[0]!.path), 'identical', 'qemu-img compare: full + two incrementals = the disk');
  const full = await play({ backup_id: 'full-again', full: true });
  t.match(full.backup, { changed: true, job: { mode: 'full', since: null } }, '-e full=true: a new full backup');
});
