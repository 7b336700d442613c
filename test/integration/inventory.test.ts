// Every domain's storage protects it from a reused destination (issues 21–23), against the real
// agent and libvirtd: another domain's storage-pool volume (stopped, and running), a stopped
// domain's qcow2 external data file, a backing layer's data file (a chain the XML shows, and one
// only the image headers show), a domain whose <metadata> holds a decoy <devices><disk>; and a
// libvirt failure during the inventory refuses the call (a private libvirtd, test driver, whose
// storage pool is inactive). Each reuse onto such a file is refused, and the file is unchanged.
import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { AgentClient, RpcError } from '../../src/client/index.js';
import { LibvirtError, openConnection, VirErrorCode } from '../../src/libvirt/index.js';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent, untilState } from '../../harness/agent.js';
import { startPrivateLibvirtd } from '../helpers/private-libvirtd.js';

const run = promisify(execFile);
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
const unique = () => `${hv.PREFIX}${process.pid}-${randomBytes(3).toString('hex')}`;
const subdir = (parent: string, name: string) => {
  const d = join(parent, name);
  mkdirSync(d);
  chmodSync(d, 0o755);
  return d;
};

/** Defines a domain that stays stopped; its name goes to `defined` (the caller undefines them). */
async function defineStopped(defined: string[], dir: string, devices: string, extra = ''): Promise<string> {
  const name = unique();
  const xmlPath = join(dir, `${name}.xml`);
  writeFileSync(
    xmlPath,
    `<domain type='${hv.domainType()}'><name>${name}</name>${extra}<memory unit='MiB'>64</memory><vcpu>1</vcpu>` +
      `<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>${devices}</devices></domain>`,
  );
  await hv.virsh('define', xmlPath);
  defined.push(name);
  return name;
}

const fileDisk = (path: string, target: string, format = 'qcow2', chain = '') =>
  `<disk type='file' device='disk'><driver name='qemu' type='${format}'/><source file='${path}'/>${chain}<target dev='${target}' bus='virtio'/></disk>`;
const volumeDisk = (pool: string, volume: string, target: string) =>
  `<disk type='volume' device='disk'><driver name='qemu' type='raw'/><source pool='${pool}' volume='${volume}'/><target dev='${target}' bus='virtio'/></disk>`;

t.test("a reuse onto another domain's volume, data file or metadata-hidden disk is refused", async (t) => {
  const root = hv.scratchDir('inv-root-');
  t.teardown(() => run('rm', ['-rf', root]));
  const source = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  const agent = await serveAgent(t, { config: { allowedRoots: [root] } });
  const client: AgentClient = await agent.connect();

  // A dir storage pool under the allowed root, with two volumes.
  const poolDir = subdir(root, 'pool');
  for (const v of ['vol-stopped.raw', 'vol-running.raw']) await run('qemu-img', ['create', '-q', '-f', 'raw', join(poolDir, v), '16M']);
  const pool = unique();
  const running = unique();
  const defined: string[] = [];
  // The domains go before their pool: a domain on a pool that is gone would refuse every
  // copy on this shared host (the inventory fails closed) for as long as it stayed.
  t.teardown(async () => {
    await hv.virsh('destroy', running).catch(() => {});
    for (const name of defined) await hv.virsh('undefine', name).catch(() => {});
    await hv.virsh('pool-destroy', pool).catch(() => {});
    await hv.virsh('pool-undefine', pool).catch(() => {});
  });
  await hv.virsh('pool-define-as', pool, 'dir', '--target', poolDir);
  await hv.virsh('pool-start', pool);
  await defineStopped(defined, root, volumeDisk(pool, 'vol-stopped.raw', 'vda'));
  // A running domain on the other volume (before: only QEMU's image lock stood in the way).
  const runningXml = join(root, `${running}.xml`);
  writeFileSync(
    runningXml,
    `<domain type='${hv.domainType()}'><name>${running}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>` +
      `<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>${volumeDisk(pool, 'vol-running.raw', 'vda')}</devices></domain>`,
  );
  await hv.virsh('create', runningXml);

  // A stopped domain's qcow2 keeps its guest data in an external data file.
  const df = subdir(root, 'df');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(df, 'img.data')}`, join(df, 'img.qcow2'), '16M']);
  await defineStopped(defined, root, fileDisk(join(df, 'img.qcow2'), 'vda'));

  // Backing layers with data files: a chain the XML shows, and one only the headers show.
  const bl = subdir(root, 'backing');
  for (const n of ['shown', 'hidden']) {
    await run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `data_file=${join(bl, `${n}-base.data`)}`,
      join(bl, `${n}-base.qcow2`),
      '16M',
    ]);
    await run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      join(bl, `${n}-base.qcow2`),
      '-F',
      'qcow2',
      join(bl, `${n}-top.qcow2`),
      '16M',
    ]);
  }
  const chain = `<backingStore type='file'><format type='qcow2'/><source file='${join(bl, 'shown-base.qcow2')}'/><backingStore/></backingStore>`;
  await defineStopped(
    defined,
    root,
    fileDisk(join(bl, 'shown-top.qcow2'), 'vda', 'qcow2', chain) + fileDisk(join(bl, 'hidden-top.qcow2'), 'vdb'),
  );

  // A <metadata> element holding a decoy <devices><disk> before the real <devices>.
  const md = subdir(root, 'metadata');
  await run('qemu-img', ['create', '-q', '-f', 'raw', join(md, 'real.raw'), '16M']);
  const decoy =
    `<metadata><decoy:state xmlns:decoy='http://example.org/decoy'><devices>` +
    `<disk type='file' device='disk'><source file='${join(md, 'decoy.raw')}'/><target dev='vda' bus='virtio'/></disk>` +
    `</devices></decoy:state></metadata>`;
  await defineStopped(defined, root, fileDisk(join(md, 'real.raw'), 'vda', 'raw'), decoy);

  const cases: Array<[string, string]> = [
    ["a stopped domain's storage-pool volume", join(poolDir, 'vol-stopped.raw')],
    ["a running domain's storage-pool volume", join(poolDir, 'vol-running.raw')],
    ["a stopped domain's qcow2 external data file", join(df, 'img.data')],
    ["the data file of a backing layer the domain's XML shows", join(bl, 'shown-base.data')],
    ['the data file of a backing layer only the image headers show', join(bl, 'hidden-base.data')],
    ['the disk of a domain whose <metadata> holds a decoy <devices>', join(md, 'real.raw')],
  ];
  for (const [what, path] of cases) {
    const before = sha(path);
    const answer = await client
      .call('blockCopy', { domain: source.name, disk: 'vda', destination: { path, format: 'raw' }, reuseExternal: true, wait: 'none' })
      .then(
        (r) => ({ job: r.job, err: undefined }),
        (e: unknown) => ({ job: undefined, err: e as RpcError }),
      );
    const err = answer.err;
    if (answer.job) {
      // (Before the fix) a copy started: end it, so that each case is tried on its own.
      await client.call('abort', { jobId: answer.job.jobId }).catch(() => {});
      await untilState(client, answer.job.jobId, ['cancelled', 'failed', 'pivoted', 'finished']);
    }
    t.equal(err?.errorName, 'destinationRejected', `${what}: ${err?.message ?? 'the copy was started'}`);
    t.match(err?.message ?? '', /is the same file as/, `${what}: named as a domain's storage`);
    t.equal(sha(path), before, `${what}: unchanged`);
  }
  const { jobs } = await client.call('listJobs', { domain: source.name });
  t.same(jobs, [], 'no copy started');
});

t.test('a libvirt failure during the inventory refuses the call (fail closed)', async (t) => {
  const d = await startPrivateLibvirtd();
  t.teardown(() => d.close());
  const dir = hv.scratchDir('inv-priv-');
  t.teardown(() => run('rm', ['-rf', dir]));
  // The test driver's state lives while a connection holds it: the agent's, opened first.
  const agent = await serveAgent(t, { config: { uri: d.uri, allowedRoots: [dir] } });
  const client: AgentClient = await agent.connect();
  const virsh = (...args: string[]) => run('virsh', ['-q', '-c', d.uri, ...args]);
  // A defined domain on a volume of a pool that is not running: its path cannot be known.
  await virsh('pool-define-as', 'sleeping', 'dir', '--target', '/nonexistent/sleeping');
  const xmlPath = join(dir, 'vm.xml');
  writeFileSync(
    xmlPath,
    `<domain type='test'><name>on-sleeping-pool</name><memory>65536</memory><os><type>hvm</type></os>` +
      `<devices>${volumeDisk('sleeping', 'v.raw', 'vda')}</devices></domain>`,
  );
  await virsh('define', xmlPath);
  const err = await client.call('blockCopy', { domain: 'test', disk: 'vda', destination: { path: join(dir, 'copy.qcow2') } }).then(
    () => undefined,
    (e: unknown) => e as RpcError,
  );
  t.equal(err?.errorName, 'inventoryIncomplete', err?.message ?? 'accepted');
  t.match(err?.message ?? '', /sleeping/, 'names the pool it could not resolve');
  t.match(err?.data, { retryable: true, libvirt: { message: /not active/ } }, "retryable, libvirt's error carried");
});

t.test("storageVolPath: a pool's volume resolved to its path, libvirt's errors carried", async (t) => {
  const conn = await openConnection();
  t.teardown(() => conn.close());
  const dir = hv.scratchDir('inv-pool-');
  t.teardown(() => run('rm', ['-rf', dir]));
  await run('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'v.raw'), '1M']);
  const pool = unique();
  await hv.virsh('pool-define-as', pool, 'dir', '--target', dir);
  t.teardown(async () => {
    await hv.virsh('pool-destroy', pool).catch(() => {});
    await hv.virsh('pool-undefine', pool).catch(() => {});
  });
  const code = (p: Promise<unknown>) =>
    p.then(
      () => 'resolved',
      (e: unknown) => (e instanceof LibvirtError ? e.code : String(e)),
    );
  t.equal(await code(conn.storageVolPath(pool, 'v.raw')), VirErrorCode.OPERATION_INVALID, 'a pool not running');
  await hv.virsh('pool-start', pool);
  t.equal(await conn.storageVolPath(pool, 'v.raw'), join(dir, 'v.raw'));
  t.equal(await code(conn.storageVolPath(pool, 'nope.raw')), VirErrorCode.NO_STORAGE_VOL, 'no such volume');
  t.equal(await code(conn.storageVolPath(`${pool}-nope`, 'v.raw')), VirErrorCode.NO_STORAGE_POOL, 'no such pool');
  t.throws(() => conn.storageVolPath(42 as unknown as string, 'v'), TypeError, 'a non-string pool throws at once');
  t.throws(() => conn.storageVolPath(pool, 'a\u0000b'), TypeError, 'a NUL in the name throws at once');
});
