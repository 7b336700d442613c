// Per-domain health as the libvirt calls show it. A call on a domain that libvirtd took but did
// not answer in time (its QEMU hung or stopped, its storage stalled), or that waited past its
// queue bound behind such a call, marks the domain slow; any answer from libvirt clears it.
// While a domain is slow, reads about it answer from what the agent knows at once and the
// adoption scan passes it by, instead of queueing more calls behind the stuck one. Other domains
// are unaffected: the binding runs each domain's calls apart (docs/libvirt-binding.md).
import { LibvirtBusy, LibvirtTimeout, type Connection } from '../libvirt/index.js';

type ConnectionMethod = { [K in keyof Connection]: Connection[K] extends (...args: never[]) => unknown ? K : never }[keyof Connection];

/**
 * Whether each Connection method's first argument names a domain (its calls are then tracked).
 * Every method is classified here: one added to the Connection without an entry does not compile.
 */
const NAMES_A_DOMAIN: Record<ConnectionMethod, boolean> = {
  lookupDomain: true,
  getXml: true,
  blockCopy: true,
  snapshotCreateXml: true,
  blockCommit: true,
  blockPull: true,
  getBlockJobInfo: true,
  backupBegin: true,
  backupGetXmlDesc: true,
  abortJob: true,
  getJobStats: true,
  listCheckpoints: true,
  checkpointDelete: true,
  getBlockInfo: true,
  blockJobAbort: true,
  blockJobSetSpeed: true,
  suspend: true,
  resume: true,
  fsFreeze: true,
  fsThaw: true,
  getState: true,
  listDomains: false,
  storageVolPath: false,
  storagePoolXml: false,
  storagePoolRefresh: false,
  versions: false,
  onEvent: false,
  onClose: false,
  close: false,
};

const DOMAIN_CALLS = new Set<string>(Object.entries(NAMES_A_DOMAIN).flatMap(([m, d]) => (d ? [m] : [])));

/**
 * How long a domain stays slow after its last unanswered call (ms) when no call on it answers
 * meanwhile: then the next scan or read asks libvirt again (and marks it again if it still hangs).
 */
export const SLOW_FOR_MS = 30_000;

export class SlowDomains {
  /** Domain key (as called: UUID or name) → when (ms) its last call went unanswered. */
  private readonly slow = new Map<string, number>();

  isSlow(key: string): boolean {
    const at = this.slow.get(key);
    return at !== undefined && Date.now() - at < SLOW_FOR_MS;
  }

  /** Forgets every mark (a new connection: nothing known about it yet). */
  reset(): void {
    this.slow.clear();
  }

  /** Settles like p; marks or clears the domain by how it settled. */
  track<T>(key: string, p: Promise<T>, closed: () => boolean): Promise<T> {
    p.then(
      () => this.slow.delete(key),
      (e: unknown) => {
        const unanswered = e instanceof LibvirtTimeout || (e instanceof LibvirtBusy && e.queued);
        if (unanswered && !closed()) {
          this.slow.set(key, Date.now());
        } else if (!(e instanceof LibvirtBusy) && !closed()) {
          this.slow.delete(key); // libvirt answered (an error is an answer)
        }
      },
    );
    return p;
  }

  /** The connection, with every call on a domain tracked. Other members pass through. */
  watch(conn: Connection): Connection {
    this.reset();
    return new Proxy(conn, {
      get: (target, prop, _receiver) => {
        const v: unknown = Reflect.get(target, prop, target);
        if (typeof v !== 'function') return v;
        const fn = v as (...a: unknown[]) => unknown;
        if (typeof prop === 'string' && DOMAIN_CALLS.has(prop)) {
          return (key: string, ...rest: unknown[]) =>
            this.track(key, fn.call(target, key, ...rest) as Promise<unknown>, () => target.closed);
        }
        return fn.bind(target);
      },
    });
  }
}
