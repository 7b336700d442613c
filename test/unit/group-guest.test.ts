// The guest's state around a group switch, on the fake connection (proof of logic only;
// test/faults/group-guest.test.ts runs the real agent and libvirtd): freeze, pause, resume and
// thaw in order; a guest paused by someone else is switched as it is; the release after a
// crash undoes exactly what the record says; a run state libvirt cannot read refuses the switch;
// a shutdown waits for the switch under way to resume the guest.
import t, { type Test } from 'tap';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LibvirtError, LibvirtTimeout } from '../../src/libvirt/index.js';
import { FakeConnection, fakeHost, ownRoot } from './fake-connection.js';
import { readyGroup, startGroups, type GroupSetup } from './jobs-fixture.js';
import { rejects } from '../helpers/rejects.js';

type Setup = GroupSetup;

async function setup(t: Test, guestAgent: boolean): Promise<Setup> {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-guest-');
  conn.guestAgent = guestAgent;
  const dom = conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }, { target: 'vdb' }] });
  return { conn, stateDir, destDir, dom, ...(await startGroups(t, conn, stateDir, { checkDestination: ownRoot(destDir) })) };
}

const guestCalls = (conn: FakeConnection) =>
  conn
    .sideEffects()
    .map((c) => c.method)
    .filter((m) => m !== 'blockCopy');

t.test('freeze, pause, pivots, resume, thaw, in that order; the record holds nothing to undo after', async (t) => {
  const s = await setup(t, true);
  await readyGroup(s, 'g');
  const r = await s.groups.pivotGroup({ groupId: 'g' });
  t.same(r.group.lastSwitch?.freeze, { mode: 'auto', frozen: 2 }, 'two filesystems frozen');
  t.equal(r.group.lastSwitch?.guestPause, 'agent', 'the agent paused the guest');
  t.same(guestCalls(s.conn), ['fsFreeze', 'suspend', 'blockJobAbort', 'blockJobAbort', 'resume', 'fsThaw']);
  t.same([s.conn.paused.size, s.conn.frozenFs.size], [0, 0], 'the guest runs, thawed');
  const rec = JSON.parse(readFileSync(join(s.stateDir, 'group-g.json'), 'utf8')) as Record<string, unknown>;
  t.same([rec.pausedAt, rec.frozenAt], [undefined, undefined]);
});

t.test('a guest paused by someone else is switched as it is and stays paused', async (t) => {
  const s = await setup(t, true);
  await readyGroup(s, 'g');
  s.conn.paused.add(s.dom.uuid);
  const r = await s.groups.pivotGroup({ groupId: 'g' });
  t.match(r.group, { state: 'pivoted', lastSwitch: { guestPause: 'alreadyPaused', pausedMs: 0, freeze: { frozen: null } } });
  t.same(guestCalls(s.conn), ['blockJobAbort', 'blockJobAbort'], 'no freeze, no suspend, no resume');
  t.ok(s.conn.paused.has(s.dom.uuid), 'still paused');
});

t.test('a guest resumed by someone else during the switch is not resumed again', async (t) => {
  const s = await setup(t, false);
  await readyGroup(s, 'g');
  s.conn.endDelayMs = 100;
  const p = s.groups.pivotGroup({ groupId: 'g' });
  while (!s.conn.paused.has(s.dom.uuid)) await new Promise((r) => setTimeout(r, 2));
  s.conn.paused.delete(s.dom.uuid); // `virsh resume` meanwhile
  await p;
  t.same(guestCalls(s.conn), ['suspend', 'blockJobAbort', 'blockJobAbort'], 'no resume sent');
});

t.test('a run state libvirt cannot read refuses the switch, nothing changed', async (t) => {
  const s = await setup(t, true);
  await readyGroup(s, 'g');
  s.conn.failNext.set('getState', new LibvirtTimeout('getState: libvirtd did not answer within 10000 ms'));
  await rejects(t, s.groups.pivotGroup({ groupId: 'g' }), 'libvirtTimeout', 'pivotGroup');
  t.same(guestCalls(s.conn), [], 'no freeze, no pause, no pivot');
});

t.test('the release after a crash resumes and thaws what the record says, once', async (t) => {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-guest-');
  conn.guestAgent = true;
  const dom = conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }] });
  const now = new Date().toISOString();
  mkdirSync(stateDir, { mode: 0o700 });
  const rec = (groupId: string, extra: object) =>
    writeFileSync(
      join(stateDir, `group-${groupId}.json`),
      JSON.stringify({
        groupId,
        domain: { name: dom.name, uuid: dom.uuid },
        jobIds: [],
        whenReady: 'none',
        freeze: 'auto',
        maxPause: 10,
        createdAt: now,
        updatedAt: now,
        lastSwitch: null,
        ...extra,
      }),
    );
  rec('crashed', { pausedAt: now, frozenAt: now });
  conn.paused.add(dom.uuid);
  conn.frozenFs.add(dom.uuid);
  const { groups } = await startGroups(t, conn, stateDir, { checkDestination: ownRoot(destDir) });
  t.same([conn.paused.size, conn.frozenFs.size], [0, 0], 'resumed and thawed');
  t.same(guestCalls(conn), ['resume', 'fsThaw'], 'resume first (the guest agent needs running vCPUs), then thaw');
  const { group } = await groups.groupInfo({ groupId: 'crashed' });
  t.equal(group.error?.name, 'interrupted');
  t.match(group.error?.message, /resumed; its filesystems were thawed/);
  const after = JSON.parse(readFileSync(join(stateDir, 'group-crashed.json'), 'utf8')) as Record<string, unknown>;
  t.same([after.pausedAt, after.frozenAt], [undefined, undefined], 'and not again at the next start');
});

t.test('a shutdown waits for the switch under way to resume the guest', async (t) => {
  const s = await setup(t, false);
  await readyGroup(s, 'g');
  s.conn.endDelayMs = 200;
  const p = s.groups.pivotGroup({ groupId: 'g' }).catch((e: unknown) => e);
  while (!s.conn.paused.has(s.dom.uuid)) await new Promise((r) => setTimeout(r, 2));
  await s.groups.stop();
  t.equal(s.conn.paused.size, 0, 'the guest runs once stop() resolved');
  t.match(await p, { group: { state: 'pivoted' } }, 'the switch completed');
  await rejects(t, s.groups.pivotGroup({ groupId: 'g' }), 'unavailable', 'no switch begins after stop()');
});

t.test('fail closed: libvirt failures in the group checks are named errors, never a pass', async (t) => {
  const s = await setup(t, true);
  // Every lookup of the group's start fails closed, the group's own (first) and the members'.
  const lookup = s.conn.lookupDomain.bind(s.conn);
  for (const nth of [1, 2]) {
    let lookups = 0;
    s.conn.lookupDomain = async (key: string) => {
      if (++lookups === nth) throw new LibvirtTimeout('libvirtd did not answer lookupDomain within 10000 ms');
      return lookup(key);
    };
    const e = await s.groups
      .blockCopyGroup({ domain: 'vm1', disks: [{ disk: 'vda', destination: { path: join(s.destDir, 'x.qcow2') } }] })
      .catch((err: unknown) => err);
    t.match(e, { errorName: 'libvirtTimeout' }, `lookup ${nth} libvirtd did not answer: libvirtTimeout (retryable), not notFound`);
  }
  s.conn.lookupDomain = lookup;
  await readyGroup(s, 'g');
  // The domain XML says whether there is a guest agent to freeze: unread, it is not "no agent".
  s.conn.failNext.set('getXml', new LibvirtError(1, 10, 'internal error: something went wrong'));
  const refused = await s.groups.pivotGroup({ groupId: 'g' }).catch((err: unknown) => err);
  t.match(refused, { errorName: 'libvirtError' }, 'pivotGroup refused by name');
  t.same(guestCalls(s.conn), [], 'nothing frozen, paused or pivoted');
});

t.test('a guest the switch could not resume stays recorded paused and frozen; the reconnect resumes, then thaws', async (t) => {
  const s = await setup(t, true);
  await readyGroup(s, 'g');
  const resume = s.conn.resume.bind(s.conn);
  s.conn.resume = async () => {
    throw new LibvirtTimeout('libvirtd did not answer resume within 10000 ms');
  };
  await s.groups.pivotGroup({ groupId: 'g' });
  const rec = JSON.parse(readFileSync(join(s.stateDir, 'group-g.json'), 'utf8')) as Record<string, unknown>;
  t.ok(rec.pausedAt && rec.frozenAt, 'the record still says paused and frozen');
  t.same([s.conn.paused.size, s.conn.frozenFs.size], [1, 1], 'no thaw was tried on a paused guest');
  s.conn.resume = resume;
  s.jobs.emit('agent.connection', { state: 'restored' });
  const end = Date.now() + 5000;
  while ((s.conn.paused.size > 0 || s.conn.frozenFs.size > 0) && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  t.same([s.conn.paused.size, s.conn.frozenFs.size], [0, 0], 'resumed and thawed after the reconnect');
  t.same(guestCalls(s.conn).slice(-2), ['resume', 'fsThaw'], 'resume first, then thaw');
});
