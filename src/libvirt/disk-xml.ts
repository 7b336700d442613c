// Reads what the agent needs from libvirt's domain XML: disks, sources, backing chains and
// mirrors. libvirt emits regular, well-formed XML with single-quoted attributes, so a focused
// reader suffices. (A caller's XML is another matter: src/destination/xml.ts parses that with
// a real parser.)
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
}

export interface DiskInfo {
  target: string;
  /** disk | cdrom | floppy | lun */
  device: string;
  /** file | block | network | volume | dir | nvme | vhostuser */
  type: string;
  sourcePath: string | null;
  format: string | null;
  mirror: MirrorInfo | null;
  /** Paths of every image in the disk's backing chain below the source. */
  backingPaths: string[];
}

const unescape = (s: string) =>
  s
    .replace(/&apos;/g, "'")
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');

function attr(tag: string, name: string): string | null {
  const m = new RegExp(`\\s${name}=(?:'([^']*)'|"([^"]*)")`).exec(tag);
  return m ? unescape(m[1] ?? m[2] ?? '') : null;
}

/** The opening tag of the first <name ...> element in `xml`, or null. */
function openTag(xml: string, name: string): string | null {
  const m = new RegExp(`<${name}(?=[\\s/>])[^>]*>`).exec(xml);
  return m ? m[0] : null;
}

/**
 * A <source>'s file, device or directory; for a network source the agent's URL of it
 * (protocol://host:port/name, as destinations name it), read from the <host> in `inner`.
 */
function sourcePathOf(sourceTag: string | null, inner = ''): string | null {
  if (!sourceTag) return null;
  const local = attr(sourceTag, 'file') ?? attr(sourceTag, 'dev') ?? attr(sourceTag, 'dir');
  const protocol = attr(sourceTag, 'protocol');
  if (local !== null || protocol === null) return local;
  const end = inner.indexOf('</source>');
  const host = openTag(end >= 0 ? inner.slice(0, end) : '', 'host');
  try {
    return networkUrl({
      protocol,
      host: host ? (attr(host, 'name') ?? '') : '',
      port: host ? (attr(host, 'port') ?? '') : '',
      name: attr(sourceTag, 'name') ?? '',
    });
  } catch {
    return `${protocol}:${attr(sourceTag, 'name') ?? ''}`;
  }
}

/** The first <source> of `xml` and the path it names. */
function firstSourcePath(xml: string): string | null {
  const m = /<source(?=[\s/>])[^>]*>/.exec(xml);
  return m ? sourcePathOf(m[0], xml.slice(m.index + m[0].length)) : null;
}

/** Splits `xml` into the top-level elements named `name` (handles nesting of the same name). */
function elements(xml: string, name: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<(/?)${name}(?=[\\s/>])[^>]*?(/?)>`, 'g');
  let depth = 0;
  let start = -1;
  for (let m = re.exec(xml); m; m = re.exec(xml)) {
    const closing = m[1] === '/';
    const selfClosing = m[2] === '/';
    if (!closing) {
      if (depth === 0) start = m.index;
      if (selfClosing) {
        if (depth === 0) out.push(m[0]);
      } else depth++;
    } else {
      depth--;
      if (depth === 0 && start >= 0) out.push(xml.slice(start, m.index + m[0].length));
    }
  }
  return out;
}

function parseMirror(diskXml: string): MirrorInfo | null {
  const mirrors = elements(diskXml, 'mirror');
  if (mirrors.length === 0) return null;
  const m = mirrors[0]!;
  const tag = openTag(m, 'mirror')!;
  const format = openTag(m, 'format');
  return {
    job: attr(tag, 'job') ?? 'copy',
    ready: attr(tag, 'ready'),
    type: attr(tag, 'type') ?? 'file',
    // Older libvirt puts file= on <mirror>; newer nests a <source>.
    path: attr(tag, 'file') ?? firstSourcePath(m),
    format: attr(tag, 'format') ?? (format ? attr(format, 'type') : null),
  };
}

export function parseDisk(diskXml: string): DiskInfo {
  const tag = openTag(diskXml, 'disk')!;
  // The disk's own <source> and <driver> come before any nested <backingStore>/<mirror>.
  const own = diskXml.replace(/<mirror[\s\S]*<\/mirror>/, '').replace(/<backingStore[\s\S]*<\/backingStore>/, '');
  const target = openTag(own, 'target');
  const driver = openTag(own, 'driver');
  const backing = elements(diskXml.replace(/<mirror[\s\S]*<\/mirror>/, ''), 'backingStore');
  const backingPaths: string[] = [];
  for (const b of backing) {
    for (const s of b.matchAll(/<source\s[^>]*>/g)) {
      const p = sourcePathOf(s[0], b.slice(s.index! + s[0].length));
      if (p) backingPaths.push(p);
    }
  }
  return {
    target: target ? (attr(target, 'dev') ?? '') : '',
    device: attr(tag, 'device') ?? 'disk',
    type: attr(tag, 'type') ?? 'file',
    sourcePath: firstSourcePath(own),
    format: driver ? attr(driver, 'type') : null,
    mirror: parseMirror(diskXml),
    backingPaths,
  };
}

/** Every <disk> of a domain XML. */
export function parseDisks(domainXml: string): DiskInfo[] {
  const devices = elements(domainXml, 'devices')[0] ?? '';
  return elements(devices, 'disk').map(parseDisk);
}

export function findDisk(domainXml: string, target: string): DiskInfo | undefined {
  return parseDisks(domainXml).find((d) => d.target === target);
}
