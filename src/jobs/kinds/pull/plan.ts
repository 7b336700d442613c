// blockPull's layers, from the disk's live chain: top is the active layer (where the data
// lands), base the backing layer that stays (null: a full pull, the active layer ends with no
// backing file). planPull is pure; pullPlan stats the caller's path first.
import { AgentError } from '../../../errors.js';
import type { DiskInfo } from '../../../libvirt/disk-xml.js';
import { addressable, findLayer, usableChain, type Plan, type PullParamsLike } from '../commit/address.js';
import { identityMatcher, type LayerMatcher } from '../commit/identify.js';
import { chainOf, layerOf, nameOf, pathMatches } from '../commit/layers.js';

/** blockPull's layers: top is the active layer, base the layer that stays (null: a full pull). */
export function planPull(params: PullParamsLike, disk: DiskInfo, match: LayerMatcher = pathMatches): Plan {
  const chain = usableChain(disk, 'pulled');
  const top = addressable(disk, chain[0]!, 'active');
  if (params.base === undefined) return { top, base: null, active: false, chain: chain.map(layerOf) };
  const base = findLayer(params.base, disk, chain, match, 'base');
  if (base.depth === 0)
    throw new AgentError('invalidState', `base ${nameOf(disk.target, base)} is the active layer of disk ${disk.target}`);
  if (base.depth === 1)
    throw new AgentError(
      'invalidState',
      `base ${nameOf(disk.target, base)} is already the active layer's backing file: there is nothing above it to pull`,
    );
  return { top, base: addressable(disk, base, 'base'), active: false, chain: chain.map(layerOf) };
}

/** planPull with the caller's path compared by identity. */
export async function pullPlan(params: PullParamsLike, disk: DiskInfo): Promise<Plan> {
  return planPull(params, disk, await identityMatcher([params.base], chainOf(disk)));
}
