// blockCommit's layers, from the disk's live chain, with virsh's defaults: top is the active
// layer (an active commit), base the deepest layer, or with shallow the layer right below top;
// base strictly below top. planCommit is pure; plan stats the caller's paths first, so that a
// layer is also found under another spelling of its file.
import { AgentError } from '../../../errors.js';
import type { DiskInfo } from '../../../libvirt/disk-xml.js';
import { addressable, findLayer, names, usableChain, type CommitParamsLike, type Plan } from './address.js';
import { identityMatcher, type LayerMatcher } from './identify.js';
import { chainOf, layerOf, nameOf, pathMatches } from './layers.js';

/** blockCommit's layers: top defaults to the active layer, base to the deepest (shallow: right below top). */
export function planCommit(params: CommitParamsLike, disk: DiskInfo, match: LayerMatcher = pathMatches): Plan {
  const chain = usableChain(disk, 'committed');
  if (params.shallow && params.base !== undefined)
    throw new AgentError('unsupported', 'shallow and base exclude each other: shallow takes the layer right below top as base');
  const top = params.top !== undefined ? findLayer(params.top, disk, chain, match, 'top') : chain[0]!;
  const deepest = chain[chain.length - 1]!;
  if (top.depth === deepest.depth)
    throw new AgentError(
      'invalidState',
      `top ${nameOf(disk.target, top)} is the deepest layer of disk ${disk.target}: there is nothing below it to commit into`,
    );
  const base =
    params.base !== undefined ? findLayer(params.base, disk, chain, match, 'base') : params.shallow ? chain[top.depth + 1]! : deepest;
  if (base.depth <= top.depth)
    throw new AgentError(
      'invalidState',
      `base ${nameOf(disk.target, base)} is not below top ${nameOf(disk.target, top)} in disk ${disk.target}'s chain`,
      {
        chain: names(disk, chain),
      },
    );
  return { top: addressable(disk, top, 'top'), base: addressable(disk, base, 'base'), active: top.depth === 0, chain: chain.map(layerOf) };
}

/** planCommit with the caller's paths compared by identity. */
export async function plan(params: CommitParamsLike, disk: DiskInfo): Promise<Plan> {
  return planCommit(params, disk, await identityMatcher([params.top, params.base], chainOf(disk)));
}
