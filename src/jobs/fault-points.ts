// Crash points for the reliability suite. With BLOCKCOPY_FAULT_KILL_AT=<point> the agent kills
// itself with SIGKILL when it reaches that point: a crash exactly between a journal write and
// the libvirt call it guards, or between libvirt's answer and the journal write that records it,
// is not something outside timing can aim at. With BLOCKCOPY_FAULT_SIGNAL=SIGTERM it asks for a
// shutdown there instead. Unset (always, outside the suite) it does nothing.
import type { Job } from '../generated/api.js';
import type { Intent } from './journal.js';

/** `<op>:journaled`: the intent is durable, the libvirt call not made. `<op>:sent`: libvirt
 *  accepted the call, the journal still holds the intent. `journaled:<state>`: the record of that
 *  state is durable. `decided:<state>`: the end is known in memory, not yet journaled.
 *  `cleanup:journaled`: the merged layers to delete are durable, none deleted yet;
 *  `cleanup:removed`: one was deleted and its removal journaled. */
export type FaultPoint =
  | `${Intent['op']}:${'journaled' | 'sent'}`
  | `snapshot:${'journaled' | 'sent'}`
  | `backup:${'journaled' | 'sent'}`
  | `cleanup:${'journaled' | 'removed'}`
  | `journaled:${string}`
  | `decided:${string}`
  | `group:${GuestStep}:${'journaled' | 'sent'}`;

/** A group switch's steps on the guest: `group:freeze:journaled` is the intent durable, the
 *  freeze not sent; `group:resume:sent` the guest resumed, its record still saying paused. */
export type GuestStep = 'freeze' | 'pause' | 'resume' | 'thaw';

const target = process.env.BLOCKCOPY_FAULT_KILL_AT;
/** BLOCKCOPY_FAULT_SIGNAL=SIGTERM: a shutdown asked at that exact point instead of a crash (once). */
const signal = process.env.BLOCKCOPY_FAULT_SIGNAL === 'SIGTERM' ? 'SIGTERM' : 'SIGKILL';
let fired = false;

/** Fires only for a copy this agent started: it also adopts copies started elsewhere (on a
 *  shared test host, other tests' copies), whose ends must not trigger the crash aimed at its own. */
export function faultPoint(point: FaultPoint, job: Pick<Job, 'owner'>): void {
  if (target === undefined || target !== point || job.owner !== 'agent' || fired) return;
  fired = true;
  process.kill(process.pid, signal);
}
