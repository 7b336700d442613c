// Copy rate and ETA from the agent's own (time, cur) samples over a sliding window.

export class RateSampler {
  private samples: Array<{ t: number; cur: number }> = [];

  constructor(private readonly windowMs = 5000) {}

  add(t: number, cur: number): void {
    const last = this.samples[this.samples.length - 1];
    // cur going backwards means a new phase (or a restarted job): start over.
    if (last && cur < last.cur) this.samples = [];
    if (last && last.t === t) this.samples.pop();
    this.samples.push({ t, cur });
    while (this.samples.length > 2 && t - this.samples[0]!.t > this.windowMs) this.samples.shift();
  }

  /** bytes/s, or null until two samples at least 200 ms apart exist */
  rate(): number | null {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || last.t - first.t < 200) return null;
    return Math.round(((last.cur - first.cur) * 1000) / (last.t - first.t));
  }

  /** seconds until cur reaches end at the current rate */
  eta(end: number): number | null {
    const r = this.rate();
    const last = this.samples[this.samples.length - 1];
    if (r === null || !last || r <= 0) return null;
    return Math.max(0, Math.round((end - last.cur) / r));
  }
}
