// The job states of the design and the only transitions allowed between them.
import type { JobState } from '../generated/api.js';

const NEXT: Record<JobState, readonly JobState[]> = {
  copying: ['ready', 'cancelling', 'cancelled', 'failed'],
  // A pivot or finish that QEMU refuses (not ready) returns the job to ready.
  ready: ['pivoting', 'finishing', 'cancelling', 'cancelled', 'failed'],
  pivoting: ['pivoted', 'ready', 'failed', 'cancelled'],
  finishing: ['finished', 'ready', 'failed', 'cancelled'],
  cancelling: ['cancelled', 'failed', 'finished'],
  pivoted: [],
  finished: [],
  cancelled: [],
  failed: [],
};

export const TERMINAL: ReadonlySet<JobState> = new Set(['pivoted', 'finished', 'cancelled', 'failed']);

export const isTerminal = (s: JobState) => TERMINAL.has(s);

export function canTransition(from: JobState, to: JobState): boolean {
  return NEXT[from].includes(to);
}

/** States in which the job has passed (or never needs) the ready point. */
export function reachedReady(s: JobState): boolean {
  return s !== 'copying' && s !== 'cancelling';
}
