// Whether a snapshot happened, from the live XML alone: each disk's active layer is its overlay
// (with the former image right below it), or still the former image. Used after an answer whose
// outcome is unknown and at start-up for a record a crash left behind (recover.ts).
import { parseDomainXml, type DiskInfo } from '../../../libvirt/disk-xml.js';
import { samePath } from '../../job.js';
import type { OpRecord } from '../../journal.js';

export type SnapshotOutcome = 'happened' | 'notHappened' | 'partial';

/** Per disk: 'overlay' when its source is the overlay, 'source' when it is still the former image, else 'other'. */
export function diskStates(xml: string, rec: Pick<OpRecord, 'disks'>): Array<'overlay' | 'source' | 'other'> {
  const disks = parseDomainXml(xml).disks;
  return rec.disks.map((d) => {
    const live: DiskInfo | undefined = disks.find((x) => x.target === d.disk);
    if (!live) return 'other';
    if (samePath(live.sourcePath, d.overlay)) return 'overlay';
    if (samePath(live.sourcePath, d.source)) return 'source';
    return 'other';
  });
}

export function outcomeOf(xml: string, rec: Pick<OpRecord, 'disks'>): SnapshotOutcome {
  const states = diskStates(xml, rec);
  if (states.every((s) => s === 'overlay')) return 'happened';
  if (states.every((s) => s === 'source')) return 'notHappened';
  return 'partial';
}
