// The job fields of a commit or pull: source (the disk's active layer at start), destination
// (where the data lands: a commit's base, a pull's active layer) and layers, for a job started
// here (from its plan) or adopted (from what libvirt shows). Pure.
import type { Job } from '../../../generated/api.js';
import type { DiskInfo } from '../../../libvirt/disk-xml.js';
import type { Plan } from './address.js';
import { chainOf, sameLayer, type Layer, type Layers } from './layers.js';
import type { ChainKind } from './types.js';

export interface ChainFields {
  source: Job['source'];
  destination: Job['destination'];
  layers: Layers;
}

type JobFormat = Job['destination']['format'];
const jobFormat = (f: string | null): JobFormat => (f === 'raw' || f === 'qcow2' ? f : null);
const jobType = (t: string | undefined): Job['destination']['type'] => (t === 'block' || t === 'network' ? t : 'file');

/** A layer as a job destination; an unknown layer (an adopted commit's base) is path ''. */
export function destinationOf(disk: DiskInfo, layer: Layer | null, type?: string): Job['destination'] {
  if (!layer?.path) return { path: '', format: null, type: 'file' };
  return { path: layer.path, format: jobFormat(layer.format), type: jobType(type ?? chainOf(disk).find((l) => sameLayer(l, layer))?.type) };
}

/** The fields of a job started here from its plan (commit/plan.ts, pull/plan.ts). */
export function planFields(kind: ChainKind, disk: DiskInfo, plan: Plan): ChainFields {
  return {
    source: { path: disk.sourcePath, format: disk.format },
    destination: destinationOf(disk, kind === 'pull' ? plan.top : plan.base),
    layers: { top: plan.top, base: plan.base, chain: plan.chain },
  };
}

const sameOrBothNull = (a: Layer | null, b: Layer | null) => (a === null || b === null ? a === b : sameLayer(a, b));

/**
 * A call's plan asks for what `layers` (an existing job's) already does: the same top and base
 * (for a pull, the same base; both null: a full pull). For idempotent re-runs: the same call
 * again is the existing job (changed: false), a different one while it runs is jobExists.
 */
export function samePlan(layers: Layers, plan: Plan): boolean {
  return sameOrBothNull(layers.top, plan.top) && sameOrBothNull(layers.base, plan.base);
}
