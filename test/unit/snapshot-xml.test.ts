// The snapshot document libvirt gets: what was checked, escaped so that it reads back exactly,
// every other disk named snapshot='no'; and the outcome read from a live XML.
import t from 'tap';
import { readSnapshotXml, toSnapshotXml } from '../../src/jobs/kinds/snapshot/xml.js';
import { outcomeOf } from '../../src/jobs/kinds/snapshot/outcome.js';

t.test('paths with XML metacharacters read back exactly', async (t) => {
  const overlay = `/images/a'b"c<d>&e;&amp;/x.qcow2`;
  const xml = toSnapshotXml([{ disk: 'vda', overlay }], ['vdb', 'hdc']);
  t.same(readSnapshotXml(xml), { external: [{ disk: 'vda', overlay }], untouched: ['vdb', 'hdc'] });
  t.match(xml, /<disk name='vdb' snapshot='no'\/>/, 'a disk left out is named snapshot=no');
  t.match(xml, /<driver type='qcow2'\/>/, 'qcow2 overlays');
  t.notMatch(xml, /<source file='[^']*'[^/]/, 'one attribute on <source>');
});

t.test('a control character is refused, never serialized', async (t) => {
  t.throws(() => toSnapshotXml([{ disk: 'vda', overlay: '/images/a\nb' }], []), /cannot go into a snapshot XML/);
  t.throws(() => toSnapshotXml([{ disk: 'vda', overlay: '' }], []), /cannot go into a snapshot XML/);
  t.throws(() => toSnapshotXml([{ disk: 'vda', overlay: '/x' }], ['']), /cannot go into a snapshot XML/);
});

t.test('the outcome from the live XML', async (t) => {
  const live = (vda: string, vdb: string) =>
    `<domain><devices><disk type='file' device='disk'><source file='${vda}'/><target dev='vda'/></disk>` +
    `<disk type='file' device='disk'><source file='${vdb}'/><target dev='vdb'/></disk></devices></domain>`;
  const rec = {
    disks: [
      { disk: 'vda', overlay: '/i/a-snap.qcow2', source: '/i/a.qcow2' },
      { disk: 'vdb', overlay: '/i/b-snap.qcow2', source: '/i/b.qcow2' },
    ],
  };
  t.equal(outcomeOf(live('/i/a-snap.qcow2', '/i/b-snap.qcow2'), rec), 'happened');
  t.equal(outcomeOf(live('/i/a.qcow2', '/i/b.qcow2'), rec), 'notHappened');
  t.equal(outcomeOf(live('/i/a-snap.qcow2', '/i/b.qcow2'), rec), 'partial');
  t.equal(outcomeOf(live('/i/other.qcow2', '/i/b.qcow2'), rec), 'partial', 'a disk on neither file is not called either way');
});
