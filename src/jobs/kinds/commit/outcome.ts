// What a disk's chain says of a commit below the active layer: completed (top and the layers
// between top and base are gone, base and everything else still there, in order), unchanged,
// or neither (and why). Pure; conclude.ts turns it into the job's end.
import { chainChange, contiguous, describeChain, nameOf, sameLayer, type Layer, type Layers } from './layers.js';

export type ChainOutcome = { result: 'completed'; note: string } | { result: 'unchanged' } | { result: 'neither'; why: string };

const depthIn = (chain: Layer[], l: Layer | null): number => (l ? chain.findIndex((c) => sameLayer(l, c)) : -1);

/** A commit's outcome from the chain it started on (`layers.chain`), else from top and base alone. */
export function commitOutcome(target: string, layers: Layers, now: Layer[]): ChainOutcome {
  const then = layers.chain;
  if (!then || then.length < 2) return commitFromEnds(target, layers, now);
  const { gone, foreign } = chainChange(then, now);
  if (foreign) return { result: 'neither', why: `the chain is not the one the commit started on (${describeChain(target, then)})` };
  if (gone.length === 0) return { result: 'unchanged' };
  const first = gone[0]!;
  const last = gone[gone.length - 1]!;
  const goneNames = gone.map((g) => nameOf(target, then[g]!)).join(', ');
  if (first === 0) return { result: 'neither', why: `the active layer ${nameOf(target, then[0]!)} is gone` };
  if (!contiguous(gone)) return { result: 'neither', why: `layers that were not next to each other are gone: ${goneNames}` };
  if (last === then.length - 1) return { result: 'neither', why: `the deepest layer ${nameOf(target, then[last]!)} is gone` };
  const topD = depthIn(then, layers.top);
  const baseD = depthIn(then, layers.base);
  if ((layers.top && topD !== first) || (layers.base && baseD !== last + 1))
    return {
      result: 'neither',
      why: `the layers gone (${goneNames}) are not those from top ${layers.top ? nameOf(target, layers.top) : '?'} down to base ${layers.base ? nameOf(target, layers.base) : '?'}`,
    };
  const known = layers.top && layers.base;
  return {
    result: 'completed',
    note: known
      ? ''
      : `${goneNames} merged into ${nameOf(target, then[last + 1]!)} (deduced from the chain: libvirt does not show a commit's layers)`,
  };
}

/** Without the starting chain: top gone and base there is complete; both there is unchanged. */
function commitFromEnds(target: string, layers: Layers, now: Layer[]): ChainOutcome {
  const { top, base } = layers;
  if (!top || !base) return { result: 'neither', why: "this job's top and base are unknown and so is the chain it started on" };
  const topIn = now.some((l) => sameLayer(top, l));
  const baseIn = now.some((l) => sameLayer(base, l));
  if (!baseIn) return { result: 'neither', why: `the base ${nameOf(target, base)} is no longer in the chain` };
  return topIn ? { result: 'unchanged' } : { result: 'completed', note: '' };
}

/** A pull's outcome: below the same active layer, exactly base and what was below it (nothing for a full pull). */
export function pullOutcome(target: string, layers: Layers, owner: 'agent' | 'adopted', now: Layer[]): ChainOutcome {
  const then = layers.chain;
  const active = layers.top ?? then?.[0];
  if (!active) return { result: 'neither', why: "this job's active layer is unknown" };
  if (!sameLayer(active, now[0]!))
    return { result: 'neither', why: `the active layer is ${nameOf(target, now[0]!)}, not the pull's ${nameOf(target, active)}` };
  const base = layers.base;
  // A pull adopted from virsh: libvirt does not show its base.
  const baseUnknown = base === null && owner === 'adopted';
  if (then && then.length >= 2) {
    const { gone, foreign } = chainChange(then, now);
    if (foreign) return { result: 'neither', why: `the chain is not the one the pull started on (${describeChain(target, then)})` };
    if (gone.length === 0) return { result: 'unchanged' };
    const last = gone[gone.length - 1]!;
    if (gone[0] !== 1 || !contiguous(gone))
      return {
        result: 'neither',
        why: `the layers gone (${gone.map((g) => nameOf(target, then[g]!)).join(', ')}) are not those right below the active layer`,
      };
    const stays = then[last + 1] ?? null;
    if (baseUnknown)
      return {
        result: 'completed',
        note: `pulled down to ${stays ? nameOf(target, stays) : 'no backing layer'} (deduced from the chain: libvirt does not show a pull's base)`,
      };
    if (base ? stays !== null && sameLayer(base, stays) : stays === null) return { result: 'completed', note: '' };
    return {
      result: 'neither',
      why: `the chain below the active layer ends ${stays ? `at ${nameOf(target, stays)}` : 'with no backing layer'}, not ${base ? `at the base ${nameOf(target, base)}` : 'with none (a full pull)'}`,
    };
  }
  if (baseUnknown) return { result: 'neither', why: "this pull's base is unknown and so is the chain it started on" };
  const below = now[1];
  if (base === null) return below ? { result: 'unchanged' } : { result: 'completed', note: '' };
  if (below && sameLayer(base, below)) return { result: 'completed', note: '' };
  return now.some((l) => sameLayer(base, l))
    ? { result: 'unchanged' }
    : { result: 'neither', why: `the base ${nameOf(target, base)} is no longer in the chain` };
}
