// The only importer of the compiled addon. Its raw shape is described here once; the rest
// of the code uses the Connection interface from ./types.ts.
import { createRequire } from 'node:module';
import type { BlockCopyOptions, BlockJobAbortOptions, BlockJobInfo, CloseReason, DomainEvent, DomainRef, MetadataOptions, OpenOptions, Versions } from './types.js';

export interface NativeConnection {
  close(): Promise<void>;
  isClosed(): boolean;
  lookupDomain(key: string): Promise<DomainRef>;
  listDomains(opts?: { activeOnly?: boolean }): Promise<DomainRef[]>;
  getXml(domain: string, opts?: { inactive?: boolean }): Promise<string>;
  getMetadata(domain: string, uri: string, opts?: MetadataOptions): Promise<string | null>;
  setMetadata(domain: string, uri: string, key: string, xml: string | null, opts?: MetadataOptions): Promise<void>;
  blockCopy(domain: string, disk: string, xml: string, opts?: BlockCopyOptions): Promise<void>;
  getBlockJobInfo(domain: string, disk: string): Promise<BlockJobInfo | null>;
  blockJobAbort(domain: string, disk: string, opts?: BlockJobAbortOptions): Promise<void>;
  blockJobSetSpeed(domain: string, disk: string, bandwidth: bigint | number): Promise<void>;
  versions(): Promise<Versions>;
  subscribeEvents(listener: (e: DomainEvent) => void): Promise<number>;
  unsubscribeEvents(id: number): Promise<void>;
}

export interface NativeBinding {
  open(uri: string, opts: OpenOptions, onClose?: (reason: CloseReason) => void): Promise<NativeConnection>;
  libraryVersion(): string;
}

// dist/src/libvirt/ → <package>/build/Release/
const require = createRequire(import.meta.url);
export const native: NativeBinding = require('../../../build/Release/blockcopy_libvirt.node');
