// A storage pool's XML (virStoragePoolGetXMLDesc), read for what a whole-VM move needs: the
// pool's type and its target path (the directory its volumes are files in).
import { DOMParser, type Element } from '@xmldom/xmldom';

export interface PoolInfo {
  /** libvirt's pool type: dir, fs, netfs, logical, … */
  type: string;
  /** <target><path>, or null when the pool has none. */
  path: string | null;
}

/** Pool types whose target path is a directory of files (the only ones a move may copy into). */
export const DIRECTORY_POOL_TYPES: readonly string[] = ['dir', 'fs', 'netfs'];

export function parsePoolXml(xml: string): PoolInfo {
  const doc = new DOMParser({ onError: () => {} }).parseFromString(xml, 'text/xml');
  const root = doc.documentElement as Element | null;
  if (!root || root.localName !== 'pool') return { type: '', path: null };
  const target = [...Array.from(root.childNodes)].find((n): n is Element => n.nodeType === 1 && (n as Element).localName === 'target');
  const path = target
    ? Array.from(target.childNodes).find((n): n is Element => n.nodeType === 1 && (n as Element).localName === 'path')
    : undefined;
  const text = path?.textContent?.trim() ?? '';
  return { type: root.getAttribute('type') ?? '', path: text === '' ? null : text };
}
