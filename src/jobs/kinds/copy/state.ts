// A copy's states and the only transitions allowed between them (also an active commit's,
// which mirrors into its base as a copy mirrors into its destination).
//
//   copying ──READY──> ready ──pivot──> pivoting ──verified──> pivoted
//      │                 ├──finish─> finishing ──────────────> finished
//      └──abort──────────┴──abort──> cancelling ─────────────> cancelled
//   any non-terminal ──FAILED event / error──> failed
//
// Besides the design's edges, three kinds exist, each named below:
//   refused:   libvirt refused the request (e.g. not ready for pivot): the job is back where it was.
//   reconcile: after a restart the live XML shows the request never took effect.
//   outside:   the job ended without this agent asking (virsh, another tool) and the live XML
//              shows how; such ends carry outcome "inferred" and evidence.
import type { JobState } from '../../../generated/api.js';

export const MIRROR_NEXT: Readonly<Record<JobState, readonly JobState[]>> = {
  copying: ['ready', 'cancelling', 'failed', /* outside */ 'cancelled', 'pivoted'],
  ready: ['pivoting', 'finishing', 'cancelling', 'failed', /* outside */ 'cancelled', 'pivoted'],
  pivoting: ['pivoted', 'failed', /* refused */ 'ready', /* reconcile */ 'copying'],
  finishing: ['finished', 'failed', /* refused */ 'ready', /* reconcile */ 'copying'],
  cancelling: ['cancelled', 'failed', /* refused */ 'copying', 'ready'],
  pivoted: [],
  finished: [],
  completed: [],
  cancelled: [],
  failed: [],
};

/**
 * The state libvirt's own view of the mirror (`<mirror ready=…>`) implies, given the journaled
 * state: libvirt decides, the journal only says what was asked. Pure.
 */
export function stateFromMirror(journaled: JobState, mirrorReady: string | null): JobState {
  if (mirrorReady === 'pivot') return 'pivoting';
  // A finish is an abort without pivot: libvirt shows both as 'abort'.
  if (mirrorReady === 'abort') return journaled === 'finishing' ? 'finishing' : 'cancelling';
  // An abort libvirt does not show yet is still wanted (recovery asks again).
  if (journaled === 'cancelling') return 'cancelling';
  return mirrorReady === 'yes' ? 'ready' : 'copying';
}
