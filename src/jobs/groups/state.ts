// A group's state, derived from its jobs' states (pure). The jobs are the truth; a group adds
// no state of its own that could disagree with them.
import type { GroupState, JobState } from '../../generated/api.js';

const BUSY: ReadonlyArray<[JobState, GroupState]> = [
  ['pivoting', 'pivoting'],
  ['finishing', 'finishing'],
  ['cancelling', 'cancelling'],
];

export function groupState(states: readonly JobState[]): GroupState {
  if (states.length === 0) return 'copying';
  for (const [job, group] of BUSY) if (states.includes(job)) return group;
  const first = states[0]!;
  if (states.every((s) => s === first)) return first as GroupState;
  const switched = states.some((s) => s === 'pivoted' || s === 'finished');
  // Some disks switched and others did not: only the per-disk outcome tells what the guest uses.
  if (switched) return 'partial';
  if (states.some((s) => s === 'failed' || s === 'cancelled')) return 'failed';
  return 'copying';
}

/** Ends that no request moves on from by itself. `partial` is not one: its unswitched disks may still be mirroring. */
export const isGroupEnded = (s: GroupState) => s === 'pivoted' || s === 'finished' || s === 'cancelled' || s === 'failed';
