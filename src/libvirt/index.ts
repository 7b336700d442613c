// Typed facade over the native libvirt binding: Promise-based calls with a bounded wait,
// LibvirtError rejections, and one native event subscription shared by any number of listeners.
import { DEFAULTS } from '../generated/api.js';
import { native, type NativeConnection } from './binding.js';
import { LibvirtBusy, LibvirtError, LibvirtTimeout } from './errors.js';
import type { BackupXml, CloseReason, Connection, DiskXml, DomainEvent, OpenOptions, SnapshotXml, Versions } from './types.js';

export * from './types.js';
export { LibvirtBusy, LibvirtError, LibvirtTimeout, VirErrorCode } from './errors.js';

/** The config schema's uri default. */
export const DEFAULT_URI: string = DEFAULTS.AgentConfig.uri;
/** Below libvirt's keepalive drop (5 s × 3 probes by default), so a hung call is named as such. */
export const DEFAULT_CALL_TIMEOUT_MS = 10_000;
/** Domain lanes (each a thread with its own libvirt connection): one per guest of a busy host's burst. */
export const DEFAULT_DOMAIN_THREADS = 8;

/** Rewraps the binding's rejections as LibvirtError; TypeErrors (bad arguments) pass through. */
function rewrap(e: unknown): never {
  if (e instanceof Error && (e as { libvirt?: unknown }).libvirt === true) {
    const { code, domain, reason } = e as unknown as { code: number; domain: number; reason?: string };
    if (reason === 'busy' || reason === 'queued') throw new LibvirtBusy(e.message, reason === 'queued');
    if (reason === 'timeout') throw new LibvirtTimeout(e.message);
    throw new LibvirtError(code, domain, e.message);
  }
  throw e;
}

/**
 * Settles with p, or rejects with LibvirtTimeout after ms. The timer keeps the process alive
 * while a call is awaited (the binding itself never does); onLate sees a result that came too late.
 */
function bounded<T>(p: Promise<T>, ms: number, what: string, onLate?: (v: T) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      reject(new LibvirtTimeout(`libvirtd did not answer ${what} within ${ms} ms; it may still take effect`));
    }, ms);
    p.then(
      (v) => (late ? onLate?.(v) : (clearTimeout(timer), resolve(v))),
      (e: unknown) => {
        if (!late) {
          clearTimeout(timer);
          reject(e);
        }
      },
    );
  });
}

class LibvirtConnection implements Connection {
  private closeListeners: Array<(reason: CloseReason) => void> = [];
  private eventListeners = new Set<(e: DomainEvent) => void>();
  /** The native registration: true/false, or null when a call about it failed (unknown). */
  private subscribed: boolean | null = false;
  /** (De)registrations run one at a time, in call order. */
  private subscriptionChain: Promise<void> = Promise.resolve();
  private closeReason: CloseReason | null = null;
  private closing: Promise<void> | null = null;
  /** A connection's versions never change (a libvirtd restart means a new connection). */
  private versionsKnown: Versions | null = null;

  private constructor(
    readonly uri: string,
    private readonly n: NativeConnection,
    private readonly timeoutMs: number,
    private readonly queueTimeoutMs: number,
  ) {
    // The native object holds these as its own properties: nothing here roots the connection.
    n.setHandlers(
      (e) => this.dispatch(e),
      (reason) => this.handleClose(reason),
    );
  }

  static async open(uri: string, opts: OpenOptions): Promise<LibvirtConnection> {
    const timeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const queueTimeoutMs = opts.queueTimeoutMs ?? 2 * timeoutMs;
    const domainThreads = opts.domainThreads ?? DEFAULT_DOMAIN_THREADS;
    const pending = native.open(uri, { ...opts, callTimeoutMs: timeoutMs, queueTimeoutMs, domainThreads });
    // An open that answers after its bound is closed at once, never leaked.
    const n = await bounded(pending, timeoutMs, `the open of ${uri}`, (late) => void late.close()).catch(rewrap);
    const self = new LibvirtConnection(uri, n, timeoutMs, queueTimeoutMs);
    // Read once now, so versions() answers even while libvirtd hangs later.
    self.versions().catch(() => {});
    return self;
  }

  get closed(): boolean {
    return this.closeReason !== null || this.n.isClosed();
  }

  /** Not async on purpose: a bad argument must throw its TypeError synchronously. */
  private call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const p = fn();
    const id = (p as { callId?: number }).callId;
    return (id === undefined ? bounded(p, this.timeoutMs, what) : this.watch(p, id, what)).catch(rewrap);
  }

  /**
   * Settles with p. LibvirtTimeout once libvirtd has had the call (a thread took it) for the
   * call bound: the wait in the binding's queue, behind calls on the same domain, does not
   * count. A call still queued after the queue bound is withdrawn, never sent, and rejects
   * with the binding's LibvirtBusy. Timers fire only at bounds; the state is read from the binding then.
   */
  private watch<T>(p: Promise<T>, id: number, what: string): Promise<T> {
    const queuedAt = Date.now();
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const arm = (ms: number) => (timer = setTimeout(check, Math.max(1, Math.ceil(ms))));
      const check = (): void => {
        if (settled) return;
        const runningFor = this.n.callState(id);
        if (runningFor >= this.timeoutMs) {
          settled = true;
          reject(new LibvirtTimeout(`libvirtd did not answer ${what} within ${this.timeoutMs} ms; it may still take effect`));
        } else if (runningFor >= 0) {
          arm(this.timeoutMs - runningFor);
        } else if (runningFor === -1) {
          const waited = Date.now() - queuedAt;
          // Withdrawn: p rejects now with the binding's busy error.
          if (waited >= this.queueTimeoutMs && this.n.cancelQueued(id)) return;
          arm(waited >= this.queueTimeoutMs ? 1 : Math.min(this.timeoutMs, this.queueTimeoutMs - waited));
        } else {
          arm(this.timeoutMs); // answered: its result is on its way to this thread
        }
      };
      arm(this.timeoutMs);
      p.then(
        (v) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          reject(e);
        },
      );
    });
  }

  lookupDomain(key: string) {
    return this.call('lookupDomain', () => this.n.lookupDomain(key));
  }
  listDomains(opts?: { activeOnly?: boolean }) {
    return this.call('listDomains', () => this.n.listDomains(opts));
  }
  getXml(domain: string, opts?: { inactive?: boolean }) {
    return this.call('getXml', () => this.n.getXml(domain, opts));
  }
  storageVolPath(pool: string, volume: string) {
    return this.call('storageVolPath', () => this.n.storageVolPath(pool, volume));
  }
  storagePoolXml(pool: string) {
    return this.call('storagePoolXml', () => this.n.storagePoolXml(pool));
  }
  storagePoolRefresh(pool: string) {
    return this.call('storagePoolRefresh', () => this.n.storagePoolRefresh(pool));
  }
  blockCopy(domain: string, disk: string, xml: DiskXml, opts?: Parameters<Connection['blockCopy']>[3]) {
    return this.call('blockCopy', () => this.n.blockCopy(domain, disk, xml, opts));
  }
  snapshotCreateXml(domain: string, xml: SnapshotXml, opts?: Parameters<Connection['snapshotCreateXml']>[2]) {
    return this.call('snapshotCreateXml', () => this.n.snapshotCreateXml(domain, xml, opts));
  }
  blockCommit(domain: string, disk: string, opts?: Parameters<Connection['blockCommit']>[2]) {
    return this.call('blockCommit', () => this.n.blockCommit(domain, disk, opts));
  }
  blockPull(domain: string, disk: string, opts?: Parameters<Connection['blockPull']>[2]) {
    return this.call('blockPull', () => this.n.blockPull(domain, disk, opts));
  }
  backupBegin(domain: string, xml: BackupXml, checkpointXml: BackupXml | null, opts?: { reuseExternal?: boolean }) {
    return this.call('backupBegin', () => this.n.backupBegin(domain, xml, checkpointXml, opts));
  }
  backupGetXmlDesc(domain: string) {
    return this.call('backupGetXmlDesc', () => this.n.backupGetXmlDesc(domain));
  }
  abortJob(domain: string) {
    return this.call('abortJob', () => this.n.abortJob(domain));
  }
  getJobStats(domain: string, opts?: Parameters<Connection['getJobStats']>[1]) {
    return this.call('getJobStats', () => this.n.getJobStats(domain, opts));
  }
  listCheckpoints(domain: string) {
    return this.call('listCheckpoints', () => this.n.listCheckpoints(domain));
  }
  checkpointDelete(domain: string, name: string, opts?: { metadataOnly?: boolean }) {
    return this.call('checkpointDelete', () => this.n.checkpointDelete(domain, name, opts));
  }
  getBlockJobInfo(domain: string, disk: string) {
    return this.call('getBlockJobInfo', () => this.n.getBlockJobInfo(domain, disk));
  }
  getBlockInfo(domain: string, disk: string) {
    return this.call('getBlockInfo', () => this.n.getBlockInfo(domain, disk));
  }
  blockJobAbort(domain: string, disk: string, opts?: Parameters<Connection['blockJobAbort']>[2]) {
    return this.call('blockJobAbort', () => this.n.blockJobAbort(domain, disk, opts));
  }
  blockJobSetSpeed(domain: string, disk: string, bandwidth: bigint) {
    return this.call('blockJobSetSpeed', () => this.n.blockJobSetSpeed(domain, disk, bandwidth));
  }
  async versions(): Promise<Versions> {
    if (this.versionsKnown && !this.closing) return { ...this.versionsKnown };
    const v = await this.call('versions', () => this.n.versions());
    this.versionsKnown = v;
    return { ...v };
  }
  suspend(domain: string) {
    return this.call('suspend', () => this.n.suspend(domain));
  }
  resume(domain: string) {
    return this.call('resume', () => this.n.resume(domain));
  }
  fsFreeze(domain: string) {
    return this.call('fsFreeze', () => this.n.fsFreeze(domain));
  }
  fsThaw(domain: string) {
    return this.call('fsThaw', () => this.n.fsThaw(domain));
  }
  getState(domain: string) {
    return this.call('getState', () => this.n.getState(domain));
  }

  /** Calls queued or running on this connection's threads (including ones whose caller gave up). */
  pendingCalls(): number {
    return this.n.pendingCalls();
  }

  async onEvent(listener: (event: DomainEvent) => void): Promise<() => Promise<void>> {
    this.eventListeners.add(listener);
    try {
      await this.syncSubscription();
    } catch (e) {
      this.eventListeners.delete(listener);
      throw e;
    }
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      this.eventListeners.delete(listener);
      // The last listener left: drop the native registration so the process may exit.
      await this.syncSubscription();
    };
  }

  /**
   * Brings the native registration in line with the listeners, after every earlier change: an
   * unsubscribe still deregistering and a subscribe that follows it never overlap, and a listener
   * added meanwhile finds the registration in place when its own turn comes.
   */
  private syncSubscription(): Promise<void> {
    const step = async () => {
      const want = this.eventListeners.size > 0;
      if (this.subscribed === want) return;
      this.subscribed = null;
      if (want) await this.call('subscribeEvents', () => this.n.subscribeEvents());
      else await this.call('unsubscribeEvents', () => this.n.unsubscribeEvents());
      this.subscribed = want;
    };
    const p = this.subscriptionChain.then(step);
    this.subscriptionChain = p.catch(() => {});
    return p;
  }

  onClose(listener: (reason: CloseReason) => void): void {
    if (this.closing) return;
    this.closeListeners.push(listener);
    const reason = this.closeReason;
    if (reason !== null) queueMicrotask(() => this.notifyClose(listener, reason));
  }

  /** Idempotent; resolves within the call bound even if libvirtd hangs (the close then finishes in the background). */
  close(): Promise<void> {
    this.closing ??= (() => {
      this.eventListeners.clear();
      this.closeListeners = [];
      return bounded(this.n.close(), this.timeoutMs, 'the close').catch(() => {});
    })();
    return this.closing;
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
    if (this.closing || this.closeReason !== null) return;
    this.closeReason = reason;
    for (const l of [...this.closeListeners]) this.notifyClose(l, reason);
  }

  private notifyClose(l: (reason: CloseReason) => void, reason: CloseReason): void {
    if (this.closing || !this.closeListeners.includes(l)) return;
    try {
      l(reason);
    } catch (err) {
      process.emitWarning(`libvirt close listener threw: ${(err as Error)?.message ?? err}`);
    }
  }
}

/** Opens a libvirt connection (default qemu:///system) with keepalive and a close callback. */
export async function openConnection(uri: string = DEFAULT_URI, opts: OpenOptions = {}): Promise<Connection & { pendingCalls(): number }> {
  return LibvirtConnection.open(uri, opts);
}
