// The backup verbs of the command-line client against the real agent (a stdio agent on a state
// directory) and libvirtd: a full backup with a generated checkpoint, an incremental since the
// latest with a named one, the checkpoint list and retention, usage errors before anything starts.
import t from 'tap';
import { existsSync } from 'node:fs';
import * as hv from '../../harness/hypervisor.js';
import { stateDir } from '../../harness/agent.js';
import { runCli as cli } from '../helpers/cli.js';

const MiB = 1024 * 1024;

t.test('backup --checkpoint, backup --incremental --checkpoint NAME, checkpoints --keep', async (t) => {
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 64 },
      { format: 'qcow2', sizeMiB: 16 },
    ],
  });
  const sd = stateDir(t);
  const dir = hv.scratchDir('backup-', t);
  await hv.guestWrite(dom, 'vda', { pattern: 0x21, offset: 0, length: 8 * MiB });

  const usage = await cli(['backup', dom.name, '--state-dir', sd]);
  t.equal(usage.code, 2, 'no --dir nor --pool: usage error, exit 2');
  const badSum = await cli(['backup', dom.name, '--dir', dir, '--checksum', 'md5', '--state-dir', sd]);
  t.equal(badSum.code, 2, '--checksum md5: usage error, exit 2');
  t.match(badSum.stderr, /--checksum must be sha256 or none/, 'naming the choices');

  const full = await cli(['backup', dom.name, '--dir', dir, '--checkpoint', '--wait', '--verbose', '--json', '--state-dir', sd]);
  t.equal(full.code, 0, `full: exit 0 ${full.stderr}`);
  const fullEnd = full.lines.at(-1) as { event: string; job: { state: string; mode: string; checkpoint: string; manifest: string } };
  t.match(fullEnd, { event: 'ended', job: { state: 'completed', mode: 'full' } }, 'full: completed');
  t.match(fullEnd.job.checkpoint, /^bc-/, 'a generated checkpoint');
  t.ok(existsSync(fullEnd.job.manifest), 'the manifest exists');

  await hv.guestWrite(dom, 'vdb', { pattern: 0x22, offset: MiB, length: MiB });
  const inc = await cli([
    'backup',
    dom.name,
    '--dir',
    dir,
    '--incremental',
    '--checkpoint',
    'second',
    '--disks',
    'vda,vdb',
    '--wait',
    '--json',
    '--state-dir',
    sd,
  ]);
  t.equal(inc.code, 0, `incremental: exit 0 ${inc.stderr}`);
  t.match(
    inc.lines.at(-1),
    { event: 'ended', job: { state: 'completed', mode: 'incremental', since: fullEnd.job.checkpoint, checkpoint: 'second' } },
    'incremental since the latest checkpoint, creating the named one',
  );

  const jobs = await cli(['jobs', dom.name, '--kind', 'backup', '--json', '--state-dir', sd]);
  t.equal(jobs.code, 0, `jobs --kind backup: exit 0 ${jobs.stderr}`);
  t.same(
    (jobs.lines[0] as { jobs: Array<{ kind: string; mode: string; state: string }> }).jobs.map((j) => [j.kind, j.mode, j.state]),
    [
      ['backup', 'full', 'completed'],
      ['backup', 'incremental', 'completed'],
    ],
    'jobs --kind backup lists both backups, oldest first',
  );
  const list = await cli(['checkpoints', dom.name, '--json', '--state-dir', sd]);
  t.equal(list.code, 0, 'checkpoints: exit 0');
  t.same(
    (list.lines[0] as { checkpoints: Array<{ name: string }> }).checkpoints.map((c) => c.name),
    [fullEnd.job.checkpoint, 'second'],
    'both checkpoints, oldest first',
  );
  const keep = await cli(['checkpoints', dom.name, '--keep', '1', '--json', '--state-dir', sd]);
  t.same(keep.lines[0], { deleted: [fullEnd.job.checkpoint], kept: ['second'] }, '--keep 1 deletes the oldest');
  t.match(await hv.virsh('checkpoint-list', dom.name, '--name'), /^second\s*$/, 'virsh agrees');
});
