// The only importer of the compiled addon. Its raw shape is described here once; the rest
// of the code uses the Connection interface from ./types.ts.
import { createRequire } from 'node:module';
import type { CloseReason, Connection, DomainEvent, OpenOptions } from './types.js';

/** The addon's connection: the facade's methods, plus the raw event registration. */
export type NativeConnection = Omit<Connection, 'uri' | 'closed' | 'onEvent' | 'onClose'> & {
  isClosed(): boolean;
  subscribeEvents(listener: (e: DomainEvent) => void): Promise<number>;
  unsubscribeEvents(id: number): Promise<void>;
};

export interface NativeBinding {
  open(uri: string, opts: OpenOptions, onClose?: (reason: CloseReason) => void): Promise<NativeConnection>;
  libraryVersion(): string;
}

// dist/src/libvirt/ → <package>/build/Release/. Loaded on first use, so that importing the
// facade (for LibvirtError, the types) needs no compiled addon: the unit tests run without one.
const require = createRequire(import.meta.url);
let addon: NativeBinding | undefined;
const load = (): NativeBinding => (addon ??= require('../../../build/Release/blockcopy_libvirt.node') as NativeBinding);
export const native: NativeBinding = {
  open: (...args) => load().open(...args),
  libraryVersion: () => load().libraryVersion(),
};
