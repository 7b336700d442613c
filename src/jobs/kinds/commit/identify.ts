// Which layer of a chain a caller's path is, decided as the agent decides "is this another
// domain's disk" (src/destination/identity.ts): by spelling first, then by what the file is
// (dev:ino for files, major:minor for devices, the canonical path). The files are only stat'ed
// here; plan.ts stays pure and takes the result as a matcher.
import { promises as fs, type Stats } from 'node:fs';
import { canonicalOf, deviceKey, fileKey } from '../../../destination/identity.js';
import { pathMatches, type ChainLayer } from './layers.js';

/** The depths of the layers of `chain` that `path` names. */
export type LayerMatcher = (path: string, chain: ChainLayer[]) => number[];

interface Id {
  canonical: string;
  key: string | null;
}

async function idOf(path: string): Promise<Id> {
  // stat follows symlinks, as QEMU's open does.
  const st: Stats | null = await fs.stat(path).catch(() => null);
  return {
    canonical: await canonicalOf(path),
    key: st?.isBlockDevice() ? `b:${deviceKey(st)}` : st ? `f:${fileKey(st)}` : null,
  };
}

/**
 * A matcher that knows, for each of `paths`, the layers of `chain` it is by identity; paths not
 * given, and network URLs, are matched by spelling only.
 */
export async function identityMatcher(paths: Array<string | undefined>, chain: ChainLayer[]): Promise<LayerMatcher> {
  const local = [...new Set(paths.filter((p): p is string => !!p && p.startsWith('/')))];
  if (local.length === 0) return pathMatches;
  const layerIds = await Promise.all(chain.map((l) => (l.path?.startsWith('/') ? idOf(l.path) : null)));
  const known = new Map<string, number[]>();
  for (const p of local) {
    const id = await idOf(p);
    known.set(
      p,
      chain.flatMap((l, i) => {
        const lid = layerIds[i];
        if (!lid) return [];
        const same = id.key !== null && lid.key !== null ? id.key === lid.key : id.canonical === lid.canonical;
        return same ? [l.depth] : [];
      }),
    );
  }
  return (path, c) => {
    const byName = pathMatches(path, c);
    return byName.length > 0 ? byName : (known.get(path) ?? []);
  };
}
