// A clock the test moves: time stands still until advance() (or a sleep, which moves it by
// the sleep's length), and timers fire in order as time passes them. No real waiting.
import type { Clock, Timer } from '../../src/jobs/clock.js';

interface Pending {
  at: number;
  fn: () => void;
  timer: Timer;
}

export class ManualClock implements Clock {
  private pending: Pending[] = [];

  constructor(private t = Date.parse('2026-01-01T00:00:00Z')) {}

  now(): number {
    return this.t;
  }

  /** A sleep moves time by its length (firing the timers it passes) and resolves at once. */
  async sleep(ms: number): Promise<void> {
    this.advance(ms);
  }

  setTimer(fn: () => void, ms: number): Timer {
    const timer = {} as Timer;
    this.pending.push({ at: this.t + Math.max(0, ms), fn, timer });
    return timer;
  }

  clearTimer(timer: Timer | undefined): void {
    this.pending = this.pending.filter((p) => p.timer !== timer);
  }

  /** Moves time forward by ms, firing every timer due on the way, earliest first. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const next = this.pending.filter((p) => p.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      this.pending = this.pending.filter((p) => p !== next);
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = end;
  }

  /** Timers waiting to fire. */
  get timers(): number {
    return this.pending.length;
  }
}

/**
 * A clock that runs `factor` times faster than real time: for tests of graces and waits that
 * the fake libvirt satisfies only as real time passes (the poll runs on real timers), so that
 * a 5 s grace costs 5 s / factor.
 */
export class FastClock implements Clock {
  private readonly realStart = Date.now();

  constructor(
    private readonly factor: number,
    private readonly start = Date.parse('2026-01-01T00:00:00Z'),
  ) {}

  now(): number {
    return this.start + (Date.now() - this.realStart) * this.factor;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms) / this.factor));
  }

  setTimer(fn: () => void, ms: number): Timer {
    return setTimeout(fn, Math.max(0, ms) / this.factor) as unknown as Timer;
  }

  clearTimer(timer: Timer | undefined): void {
    if (timer) clearTimeout(timer as unknown as NodeJS.Timeout);
  }
}
