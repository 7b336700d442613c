// The one reader of libvirt's domain XML: disks (sources, volumes, backing chains, mirrors) and
// the guest agent channel, read with a DOM parser from /domain/devices only. Anything else in
// the document (a <metadata> holding its own <devices><disk>…, say) is never looked at.
import { DOMParser, type Element, type Node } from '@xmldom/xmldom';
import { networkUrl } from '../net/network-url.js';

export interface MirrorInfo {
  /** libvirt's mirror job kind: 'copy' for block copy, 'active-commit' for commit. */
  job: string;
  /** ready='yes' | 'no' | 'abort' | 'pivot' (libvirt's view of the mirror phase) */
  ready: string | null;
  /** file | block (the mirror destination's kind) */
  type: string;
  path: string | null;
  format: string | null;
  /** libvirt's `index` of the mirror's <source> (live XML: an active commit names its base's), or null. */
  index?: number | null;
  /** The mirror's own backing chain, as libvirt shows it (always set by this reader). */
  backing?: BackingLayer[];
}

/** One layer of a backing chain below a disk's (or a mirror's) source. */
export interface BackingLayer {
  /** libvirt's `index` of the layer (live XML), or null (inactive XML). */
  index: number | null;
  /** The file, device or directory; for a network layer the agent's URL of it; null for others. */
  path: string | null;
  format: string | null;
  /** file | block | network | volume | dir | … */
  type: string;
  /** A volume layer's pool and volume. */
  volume: StorageVolume | null;
}

export interface StorageVolume {
  pool: string;
  volume: string;
}

export interface DiskInfo {
  target: string;
  /** disk | cdrom | floppy | lun */
  device: string;
  /** file | block | network | volume | dir | nvme | vhostuser */
  type: string;
  /** The file, device or directory; for a network disk the agent's URL; null for a volume (see `volume`). */
  sourcePath: string | null;
  format: string | null;
  mirror: MirrorInfo | null;
  /** Paths of every image in the disk's backing chain below the source. */
  backingPaths: string[];
  // The two below are always set by this reader; optional only so that hand-made DiskInfos
  // (tests, older callers) need not spell them.
  /** The backing chain below the source, top first. */
  backing?: BackingLayer[];
  /** libvirt's `index` of the disk's own <source> (the active layer; live XML only), or null. */
  index?: number | null;
  /** A volume disk's pool and volume (its path is libvirt's storage pool's to tell). */
  volume?: StorageVolume | null;
}

export interface DomainXml {
  disks: DiskInfo[];
  /** The domain has a virtio channel named org.qemu.guest_agent.0. */
  guestAgentChannel: boolean;
}

/** libvirt's XML could not be parsed (it always emits well-formed XML: this is not libvirt's). */
export class DomainXmlError extends Error {
  override readonly name = 'DomainXmlError';
}

const ELEMENT = 1;

/** The child elements of `n` named `name`, direct children only. */
function childElements(n: Node, name?: string): Element[] {
  const out: Element[] = [];
  for (let c = n.firstChild; c; c = c.nextSibling) {
    if (c.nodeType === ELEMENT && !(c as Element).prefix && (name === undefined || (c as Element).localName === name))
      out.push(c as Element);
  }
  return out;
}
const child = (n: Node, name: string): Element | undefined => childElements(n, name)[0];
const attr = (el: Element | undefined, name: string): string | null => (el && el.hasAttribute(name) ? el.getAttribute(name) : null);

/** What a <source> names, read by the element's `type`: a local path, a network URL, a volume. */
function sourceOf(type: string, source: Element | undefined): { path: string | null; volume: StorageVolume | null } {
  if (!source) return { path: null, volume: null };
  const local = (a: string) => ({ path: attr(source, a), volume: null });
  switch (type) {
    case 'file':
      return local('file');
    case 'block':
      return local('dev');
    case 'dir':
      return local('dir');
    case 'volume': {
      const pool = attr(source, 'pool');
      const volume = attr(source, 'volume');
      return { path: null, volume: pool !== null && volume !== null ? { pool, volume } : null };
    }
    case 'network': {
      const protocol = attr(source, 'protocol') ?? '';
      const name = attr(source, 'name') ?? '';
      const host = child(source, 'host');
      try {
        return { path: networkUrl({ protocol, host: attr(host, 'name') ?? '', port: attr(host, 'port') ?? '', name }), volume: null };
      } catch {
        return { path: `${protocol}:${name}`, volume: null };
      }
    }
    default:
      return { path: null, volume: null };
  }
}

const formatOf = (el: Element): string | null => attr(child(el, 'format'), 'type');

/** libvirt's image index on `el` (a <source> or <backingStore>): a decimal number, else null. */
function indexOf(el: Element | undefined): number | null {
  const index = attr(el, 'index');
  return index !== null && /^\d{1,9}$/.test(index) ? Number(index) : null;
}

/** The chain of nested <backingStore> below `el`; an empty <backingStore/> ends it. */
function chainOf(el: Element): BackingLayer[] {
  const out: BackingLayer[] = [];
  // libvirt caps chains far below this; the bound only keeps a hostile document's walk finite.
  for (let b = child(el, 'backingStore'); b && out.length < 1000; b = child(b, 'backingStore')) {
    const type = attr(b, 'type');
    if (type === null) break;
    out.push({
      index: indexOf(b),
      format: formatOf(b),
      type,
      ...sourceOf(type, child(b, 'source')),
    });
  }
  return out;
}

function mirrorOf(disk: Element): MirrorInfo | null {
  const m = child(disk, 'mirror');
  if (!m) return null;
  const type = attr(m, 'type') ?? 'file';
  return {
    job: attr(m, 'job') ?? 'copy',
    ready: attr(m, 'ready'),
    type,
    // Older libvirt puts file= on <mirror>; newer nests a <source>.
    path: attr(m, 'file') ?? sourceOf(type, child(m, 'source')).path,
    format: attr(m, 'format') ?? formatOf(m),
    index: indexOf(child(m, 'source')),
    backing: chainOf(m),
  };
}

function diskOf(disk: Element): DiskInfo {
  const type = attr(disk, 'type') ?? 'file';
  const { path, volume } = sourceOf(type, child(disk, 'source'));
  const backing = chainOf(disk);
  return {
    target: attr(child(disk, 'target'), 'dev') ?? '',
    device: attr(disk, 'device') ?? 'disk',
    type,
    sourcePath: path,
    format: attr(child(disk, 'driver'), 'type'),
    mirror: mirrorOf(disk),
    backingPaths: backing.flatMap((l) => (l.path ? [l.path] : [])),
    backing,
    volume,
    index: indexOf(child(disk, 'source')),
  };
}

function parse(xml: string): Element | null {
  if (xml.trim() === '') return null;
  let doc;
  try {
    doc = new DOMParser({
      onError: (level, msg) => {
        throw new DomainXmlError(`${level}: ${msg}`);
      },
    }).parseFromString(xml, 'text/xml');
  } catch (e) {
    throw new DomainXmlError(`the domain XML is not well-formed (${(e as Error).message.split('\n')[0]})`);
  }
  const root = doc.documentElement;
  if (!root || root.localName !== 'domain' || root.prefix) throw new DomainXmlError('the document is not a <domain>');
  return root;
}

/** What the agent reads of a domain XML: /domain/devices/disk and the guest agent channel. */
export function parseDomainXml(xml: string): DomainXml {
  const root = parse(xml);
  const devices = root ? child(root, 'devices') : undefined;
  if (!devices) return { disks: [], guestAgentChannel: false };
  return {
    disks: childElements(devices, 'disk').map(diskOf),
    guestAgentChannel: childElements(devices, 'channel').some((c) => attr(child(c, 'target'), 'name') === 'org.qemu.guest_agent.0'),
  };
}

/** Every <disk> of a domain XML. */
export function parseDisks(domainXml: string): DiskInfo[] {
  return parseDomainXml(domainXml).disks;
}

export function findDisk(domainXml: string, target: string): DiskInfo | undefined {
  return parseDisks(domainXml).find((d) => d.target === target);
}

/** One <disk> element on its own. */
export function parseDisk(diskXml: string): DiskInfo {
  const disk = parseDisks(`<domain><devices>${diskXml}</devices></domain>`)[0];
  if (!disk) throw new DomainXmlError('not a <disk> element');
  return disk;
}
