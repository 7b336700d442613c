// The destination's <disk> element, both ways. A caller's destinationXml is parsed with a real
// XML parser and accepted only in a whitelisted shape; libvirt never sees the caller's string,
// only what toDiskXml() serializes from the parsed, checked fields (the DiskXml brand makes that
// the only way to produce an argument for Connection.blockCopy).
import { DOMParser } from '@xmldom/xmldom';
import { AgentError } from '../errors.js';
import type { Destination } from '../generated/api.js';
import type { DiskXml } from '../libvirt/types.js';
import { networkUrl, parseNetworkUrl } from '../net/network-url.js';

const NODE = { ELEMENT: 1, ATTRIBUTE: 2, TEXT: 3, CDATA: 4, ENTITY_REF: 5, PI: 7, COMMENT: 8, DOCTYPE: 10 } as const;
const NODE_NAMES: Record<number, string> = {
  [NODE.CDATA]: 'a CDATA section',
  [NODE.ENTITY_REF]: 'an entity reference',
  [NODE.PI]: 'a processing instruction',
  [NODE.COMMENT]: 'a comment',
  [NODE.DOCTYPE]: 'a DOCTYPE',
};
/** Longest destinationXml looked at (the schema bounds it too; this keeps the parser's work bounded). */
const MAX_XML = 16 * 1024;

export const rejectDestination = (reason: string): never => {
  throw new AgentError('destinationRejected', `destination rejected: ${reason}`, { reason });
};

// Minimal views of xmldom's nodes: only what the walk reads.
interface XAttr {
  name: string;
  value: string;
  prefix?: string | null;
  namespaceURI?: string | null;
}
interface XNode {
  nodeType: number;
  nodeName: string;
  nodeValue?: string | null;
  childNodes: ArrayLike<XNode>;
}
interface XElement extends XNode {
  prefix?: string | null;
  namespaceURI?: string | null;
  attributes: ArrayLike<XAttr>;
}

const children = (n: XNode) => Array.from(n.childNodes);
/** Control characters (C0, DEL, C1) never belong in a path, a host or an export name. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** The element's attributes as a map, refusing any not in `allowed` and any namespace. */
function attrsOf(el: XElement, allowed: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of Array.from(el.attributes)) {
    if (a.prefix || a.namespaceURI || a.name === 'xmlns' || a.name.includes(':'))
      rejectDestination(`namespace attribute '${a.name}' on <${el.nodeName}>`);
    if (!allowed.includes(a.name))
      rejectDestination(`attribute '${a.name}' on <${el.nodeName}> is not allowed (allowed: ${allowed.join(', ') || 'none'})`);
    if (CONTROL.test(a.value)) rejectDestination(`attribute '${a.name}' on <${el.nodeName}> contains a control character`);
    out[a.name] = a.value;
  }
  return out;
}

/** The child elements of `n`; whitespace text between them is all else that may be there. */
function elementsOf(n: XNode): XElement[] {
  const out: XElement[] = [];
  for (const c of children(n)) {
    if (c.nodeType === NODE.ELEMENT) {
      const el = c as XElement;
      if (el.prefix || el.namespaceURI) rejectDestination(`namespaced element <${el.nodeName}>`);
      out.push(el);
    } else if (c.nodeType === NODE.TEXT) {
      if (!/^[ \t\r\n]*$/.test(c.nodeValue ?? '')) rejectDestination(`text content in <${n.nodeName}>`);
    } else {
      rejectDestination(`${NODE_NAMES[c.nodeType] ?? `node type ${c.nodeType}`} in <${n.nodeName}>`);
    }
  }
  return out;
}

/** Splits children into the one allowed occurrence of each name; refuses others and repeats. */
function pick(parent: XNode, allowed: string[]): Record<string, XElement | undefined> {
  const out: Record<string, XElement | undefined> = {};
  for (const el of elementsOf(parent)) {
    if (!allowed.includes(el.nodeName))
      rejectDestination(
        `element <${el.nodeName}> in <${parent.nodeName}> is not allowed (allowed: ${allowed.map((a) => `<${a}>`).join(', ')})`,
      );
    if (out[el.nodeName]) rejectDestination(`more than one <${el.nodeName}> in <${parent.nodeName}>`);
    out[el.nodeName] = el;
  }
  return out;
}

function parseDocument(xml: string): XNode {
  if (xml.length > MAX_XML) rejectDestination(`destinationXml is longer than ${MAX_XML} characters`);
  let first: string | undefined;
  try {
    // Every warning and error stops the parse: malformed input is refused, not repaired.
    return new DOMParser({
      onError: (level, msg) => {
        first ??= `${level}: ${msg}`;
        throw new Error(msg);
      },
    }).parseFromString(xml, 'text/xml') as unknown as XNode;
  } catch (e) {
    return rejectDestination(`destinationXml is not well-formed XML (${(first ?? (e as Error).message).split('\n')[0]})`);
  }
}

/**
 * The destination a caller's <disk> element describes. Accepted shape, nothing more:
 *   <disk type='file|block|network'>
 *     <source file=…/> | <source dev=…/> | <source protocol='nbd|rbd|iscsi' name=…><host name=… port=…/></source>
 *     [<driver type='raw|qcow2' [name='qemu']/>]
 *   </disk>
 * Throws destinationRejected naming what was refused.
 */
export function destinationFromXml(xml: string): Destination {
  const doc = parseDocument(xml);
  const top = children(doc);
  for (const n of top) {
    if (n.nodeType !== NODE.ELEMENT) rejectDestination(`${NODE_NAMES[n.nodeType] ?? `node type ${n.nodeType}`} outside <disk>`);
  }
  if (top.length !== 1) rejectDestination('destinationXml must be exactly one <disk> element');
  const disk = top[0] as XElement;
  if (disk.prefix || disk.namespaceURI) rejectDestination(`namespaced root element <${disk.nodeName}> (${disk.namespaceURI})`);
  if (disk.nodeName !== 'disk') rejectDestination(`the root element is <${disk.nodeName}>, not <disk>`);
  const { type } = attrsOf(disk, ['type']);
  if (type !== 'file' && type !== 'block' && type !== 'network')
    rejectDestination(`disk type '${type ?? '(none)'}' is not supported (file, block or network)`);
  const { source, driver } = pick(disk, ['source', 'driver']);
  if (!source) rejectDestination('<disk> has no <source>');

  let format: 'raw' | 'qcow2' | undefined;
  if (driver) {
    if (elementsOf(driver).length > 0) rejectDestination('<driver> must be empty');
    const d = attrsOf(driver, ['type', 'name']);
    if (d.name !== undefined && d.name !== 'qemu') rejectDestination(`driver name '${d.name}' is not supported (qemu)`);
    if (d.type !== undefined && d.type !== 'raw' && d.type !== 'qcow2')
      rejectDestination(`destination format '${d.type}' is not supported (raw or qcow2)`);
    format = d.type as typeof format;
  }
  const fmt = format ? { format } : {};

  if (type === 'network') {
    const s = attrsOf(source!, ['protocol', 'name']);
    const { host } = pick(source!, ['host']);
    if (!host) rejectDestination('a network <source> needs one <host name=… port=…/>');
    if (elementsOf(host!).length > 0) rejectDestination('<host> must be empty');
    const h = attrsOf(host!, ['name', 'port']);
    let path: string;
    try {
      path = networkUrl({ protocol: s.protocol ?? '', host: h.name ?? '', port: h.port ?? '', name: s.name ?? '' });
    } catch (e) {
      return rejectDestination((e as Error).message);
    }
    return { type: 'network', path, ...fmt };
  }
  const key = type === 'file' ? 'file' : 'dev';
  if (elementsOf(source!).length > 0) rejectDestination(`<source> of a ${type} disk must be empty`);
  const s = attrsOf(source!, [key]);
  if (!s[key]) rejectDestination(`<source> of a ${type} disk needs ${key}=…`);
  return { type: type as 'file' | 'block', path: s[key]!, ...fmt };
}

const esc = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * The <disk> element libvirt gets, serialized by the agent from a destination the policy has
 * checked. The only producer of DiskXml. Re-parses its own output as a guard against an
 * escaping slip: what libvirt reads must be exactly what was checked.
 */
export function toDiskXml(d: Destination): DiskXml {
  const type = d.type ?? 'file';
  const driver = d.format ? `<driver type='${esc(d.format)}'/>` : '';
  let source: string;
  if (type === 'network') {
    const n = parseNetworkUrl(d.path);
    source = `<source protocol='${esc(n.protocol)}' name='${esc(n.name)}'><host name='${esc(n.host)}' port='${n.port}'/></source>`;
  } else {
    source = `<source ${type === 'block' ? 'dev' : 'file'}='${esc(d.path)}'/>`;
  }
  const xml = `<disk type='${esc(type)}'>${source}${driver}</disk>`;
  const back = destinationFromXml(xml);
  if (back.path !== d.path || (back.type ?? 'file') !== type || back.format !== d.format) {
    throw new Error(`internal: the serialized destination does not read back as checked: ${xml}`);
  }
  return xml as DiskXml;
}
