// The <domainsnapshot> document libvirt gets for an external disk-only snapshot, serialized by
// the agent from checked fields only (the SnapshotXml brand makes this the only producer of an
// argument for Connection.snapshotCreateXml). Each listed disk gets its overlay; every other
// disk of the domain is named with snapshot='no', so libvirt's default (snapshot every disk)
// never applies. The output is parsed back with a real XML parser and compared with what was
// asked, as a guard against an escaping slip.
import { DOMParser, type Element } from '@xmldom/xmldom';
import type { SnapshotXml } from '../../../libvirt/types.js';

/** One disk and the overlay file it is to get (a checked, canonical path; qcow2). */
export interface SnapshotDisk {
  disk: string;
  overlay: string;
}

const esc = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function checkText(what: string, s: string): void {
  if (s.length === 0 || CONTROL.test(s)) throw new Error(`internal: ${what} ${JSON.stringify(s)} cannot go into a snapshot XML`);
}

/** What a <domainsnapshot> document asks, read back: external disks with their files, and the disks left out. */
export function readSnapshotXml(xml: string): { external: SnapshotDisk[]; untouched: string[] } {
  const doc = new DOMParser({
    onError: (level, msg) => {
      throw new Error(`internal: the snapshot XML does not parse (${level}: ${msg})`);
    },
  }).parseFromString(xml, 'text/xml');
  const root = doc.documentElement;
  if (!root || root.nodeName !== 'domainsnapshot') throw new Error('internal: the snapshot XML has no <domainsnapshot> root');
  const external: SnapshotDisk[] = [];
  const untouched: string[] = [];
  const elements = (n: Element, name: string) =>
    Array.from(n.childNodes).filter((c): c is Element => c.nodeType === 1 && c.nodeName === name);
  for (const disks of elements(root, 'disks')) {
    for (const d of elements(disks, 'disk')) {
      const name = d.getAttribute('name') ?? '';
      if (d.getAttribute('snapshot') === 'no') {
        untouched.push(name);
        continue;
      }
      const source = elements(d, 'source')[0];
      external.push({ disk: name, overlay: source?.getAttribute('file') ?? '' });
    }
  }
  return { external, untouched };
}

/**
 * The snapshot document: `take` get external qcow2 overlays (file), `untouched` get snapshot='no'.
 * Throws (an internal error) on anything that would not read back exactly as given.
 */
export function toSnapshotXml(take: SnapshotDisk[], untouched: string[]): SnapshotXml {
  for (const d of take) {
    checkText('disk name', d.disk);
    checkText('overlay path', d.overlay);
  }
  for (const u of untouched) checkText('disk name', u);
  const disks = [
    ...take.map(
      (d) => `<disk name='${esc(d.disk)}' snapshot='external' type='file'><driver type='qcow2'/><source file='${esc(d.overlay)}'/></disk>`,
    ),
    ...untouched.map((u) => `<disk name='${esc(u)}' snapshot='no'/>`),
  ];
  const xml = `<domainsnapshot><disks>${disks.join('')}</disks></domainsnapshot>`;
  const back = readSnapshotXml(xml);
  const same =
    back.external.length === take.length &&
    back.external.every((b, i) => b.disk === take[i]!.disk && b.overlay === take[i]!.overlay) &&
    back.untouched.length === untouched.length &&
    back.untouched.every((u, i) => u === untouched[i]);
  if (!same) throw new Error(`internal: the serialized snapshot does not read back as checked: ${xml}`);
  return xml as SnapshotXml;
}
