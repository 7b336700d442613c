// Waiting for a condition that only changes when an emitter says so.
import type { EventEmitter } from 'node:events';
import { systemClock, type Clock, type Timer } from './clock.js';

/**
 * Resolves true once `pred()` holds (checked now and on every `event`), false when `timeoutMs`
 * passes first; rejects when `signal` aborts (the caller went away).
 */
export function until(
  emitter: EventEmitter,
  event: string,
  pred: () => boolean,
  timeoutMs?: number,
  signal?: AbortSignal,
  clock: Clock = systemClock,
): Promise<boolean> {
  if (pred()) return Promise.resolve(true);
  if (signal?.aborted) return Promise.reject(new Error('the caller went away'));
  return new Promise((resolve, reject) => {
    let timer: Timer | undefined;
    const done = () => {
      emitter.off(event, check);
      signal?.removeEventListener('abort', onAbort);
      clock.clearTimer(timer);
    };
    const check = () => {
      if (pred()) {
        done();
        resolve(true);
      }
    };
    const onAbort = () => {
      done();
      reject(new Error('the caller went away'));
    };
    emitter.on(event, check);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (timeoutMs !== undefined)
      timer = clock.setTimer(() => {
        done();
        resolve(false);
      }, timeoutMs);
  });
}
