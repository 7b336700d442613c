// Issue 24's "done when", as an operator runs it: one block_move task moves every disk of a
// running, persistent 3-disk VM (raw, qcow2, qcow2 over a base another defined VM shares) to a
// storage pool with remove_source. Witnesses: virsh (live and persistent XML), qemu-img compare
// against copies of the disks taken before the move, qemu-img info (formats), the file system
// (old files gone, the shared base kept and reported); the task again changes nothing.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import * as hv from '../../harness/hypervisor.js';
import { CLI, stateDir } from '../../harness/agent.js';
import { playbook } from '../helpers/ansible.js';
import { otherDomainOn } from '../helpers/shared-base.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const FORMATS: Record<string, 'raw' | 'qcow2'> = { vda: 'raw', vdb: 'qcow2', vdc: 'qcow2' };

const formatOf = (path: string) =>
  (JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' })) as { format: string }).format;

t.test('one task moves a whole VM to a pool with remove_source; the rerun changes nothing', async (t) => {
  const dom = await hv.createDomain(t, {
    persistent: true,
    disks: [
      { format: 'raw', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16, backing: true },
    ],
  });
  const base = dom.disks[2]!.backingPath!;
  const other = await otherDomainOn(t, base, dom.dir);
  for (const [i, d] of Object.keys(FORMATS).entries()) await hv.guestWrite(dom, d, { pattern: 0x41 + i, offset: MiB, length: 3 * MiB });
  // What each disk holds before the move (the guest is quiet from here on), read through its chain.
  const refs: string[] = [];
  for (const [i, d] of dom.disks.entries()) {
    const ref = join(dom.dir, `ref-${i}.raw`);
    await run('qemu-img', ['convert', '-U', '-O', 'raw', d.path, ref]);
    refs.push(ref);
  }
  const poolDir = hv.scratchDir('pool-');
  const pool = `${hv.PREFIX}${process.pid}-mvrm`;
  t.teardown(() => rmSync(poolDir, { recursive: true, force: true }));
  await hv.virsh('pool-create-as', pool, 'dir', '--target', poolDir);
  t.teardown(() => hv.virsh('pool-destroy', pool).catch(() => {}));
  const vars = { domain: dom.name, dir: dom.dir, pool, shared_base: base, agent_command: [process.execPath, CLI, 'stdio', '--state-dir', stateDir(t)] };
  const env = { BLOCKCOPY_ALLOWED_POOLS: pool };

  const r = await playbook('move_remove', vars, { env });
  t.equal(r.stats.failures, 0, `move_remove succeeds ${JSON.stringify(Object.entries(r.tasks).filter(([, x]) => x.failed))}`.slice(0, 800));
  const moved = r.tasks['The VM moved to the pool, old files removed'] as Record<string, unknown>;
  t.match(moved, { changed: true, group: { state: 'pivoted' } }, 'one task moved the VM');
  t.same(
    (moved.removed as string[]).sort(),
    dom.disks.map((d) => d.path).sort(),
    'removed: the three old tops',
  );
  t.match(moved.kept, [{ path: base, reason: new RegExp(`used by domain ${other}`) }], 'kept: the shared base, naming the other VM');
  t.match(r.tasks['The VM moved to the pool, old files removed, again'], { changed: false }, 'the same task again: changed=false');

  const inactive = await hv.virsh('dumpxml', '--inactive', dom.name);
  for (const [i, [d, format]] of Object.entries(FORMATS).entries()) {
    const path = join(poolDir, `${dom.name}-${d}.${format}`);
    t.same(await hv.liveChain(dom, d), [path], `${d}: the guest runs on ${path}, no chain below it`);
    t.match(inactive, `<source file='${path}'/>`, `${d}: the persistent definition names ${path}`);
    t.equal(formatOf(path), format, `${d}: still ${format}`);
    t.equal(await hv.compareImages(refs[i]!, path), 'identical', `${d}: qemu-img compare: the data moved`);
    t.notOk(existsSync(dom.disks[i]!.path), `${d}: the old file is gone`);
  }
  t.ok(existsSync(base), 'the shared base is still there');
  t.equal(
    (await run('qemu-img', ['check', '-U', join(dom.dir, `${other}-overlay.qcow2`)]).then(() => 'ok')),
    'ok',
    "the other VM's overlay still opens over its base",
  );
  const vols = await hv.virsh('vol-list', pool);
  for (const d of Object.keys(FORMATS)) t.match(vols, `${dom.name}-${d}`, `virsh vol-list shows ${d}'s volume`);
  const again = await playbook('move_remove', vars, { env });
  t.equal(again.stats.changed, 0, 'the playbook again: changed=0');
});
