// The binding's backup calls against the real libvirtd: a push-mode full backup of two disks
// with a checkpoint created at its start, its JOB_COMPLETED event and the completed stats kept
// for a second reader, an incremental since that checkpoint, the checkpoint list (parents,
// creation times) and delete, and libvirt's errors carried through. qemu-io and virsh witness.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  openConnection,
  LibvirtError,
  VirErrorCode,
  JOB_OPERATION_BACKUP,
  type BackupXml,
  type DomainEvent,
} from '../../src/libvirt/index.js';
import * as hv from '../../harness/hypervisor.js';
import { eventRecorder } from '../helpers/events.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

const backupXml = (targets: Record<string, string>, incremental?: string) =>
  (`<domainbackup mode='push'>${incremental ? `<incremental>${incremental}</incremental>` : ''}<disks>` +
    Object.entries(targets)
      .map(([d, f]) => `<disk name='${d}' backup='yes' type='file'><target file='${f}'/><driver type='qcow2'/></disk>`)
      .join('') +
    `</disks></domainbackup>`) as BackupXml;
const checkpointXml = (name: string, disks: string[]) =>
  `<domaincheckpoint><name>${name}</name><disks>${disks.map((d) => `<disk name='${d}' checkpoint='bitmap'/>`).join('')}</disks></domaincheckpoint>` as BackupXml;
const completedOf = (name: string) => (e: DomainEvent) => e.kind === 'jobCompleted' && e.domain.name === name;

async function connect(t: Test) {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  return conn;
}

t.test('argument checks throw TypeErrors at once', async (t) => {
  const conn = await connect(t);
  t.throws(() => conn.backupBegin('x', '' as BackupXml, null), TypeError, 'an empty backup XML');
  t.throws(() => conn.backupBegin('x', '<a/>' as BackupXml, 'a\0b' as BackupXml), TypeError, 'a NUL in the checkpoint XML');
  t.throws(
    () => conn.backupBegin('x', '<a/>' as BackupXml, null, { reuseExternal: 1 as unknown as boolean }),
    TypeError,
    'a non-boolean flag',
  );
  t.throws(() => conn.getJobStats('x', { completed: 'yes' as unknown as boolean }), TypeError, 'a non-boolean stats flag');
  t.throws(() => conn.checkpointDelete('x', ''), TypeError, 'an empty checkpoint name');
});

t.test('full backup with a checkpoint, then an incremental since it; list and delete checkpoints', async (t) => {
  const conn = await connect(t);
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 64 },
      { format: 'qcow2', sizeMiB: 32 },
    ],
  });
  const rec = eventRecorder(conn);
  await rec.ready;
  await hv.guestWrite(dom, 'vda', { pattern: 0x11, offset: 0, length: 4 * MiB });
  await hv.guestWrite(dom, 'vdb', { pattern: 0x12, offset: MiB, length: 2 * MiB });

  const full = { vda: `${dom.dir}/vda.full.qcow2`, vdb: `${dom.dir}/vdb.full.qcow2` };
  await conn.backupBegin(dom.name, backupXml(full), checkpointXml('cp1', ['vda', 'vdb']));
  const ev = await rec.next(completedOf(dom.name));
  t.ok(ev.kind === 'jobCompleted' && ev.stats.operation === JOB_OPERATION_BACKUP, 'JOB_COMPLETED with operation backup');
  t.ok(ev.kind === 'jobCompleted' && ev.stats.success === true, 'the event says success');
  const kept = await conn.getJobStats(dom.name, { completed: true, keepCompleted: true });
  t.equal(kept.type, 'completed', 'completed stats: type completed');
  t.equal(kept.stats.operation, JOB_OPERATION_BACKUP, 'completed stats: operation backup');
  t.type(kept.stats.disk_total, 'bigint', '64-bit fields are bigints');
  const again = await conn.getJobStats(dom.name, { completed: true });
  t.equal(again.type, 'completed', 'kept: a second reader still sees them');
  const gone = await conn.getJobStats(dom.name, { completed: true });
  t.equal(gone.type, 'none', 'read without keepCompleted: they are gone');
  t.equal((await conn.getJobStats(dom.name)).type, 'none', 'no current job');
  t.ok(await hv.readPattern(full.vda, 'qcow2', { pattern: 0x11, offset: 0, length: 4 * MiB }), 'vda backup holds the write');
  t.ok(await hv.readPattern(full.vdb, 'qcow2', { pattern: 0x12, offset: MiB, length: 2 * MiB }), 'vdb backup holds the write');
  t.same(await hv.liveChain(dom, 'vda'), [dom.disks[0]!.path], 'no overlay in the chain');

  await hv.guestWrite(dom, 'vda', { pattern: 0x22, offset: 8 * MiB, length: MiB });
  const inc = { vda: `${dom.dir}/vda.inc.qcow2` };
  await conn.backupBegin(dom.name, backupXml(inc, 'cp1'), checkpointXml('cp2', ['vda']));
  await rec.next((e) => completedOf(dom.name)(e) && e !== ev);
  t.ok(await hv.readPattern(inc.vda, 'qcow2', { pattern: 0x22, offset: 8 * MiB, length: MiB }), 'the incremental holds the new write');
  // QEMU names the disk as the incremental's backing file in its header: read it alone.
  const info = JSON.parse((await run('qemu-img', ['info', '-U', '--output=json', inc.vda])).stdout) as { 'backing-filename'?: string };
  t.comment(`incremental's backing file in its header: ${info['backing-filename'] ?? 'none'}`);
  const alone = `json:${JSON.stringify({ driver: 'qcow2', backing: null, file: { driver: 'file', filename: inc.vda } })}`;
  const map = JSON.parse((await run('qemu-img', ['map', '-U', '--output=json', alone])).stdout) as Array<{ start: number; data: boolean }>;
  t.notOk(
    map.some((m) => m.data && m.start < 4 * MiB),
    'the incremental holds no data where nothing changed since cp1',
  );

  const cps = await conn.listCheckpoints(dom.name);
  t.same(
    cps.map((c) => [c.name, c.parent]),
    [
      ['cp1', null],
      ['cp2', 'cp1'],
    ],
    'checkpoints, parents first',
  );
  t.match(cps[0]!.xml, /<creationTime>\d+<\/creationTime>/, 'the XML has the creation time');
  t.notMatch(cps[0]!.xml, /<domain\b/, 'without the domain');
  await conn.checkpointDelete(dom.name, 'cp1');
  t.same(
    (await conn.listCheckpoints(dom.name)).map((c) => [c.name, c.parent]),
    [['cp2', null]],
    'cp1 deleted, cp2 now the root',
  );
  t.match((await hv.virsh('checkpoint-list', dom.name, '--name')).trim(), /^cp2$/, 'virsh agrees');
});

t.test('libvirt errors carry code and message', async (t) => {
  const conn = await connect(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const err = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      return e;
    }
    return null;
  };
  const noBackup = await err(conn.backupGetXmlDesc(dom.name));
  t.ok(noBackup instanceof LibvirtError, 'no backup running: LibvirtError');
  t.equal((noBackup as LibvirtError).code, VirErrorCode.NO_DOMAIN_BACKUP, 'code NO_DOMAIN_BACKUP');
  const noCheckpoint = await err(conn.checkpointDelete(dom.name, 'nope'));
  t.equal((noCheckpoint as LibvirtError).code, VirErrorCode.NO_DOMAIN_CHECKPOINT, 'an unknown checkpoint: NO_DOMAIN_CHECKPOINT');
  const noJob = await err(conn.abortJob(dom.name));
  t.ok(noJob instanceof LibvirtError, 'abort with no job: LibvirtError');
  t.match((noJob as LibvirtError).message, /job/i, "libvirt's message");
  const badInc = await err(conn.backupBegin(dom.name, backupXml({ vda: `${dom.dir}/x.qcow2` }, 'nope'), null));
  t.ok(badInc instanceof LibvirtError, 'an incremental since an unknown checkpoint: LibvirtError');
  t.same(await conn.listCheckpoints(dom.name), [], 'no checkpoint');
});
