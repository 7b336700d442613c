// The layers of a disk's backing chain as commit and pull jobs address them: the active layer
// (the disk's own <source>) first, then each <backingStore> down to the deepest. A layer is
// named by path or as libvirt's `vda[N]`, N being libvirt's image index from the live XML (the
// `index` attribute of <source>/<backingStore>), which is not the depth: after a disk-only
// snapshot libvirt 9.0 shows the new active layer as index 4 above layers 1, 2, 3
// (test/fixtures/chain-*.xml). Pure, shared by the commit and pull kinds.
import type { DiskInfo } from '../../../libvirt/disk-xml.js';
import { samePath } from '../../job.js';

/** One layer of a chain as a job records it. */
export interface Layer {
  /** The file or device path; a network layer's URL; null for a layer with no path (a volume). */
  path: string | null;
  format: string | null;
  /** libvirt's image index from the live XML, or null when the XML shows none. */
  index: number | null;
}

/** A layer as read from a disk: with its element type and its depth (0 = the active layer). */
export interface ChainLayer extends Layer {
  /** file | block | network | volume | … */
  type: string;
  depth: number;
}

/**
 * What a commit or pull job knows of its layers. `top` and `base` are null only where libvirt
 * does not tell (a commit or pull adopted from virsh: its XML shows no layers, see adopt.ts);
 * `chain` is the whole chain when the job started or was adopted, active layer first.
 */
export interface Layers {
  top: Layer | null;
  /** For a pull started here, null means a full pull (nothing stays below the active layer). */
  base: Layer | null;
  chain?: Layer[];
}

/** The disk's chain, active layer first. */
export function chainOf(disk: DiskInfo): ChainLayer[] {
  const active: ChainLayer = { path: disk.sourcePath, format: disk.format, index: disk.index ?? null, type: disk.type, depth: 0 };
  return [active, ...(disk.backing ?? []).map((l, i) => ({ path: l.path, format: l.format, index: l.index, type: l.type, depth: i + 1 }))];
}

/** A job's copy of a layer (no type, no depth). */
export const layerOf = (l: Layer): Layer => ({ path: l.path, format: l.format, index: l.index });

/**
 * The same layer: the same index where both are known (a file committed away and created again
 * under its old name is a new layer to libvirt, with a new index), and the same path where both
 * are known.
 */
export function sameLayer(a: Layer, b: Layer): boolean {
  if (a.index !== null && b.index !== null) {
    if (a.index !== b.index) return false;
    return a.path === null || b.path === null || samePath(a.path, b.path);
  }
  return samePath(a.path, b.path);
}

/** The layer's name for messages: vda[3] (/path) or the path alone. */
export function nameOf(target: string, l: Layer): string {
  const path = l.path ?? 'a layer without a path';
  return l.index !== null ? `${target}[${l.index}] (${path})` : path;
}

/** The chain for messages: a → b → c. */
export const describeChain = (target: string, chain: Layer[]): string => chain.map((l) => nameOf(target, l)).join(' → ');

/** Where in `now` each layer of `then` is (−1: gone). */
export const positions = (then: Layer[], now: Layer[]): number[] => then.map((l) => now.findIndex((n) => sameLayer(l, n)));

/** `now` is exactly `then` (same layers in the same order). */
export const sameChain = (a: Layer[], b: Layer[]): boolean => a.length === b.length && a.every((l, i) => sameLayer(l, b[i]!));

/** How a chain changed: which of the old layers are gone, and whether `now` holds a layer `then` did not. */
export interface ChainChange {
  /** Depths in `then` of the layers no longer in `now`. */
  gone: number[];
  /** `now` holds a layer `then` did not have, or the kept layers changed order. */
  foreign: boolean;
}

export function chainChange(then: Layer[], now: Layer[]): ChainChange {
  const pos = positions(then, now);
  const kept = pos.filter((p) => p >= 0);
  const inOrder = kept.every((p, i) => i === 0 || p > kept[i - 1]!);
  return {
    gone: pos.flatMap((p, depth) => (p < 0 ? [depth] : [])),
    foreign: !inOrder || kept.length !== now.length,
  };
}

/** `gone` is one contiguous run of depths. */
export const contiguous = (gone: number[]): boolean => gone.every((d, i) => i === 0 || d === gone[i - 1]! + 1);

const NAME = /^([a-z][a-z0-9]*)\[(\d{1,9})\]$/;

/** `vda[3]` → { target: 'vda', index: 3 }; anything else → null. */
export function parseLayerName(spec: string): { target: string; index: number } | null {
  const m = NAME.exec(spec);
  return m ? { target: m[1]!, index: Number(m[2]) } : null;
}

/** The layers of `chain` a path names by spelling (identity: see identify.ts). */
export const pathMatches = (path: string, chain: ChainLayer[]): number[] => chain.flatMap((l) => (samePath(l.path, path) ? [l.depth] : []));
