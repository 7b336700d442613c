// The collection's block_move module as a real playbook (Debian's ansible-core) against
// localhost, the real agent (through `blockcopy-agent stdio`, as on a managed host, allowed one
// pool by BLOCKCOPY_ALLOWED_POOLS) and the real libvirtd: a 3-disk VM (raw, qcow2, qcow2 on a
// backing file) moved to a dir pool in one task, formats kept, data equal; check mode changes
// nothing; a rerun reports changed=false; a pool outside allowedPools is refused.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import t from 'tap';
import * as hv from '../../harness/hypervisor.js';
import { CLI, stateDir } from '../../harness/agent.js';
import { camelCaseKeys, playbook } from '../helpers/ansible.js';

const MiB = 1024 * 1024;
const FORMATS: Record<string, string> = { vda: 'raw', vdb: 'qcow2', vdc: 'qcow2' };

const formatOf = (path: string) =>
  (JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' })) as { format: string }).format;

t.test('block_move: a whole VM to a pool in one task, idempotent, check mode', async (t) => {
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'raw', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16, backing: true },
    ],
  });
  for (const [i, d] of Object.keys(FORMATS).entries()) await hv.guestWrite(dom, d, { pattern: 0x31 + i, offset: MiB, length: 2 * MiB });
  const pools: Record<string, string> = {};
  for (const name of ['pool', 'other']) {
    const dir = hv.scratchDir(`${name}-`);
    const pool = `${hv.PREFIX}${process.pid}-ans-${name}`;
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    await hv.virsh('pool-create-as', pool, 'dir', '--target', dir);
    t.teardown(() => hv.virsh('pool-destroy', pool).catch(() => {}));
    pools[name] = pool;
    pools[`${name}Dir`] = dir;
  }
  const vars = {
    domain: dom.name,
    dir: dom.dir,
    pool: pools.pool,
    other_pool: pools.other,
    agent_command: [process.execPath, CLI, 'stdio', '--state-dir', stateDir(t)],
  };
  const env = { BLOCKCOPY_ALLOWED_POOLS: pools.pool! };
  const sources = async () => Promise.all(Object.keys(FORMATS).map(async (d) => (await hv.liveChain(dom, d))[0]));
  const original = await sources();

  const dry = await playbook('move', vars, { check: true, env });
  t.equal(dry.stats.changed, 2, 'check mode: the move and its rerun would change');
  t.same(await sources(), original, 'check mode: the guest still runs on its sources');
  t.match(dry.tasks['A pool not in allowedPools'], { failed: true, error: 'destinationRejected' }, 'check mode: the other pool is refused');

  const r = await playbook('move', vars, { env });
  const moved = r.tasks['Every disk moved to the pool'] as Record<string, unknown>;
  t.match(moved, { changed: true, group: { state: 'pivoted' }, pool: { name: pools.pool, refreshed: true } }, 'one task moved the VM');
  t.match(moved, { group: { group_id: String, jobs: [{ job_id: String, created_at: String }] } }, 'the group in snake_case');
  t.same(camelCaseKeys(r), [], 'no camelCase key in any task result (group, plan, already_there)');
  t.match(r.tasks['Every disk moved to the pool, again'], { changed: false }, 'the same task again: changed=false');
  t.match(
    r.tasks['A pool not in allowedPools'],
    { failed: true, changed: false, error: 'destinationRejected', msg: /allowedPools/ },
    'a pool outside allowedPools is refused',
  );
  for (const [i, [d, format]] of Object.entries(FORMATS).entries()) {
    const path = join(pools.poolDir!, `${dom.name}-${d}.${format}`);
    t.equal((await hv.liveChain(dom, d))[0], path, `${d}: the guest runs on ${path}`);
    t.equal(formatOf(path), format, `${d}: still ${format}`);
    t.equal(await hv.compareImages(dom.disks[i]!.path, path), 'identical', `${d}: qemu-img compare: equal`);
  }
  const again = await playbook('move', vars, { env });
  t.equal(again.stats.changed, 0, 'the playbook again: changed=0');
  t.equal((await playbook('move', vars, { check: true, env })).stats.changed, 0, 'check mode after the move: changed=0');
});
