// The <disk> element virDomainBlockCopy takes as its destination, built from the structured
// destination, and the reverse for callers who pass destinationXml.
import type { Destination } from '../generated/api.js';
import { parseDisk } from './disk-xml.js';

const escapeAttr = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function destinationToXml(d: Destination): string {
  const type = d.type ?? 'file';
  const source = type === 'block' ? `<source dev='${escapeAttr(d.path)}'/>` : `<source file='${escapeAttr(d.path)}'/>`;
  const driver = d.format ? `<driver type='${d.format}'/>` : '';
  return `<disk type='${type}'>${source}${driver}</disk>`;
}

/** The destination a <disk> element describes, or a reason why it is not one we accept. */
export function destinationFromXml(xml: string): Destination | { error: string } {
  if (!/^\s*<disk[\s>]/.test(xml)) return { error: 'destinationXml must be a single <disk> element' };
  const d = parseDisk(xml);
  if (d.type !== 'file' && d.type !== 'block') return { error: `destination type '${d.type}' is not supported (file or block)` };
  if (!d.sourcePath) return { error: 'destinationXml has no <source file=...> or <source dev=...>' };
  if (d.format !== null && d.format !== 'raw' && d.format !== 'qcow2') return { error: `destination format '${d.format}' is not supported (raw or qcow2)` };
  return { path: d.sourcePath, type: d.type, ...(d.format ? { format: d.format } : {}) };
}
