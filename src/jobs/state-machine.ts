// The job states of the design and the only transitions allowed between them. The manager
// changes a job's state only through canTransition, so an edge missing here cannot happen.
//
//   copying ──READY──> ready ──pivot──> pivoting ──verified──> pivoted
//      │                 ├──finish─> finishing ──────────────> finished
//      └──abort──────────┴──abort──> cancelling ─────────────> cancelled
//   any non-terminal ──FAILED event / error──> failed
//
// Besides the design's edges, three kinds exist, each named below:
//   refused:   libvirt refused the request (e.g. not ready for pivot): the job is back where it was.
//   reconcile: after a restart the live XML shows the request never took effect.
//   outside:   the copy ended without this agent asking (virsh, another tool) and the live XML
//              shows how; such ends carry outcome "inferred" and evidence.
import type { JobState } from '../generated/api.js';

const NEXT: Record<JobState, readonly JobState[]> = {
  copying: ['ready', 'cancelling', 'failed', /* outside */ 'cancelled', 'pivoted'],
  ready: ['pivoting', 'finishing', 'cancelling', 'failed', /* outside */ 'cancelled', 'pivoted'],
  pivoting: ['pivoted', 'failed', /* refused */ 'ready', /* reconcile */ 'copying'],
  finishing: ['finished', 'failed', /* refused */ 'ready', /* reconcile */ 'copying'],
  cancelling: ['cancelled', 'failed', /* refused */ 'copying', 'ready'],
  pivoted: [],
  finished: [],
  cancelled: [],
  failed: [],
};

export const STATES = Object.keys(NEXT) as JobState[];

export const TERMINAL: ReadonlySet<JobState> = new Set(['pivoted', 'finished', 'cancelled', 'failed']);

export const isTerminal = (s: JobState) => TERMINAL.has(s);

export function canTransition(from: JobState, to: JobState): boolean {
  return NEXT[from].includes(to);
}

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
