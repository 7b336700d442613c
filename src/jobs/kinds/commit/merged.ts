// Which layers leave a disk's chain when a commit or pull ends as it should, from the chain the
// job recorded at its start (active layer first): an active commit's pivot drops the old top and
// the layers between top and base; a commit below the top drops top and the layers between top
// and base; a pull drops the layers between the active layer and base (all below it without
// base). Any other end drops nothing. Pure: the kernel deletes them (jobs/cleanup.ts) only after
// the end is verified, and only those its checks allow.
import type { Layer, Layers } from './layers.js';
import { sameLayer } from './layers.js';
import type { ChainKind } from './types.js';

/** The end after which a kind's job has merged layers away. */
export const MERGED_END: Record<ChainKind, string> = { activeCommit: 'pivoted', commit: 'completed', pull: 'completed' };

/**
 * The layers that left the chain, or null when the job's layers are not known well enough to
 * tell (an adopted job: libvirt does not say which layers it works on).
 */
export function mergedLayers(kind: ChainKind, ended: string, layers: Layers): Layer[] | null {
  if (ended !== MERGED_END[kind]) return [];
  const chain = layers.chain;
  if (!chain || !layers.top) return null;
  const top = chain.findIndex((l) => sameLayer(layers.top!, l));
  const base = layers.base ? chain.findIndex((l) => sameLayer(layers.base!, l)) : chain.length;
  if (top < 0 || base < 0 || base <= top) return null;
  // A pull keeps its top (the active layer); a commit merges its top away.
  return chain.slice(kind === 'pull' ? top + 1 : top, base);
}
