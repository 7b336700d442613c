// Whole-VM moves (blockCopyGroup with target) through the real agent and libvirtd: a 3-disk VM
// (raw, qcow2, qcow2 on a backing file, plus a cdrom that is left alone) moved to a directory
// and to a dir storage pool in one call, formats kept, the guest on the new files, data equal,
// a rerun changing nothing; a pool outside allowedPools and a name already taken refused.
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile, execFileSync } from 'node:child_process';
import t, { type Test } from 'tap';
import { RpcError, type AgentClient } from '../../src/client/index.js';
import { CLI, serveAgent } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;
const DISKS = ['vda', 'vdb', 'vdc'];

async function expectError(p: Promise<unknown>): Promise<RpcError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof RpcError) return e;
    throw e;
  }
  throw new Error('the call succeeded');
}

/** The CLI a user types, against the served agent; exit code and stdout. */
function cli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function formatOf(path: string): { format: string; backing?: string } {
  const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' })) as {
    format: string;
    'backing-filename'?: string;
  };
  return { format: info.format, ...(info['backing-filename'] ? { backing: info['backing-filename'] } : {}) };
}

/** raw, qcow2, qcow2 on a backing file, and a cdrom; each data disk holds a pattern of its own. */
async function threeDiskVm(t: Test): Promise<hv.TestDomain> {
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'raw', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16, backing: true },
      { format: 'raw', sizeMiB: 1, device: 'cdrom' },
    ],
  });
  for (const [i, d] of DISKS.entries()) await hv.guestWrite(dom, d, { pattern: 0x21 + i, offset: 2 * MiB, length: 3 * MiB });
  return dom;
}

/** The guest runs on `dir`'s files, in its sources' formats, holding what the old chains hold. */
async function checkMoved(t: Test, dom: hv.TestDomain, dir: string): Promise<void> {
  const expected = { vda: 'raw', vdb: 'qcow2', vdc: 'qcow2' } as Record<string, string>;
  for (const [i, d] of DISKS.entries()) {
    const path = join(dir, `${dom.name}-${d}.${expected[d]}`);
    const chain = await hv.liveChain(dom, d);
    t.equal(chain[0], path, `${d}: the guest runs on ${path}`);
    t.equal(chain.length, 1, `${d}: a full copy, no backing chain left`);
    t.same(formatOf(path), { format: expected[d] }, `${d}: still ${expected[d]}`);
    const old = dom.disks[i]!;
    t.equal(await hv.compareImages(old.path, path), 'identical', `${d}: qemu-img compare: the old chain and the new file are equal`);
  }
  t.equal((await hv.liveChain(dom, 'hdc'))[0], dom.disks[3]!.path, 'the cdrom is left where it was');
}

t.test('whole-VM moves through the real agent', async (t) => {
  const poolDir = hv.scratchDir('pool-');
  t.teardown(() => rmSync(poolDir, { recursive: true, force: true }));
  const pool = `${hv.PREFIX}${process.pid}-pool`;
  await hv.virsh('pool-create-as', pool, 'dir', '--target', poolDir);
  t.teardown(() => hv.virsh('pool-destroy', pool).catch(() => {}));
  const agent = await serveAgent(t, { config: { allowedPools: [pool] } });
  const client: AgentClient = await agent.connect();

  t.test('to a directory, in one call; a rerun changes nothing', async (t) => {
    const dom = await threeDiskVm(t);
    const dir = hv.scratchDir('moved-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));

    const dry = await client.call('blockCopyGroup', { domain: dom.name, target: { dir }, dryRun: true });
    t.equal(dry.changed, true, 'dryRun: the move would change something');
    t.same(
      dry.plan?.map((p) => [p.disk, p.format, p.destination]),
      [
        ['vda', 'raw', join(dir, `${dom.name}-vda.raw`)],
        ['vdb', 'qcow2', join(dir, `${dom.name}-vdb.qcow2`)],
        ['vdc', 'qcow2', join(dir, `${dom.name}-vdc.qcow2`)],
      ],
      'the plan: every data disk (not the cdrom), named <domain>-<disk>.<format>, in its own format',
    );
    t.notOk(dry.group, 'dryRun starts nothing');
    t.same(
      readdirSync(dir).filter((f) => !f.startsWith('.')),
      [],
      'and creates no file',
    );

    const r = await client.call('blockCopyGroup', { domain: dom.name, target: { dir }, whenReady: 'pivot', wait: 'done' });
    t.equal(r.changed, true, 'the move started');
    t.equal(r.group?.state, 'pivoted', 'every disk pivoted at one moment');
    t.same(r.alreadyThere, [], 'no disk was there before');
    const progress = r.group!.progress;
    t.equal(progress.percent, 100, 'the group reports its overall progress');
    t.equal(
      String(progress.end),
      String(r.group!.jobs.reduce((s, j) => s + BigInt(j.progress.end), 0n)),
      'overall end is the sum of the disks',
    );
    await checkMoved(t, dom, dir);

    const again = await client.call('blockCopyGroup', { domain: dom.name, target: { dir }, whenReady: 'pivot', wait: 'done' });
    t.equal(again.changed, false, 'a rerun changes nothing');
    t.notOk(again.group, 'and starts no group');
    t.same(
      again.alreadyThere?.map((a) => a.disk),
      DISKS,
      'every disk is reported already there',
    );
    t.same(again.plan, [], 'nothing to copy');
  });

  t.test('to a dir storage pool named in allowedPools; the pool lists the new volumes', async (t) => {
    const dom = await threeDiskVm(t);
    const r = await client.call('blockCopyGroup', { domain: dom.name, disks: DISKS, target: { pool }, whenReady: 'pivot', wait: 'done' });
    t.equal(r.changed, true, 'the move started');
    t.same(r.pool, { name: pool, path: poolDir, refreshed: true }, "the pool's target path read from libvirt, the pool refreshed");
    t.equal(r.group?.state, 'pivoted', 'every disk pivoted');
    await checkMoved(t, dom, poolDir);
    const vols = await hv.virsh('vol-list', pool);
    for (const d of DISKS) t.match(vols, `${dom.name}-${d}.`, `virsh vol-list shows ${d}'s new volume`);
    const again = await client.call('blockCopyGroup', { domain: dom.name, target: { pool }, whenReady: 'pivot', wait: 'done' });
    t.equal(again.changed, false, 'a rerun changes nothing');
  });

  t.test('a persistent VM: its persistent definition names the new files', async (t) => {
    const dom = await hv.createDomain(t, {
      persistent: true,
      disks: [
        { format: 'raw', sizeMiB: 8 },
        { format: 'qcow2', sizeMiB: 8 },
      ],
    });
    const dir = hv.scratchDir('moved-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const r = await client.call('blockCopyGroup', { domain: dom.name, target: { dir }, whenReady: 'pivot', wait: 'done' });
    t.equal(r.group?.state, 'pivoted', 'every disk pivoted');
    const inactive = await hv.virsh('dumpxml', '--inactive', dom.name);
    for (const j of r.group!.jobs) {
      t.ok(inactive.includes(`'${j.destination.path}'`), `${j.disk}: virsh dumpxml --inactive names the new file`);
      t.equal(j.persistent?.matchesLive, true, `${j.disk}: and the job says so`);
    }
    const again = await client.call('blockCopyGroup', { domain: dom.name, target: { dir }, whenReady: 'pivot', wait: 'done' });
    t.equal(again.changed, false, 'a rerun changes nothing');
  });

  t.test('refusals change nothing', async (t) => {
    const dom = await threeDiskVm(t);
    const other = `${hv.PREFIX}${process.pid}-other`;
    const otherDir = hv.scratchDir('other-');
    t.teardown(() => rmSync(otherDir, { recursive: true, force: true }));
    await hv.virsh('pool-create-as', other, 'dir', '--target', otherDir);
    t.teardown(() => hv.virsh('pool-destroy', other).catch(() => {}));
    const refused = await expectError(client.call('blockCopyGroup', { domain: dom.name, target: { pool: other } }));
    t.equal(refused.errorName, 'destinationRejected', 'a pool not in allowedPools is refused');
    t.match(refused.message, /allowedPools/, 'saying why');

    const dir = hv.scratchDir('taken-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const taken = join(dir, `${dom.name}-vdb.qcow2`);
    writeFileSync(taken, 'not yours');
    const dryClash = await expectError(client.call('blockCopyGroup', { domain: dom.name, target: { dir }, dryRun: true }));
    t.equal(dryClash.errorName, 'destinationRejected', 'a dry run makes the same checks: the taken name is refused');
    const clash = await expectError(client.call('blockCopyGroup', { domain: dom.name, target: { dir } }));
    t.equal(clash.errorName, 'destinationRejected', 'a new name that already exists is refused');
    t.ok(!existsSync(join(dir, `${dom.name}-vda.raw`)), 'before any copy starts');

    const cd = await expectError(client.call('blockCopyGroup', { domain: dom.name, disks: ['hdc'], target: { dir } }));
    t.equal(cd.errorName, 'destinationRejected', 'a cdrom named explicitly is refused');
    const { jobs } = await client.call('listJobs', {});
    t.notOk(
      jobs.some((j) => j.domain.uuid === dom.uuid),
      'no job was started on the domain',
    );
    for (const [i, d] of DISKS.entries()) t.equal((await hv.liveChain(dom, d))[0], dom.disks[i]!.path, `${d} stays on its source`);
  });

  t.test('the CLI: move --bandwidth as virsh (MiB/s) limits every disk; virsh blockjob is the witness', async (t) => {
    const dom = await threeDiskVm(t);
    const dir = hv.scratchDir('slow-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const env = { BLOCKCOPY_TOKEN: agent.token };
    const r = await cli(['move', dom.name, '--dir', dir, '--bandwidth', '1', '--json', '--url', agent.url], env);
    t.equal(r.code, 0, `exit 0 ${r.stderr}`);
    const { group } = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
      group: { groupId: string; jobs: Array<{ disk: string; bandwidth: number }> };
    };
    t.same(
      group.jobs.map((j) => [j.disk, j.bandwidth]),
      DISKS.map((d) => [d, 1024 * 1024]),
      'each disk copies at 1 MiB/s',
    );
    for (const d of DISKS) {
      const info = await hv.virsh('blockjob', dom.name, d, '--info', '--bytes');
      t.match(info, /Bandwidth limit:\s*1048576/, `virsh: ${d} limited to 1048576 bytes/s`);
    }
    const a = await client.call('abortGroup', { groupId: group.groupId });
    t.ok(a.changed, 'aborted');
  });

  t.test('the CLI: move DOMAIN --pool NAME --pivot, per-disk and overall progress; a rerun says nothing to do', async (t) => {
    const dom = await threeDiskVm(t);
    const env = { BLOCKCOPY_TOKEN: agent.token };
    const usage = await cli(['move', dom.name, '--dir', '/x', '--pool', pool], env);
    t.equal(usage.code, 2, 'both --dir and --pool: a usage error');
    const r = await cli(['move', dom.name, '--pool', pool, '--disks', 'vda,vdb,vdc', '--pivot', '--json', '--url', agent.url], env);
    t.equal(r.code, 0, `exit 0 ${r.stderr}`);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const progress = lines.filter((l) => l.event === 'jobs.changed') as Array<{ jobs: unknown[]; progress: { cur: number; end: number } }>;
    t.ok(
      progress.length > 0 && progress.every((l) => typeof l.progress.end === 'number'),
      'progress lines carry each disk and the overall',
    );
    t.match(
      lines.at(-1),
      { event: 'group', changed: true, group: { state: 'pivoted' }, pool: { name: pool, refreshed: true } },
      'pivoted in one group',
    );
    await checkMoved(t, dom, poolDir);
    const again = await cli(['move', dom.name, '--pool', pool, '--pivot', '--json', '--url', agent.url], env);
    t.equal(again.code, 0, 'a rerun exits 0');
    t.match(JSON.parse(again.stdout.trim().split('\n').at(-1)!), { event: 'unchanged', changed: false }, 'and says nothing changed');
  });
});
