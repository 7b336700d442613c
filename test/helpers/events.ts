// Domain events from a binding Connection, for tests that wait for one (a READY, a completion).
import type { Connection, DomainEvent } from '../../src/libvirt/index.js';

/** Collects events and lets a test wait for the first one matching a predicate. */
export function eventRecorder(conn: Connection) {
  const seen: DomainEvent[] = [];
  const waiters: Array<{ pred: (e: DomainEvent) => boolean; resolve: (e: DomainEvent) => void }> = [];
  const unsubscribe = conn.onEvent((e) => {
    seen.push(e);
    for (const w of [...waiters]) {
      if (w.pred(e)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  });
  return {
    seen,
    ready: unsubscribe,
    next(pred: (e: DomainEvent) => boolean, ms = 120_000): Promise<DomainEvent> {
      const already = seen.find(pred);
      if (already) return Promise.resolve(already);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('event did not arrive in time')), ms);
        waiters.push({
          pred,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
  };
}

export const blockJob = (name: string, status: string) => (e: DomainEvent) =>
  e.kind === 'blockJob' && e.domain.name === name && e.status === status;
