// The job states every kind shares and the kernel's questions about them. Which transitions
// are allowed is the kind's state table (canTransition in kinds/index.ts): the recorder changes
// a job's state only through it, so an edge missing there cannot happen.
import type { JobState } from '../generated/api.js';

export const STATES: readonly JobState[] = [
  'copying',
  'ready',
  'pivoting',
  'pivoted',
  'finishing',
  'finished',
  'completed',
  'cancelling',
  'cancelled',
  'failed',
];

export const TERMINAL: ReadonlySet<JobState> = new Set(['pivoted', 'finished', 'completed', 'cancelled', 'failed']);

export const isTerminal = (s: JobState) => TERMINAL.has(s);

/** States in which the job has passed the ready point (terminal states included only if reached through it). */
export function reachedReady(s: JobState): boolean {
  return s === 'ready' || s === 'pivoting' || s === 'finishing' || s === 'pivoted' || s === 'finished';
}

/** The state a pivot/finish request puts a ready job in, and the state it ends in. */
export const COMPLETION = {
  pivot: { busy: 'pivoting', goal: 'pivoted' },
  finish: { busy: 'finishing', goal: 'finished' },
} as const satisfies Record<string, { busy: JobState; goal: JobState }>;

/** The request a job is busy carrying out, by its busy state. */
export const REQUEST_OF: Partial<Record<JobState, 'pivot' | 'finish' | 'abort'>> = {
  pivoting: 'pivot',
  finishing: 'finish',
  cancelling: 'abort',
};
