// The only importer of the compiled addon. Its raw shape is described here once; the rest
// of the code uses the Connection interface from ./types.ts.
import { createRequire } from 'node:module';
import type { CloseReason, Connection, DomainEvent, OpenOptions } from './types.js';

/** The addon's connection: the facade's calls, plus the raw event and close plumbing. */
export type NativeConnection = Omit<Connection, 'uri' | 'closed' | 'onEvent' | 'onClose'> & {
  isClosed(): boolean;
  /** Installs the callbacks (held by the object only) and replays a close that came first. */
  setHandlers(onEvent: (e: DomainEvent) => void, onClose: (reason: CloseReason) => void): void;
  /** Calls queued or running on the connection's threads, including abandoned ones. */
  pendingCalls(): number;
  /** By a call Promise's callId: ms since a thread took it, -1 while queued, -2 once done. */
  callState(id: number): number;
  /** A call still queued never runs; its Promise rejects at once (busy). False if it had left the queue. */
  cancelQueued(id: number): boolean;
  /** Idempotent, one registration per connection; the facade serializes the two. */
  subscribeEvents(): Promise<void>;
  unsubscribeEvents(): Promise<void>;
};

export interface NativeBinding {
  open(uri: string, opts: Required<Pick<OpenOptions, 'callTimeoutMs'>> & OpenOptions): Promise<NativeConnection>;
  /** flock(2) (native/src/lock.cc, not libvirt): true once held, false if held elsewhere (nonblocking). */
  flock(fd: number, exclusive: boolean, nonblocking: boolean): boolean;
  /** One datagram to a unix socket ('@' = abstract), nonblocking (native/src/notify.cc): 0 once sent, else the errno. */
  notifySocket(path: string, message: string): number;
  /** Runs of a one-second timer on libvirt's event loop thread (registered by the first call); -1 if none. */
  eventLoopTicks(): number;
}

// dist/src/libvirt/ → <package>/build/Release/. Loaded on first use, so that importing the
// facade (for LibvirtError, the types) needs no compiled addon: the unit tests run without one.
const require = createRequire(import.meta.url);
let addon: NativeBinding | undefined;
const load = (): NativeBinding => (addon ??= require('../../../build/Release/blockcopy_libvirt.node') as NativeBinding);
export const native: NativeBinding = {
  open: (...args) => load().open(...args),
  flock: (...args) => load().flock(...args),
  notifySocket: (...args) => load().notifySocket(...args),
  eventLoopTicks: () => load().eventLoopTicks(),
};
