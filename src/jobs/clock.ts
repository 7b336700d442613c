// The job layer's time: wall-clock reads, sleeps and timers, as one replaceable object. The
// system clock serves the agent; unit tests pass a manual clock and move time themselves,
// so that deadlines, retries and graces are tested without real sleeps.

/** A timer handle, opaque to its users. */
export type Timer = { readonly __timer: true };

export interface Clock {
  /** Wall-clock ms since the epoch. */
  now(): number;
  sleep(ms: number): Promise<void>;
  setTimer(fn: () => void, ms: number): Timer;
  clearTimer(timer: Timer | undefined): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms))),
  setTimer: (fn, ms) => setTimeout(fn, Math.max(0, ms)) as unknown as Timer,
  clearTimer: (timer) => {
    if (timer) clearTimeout(timer as unknown as NodeJS.Timeout);
  },
};
