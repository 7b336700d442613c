// How a blockCommit or blockPull call's layer names become layers of the disk's live chain:
// `vda[N]` by libvirt's index, a path by the matcher (spelling, or identity: identify.ts).
// Pure; what the plan of each kind is lives in commit/plan.ts and pull/plan.ts.
import { AgentError } from '../../../errors.js';
import type { DiskInfo } from '../../../libvirt/disk-xml.js';
import type { LayerMatcher } from './identify.js';
import { chainOf, layerOf, nameOf, parseLayerName, type ChainLayer, type Layer } from './layers.js';

export interface CommitParamsLike {
  disk: string;
  top?: string;
  base?: string;
  shallow?: boolean;
}

export interface PullParamsLike {
  disk: string;
  base?: string;
}

export interface Plan {
  top: Layer;
  base: Layer | null;
  /** An active commit: top is the disk's active layer (it reaches ready and is pivoted). */
  active: boolean;
  /** The whole chain at planning time, active layer first (the job's layers.chain). */
  chain: Layer[];
}

/** The layer `spec` names in the chain: a path (by identity, see identify.ts) or `vda[N]`. */
export function findLayer(spec: string, disk: DiskInfo, chain: ChainLayer[], match: LayerMatcher, what: string): ChainLayer {
  const name = parseLayerName(spec);
  if (name) {
    if (name.target !== disk.target)
      throw new AgentError('notFound', `${what} ${spec} names a layer of disk ${name.target}, not of disk ${disk.target}`);
    const l = chain.find((c) => c.index === name.index);
    if (!l)
      throw new AgentError('notFound', `disk ${disk.target} has no layer with index ${name.index} (${what} ${spec})`, {
        chain: names(disk, chain),
      });
    return l;
  }
  if (!spec.startsWith('/') && !/^[a-z][a-z0-9+.-]*:\/\//.test(spec))
    throw new AgentError('notFound', `${what} ${spec} is neither an absolute path nor a layer name such as ${disk.target}[1]`);
  const depths = match(spec, chain);
  if (depths.length === 0)
    throw new AgentError('notFound', `${what} ${spec} is not a layer of disk ${disk.target}`, { chain: names(disk, chain) });
  if (depths.length > 1)
    throw new AgentError('notFound', `${what} ${spec} is more than one layer of disk ${disk.target}: name it as ${disk.target}[index]`, {
      chain: names(disk, chain),
    });
  return chain[depths[0]!]!;
}

export const names = (disk: DiskInfo, chain: Layer[]) => chain.map((l) => nameOf(disk.target, l));

/** A disk whose chain the agent can address: a disk (not a cdrom) with a local or network source. */
export function usableChain(disk: DiskInfo, verb: string): ChainLayer[] {
  if (disk.device !== 'disk') throw new AgentError('unsupported', `disk ${disk.target} is a ${disk.device}: only disks can be ${verb}`);
  const chain = chainOf(disk);
  if (chain.length < 2)
    throw new AgentError(
      'invalidState',
      `disk ${disk.target} has no backing layer: there is nothing to ${verb === 'committed' ? 'commit' : 'pull'}`,
    );
  return chain;
}

/** A layer a job can name in its record and hand to libvirt: one with a path. */
export function addressable(disk: DiskInfo, l: ChainLayer, role: string): Layer {
  if (l.path === null)
    throw new AgentError(
      'unsupported',
      `the ${role} layer ${nameOf(disk.target, l)} of disk ${disk.target} is a ${l.type} layer: it has no path`,
    );
  return layerOf(l);
}
