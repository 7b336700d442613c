// A backup's quiesce on the fake libvirt, whose guest agent answers (the real host has no guest
// OS to run one; test/integration/backups.test.ts covers the refusals against libvirtd): the
// freeze journaled before it is asked, the thaw after libvirt's answer whatever it was, and after
// a crash in between a thaw at the next start of exactly what the record says the agent froze.
import t, { type Test } from 'tap';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../../src/errors.js';
import { BackupService } from '../../src/jobs/kinds/backup/service.js';
import { silentLogger } from '../../src/log.js';
import { fakeHost, ownRoot } from './fake-connection.js';
import { startJobs } from './jobs-fixture.js';

async function setup(t: Test) {
  const host = fakeHost(t, 'bc-bkq-');
  host.conn.guestAgent = true;
  const dom = host.conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }] });
  const jobs = await startJobs(t, host.conn, host.stateDir, host.destDir);
  const start = async () => {
    const s = new BackupService({
      jobs,
      checkDestination: ownRoot(host.destDir),
      allowedPools: [],
      log: silentLogger,
      pollIntervalMs: 60_000,
    });
    await s.start();
    t.teardown(() => s.stop());
    return s;
  };
  return { ...host, dom, jobs, start };
}

const records = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('backup-'));

t.test('freeze journaled, then sent; thawed after libvirt answered (here: refused)', async (t) => {
  const s = await setup(t);
  const service = await s.start();
  // What the state directory holds at the moment the freeze is asked.
  let atFreeze = '';
  const freeze = s.conn.fsFreeze.bind(s.conn);
  s.conn.fsFreeze = (d: string) => {
    atFreeze = records(s.stateDir)
      .map((f) => readFileSync(join(s.stateDir, f), 'utf8'))
      .join('\n');
    return freeze(d);
  };
  const err = await service.backup({ domain: 'vm1', target: { dir: s.destDir }, quiesce: 'required' }).catch((e: unknown) => e);
  t.ok(err instanceof AgentError, `the fake refuses the backup itself: ${(err as Error).message}`);
  const seq = s.conn.calls.map((c) => c.method).filter((m) => ['fsFreeze', 'backupBegin', 'fsThaw'].includes(m));
  t.same(seq, ['fsFreeze', 'backupBegin', 'fsThaw'], 'freeze, begin, thaw');
  t.match(atFreeze, /"frozenAt"/, 'the freeze was durable in the record before it was asked');
  t.equal(s.conn.frozenFs.size, 0, 'nothing left frozen');
  const [file] = records(s.stateDir);
  t.notMatch(readFileSync(join(s.stateDir, file!), 'utf8'), /frozenAt/, 'and the record says so');
});

t.test('a crash between freeze and thaw: the next start thaws what its record says, nothing else', async (t) => {
  const s = await setup(t);
  const other = s.conn.addDomain({ name: 'vm2', disks: [{ target: 'vda' }] });
  // vm1 frozen by the agent (its record says so), vm2 frozen by someone else (no record of it).
  s.conn.frozenFs.add(s.dom.uuid);
  s.conn.frozenFs.add(other.uuid);
  const rec = {
    job: {
      jobId: 'bk-crashed',
      kind: 'backup',
      domain: { name: 'vm1', uuid: s.dom.uuid },
      state: 'failed',
      mode: 'full',
      since: null,
      checkpoint: null,
      dir: s.destDir,
      manifest: null,
      disks: [{ disk: 'vda', file: join(s.destDir, 'x.qcow2'), format: 'qcow2' }],
      progress: { processed: '0', total: '0', percent: null },
      owner: 'agent',
      createdAt: '2026-12-07T10:00:00.000Z',
      updatedAt: '2026-12-07T10:00:00.000Z',
      endedAt: '2026-12-07T10:00:00.000Z',
    },
    backupXml: '',
    checkpointXml: null,
    priorCompleted: null,
    frozenAt: '2026-12-07T10:00:00.000Z',
  };
  writeFileSync(join(s.stateDir, 'backup-bk-crashed.json'), JSON.stringify(rec));
  await s.start();
  t.notOk(s.conn.frozenFs.has(s.dom.uuid), "vm1, which the agent's record says it froze, is thawed");
  t.ok(s.conn.frozenFs.has(other.uuid), 'vm2, frozen by someone else, is left frozen');
  t.notMatch(readFileSync(join(s.stateDir, 'backup-bk-crashed.json'), 'utf8'), /frozenAt/, 'the record cleared');
});
