// Serializes async work per key: operations on one job (or one disk) run one after the other,
// while different keys run concurrently.

export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Runs fn after every earlier fn of the same key has settled; failures do not block the queue. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(fn);
    const tail = next.catch(() => {});
    this.tails.set(key, tail);
    // Forget the key once the queue drains, so the map does not grow with every job ever seen.
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** True while something of this key runs or waits. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }
}
