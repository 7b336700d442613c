// The pure parts of a whole-VM move: the naming rule, which disks a move takes, a pool's XML,
// and the group's overall progress (the real moves are in test/integration/move.test.ts).
import t from 'tap';
import { groupProgress } from '../../src/jobs/groups/params.js';
import { isMovable, moveFileName } from '../../src/jobs/groups/move.js';
import { parsePoolXml } from '../../src/libvirt/pool-xml.js';
import type { DiskInfo } from '../../src/libvirt/disk-xml.js';
import type { Job } from '../../src/generated/api.js';

t.test('naming rule: <domain>-<disk>.<format>, unsafe characters replaced', async (t) => {
  t.equal(moveFileName('web1', 'vda', 'qcow2'), 'web1-vda.qcow2');
  t.equal(moveFileName('web1', 'vdb', 'raw'), 'web1-vdb.raw');
  t.equal(moveFileName('a b/c', 'vda', 'raw'), 'a_b_c-vda.raw', 'spaces and slashes become _');
  t.equal(moveFileName('.hidden', 'vda', 'raw'), '_hidden-vda.raw', 'never a dot file');
  t.equal(moveFileName('ü..', 'sda', 'qcow2'), '_..-sda.qcow2', 'no path component can escape the directory');
});

t.test('movable disks: device disks of type file, block or volume with a source', async (t) => {
  const disk = (over: Partial<DiskInfo>): DiskInfo =>
    ({ target: 'vda', device: 'disk', type: 'file', sourcePath: '/x', format: 'raw', mirror: null, backingPaths: [], ...over }) as DiskInfo;
  t.ok(isMovable(disk({})), 'a file disk');
  t.ok(isMovable(disk({ type: 'block' })), 'a block disk');
  t.ok(isMovable(disk({ type: 'volume', sourcePath: null, volume: { pool: 'p', volume: 'v' } })), 'a volume disk');
  t.notOk(isMovable(disk({ device: 'cdrom' })), 'not a cdrom');
  t.notOk(isMovable(disk({ device: 'floppy' })), 'not a floppy');
  t.notOk(isMovable(disk({ device: 'lun', type: 'block' })), 'not a LUN');
  t.notOk(isMovable(disk({ sourcePath: null })), 'not an empty drive');
  t.notOk(isMovable(disk({ type: 'network', sourcePath: 'nbd://h:1/x' })), 'not a network disk');
});

t.test("a pool's type and target path", async (t) => {
  t.same(parsePoolXml("<pool type='dir'><name>p</name><target><path>/srv/p</path></target></pool>"), { type: 'dir', path: '/srv/p' });
  t.same(parsePoolXml("<pool type='logical'><name>vg</name><target><path>/dev/vg</path></target></pool>"), {
    type: 'logical',
    path: '/dev/vg',
  });
  t.same(parsePoolXml("<pool type='rbd'><name>r</name></pool>"), { type: 'rbd', path: null }, 'no target path');
  t.same(parsePoolXml('<domain/>'), { type: '', path: null }, 'not a pool');
});

t.test("a group's overall progress sums its jobs'", async (t) => {
  const job = (cur: number | string, end: number | string) => ({ progress: { cur, end } }) as unknown as Job;
  t.same(groupProgress([job(50, 100), job(100, 300)]), { cur: 150, end: 400, percent: 37.5 });
  t.same(groupProgress([job(50, 100), job(0, 0)]), { cur: 50, end: 100, percent: null }, 'null while an end is unknown');
  t.same(groupProgress([job('9007199254740993', '9007199254740993')]).cur, '9007199254740993', 'beyond 2^53 exactly');
});
