// Reads answer from what the agent knows: a libvirt round-trip on a read's path (the scan for
// copies started outside the agent, a domain lookup) is waited for only up to a small bound;
// past it the read answers without it and the work goes on in the background.

/**
 * How long a read waits for libvirtd before answering from memory (ms): far above what a
 * healthy libvirtd takes to show a host's disks (milliseconds), far below the bound of one
 * libvirt call (10 s) that a hung libvirtd would otherwise make every read wait.
 */
export const READ_WAIT_MS = 1000;

/**
 * `{ value }` when p settles within ms (a rejection is rethrown), else undefined while p goes
 * on: whoever started p handles its late failure (it is never left unhandled here).
 */
export function within<T>(p: Promise<T>, ms: number): Promise<{ value: T } | undefined> {
  p.catch(() => {});
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(undefined), Math.max(0, ms));
    p.then(
      (value) => {
        clearTimeout(timer);
        resolve({ value });
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/**
 * One call in flight per key: callers asking meanwhile share it. Reads repeated while libvirtd
 * hangs then add no libvirt calls (each would wait the full call bound and fill the binding's
 * queue), and wait only what is left of the read bound since the shared call started.
 */
export class SingleFlight<T> {
  private readonly running = new Map<string, { done: Promise<T>; startedAt: number }>();

  /** The key's call's result, or with `ms`, undefined when it has not settled `ms` after it started. */
  async run(key: string, fn: () => Promise<T>, ms?: number): Promise<{ value: T } | undefined> {
    let flight = this.running.get(key);
    if (!flight) {
      const done = (async () => fn())().finally(() => this.running.delete(key));
      flight = { done, startedAt: Date.now() };
      this.running.set(key, flight);
    }
    return ms === undefined ? { value: await flight.done } : within(flight.done, flight.startedAt + ms - Date.now());
  }
}
