// Typed facade over the native libvirt binding: Promise-based calls, LibvirtError rejections,
// and one native event subscription shared by any number of JS listeners.
import { native, type NativeConnection } from './binding.js';
import { LibvirtError } from './errors.js';
import type { CloseReason, Connection, DiskXml, DomainEvent, OpenOptions } from './types.js';

export * from './types.js';
export { LibvirtError, VirErrorCode, isLibvirtError } from './errors.js';

export const DEFAULT_URI = 'qemu:///system';

/** Rewraps the binding's rejections as LibvirtError; TypeErrors (bad arguments) pass through. */
function rewrap(e: unknown): never {
  if (e instanceof Error && (e as { libvirt?: unknown }).libvirt === true) {
    const { code, domain } = e as unknown as { code: number; domain: number };
    throw new LibvirtError(code, domain, e.message);
  }
  throw e;
}

/** Not async on purpose: a bad argument must throw its TypeError synchronously. */
function call<T>(fn: () => Promise<T>): Promise<T> {
  return fn().catch(rewrap);
}

class LibvirtConnection implements Connection {
  private closeListeners: Array<(reason: CloseReason) => void> = [];
  private eventListeners = new Set<(e: DomainEvent) => void>();
  private nativeSubscription: Promise<number> | null = null;
  private closedByLibvirt = false;

  constructor(readonly uri: string, private readonly n: NativeConnection) {}

  static async open(uri: string, opts: OpenOptions): Promise<LibvirtConnection> {
    let self: LibvirtConnection | undefined;
    const n = await call(() => native.open(uri, opts, (reason) => self?.handleClose(reason)));
    self = new LibvirtConnection(uri, n);
    return self;
  }

  get closed(): boolean {
    return this.closedByLibvirt || this.n.isClosed();
  }

  lookupDomain(key: string) { return call(() => this.n.lookupDomain(key)); }
  listDomains(opts?: { activeOnly?: boolean }) { return call(() => this.n.listDomains(opts)); }
  getXml(domain: string, opts?: { inactive?: boolean }) { return call(() => this.n.getXml(domain, opts)); }
  getMetadata(domain: string, uri: string, opts?: { config?: boolean }) { return call(() => this.n.getMetadata(domain, uri, opts)); }
  setMetadata(domain: string, uri: string, key: string, xml: string | null, opts?: { config?: boolean }) {
    return call(() => this.n.setMetadata(domain, uri, key, xml, opts));
  }
  blockCopy(domain: string, disk: string, xml: DiskXml, opts?: Parameters<Connection['blockCopy']>[3]) {
    return call(() => this.n.blockCopy(domain, disk, xml, opts));
  }
  getBlockJobInfo(domain: string, disk: string) { return call(() => this.n.getBlockJobInfo(domain, disk)); }
  blockJobAbort(domain: string, disk: string, opts?: Parameters<Connection['blockJobAbort']>[2]) {
    return call(() => this.n.blockJobAbort(domain, disk, opts));
  }
  blockJobSetSpeed(domain: string, disk: string, bandwidth: bigint) { return call(() => this.n.blockJobSetSpeed(domain, disk, bandwidth)); }
  versions() { return call(() => this.n.versions()); }
  suspend(domain: string) { return call(() => this.n.suspend(domain)); }
  resume(domain: string) { return call(() => this.n.resume(domain)); }
  fsFreeze(domain: string) { return call(() => this.n.fsFreeze(domain)); }
  fsThaw(domain: string) { return call(() => this.n.fsThaw(domain)); }

  async onEvent(listener: (event: DomainEvent) => void): Promise<() => Promise<void>> {
    this.eventListeners.add(listener);
    if (!this.nativeSubscription) {
      this.nativeSubscription = call(() => this.n.subscribeEvents((e) => this.dispatch(e)));
    }
    try {
      await this.nativeSubscription;
    } catch (e) {
      this.eventListeners.delete(listener);
      this.nativeSubscription = null;
      throw e;
    }
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      this.eventListeners.delete(listener);
      if (this.eventListeners.size > 0 || !this.nativeSubscription) return;
      // The last listener left: drop the native registration so the process may exit.
      const id = await this.nativeSubscription;
      this.nativeSubscription = null;
      await call(() => this.n.unsubscribeEvents(id));
    };
  }

  onClose(listener: (reason: CloseReason) => void): void {
    this.closeListeners.push(listener);
  }

  async close(): Promise<void> {
    this.eventListeners.clear();
    this.nativeSubscription = null;
    await call(() => this.n.close());
  }

  private dispatch(e: DomainEvent): void {
    for (const l of [...this.eventListeners]) {
      // A throwing listener must not take down the event pipe (or the process).
      try {
        l(e);
      } catch (err) {
        process.emitWarning(`libvirt event listener threw: ${(err as Error)?.message ?? err}`);
      }
    }
  }

  private handleClose(reason: CloseReason): void {
    this.closedByLibvirt = true;
    for (const l of this.closeListeners) {
      try {
        l(reason);
      } catch (err) {
        process.emitWarning(`libvirt close listener threw: ${(err as Error)?.message ?? err}`);
      }
    }
  }
}

/** Opens a libvirt connection (default qemu:///system) with keepalive and a close callback. */
export async function openConnection(uri: string = DEFAULT_URI, opts: OpenOptions = {}): Promise<Connection> {
  return LibvirtConnection.open(uri, opts);
}

export function libvirtLibraryVersion(): string {
  return native.libraryVersion();
}
