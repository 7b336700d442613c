// The inventory of every domain's storage (src/jobs/inventory.ts) on the fake connection:
// what it collects (volumes resolved, network URLs, chains, mirrors, data files and backing
// files read from image headers) and that it fails closed. The proof against the real
// libvirtd is test/integration/inventory.test.ts.
import t, { type Test } from 'tap';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { domainStorage } from '../../src/jobs/inventory.js';
import { LibvirtError, LibvirtTimeout, VirErrorCode } from '../../src/libvirt/index.js';
import { silentLogger } from '../../src/log.js';
import { fakeHost } from './fake-connection.js';
import { failure } from '../helpers/rejects.js';
import { startJobs } from './jobs-fixture.js';

const readFixture = (name: string) => readFileSync(fileURLToPath(new URL(`../../../test/fixtures/${name}`, import.meta.url)), 'utf8');

/** A qcow2 v3 header naming a backing file (and its format) and an external data file. */
function qcow2(opts: { backing?: string; backingFormat?: string; dataFile?: string }): Buffer {
  const b = Buffer.alloc(4096);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(3, 4);
  b.writeUInt32BE(16, 20); // cluster_bits
  b.writeUInt32BE(104, 100); // header_length
  if (opts.dataFile) b.writeBigUInt64BE(1n << 2n, 72); // incompatible: external data file
  let off = 104;
  const ext = (type: number, s: string) => {
    b.writeUInt32BE(type, off);
    b.writeUInt32BE(Buffer.byteLength(s), off + 4);
    b.write(s, off + 8);
    off += 8 + Math.ceil(Buffer.byteLength(s) / 8) * 8;
  };
  if (opts.backingFormat) ext(0xe2792aca, opts.backingFormat);
  if (opts.dataFile) ext(0x44415441, opts.dataFile);
  off += 8; // end of extensions
  if (opts.backing) {
    b.writeBigUInt64BE(BigInt(off), 8);
    b.writeUInt32BE(Buffer.byteLength(opts.backing), 16);
    b.write(opts.backing, off);
  }
  return b;
}

function host(t: Test) {
  const h = fakeHost(t, 'bc-inv-');
  const img = join(h.root, 'img');
  mkdirSync(img);
  return { ...h, img };
}

t.test('every domain, every disk type, chains, mirrors, and what image headers name', async (t) => {
  const { conn, img } = host(t);
  // top (XML) → base (header only, relative name) → data file; a second chain via the XML with a data file.
  writeFileSync(join(img, 'top.qcow2'), qcow2({ backing: 'base.qcow2', backingFormat: 'qcow2' }));
  writeFileSync(join(img, 'base.qcow2'), qcow2({ dataFile: 'base.data' }));
  writeFileSync(join(img, 'layer.qcow2'), qcow2({ dataFile: join(img, 'layer.data') }));
  writeFileSync(join(img, 'vol.qcow2'), qcow2({ dataFile: 'vol.data' }));
  writeFileSync(join(img, 'raw-but-qcow2.raw'), qcow2({ dataFile: 'never.data' }));
  mkdirSync(join(img, 'lnk'));
  symlinkSync(join(img, 'top.qcow2'), join(img, 'lnk', 'link.qcow2'));
  writeFileSync(join(img, 'garbage.qcow2'), Buffer.from('QFI\xfb\0\0\0\x09', 'latin1'));
  conn.volumes.set('pool1/vol.qcow2', join(img, 'vol.qcow2'));

  conn.addDomain({ name: 'running', disks: [{ target: 'vda', source: join(img, 'lnk', 'link.qcow2') }] });
  const mirrored = conn.addDomain({ name: 'mirrored', disks: [{ target: 'vda', source: join(img, 'm.qcow2') }] });
  conn.startOutside(mirrored, 'vda', join(img, 'mirror.qcow2'));
  conn.addDomain({
    name: 'defined',
    persistent: true,
    disks: [{ target: 'vda', source: join(img, 'live.qcow2'), configSource: join(img, 'config.qcow2') }],
  });
  conn.addDomain({ name: 'net', disks: [{ target: 'vda', type: 'network', source: 'exp' }] });
  conn.addDomain({
    name: 'stopped',
    active: false,
    persistent: true,
    xml:
      `<domain><name>stopped</name><devices>` +
      `<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source pool='pool1' volume='vol.qcow2'/><target dev='vda'/></disk>` +
      `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${img}/not-yet.qcow2'/>` +
      `<backingStore type='file'><format type='qcow2'/><source file='${img}/layer.qcow2'/><backingStore/></backingStore><target dev='vdb'/></disk>` +
      `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${img}/raw-but-qcow2.raw'/><target dev='vdc'/></disk>` +
      `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${img}/garbage.qcow2'/><target dev='vdd'/></disk>` +
      `<disk type='dir' device='disk'><source dir='${img}'/><target dev='vde'/></disk>` +
      `<disk type='volume' device='disk'><source pool='pool1' volume='gone.qcow2'/><target dev='vdf'/></disk>` +
      `</devices></domain>`,
  });
  const paths = await domainStorage(conn, silentLogger);
  for (const p of [
    'lnk/link.qcow2',
    'lnk/base.qcow2',
    'base.qcow2',
    'base.data',
    'm.qcow2',
    'mirror.qcow2',
    'live.qcow2',
    'config.qcow2',
    'vol.qcow2',
    'vol.data',
    'not-yet.qcow2',
    'layer.qcow2',
    'layer.data',
    'raw-but-qcow2.raw',
    'garbage.qcow2',
  ])
    t.ok(paths.has(join(img, p)), `has ${p}`);
  t.ok(paths.has(img), 'a dir disk');
  t.ok(paths.has('nbd://nbd.example:10809/exp'), 'a network disk as its URL');
  t.notOk(paths.has(join(img, 'never.data')), 'no header is read of an image libvirt names raw (QEMU reads none)');
  t.equal(conn.calls.filter((c) => c.method === 'listDomains').length, 1, 'domains listed once');
  t.equal(conn.calls.filter((c) => c.method === 'storageVolPath').length, 2, 'each volume resolved once');
});

t.test("a <metadata> decoy is not the domain's disk list; its volume is resolved", async (t) => {
  const { conn } = host(t);
  conn.volumes.set('bctest-fx-pool/vol1.raw', '/var/tmp/blockcopy-test/fx/pool/vol1.raw');
  conn.addDomain({
    name: 'bctest-fx-stopped',
    active: false,
    persistent: true,
    xml: readFixture('domain-inactive-volume-network-decoy.xml'),
  });
  const paths = await domainStorage(conn);
  t.same([...paths].sort(), [
    '/dev/bctest-fx-vg/lv0',
    '/var/tmp/blockcopy-test/fx/base.qcow2',
    '/var/tmp/blockcopy-test/fx/base2.qcow2',
    '/var/tmp/blockcopy-test/fx/pool/vol1.raw',
    '/var/tmp/blockcopy-test/fx/top.qcow2',
    'nbd://nbd.example.org:10809/export1',
  ]);
});

t.test('fails closed: a libvirt failure anywhere refuses, with a retryable error', async (t) => {
  const { conn } = host(t);
  conn.volumes.set('pool1/v', '/x/v');
  conn.addDomain({ name: 'a' });
  conn.addDomain({
    name: 'b',
    active: false,
    persistent: true,
    xml: `<domain><devices><disk type='volume'><source pool='pool1' volume='v'/><target dev='vda'/></disk><disk type='volume'><source pool='nopool' volume='v'/><target dev='vdb'/></disk></devices></domain>`,
  });
  const cases: Array<[string, (m: string, args: unknown[]) => Error | undefined, string]> = [
    [
      'listDomains fails',
      (m) => (m === 'listDomains' ? new LibvirtError(VirErrorCode.INTERNAL_ERROR, 0, 'internal error: boom') : undefined),
      'inventoryIncomplete',
    ],
    [
      'listDomains times out',
      (m) => (m === 'listDomains' ? new LibvirtTimeout('libvirtd did not answer listDomains') : undefined),
      'libvirtTimeout',
    ],
    [
      "one domain's XML fails",
      (m, a) =>
        m === 'getXml' && a[0] === conn.domains[1]!.uuid
          ? new LibvirtError(VirErrorCode.OPERATION_FAILED, 0, 'operation failed')
          : undefined,
      'inventoryIncomplete',
    ],
    [
      "one domain's XML times out",
      (m, a) => (m === 'getXml' && a[0] === conn.domains[0]!.uuid ? new LibvirtTimeout('libvirtd did not answer getXml') : undefined),
      'libvirtTimeout',
    ],
    [
      'the connection drops',
      (m) => (m === 'getXml' ? new LibvirtError(VirErrorCode.RPC, 7, 'End of file while reading data') : undefined),
      'unavailable',
    ],
    [
      'a volume lookup times out',
      (m) => (m === 'storageVolPath' ? new LibvirtTimeout('libvirtd did not answer storageVolPath') : undefined),
      'libvirtTimeout',
    ],
  ];
  for (const [what, failIf, name] of cases) {
    conn.failIf = failIf;
    // The unknown pool of b/vdb fails on its own: take it away for the cases above.
    conn.volumes.set('nopool/v', '/x/nv');
    const e = await failure(domainStorage(conn));
    t.equal(e.errorName, name, `${what}: ${e.message}`);
    t.equal(e.retryable, true, `${what}: retryable`);
  }
  conn.failIf = undefined;
  conn.volumes.delete('nopool/v');
  const e = await failure(domainStorage(conn));
  t.equal(e.errorName, 'inventoryIncomplete', `an unknown storage pool: ${e.message}`);
  t.match(e.data, { libvirt: { code: VirErrorCode.NO_STORAGE_POOL } }, "libvirt's error carried");
  t.match(e.message, /nopool/);

  conn.volumes.set('nopool/v', '/x/nv');
  conn.domains[1]!.xml = '<domain><devices><disk type=file></devices></domain>';
  t.equal((await failure(domainStorage(conn))).errorName, 'inventoryIncomplete', 'XML that cannot be read');
  conn.domains[1]!.xml = '<domain/>';
  conn.failIf = (m, a) =>
    m === 'getXml' && a[0] === conn.domains[0]!.uuid ? new LibvirtError(VirErrorCode.NO_DOMAIN, 10, 'Domain not found') : undefined;
  t.ok(await domainStorage(conn), 'a domain undefined since the list is skipped, not a failure');
});

t.test("blockCopy: a failed inventory starts nothing; a reuse onto another domain's volume or data file is refused", async (t) => {
  const { conn, stateDir, destDir } = fakeHost(t, 'bc-inv-copy-');
  writeFileSync(join(destDir, 'vol.raw'), '');
  writeFileSync(join(destDir, 'img.qcow2'), qcow2({ dataFile: 'img.data' }));
  writeFileSync(join(destDir, 'img.data'), '');
  conn.volumes.set('p/vol.raw', join(destDir, 'vol.raw'));
  conn.addDomain({ name: 'vm1' });
  const other = `<domain><devices><disk type='volume'><driver type='raw'/><source pool='p' volume='vol.raw'/><target dev='vda'/></disk>
    <disk type='file'><driver type='qcow2'/><source file='${destDir}/img.qcow2'/><target dev='vdb'/></disk></devices></domain>`;
  conn.addDomain({ name: 'vm2', active: false, persistent: true, xml: other });
  const jobs = await startJobs(t, conn, stateDir, destDir);

  for (const f of ['vol.raw', 'img.data']) {
    const e = await failure(
      jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(destDir, f), format: 'raw' }, reuseExternal: true }),
    );
    t.equal(e.errorName, 'destinationRejected', `${f}: ${e.message}`);
    t.match(e.message, /is the same file as/);
  }
  conn.failIf = (m, a) =>
    m === 'getXml' && a[0] === conn.domains[1]!.uuid
      ? new LibvirtError(VirErrorCode.INTERNAL_ERROR, 0, 'internal error: hiccup')
      : undefined;
  const e = await failure(jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(destDir, 'new.qcow2') } }));
  t.equal(e.errorName, 'inventoryIncomplete', e.message);
  t.same(conn.sideEffects(), [], 'libvirt was asked nothing that changes anything');
  t.same(conn.readJournal(), [], 'no job recorded');
  conn.failIf = undefined;
  const ok = await jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(destDir, 'new.qcow2') } });
  t.equal(ok.changed, true, 'once libvirt answers, the same call starts the copy');
});
