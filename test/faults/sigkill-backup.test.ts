// The agent killed with SIGKILL around a backup, against the real libvirtd: between the journal
// write and virDomainBackupBegin (backup:journaled), right after libvirt accepted it
// (backup:sent), and from outside while it runs. A new agent on the same state directory must
// report the backup's true state, never a completion libvirt did not confirm; the caller's retry
// ends with a verified backup, and the restore of its file equals the disk at the moment that
// backup started (the guest writes before, during and after, and while no agent runs).
import t from 'tap';
import { join } from 'node:path';
import type { BackupJob } from '../../src/generated/api.js';
import type { AgentClient } from '../../src/client/index.js';
import { backupJob, serveAgent, stateDir } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';
import { brakeBackup, referenceCopy } from '../helpers/backup.js';
import { killed, report } from '../helpers/faults.js';

const MiB = 1024 * 1024;

interface Case {
  at: 'backup:journaled' | 'backup:sent' | 'outside:running';
  /** The true states right after the restart. */
  after: Array<BackupJob['state']>;
}

const CASES: Case[] = [
  { at: 'backup:journaled', after: ['failed'] },
  { at: 'backup:sent', after: ['running', 'completed'] },
  // A backup caught running may still end while no agent runs (QEMU lets the chunk in flight
  // through the brake): completed, verified from libvirt's kept stats, is a true state too.
  { at: 'outside:running', after: ['running', 'completed'] },
];

/** Starts the backup at a known moment: the guest paused while the reference copy is taken and the call made. */
async function startAt(client: AgentClient, dom: hv.TestDomain, target: string, ref: string) {
  await hv.virsh('suspend', dom.name);
  try {
    await referenceCopy(dom.disks[0]!.path, dom.disks[0]!.format, ref);
    return await client.call('backup', { domain: dom.name, target: { dir: target }, checkpoint: true });
  } finally {
    await hv.virsh('resume', dom.name);
  }
}

for (const c of CASES) {
  t.test(`SIGKILL at ${c.at}: the backup's true state, then a verified backup`, async (t) => {
    const dir = stateDir(t);
    const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 1536 }] });
    await hv.guestWrite(dom, 'vda', { pattern: 0x51, offset: 0, length: 1024 * MiB });
    const target = hv.scratchDir('backup-', t);
    const scratch = hv.scratchDir('restore-', t);
    const inside = !c.at.startsWith('outside:');
    const first = await serveAgent(t, { dir, ...(inside ? { env: { BLOCKCOPY_FAULT_KILL_AT: c.at } } : {}) });
    const client = await first.connect();
    let ref = join(scratch, 'ref0.raw');
    let jobId: string | undefined;
    if (inside) {
      await startAt(client, dom, target, ref).then(
        () => t.fail('backup answered although the agent was to die in it'),
        () => {},
      );
    } else {
      // The brake comes after the answer: on a loaded host the backup may end first; then the
      // try is repeated (a new backup, a new reference) until it is caught running.
      for (let i = 0; i < 5 && !jobId; i++) {
        ref = join(scratch, `ref0-${i}.raw`);
        const id = (await startAt(client, dom, target, ref)).job.jobId;
        const running =
          (await brakeBackup(dom, 1024)) > 0 && /Job type:\s+(Unbounded|Bounded)/.test(await hv.virsh('domjobinfo', dom.name));
        if (running) jobId = id;
        else await client.call('wait', { jobId: id, until: 'done', timeout: 300 });
      }
      t.ok(jobId, 'the backup is slowed down inside QEMU, running');
      first.process.kill('SIGKILL');
    }
    t.equal(await killed(first), 'SIGKILL', `the agent died by SIGKILL at ${c.at}`);
    // Written while no agent runs: not in a backup that started before.
    await hv.guestWrite(dom, 'vda', { pattern: 0x52, offset: 300 * MiB, length: 4 * MiB });

    const second = await serveAgent(t, { dir });
    const c2 = await second.connect();
    const listed = (await c2.call('listJobs', { kind: ['backup'], domain: dom.name })).jobs.map(backupJob);
    // The last one (earlier tries of the outside case ended before the kill).
    let b = listed.at(-1)!;
    t.equal(listed.filter((x) => x.state === 'running' || x.state === 'failed').length <= 1, true, 'at most one backup not completed');
    if (jobId) t.equal(b.jobId, jobId, 'the backup it was killed under');
    else t.equal(listed.length, 1, 'the restarted agent knows the one backup of the domain');
    t.ok(c.after.includes(b.state), `after the restart it is ${b.state} (true states here: ${c.after.join(', ')})`);
    if (b.state === 'failed') {
      t.match(b.error?.evidence ?? b.error?.message, /./, `with the evidence: ${b.error?.evidence ?? b.error?.message}`);
      t.same(b.partialFiles ?? [], [], 'no file of it was left (libvirt never began it)');
      t.notMatch(await hv.virsh('domjobinfo', dom.name), /Job type:\s+(Unbounded|Bounded)/, 'and libvirt indeed runs no job');
      // The caller's retry starts a new backup, at a new moment.
      ref = join(scratch, 'ref1.raw');
      b = backupJob((await startAt(c2, dom, target, ref)).job);
    } else if (b.state === 'running') {
      await brakeBackup(dom, 0);
    }
    await hv.guestWrite(dom, 'vda', { pattern: 0x53, offset: 8 * MiB, length: 2 * MiB });
    const end = backupJob((await c2.call('wait', { jobId: b.jobId, until: 'done', timeout: 300 })).job);
    t.equal(end.state, 'completed', 'the backup completed, verified from libvirt');
    t.ok(end.manifest, 'and is in the manifest');
    const same = await hv.compareImages(end.disks[0]!.file, ref, ['qcow2', 'raw']);
    t.equal(same, 'identical', 'qemu-img compare: the backup is the disk at the moment it started');
    report(t, {
      fault: 'agent SIGKILL (backup)',
      at: c.at,
      recovered: end.state === 'completed',
      mismatches: same === 'identical' ? 0 : 1,
    });
  });
}
