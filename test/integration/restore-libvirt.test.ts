// The offline restore on backups QEMU really wrote: `virsh backup-begin` (push mode) of a running
// throwaway domain, a full that creates a checkpoint, then two incrementals each creating the
// next, with the disk written between them through QEMU (the monitor's qemu-io, flushed). The
// incrementals are libvirt's own targets (their headers name the live disk as backing: the
// restore reports that name and never opens it). The manifest is written as the backup job
// writes it (the contract in docs/restore.md). Each restore point equals a copy of the disk
// taken just before that backup began; the domain is left running, untouched by the restore.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { CLI } from '../../harness/agent.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SIZE_MIB = 64;

function restore(args: string[]): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'restore', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('exit', (code) => resolve({ code, stderr, stdout }));
  });
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/** Waits until the domain's backup job has ended, and checks libvirt says it completed. */
async function backupDone(name: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const now = await hv.virsh('domjobinfo', name);
    if (/Job type:\s+None/.test(now)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const done = await hv.virsh('domjobinfo', name, '--completed');
  if (!/Job type:\s+Completed/.test(done) || !/Operation:\s+Backup/.test(done)) throw new Error(`backup did not complete: ${done}`);
}

t.test('full + 2 incrementals by libvirt push-mode backup, restored offline to each point', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: SIZE_MIB }] });
  const disk = dom.disks[0]!;
  const dir = hv.scratchDir('restore-lv-', t);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = hv.scratchDir('restore-lv-out-', t);
  t.teardown(() => rmSync(out, { recursive: true, force: true }));

  const expected = async (n: number) => {
    const p = join(out, `expected-${n}.raw`);
    await run('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', disk.path, p]);
    return p;
  };
  const entries: Array<{ id: string; kind: 'full' | 'incremental'; checkpoint: string; since: string | null; file: string; at: string }> =
    [];
  const backup = async (n: number, since: string | null) => {
    const checkpoint = `c${n}`;
    const file = `vm-vda-${checkpoint}.${since ? 'inc' : 'full'}.qcow2`;
    const bx = join(dir, `backup-${n}.xml`);
    const cx = join(dir, `checkpoint-${n}.xml`);
    writeFileSync(
      bx,
      `<domainbackup>${since ? `<incremental>${since}</incremental>` : ''}<disks><disk name='vda' type='file'>` +
        `<target file='${join(dir, file)}'/><driver type='qcow2'/></disk></disks></domainbackup>`,
    );
    writeFileSync(
      cx,
      `<domaincheckpoint><name>${checkpoint}</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>`,
    );
    const at = new Date().toISOString();
    await hv.virsh('backup-begin', dom.name, bx, cx);
    await backupDone(dom.name);
    entries.push({ id: `job-${n}`, kind: since ? 'incremental' : 'full', checkpoint, since, file, at });
  };

  await hv.guestWrite(dom, 'vda', { pattern: 0x11, offset: 0, length: 4 * MiB });
  await hv.guestWrite(dom, 'vda', { pattern: 0x12, offset: 40 * MiB, length: 1 * MiB });
  const e1 = await expected(1);
  await backup(1, null);
  await hv.guestWrite(dom, 'vda', { pattern: 0x21, offset: 4096, length: 8192 });
  await hv.guestWrite(dom, 'vda', { pattern: 0x22, offset: 20 * MiB - 512, length: 1024 });
  const e2 = await expected(2);
  await backup(2, 'c1');
  await hv.guestWrite(dom, 'vda', { pattern: 0x31, offset: 4096 + 1024, length: 2048 });
  await hv.guestWrite(dom, 'vda', { pattern: 0x32, offset: 60 * MiB, length: 100 });
  const e3 = await expected(3);
  await backup(3, 'c2');
  await hv.guestWrite(dom, 'vda', { pattern: 0x44, offset: 8 * MiB, length: 1 * MiB }); // after the last backup

  const info = JSON.parse((await run('qemu-img', ['info', '-U', '--output=json', join(dir, entries[2]!.file)])).stdout) as {
    'backing-filename'?: string;
  };
  t.equal(info['backing-filename'], disk.path, "libvirt's incremental target names the live disk as its backing");

  const manifest = join(dir, 'vm.backups.json');
  writeFileSync(
    manifest,
    JSON.stringify({
      version: 1,
      domain: dom.name,
      uuid: dom.uuid,
      backups: entries.map((e) => ({
        id: e.id,
        kind: e.kind,
        checkpoint: e.checkpoint,
        since: e.since,
        startedAt: e.at,
        completedAt: e.at,
        disks: {
          vda: {
            file: e.file,
            format: 'qcow2',
            virtualSize: SIZE_MIB * MiB,
            size: statSync(join(dir, e.file)).blocks * 512,
            sha256: sha256(join(dir, e.file)),
          },
        },
      })),
    }),
  );
  const before = Object.fromEntries(readdirSync(dir).map((f) => [f, sha256(join(dir, f))]));
  for (const [upto, exp] of [
    ['c1', e1],
    ['job-2', e2],
    ['c3', e3],
  ] as const) {
    const target = join(out, `restored-${upto}.qcow2`);
    const r = await restore([manifest, '--disk', 'vda', '--upto', upto, '--output', target]);
    t.equal(r.code, 0, `up to ${upto}: exit 0 ${r.stderr}`);
    t.equal(await hv.compareImages(target, exp), 'identical', `up to ${upto}: equal to the disk when that backup began`);
  }
  t.not(await hv.compareImages(join(out, 'restored-c3.qcow2'), disk.path), 'identical', 'the write after the last backup is not in it');
  t.same(Object.fromEntries(readdirSync(dir).map((f) => [f, sha256(join(dir, f))])), before, 'backup files unchanged');
  t.equal((await hv.virsh('domstate', dom.name)).trim(), 'running', 'the domain runs on');
});
