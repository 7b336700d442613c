// The one reader of libvirt's domain XML (src/libvirt/disk-xml.ts), on XML libvirt 9.0 wrote
// (test/fixtures, captured with virsh dumpxml): every disk type, backing chains with their
// index, mirrors, volumes, the guest agent channel, and only /domain/devices/disk.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { findDisk, parseDisk, parseDisks, parseDomainXml } from '../../src/libvirt/disk-xml.js';
import { majorMinor } from '../../src/destination/identity.js';

const readFixture = (name: string) => readFileSync(fileURLToPath(new URL(`../../../test/fixtures/${name}`, import.meta.url)), 'utf8');
const FX = '/var/tmp/blockcopy-test/fx';

t.test('an inactive XML: volume, network, block, file chain, empty cdrom; the <metadata> decoy is not read', async (t) => {
  const xml = readFixture('domain-inactive-volume-network-decoy.xml');
  t.match(xml, /<metadata>[\s\S]*<devices>[\s\S]*decoy\.raw/, 'the fixture holds a decoy <devices><disk> in <metadata>');
  const { disks, guestAgentChannel } = parseDomainXml(xml);
  t.same(
    disks.map((d) => [d.target, d.type, d.device, d.sourcePath, d.format]),
    [
      ['vda', 'file', 'disk', `${FX}/top.qcow2`, 'qcow2'],
      ['vdb', 'volume', 'disk', null, 'raw'],
      ['vdc', 'network', 'disk', 'nbd://nbd.example.org:10809/export1', 'raw'],
      ['vdd', 'block', 'disk', '/dev/bctest-fx-vg/lv0', 'raw'],
      ['hdc', 'file', 'cdrom', null, 'raw'],
    ],
    'the real disks, in order; no decoy',
  );
  t.notOk(
    disks.some((d) => d.sourcePath?.includes('decoy')),
    'nothing from <metadata>',
  );
  t.same(findDisk(xml, 'vdb')!.volume, { pool: 'bctest-fx-pool', volume: 'vol1.raw' });
  t.same(findDisk(xml, 'vda')!.volume, null);
  t.same(findDisk(xml, 'vda')!.backing, [
    { index: null, path: `${FX}/base2.qcow2`, format: 'qcow2', type: 'file', volume: null },
    { index: null, path: `${FX}/base.qcow2`, format: 'qcow2', type: 'file', volume: null },
  ]);
  t.same(findDisk(xml, 'vda')!.backingPaths, [`${FX}/base2.qcow2`, `${FX}/base.qcow2`]);
  t.same(findDisk(xml, 'vdb')!.backing, [], 'no chain shown: none');
  t.equal(guestAgentChannel, true, 'the guest agent channel');
});

t.test('a live XML: indexes of the source chain, a volume disk', async (t) => {
  const xml = readFixture('domain-live-volume-chain.xml');
  const vda = findDisk(xml, 'vda')!;
  t.same(vda.backing, [{ index: 3, path: `${FX}/base2.qcow2`, format: 'qcow2', type: 'file', volume: null }]);
  t.same(findDisk(xml, 'vdb')!.volume, { pool: 'bctest-fx-pool', volume: 'vol1.raw' });
  t.equal(parseDomainXml(xml).guestAgentChannel, false, 'no guest agent channel');
});

t.test('a live mirror and its chain, and the existing fixtures', async (t) => {
  const xml = readFixture('jobs-mirror-ready.xml');
  const vda = findDisk(xml, 'vda')!;
  t.same(vda.backing, [{ index: 4, path: '/var/tmp/blockcopy-test/run-1lDN0F/base0.qcow2', format: 'qcow2', type: 'file', volume: null }]);
  t.match(vda.mirror, { job: 'copy', ready: 'yes', type: 'file', format: 'qcow2', backing: [] });
  t.equal(vda.mirror!.path, "/var/tmp/blockcopy-test/cap-Xyz7ET/copy'a&b.qcow2", 'entities decoded');
});

t.test('only direct /domain/devices/disk children count', async (t) => {
  const disk = (p: string, dev: string) => `<disk type='file' device='disk'><source file='${p}'/><target dev='${dev}'/></disk>`;
  // A <devices> before the real one, elsewhere than <metadata>; a <disk> nested in another element.
  const xml =
    `<domain><description>&lt;devices&gt;</description><metadata><x:m xmlns:x='urn:x'><devices>${disk('/decoy/1', 'vda')}</devices></x:m></metadata>` +
    `<os><devices>${disk('/decoy/2', 'vda')}</devices></os>` +
    `<devices><hostdev>${disk('/decoy/3', 'vdz')}</hostdev>${disk('/real/a', 'vda')}` +
    `<!-- ${disk('/decoy/4', 'vdy')} --><![CDATA[${disk('/decoy/5', 'vdx')}]]>${disk('/real/b', 'vdb')}</devices>` +
    `<devices>${disk('/decoy/6', 'vdw')}</devices></domain>`;
  t.same(
    parseDisks(xml).map((d) => [d.target, d.sourcePath]),
    [
      ['vda', '/real/a'],
      ['vdb', '/real/b'],
    ],
  );
});

t.test('sources read by the element type; malformed XML is an error, empty is nothing', async (t) => {
  t.equal(parseDisk(`<disk type='dir' device='disk'><source dir='/srv/d'/><target dev='vda'/></disk>`).sourcePath, '/srv/d');
  t.equal(
    parseDisk(`<disk type='network'><source protocol='nbd' name='e'><host name='h' port='1'/></source><target dev='vda'/></disk>`)
      .sourcePath,
    'nbd://h:1/e',
  );
  t.equal(parseDisk(`<disk type='nvme'><source type='pci' managed='yes' namespace='1'/><target dev='vda'/></disk>`).sourcePath, null);
  const chain = parseDisk(
    `<disk type='file'><source file='/t'/><backingStore type='volume' index='2'><format type='qcow2'/><source pool='p' volume='v'/>` +
      `<backingStore type='network' index='3'><format type='raw'/><source protocol='nbd' name='b'><host name='h' port='2'/></source><backingStore/></backingStore>` +
      `</backingStore><target dev='vda'/></disk>`,
  );
  t.same(chain.backing, [
    { index: 2, path: null, format: 'qcow2', type: 'volume', volume: { pool: 'p', volume: 'v' } },
    { index: 3, path: 'nbd://h:2/b', format: 'raw', type: 'network', volume: null },
  ]);
  t.same(parseDisks(''), []);
  t.throws(() => parseDisks('<domain><devices>'), { name: 'DomainXmlError' });
  t.throws(() => parseDisks('<network/>'), { name: 'DomainXmlError' });
});

t.test('device numbers: one decoder, glibc encoding', async (t) => {
  t.equal(majorMinor(0x0801), '8:1');
  t.equal(majorMinor(259 * 256 + 3), '259:3');
  // major 0x123 low bits | high bits, minor above 255 (dm, nvme partitions, loop > 255)
  const dev = (major: number, minor: number) =>
    BigInt(minor & 0xff) | (BigInt(major & 0xfff) << 8n) | (BigInt(minor & ~0xff) << 12n) | (BigInt(major & ~0xfff) << 32n);
  t.equal(majorMinor(dev(7, 300)), '7:300');
  t.equal(majorMinor(dev(4097, 1048577)), '4097:1048577');
  t.equal(majorMinor(Number(dev(253, 70000))), '253:70000');
});

t.test("the active layer's and an active commit mirror's own index (libvirt 9.0, after disk-only snapshots)", async (t) => {
  const EXP = '/var/tmp/kinds-exp';
  const vda = findDisk(readFixture('chain-acommit-ready.xml'), 'vda')!;
  t.equal(vda.index, 5, 'the active layer is index 5, not 1: indexes are not depths');
  t.same(
    vda.backing!.map((l) => [l.index, l.path]),
    [
      [4, `${EXP}/snap1.qcow2`],
      [3, `${EXP}/base.qcow2`],
    ],
  );
  t.match(vda.mirror, { job: 'active-commit', ready: 'yes', type: 'file', path: `${EXP}/base.qcow2`, format: 'qcow2', index: 3 });
  const copying = findDisk(readFixture('chain-acommit-copying.xml'), 'vda')!;
  t.match(copying.mirror, { job: 'active-commit', ready: null, index: 3 }, 'no ready attribute before ready');
  t.equal(findDisk(readFixture('chain-raw-pivoted-inactive.xml'), 'vda')!.index, null, 'the inactive XML has no index');
  t.equal(findDisk(readFixture('jobs-mirror-ready.xml'), 'vda')!.mirror!.index, 5, "a copy's mirror has its own index");
  t.equal(parseDisk(`<disk type='file'><source file='/t' index='x1'/><target dev='vda'/></disk>`).index, null, 'not a number: none');
});
