// The guest's state across a group switch, against the real agent and libvirtd: the agent is
// killed (SIGKILL) or asked to stop (SIGTERM) at every step of a pivotGroup (freeze, pause, each
// pivot, resume, thaw), through BLOCKCOPY_FAULT_KILL_AT. After a SIGTERM the guest runs before the
// agent has exited; after a SIGKILL the next start resumes (and thaws) exactly what its record
// says. A guest its operator paused (`virsh suspend`) stays paused, through a pivotGroup and
// through a crash and restart.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { RpcError, type AgentClient } from '../../src/client/index.js';
import { serveAgent, stateDir, type ServedAgent } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';

const DISKS = ['vda', 'vdb'];

async function domState(dom: hv.TestDomain): Promise<string> {
  return (await hv.virsh('domstate', dom.name)).trim();
}

async function exited(agent: ServedAgent, timeoutMs = 120_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const p = agent.process;
  if (p.exitCode === null && p.signalCode === null) {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the agent did not exit')), timeoutMs);
      p.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  return { code: p.exitCode, signal: p.signalCode };
}

function groupRecord(dir: string, groupId: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, `group-${groupId}.json`), 'utf8')) as Record<string, unknown>;
}

async function readyGroup(t: Test, client: AgentClient, dom: hv.TestDomain, groupId: string) {
  const r = await client.call('blockCopyGroup', {
    domain: dom.name,
    groupId,
    wait: 'ready',
    disks: DISKS.map((disk) => ({ disk, destination: { path: `${dom.dir}/${groupId}-${disk}.raw`, format: 'raw' as const } })),
  });
  t.equal(r.group!.state, 'ready', 'the group is ready');
}

interface Case {
  at: string;
  /** The domain has a guest-agent channel, so the freeze is journaled and sent. */
  channel?: boolean;
}

// group:freeze:sent and group:thaw:sent need a guest agent that answers (none runs in the test
// guests): the unit tests cover them with the fake driver (test/unit/group-guest.test.ts).
const CASES: Case[] = [
  { at: 'group:freeze:journaled', channel: true },
  { at: 'group:pause:journaled' },
  { at: 'group:pause:sent' },
  { at: 'pivot:journaled' },
  { at: 'pivot:sent' },
  { at: 'group:resume:sent' },
];

for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
  for (const c of CASES) {
    t.test(`${signal} at ${c.at} of a pivotGroup: the guest runs afterwards`, async (t) => {
      const dir = stateDir(t);
      const dom = await hv.createDomain(t, {
        disks: DISKS.map(() => ({ format: 'raw' as const, sizeMiB: 16 })),
        guestAgentChannel: !!c.channel,
      });
      const groupId = `g-${dom.name}`;
      const first = await serveAgent(t, { dir, env: { BLOCKCOPY_FAULT_KILL_AT: c.at, BLOCKCOPY_FAULT_SIGNAL: signal } });
      const client = await first.connect();
      await readyGroup(t, client, dom, groupId);
      const pivot = client.call('pivotGroup', { groupId, freeze: 'auto', maxPause: 20 }).then(
        (r) => r,
        (e: unknown) => e,
      );
      const end = await exited(first);
      await pivot;
      if (signal === 'SIGKILL') {
        t.equal(end.signal, 'SIGKILL', `the agent died at ${c.at}`);
      } else {
        t.same(end, { code: 0, signal: null }, `the agent stopped cleanly after the SIGTERM at ${c.at}`);
        t.equal(await domState(dom), 'running', 'the guest was running when the agent exited');
        const rec = groupRecord(dir, groupId);
        t.same([rec.pausedAt, rec.frozenAt], [undefined, undefined], 'the record says nothing is left to undo');
      }

      const second = await serveAgent(t, { dir });
      const client2 = await second.connect();
      t.equal(await domState(dom), 'running', 'after the restart the guest runs');
      const rec = groupRecord(dir, groupId);
      t.same([rec.pausedAt, rec.frozenAt], [undefined, undefined], 'and its record has nothing left to undo');
      if (signal === 'SIGKILL' && c.at !== 'group:resume:sent') {
        const { group } = await client2.call('groupInfo', { groupId });
        t.equal(group.error?.name, 'interrupted', 'the group says the switch was interrupted');
        if (c.channel) t.match(group.error?.message, /filesystems/, '… and what became of the freeze');
      }
      // The caller's retry takes the group to its end.
      const again = await client2.call('pivotGroup', { groupId, freeze: 'auto', maxPause: 20 });
      t.equal(again.group.state, 'pivoted', 'a retried pivotGroup pivots the group');
      t.equal(await domState(dom), 'running', 'and the guest runs');
      await second.stop();
    });
  }
}

t.test('a guest its operator paused stays paused: through pivotGroup, and through a crash and restart', async (t) => {
  const dir = stateDir(t);
  const dom = await hv.createDomain(t, { disks: DISKS.map(() => ({ format: 'raw' as const, sizeMiB: 16 })) });
  const agent = await serveAgent(t, { dir });
  const client = await agent.connect();
  await readyGroup(t, client, dom, `op-${dom.name}`);
  await hv.virsh('suspend', dom.name);
  const refused = await client.call('pivotGroup', { groupId: `op-${dom.name}`, freeze: 'always' }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(refused instanceof RpcError && refused.errorName === 'invalidState', 'freeze always on a paused guest is refused by name');
  const r = await client.call('pivotGroup', { groupId: `op-${dom.name}` });
  t.same(
    [r.group.state, r.group.lastSwitch?.guestPause, r.group.lastSwitch?.pausedMs],
    ['pivoted', 'alreadyPaused', 0],
    'pivoted as it was, without a pause of its own',
  );
  t.equal(await domState(dom), 'paused', 'the guest is still paused');
  await agent.stop();

  // A crash in the middle of a switch of the guest its operator paused.
  const crashing = await serveAgent(t, { dir, env: { BLOCKCOPY_FAULT_KILL_AT: 'pivot:sent' } });
  const client2 = await crashing.connect();
  await readyGroup(t, client2, dom, `op2-${dom.name}`);
  void client2.call('pivotGroup', { groupId: `op2-${dom.name}` }).catch(() => {});
  t.equal((await exited(crashing)).signal, 'SIGKILL', 'the agent died at pivot:sent');
  t.equal(await domState(dom), 'paused', 'the guest is paused');
  const third = await serveAgent(t, { dir });
  const client3 = await third.connect();
  await client3.call('listJobs', {});
  t.equal(await domState(dom), 'paused', 'after the restart the guest is still paused: the agent did not pause it');
  await hv.virsh('resume', dom.name);
});
