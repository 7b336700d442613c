// The shapes the commit and pull kinds read and return, written as the parts of the job core's
// types they use, so that they plug into the kernel's Job (which gains `kind` and `layers`) and
// Decision (which gains 'completed') without importing them.
import type { ErrorName } from '../../../errors.js';
import type { BlockJobType } from '../../../libvirt/index.js';
import type { Layers } from './layers.js';

export type ChainKind = 'commit' | 'activeCommit' | 'pull';

/** The fields of a job the commit and pull kinds read. */
export interface ChainJob {
  kind: ChainKind | 'copy';
  disk: string;
  /** copying | ready | pivoting | finishing | cancelling | a terminal state */
  state: string;
  owner: 'agent' | 'adopted';
  /** The disk's active layer when the job started. */
  source: { path: string | null; format: string | null };
  /** Where the data lands: the base (commit), the active layer (pull). */
  destination: { path: string; format: string | null; type: string };
  layers: Layers;
}

/** How a commit or pull ended (the kernel's Decision, plus 'completed'). */
export type ChainDecision =
  /** Nothing to conclude: the job still runs. */
  | { state: null; evidence: string }
  | { state: 'pivoted' | 'finished' | 'cancelled' | 'completed'; outcome: 'observed' | 'inferred'; evidence: string }
  | { state: 'failed'; error: { name: ErrorName; message: string }; evidence: string };

/** libvirt's block job type each kind runs as (the one place they map). */
export const BLOCK_JOB_TYPE: Record<ChainKind, BlockJobType> = { commit: 'commit', activeCommit: 'activeCommit', pull: 'pull' };

/** The kind a libvirt block job type is, if it is one of these. */
export function kindOfBlockJob(type: BlockJobType): ChainKind | null {
  return type === 'commit' || type === 'activeCommit' || type === 'pull' ? type : null;
}

/** Words for messages. */
export const KIND_WORDS: Record<ChainKind | 'copy', string> = {
  copy: 'copy',
  commit: 'commit',
  activeCommit: 'active commit',
  pull: 'pull',
};

export const BLOCK_JOB_WORDS: Record<BlockJobType, string> = {
  unknown: 'block job of an unknown type',
  pull: 'pull',
  copy: 'copy',
  commit: 'commit',
  activeCommit: 'active commit',
  backup: 'backup',
};
