// Whether a job gets to ready: from the agent's own (time, cur, end) samples over a sliding
// window. libvirt's cursor (cur) counts the bytes copied, end - cur the bytes still to copy; a
// guest write to an area already copied makes end grow. So over the window:
//   copy rate   = slope of cur
//   shrink rate = -slope of (end - cur)
//   dirty rate  = copy rate - shrink rate (= slope of end)
// Slopes are least-squares fits over every sample in the window, so one late or early sample
// (the poll's jitter, QEMU's cursor moving in chunks) does not swing the verdict, and the verdict
// has hysteresis: a converging copy becomes notConverging only when the net progress falls under
// NOT_CONVERGING_BELOW of the copy rate, and back only above CONVERGING_ABOVE and only when the
// shrinking stands out of the samples' noise (SURE standard errors of the fit), and either change
// must hold for SWITCH_AFTER samples in a row.
// Limits (docs/jobs.md): writes to areas not copied yet are invisible (they do not grow end), so
// the dirty rate is a lower bound in phase 1; one window is seconds long, so a guest that writes
// in bursts longer than that is seen burst by burst.
import type { Convergence, Job } from '../generated/api.js';

export interface ProgressSample {
  t: number;
  cur: number;
  end: number;
}

export type Trend = 'unknown' | 'converging' | 'notConverging' | 'stalled';

export interface Rates {
  /** bytes/s */
  copy: number;
  /** bytes/s the bytes left shrink (negative: they grow) */
  shrink: number;
  /** bytes/s, never negative */
  dirty: number;
  /** The bytes left shrink beyond doubt: the shrink rate is over SURE standard errors of its fit. */
  sure: boolean;
}

/** Samples kept (ms). */
export const WINDOW_MS = 8000;
/** No verdict before the samples span this long (ms): the first seconds of a phase are unknown. */
export const MIN_SPAN_MS = 3000;
const MIN_SAMPLES = 3;
/** Net progress (shrink / copy) above which a copy turns converging, and below which it turns not. */
export const CONVERGING_ABOVE = 0.1;
export const NOT_CONVERGING_BELOW = 0.03;
/** The first verdict (no previous one) splits at this ratio. */
const FIRST_SPLIT = 0.05;
/** Standard errors the shrink rate must exceed before a copy is called converging from noise. */
const SURE = 3;
/** Samples in a row a change between converging and notConverging must hold. */
export const SWITCH_AFTER = 3;
const settled = (v: Trend) => v === 'converging' || v === 'notConverging';

const MiB = 1024 * 1024;
/** QEMU's mirror buffer when the job does not set one (DEFAULT_MIRROR_BUF_SIZE). */
const DEFAULT_BUF_SIZE = 16 * MiB;

/** Least-squares slope of y over t, per second, and its standard error. */
function fit(samples: ProgressSample[], y: (s: ProgressSample) => number): { slope: number; se: number } {
  const n = samples.length;
  const t0 = samples[0]!.t;
  let st = 0;
  let sy = 0;
  for (const s of samples) {
    st += s.t - t0;
    sy += y(s);
  }
  const mt = st / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (const s of samples) {
    const dt = s.t - t0 - mt;
    num += dt * (y(s) - my);
    den += dt * dt;
  }
  if (den === 0) return { slope: 0, se: 0 };
  const b = num / den;
  let rss = 0;
  for (const s of samples) {
    const r = y(s) - my - b * (s.t - t0 - mt);
    rss += r * r;
  }
  const se = n > 2 ? Math.sqrt(rss / (n - 2) / den) : 0;
  return { slope: b * 1000, se: se * 1000 };
}

/** The rates over the samples, or null while they are too few or span too short a time. */
export function rates(samples: ProgressSample[]): Rates | null {
  const first = samples[0];
  const last = samples[samples.length - 1];
  if (!first || !last || samples.length < MIN_SAMPLES || last.t - first.t < MIN_SPAN_MS) return null;
  const copy = Math.max(0, fit(samples, (s) => s.cur).slope);
  const left = fit(samples, (s) => s.end - s.cur);
  const shrink = -left.slope;
  return { copy, shrink, dirty: Math.max(0, copy - shrink), sure: left.se === 0 ? shrink > 0 : shrink > SURE * left.se };
}

/** The verdict for rates, given the previous one (hysteresis). */
export function trend(r: Rates | null, remaining: number, prev: Trend, stalled: boolean): Trend {
  if (!r) return 'unknown';
  if (stalled) return remaining === 0 ? 'converging' : 'stalled';
  if (remaining === 0) return 'converging';
  const net = r.copy > 0 ? r.shrink / r.copy : 0;
  if (prev === 'converging') return net < NOT_CONVERGING_BELOW ? 'notConverging' : 'converging';
  if (prev === 'notConverging') return net > CONVERGING_ABOVE && r.sure ? 'converging' : 'notConverging';
  if (net < FIRST_SPLIT) return 'notConverging';
  // Shrinking, but within the noise of a few samples: no verdict yet.
  return r.sure ? 'converging' : 'unknown';
}

/** Follows one job's samples; the verdict moves only when a sample arrives. */
export class ConvergenceTracker {
  private samples: ProgressSample[] = [];
  private verdict: Trend = 'unknown';
  private last: Rates | null = null;

  constructor(private readonly windowMs = WINDOW_MS) {}

  private bandwidth: number | null = null;
  private streak = 0;
  /** Time of the last sample where cur moved (or the first of the phase). */
  private movedAt: number | null = null;

  /** One sample; bandwidth is the job's limit then (a change starts the window over). */
  add(t: number, cur: number, end: number, bandwidth: number): void {
    const prev = this.samples[this.samples.length - 1];
    // cur going backwards: a new phase (or a restarted job); a new limit: a new regime. The old
    // samples say nothing of either.
    if (prev && (cur < prev.cur || bandwidth !== this.bandwidth)) this.reset();
    this.bandwidth = bandwidth;
    if (prev && prev.t === t) this.samples.pop();
    if (!prev || this.movedAt === null || cur !== prev.cur) this.movedAt = t;
    this.samples.push({ t, cur, end });
    while (this.samples.length > MIN_SAMPLES && t - this.samples[0]!.t > this.windowMs) this.samples.shift();
    this.last = rates(this.samples);
    const first = this.samples[0]!;
    const next = trend(this.last, Math.max(0, end - cur), this.verdict, !!this.last && cur === first.cur);
    // Between converging and notConverging, a change must hold for SWITCH_AFTER samples in a row.
    const flip = next !== this.verdict && settled(next) && settled(this.verdict);
    this.streak = flip ? this.streak + 1 : 0;
    if (!flip || this.streak >= SWITCH_AFTER) {
      this.verdict = next;
      this.streak = 0;
    }
  }

  reset(): void {
    this.samples = [];
    this.bandwidth = null;
    this.verdict = 'unknown';
    this.streak = 0;
    this.movedAt = null;
    this.last = null;
  }

  get trend(): Trend {
    return this.verdict;
  }

  get rates(): Rates | null {
    return this.last;
  }

  /** Seconds since cur last moved (0 when no sample). */
  get stillSeconds(): number {
    const last = this.samples[this.samples.length - 1];
    return !last || this.movedAt === null ? 0 : (last.t - this.movedAt) / 1000;
  }

  /** Seconds the samples span (0 when none). */
  get spanSeconds(): number {
    const n = this.samples.length;
    return n < 2 ? 0 : Math.round((this.samples[n - 1]!.t - this.samples[0]!.t) / 1000);
  }
}

const mibs = (bytesPerSecond: number) => {
  const v = bytesPerSecond / MiB;
  return v >= 10 ? v.toFixed(0) : v.toFixed(1);
};

/** What would get the job to ready, for the verdicts that need it. */
export function advice(
  job: Pick<Job, 'kind' | 'options'>,
  state: Convergence['state'],
  r: Rates | null,
  bandwidth: number,
  span: number,
): string | null {
  if (state === 'stalled') {
    return `nothing was copied over the last ${span} s: check the destination's storage${bandwidth > 0 ? ` and the bandwidth limit (${mibs(bandwidth)} MiB/s)` : ''}`;
  }
  if (state !== 'notConverging' || !r) return null;
  const sync = job.kind === 'copy' && !job.options?.synchronousWrites;
  // Only writes to areas already copied are seen, and no faster than they are copied: a floor.
  const writes = `the guest writes at least ${mibs(r.dirty)} MiB/s over what was copied, as fast as the job copies (${mibs(r.copy)} MiB/s)`;
  if (bandwidth > 0) {
    // The guest's rate is the floor; twice it leaves the copy half its throughput for the bytes left.
    const suggest = 2 * Math.max(r.dirty, bandwidth);
    return `${writes} at its bandwidth limit of ${mibs(bandwidth)} MiB/s: raise the bandwidth well above ${mibs(r.dirty)} MiB/s (setSpeed, e.g. ${mibs(suggest)} MiB/s, or 0 for unlimited)${sync ? ' or copy with synchronousWrites' : ''}`;
  }
  return sync
    ? `${writes} with no bandwidth limit: copy with synchronousWrites (guest writes then reach both disks, so the copy converges), or lower the guest's write load`
    : `${writes} with no bandwidth limit: lower the guest's write load`;
}

/** The job's convergence as callers see it; undefined for a terminal job. */
export function convergenceOf(job: Job, tracker: ConvergenceTracker, terminal: boolean): Convergence | undefined {
  if (terminal) return undefined;
  const cur = Number(job.progress.cur);
  const end = Number(job.progress.end);
  const remaining = end > 1 ? Math.max(0, end - cur) : 0;
  const bandwidth = Number(job.bandwidth);
  const r = tracker.rates;
  let state: Convergence['state'] = job.state === 'ready' ? 'ready' : job.state === 'copying' ? tracker.trend : 'unknown';
  // Under a limit QEMU copies a buffer's worth at once, then sleeps until the average is back at
  // the limit, with its counters still: no progress for up to bufSize / bandwidth is the limit
  // at work, not a stall (twice that, with QEMU's default 16 MiB buffer when unknown).
  const buf = Number(job.options?.bufSize ?? 0) || DEFAULT_BUF_SIZE;
  if (state === 'stalled' && bandwidth > 0 && tracker.stillSeconds * bandwidth < 2 * buf) state = 'unknown';
  let eta: number | null = null;
  if (state === 'ready' || (state === 'converging' && remaining === 0)) eta = 0;
  else if (state === 'converging' && r && r.shrink > 0) eta = Math.round(remaining / r.shrink);
  return {
    state,
    copyRateBytesPerSecond: r ? Math.round(r.copy) : null,
    dirtyRateBytesPerSecond: r ? Math.round(r.dirty) : null,
    remainingBytes: remaining,
    etaSeconds: eta,
    bandwidthBytesPerSecond: bandwidth > 0 ? bandwidth : null,
    advice: advice(job, state, r, bandwidth, tracker.spanSeconds),
  };
}
