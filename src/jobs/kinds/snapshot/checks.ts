// The checks of a snapshotDisks call; nothing here changes anything. Each overlay passes the
// destination policy exactly as a copy's file destination does (roots, directory trust, no
// existing file, identity against every domain's storage), and each disk must be a file or
// block disk of device 'disk' with no block job of any kind.
import { AgentError } from '../../../errors.js';
import type { SnapshotDisksParams } from '../../../generated/api.js';
import type { DestinationCheck } from '../../../destination/policy.js';
import { parseDomainXml, type DiskInfo } from '../../../libvirt/disk-xml.js';
import type { Connection, DomainRef } from '../../../libvirt/index.js';
import type { Logger } from '../../../log.js';
import { domainStorage } from '../../inventory.js';
import { canonicalPath } from '../../job.js';
import { toAgentError } from '../../libvirt-errors.js';

export interface CheckedSnapshot {
  /** In the order given: the disk, its checked overlay (canonical) and its current image. */
  disks: Array<{ disk: string; overlay: string; source: string }>;
  /** Every other disk of the domain (snapshot='no'). */
  untouched: string[];
}

const refuse = (reason: string): never => {
  throw new AgentError('destinationRejected', `overlay rejected: ${reason}`, { reason });
};

export async function checkSnapshot(
  conn: Connection,
  checkDestination: DestinationCheck,
  params: SnapshotDisksParams,
  dom: DomainRef,
  activeJobDisks: Set<string>,
  log?: Logger,
): Promise<CheckedSnapshot> {
  if (!dom.active) throw new AgentError('invalidState', `domain '${dom.name}' is not running`);
  const seen = new Set<string>();
  for (const d of params.disks) {
    if (seen.has(d.disk)) refuse(`disk ${d.disk} is listed twice`);
    seen.add(d.disk);
  }
  const xml = await conn.getXml(dom.uuid).catch((e: unknown) => {
    throw toAgentError(e, 'cannot read the domain');
  });
  const all = parseDomainXml(xml).disks;
  const found: DiskInfo[] = [];
  for (const d of params.disks) {
    const disk = all.find((x) => x.target === d.disk);
    if (!disk) throw new AgentError('notFound', `domain '${dom.name}' has no disk '${d.disk}'`);
    if (disk.device !== 'disk' || (disk.type !== 'file' && disk.type !== 'block') || !disk.sourcePath)
      throw new AgentError(
        'unsupported',
        `disk ${d.disk} of '${dom.name}' is a ${disk.type} ${disk.device}; only file and block disks can be snapshotted`,
      );
    if (disk.mirror) throw new AgentError('jobExists', `disk ${d.disk} of '${dom.name}' has a ${disk.mirror.job} job`);
    if (activeJobDisks.has(d.disk)) throw new AgentError('jobExists', `disk ${d.disk} of '${dom.name}' has a job of the agent`);
    // A commit or pull shows no <mirror>: ask libvirt about any block job.
    const info = await conn.getBlockJobInfo(dom.uuid, d.disk).catch((e: unknown) => {
      throw toAgentError(e, `cannot read the block job of disk ${d.disk}`);
    });
    if (info) throw new AgentError('jobExists', `disk ${d.disk} of '${dom.name}' has a ${info.type} block job`);
    found.push(disk);
  }
  const domainDisks = await domainStorage(conn, log);
  const out: CheckedSnapshot['disks'] = [];
  const overlays = new Set<string>();
  for (const [i, d] of params.disks.entries()) {
    const disk = found[i]!;
    const checked = await checkDestination(
      { path: d.overlay.path, format: 'qcow2', type: 'file' },
      { reuseExternal: false, disk, domainDisks },
    ).catch((e: unknown) => {
      // The policy's words, said of an overlay.
      if (e instanceof AgentError && e.errorName === 'destinationRejected')
        throw new AgentError('destinationRejected', e.message.replace(/^destination rejected/, 'overlay rejected'), e.data);
      throw e;
    });
    const overlay = canonicalPath(checked.destination.path);
    if (overlays.has(overlay)) refuse(`'${overlay}' is the overlay of two disks`);
    overlays.add(overlay);
    out.push({ disk: d.disk, overlay, source: disk.sourcePath! });
  }
  return { disks: out, untouched: all.filter((x) => !seen.has(x.target)).map((x) => x.target) };
}
