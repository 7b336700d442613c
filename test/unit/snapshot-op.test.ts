// The snapshot operation's bookkeeping on the fake libvirt (logic only; the real behaviour is
// test/integration/snapshots.test.ts): the record is durable at the moment of the call and gone
// once the outcome is known, an unanswered call keeps it unless the live XML already shows the
// snapshot, and quiesce `try` falls back while `required` refuses.
import t, { type Test } from 'tap';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LibvirtTimeout, type SnapshotXml } from '../../src/libvirt/index.js';
import { Journal } from '../../src/jobs/journal.js';
import { SnapshotService } from '../../src/jobs/kinds/snapshot/snapshot.js';
import { recoverSnapshots } from '../../src/jobs/kinds/snapshot/recover.js';
import { silentLogger } from '../../src/log.js';
import { fakeHost, ownRoot } from './fake-connection.js';
import { rejects } from '../helpers/rejects.js';

async function setup(t: Test) {
  const { stateDir, destDir, conn } = fakeHost(t, 'snapop-');
  const journal = new Journal(stateDir);
  await journal.open();
  const dom = conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }, { target: 'vdb' }] });
  const svc = new SnapshotService({
    jobs: {
      connection: conn,
      store: journal,
      assertServing: () => {},
      now: () => new Date().toISOString(),
      listJobs: async () => ({ jobs: [] }),
      manages: () => true,
    },
    checkDestination: ownRoot(destDir),
    log: silentLogger,
  });
  const ops = () => readdirSync(stateDir).filter((f) => f.startsWith('op-'));
  return { conn, dom, svc, destDir, ops, journal };
}

t.test('the record is durable during the call and removed after it', async (t) => {
  const { conn, dom, svc, destDir, ops } = await setup(t);
  const real = conn.snapshotCreateXml.bind(conn);
  let during: string[] = [];
  conn.snapshotCreateXml = async (d, xml, o) => {
    during = ops();
    return real(d, xml, o);
  };
  const overlay = join(destDir, 'a.qcow2');
  const res = await svc.snapshotDisks({ domain: 'vm1', disks: [{ disk: 'vda', overlay: { path: overlay } }] });
  t.equal(during.length, 1, 'one op record at the moment of the call');
  t.same(ops(), [], 'removed after');
  t.same(res.disks, [{ disk: 'vda', overlay: { path: overlay, format: 'qcow2' }, backing: '/images/vm1-vda.qcow2' }]);
  t.equal(conn.disk(dom, 'vdb').source, '/images/vm1-vdb.qcow2', 'vdb untouched');
  const xml = conn.calls.find((c) => c.method === 'snapshotCreateXml')!.args[1] as string;
  t.match(xml, /<disk name='vdb' snapshot='no'\/>/, 'vdb named snapshot=no');
});

t.test('an unanswered call keeps the record unless the live XML shows the snapshot', async (t) => {
  const { conn, dom, svc, destDir, ops, journal } = await setup(t);
  conn.failNext.set('snapshotCreateXml', new LibvirtTimeout('libvirtd did not answer'));
  await rejects(
    t,
    svc.snapshotDisks({ domain: 'vm1', disks: [{ disk: 'vda', overlay: { path: join(destDir, 'a.qcow2') } }] }),
    'libvirtTimeout',
    'not known to have happened',
  );
  t.equal(ops().length, 1, 'the record stays for the next start');
  const settled = await recoverSnapshots({ conn, journal, log: silentLogger });
  t.same([...settled.values()], ['notHappened'], 'the next start finds it not taken');
  t.same(ops(), [], 'and removes the record');

  const real = conn.snapshotCreateXml.bind(conn);
  conn.snapshotCreateXml = async (d: string, xml: SnapshotXml, o) => {
    await real(d, xml, o);
    throw new LibvirtTimeout('libvirtd answered too late');
  };
  const res = await svc.snapshotDisks({ domain: 'vm1', disks: [{ disk: 'vda', overlay: { path: join(destDir, 'b.qcow2') } }] });
  t.equal(res.disks[0]!.overlay.path, join(destDir, 'b.qcow2'), 'the live XML shows it: answered ok');
  t.equal(conn.disk(dom, 'vda').source, join(destDir, 'b.qcow2'));
  t.same(ops(), [], 'record removed');
});

t.test('after a reconnect, leftover records are settled; one still in flight is left to its call', async (t) => {
  const { conn, svc, destDir, ops } = await setup(t);
  conn.failNext.set('snapshotCreateXml', new LibvirtTimeout('libvirtd did not answer'));
  await rejects(
    t,
    svc.snapshotDisks({ domain: 'vm1', disks: [{ disk: 'vda', overlay: { path: join(destDir, 'a.qcow2') } }] }),
    'libvirtTimeout',
    'the answer was lost',
  );
  t.equal(ops().length, 1, 'its record stays');
  // A second snapshot, held inside its libvirt call: in flight while the reconnect settles.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const real = conn.snapshotCreateXml.bind(conn);
  conn.snapshotCreateXml = async (d, xml, o) => {
    await held;
    return real(d, xml, o);
  };
  const second = svc.snapshotDisks({ domain: 'vm1', disks: [{ disk: 'vdb', overlay: { path: join(destDir, 'b.qcow2') } }] });
  while (ops().length < 2) await new Promise((r) => setTimeout(r, 10));
  const settled = await svc.settleLeftovers();
  t.same([...(settled as Map<string, string>).values()], ['notHappened'], 'the lost one is settled from the live XML');
  t.equal(ops().length, 1, 'the one in flight keeps its record');
  release();
  await second;
  t.same(ops(), [], 'and its call removes it');
});

t.test('quiesce: try falls back without a guest agent, required refuses', async (t) => {
  const { conn, svc, destDir, ops } = await setup(t);
  await rejects(
    t,
    svc.snapshotDisks({ domain: 'vm1', disks: [{ disk: 'vda', overlay: { path: join(destDir, 'r.qcow2') } }], quiesce: 'required' }),
    'quiesceFailed',
    'required without a guest agent',
  );
  t.same(ops(), [], 'no record left');
  t.equal(conn.calls.filter((c) => c.method === 'snapshotCreateXml').length, 1, 'one call');
  conn.calls = [];
  const res = await svc.snapshotDisks({
    domain: 'vm1',
    disks: [{ disk: 'vda', overlay: { path: join(destDir, 't.qcow2') } }],
    quiesce: 'try',
  });
  t.equal(res.quiesced, false);
  t.same(
    conn.calls.filter((c) => c.method === 'snapshotCreateXml').map((c) => (c.args[2] as { quiesce: boolean }).quiesce),
    [true, false],
    'with quiesce, then without',
  );
  conn.guestAgent = true;
  const q = await svc.snapshotDisks({
    domain: 'vm1',
    disks: [{ disk: 'vdb', overlay: { path: join(destDir, 'q.qcow2') } }],
    quiesce: 'try',
  });
  t.equal(q.quiesced, true, 'with a guest agent: quiesced');
});

t.test('a disk with a block job is refused before anything is written', async (t) => {
  const { conn, dom, svc, destDir, ops } = await setup(t);
  conn.disk(dom, 'vda').job = { cur: 0n, end: 1n, bandwidth: 0n, type: 'pull' };
  await rejects(
    t,
    svc.snapshotDisks({ domain: 'vm1', disks: [{ disk: 'vda', overlay: { path: join(destDir, 'j.qcow2') } }] }),
    'jobExists',
    'a pull runs',
  );
  t.same(ops(), [], 'no record');
  t.notOk(
    conn.calls.some((c) => c.method === 'snapshotCreateXml'),
    'libvirt not asked',
  );
});
