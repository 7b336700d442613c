// The typed surface of the native binding. Everything above src/libvirt/ sees only these
// types; only src/libvirt/binding.ts loads the .node file.

/** A domain as identified by libvirt. Lookups accept a name or a UUID string. */
export interface DomainRef {
  name: string;
  uuid: string;
  /** libvirt domain id; -1 when the domain is not running. */
  id: number;
  active: boolean;
  persistent: boolean;
}

export type DomainRunState = 'nostate' | 'running' | 'blocked' | 'paused' | 'shutdown' | 'shutoff' | 'crashed' | 'pmsuspended';

export interface DomainState {
  state: DomainRunState;
  /** virDomain<State>Reason; for paused, VIR_DOMAIN_PAUSED_USER (1) is a virDomainSuspend's. */
  reason: number;
}

/** virDomainPausedReason: paused by virDomainSuspend (an operator's `virsh suspend`, or the agent). */
export const PAUSED_USER = 1;

export type BlockJobType = 'unknown' | 'pull' | 'copy' | 'commit' | 'activeCommit' | 'backup';

export interface BlockJobInfo {
  type: BlockJobType;
  /** Bandwidth limit in bytes/s (0 = unlimited). Converted from MiB/s when libvirt could not report bytes. */
  bandwidth: bigint;
  /** Which unit libvirt reported the bandwidth in before conversion. */
  bandwidthSource: 'bytes' | 'MiB';
  cur: bigint;
  end: bigint;
}

/** virDomainGetBlockInfo: a disk's sizes in bytes. */
export interface BlockInfo {
  /** The size the guest sees (virtual size). */
  capacity: bigint;
  /** What the top image occupies on its storage (allocated bytes of a file; QEMU's highest written offset of a non-raw block device). */
  allocation: bigint;
  /** The size of what holds the top image (a file's size, a block device's size). */
  physical: bigint;
}

export interface BlockCopyOptions {
  shallow?: boolean;
  reuseExternal?: boolean;
  transientJob?: boolean;
  synchronousWrites?: boolean;
  /** bytes/s; 0 or undefined = unlimited */
  bandwidth?: bigint;
  /** bytes, power of two */
  granularity?: number;
  /** bytes */
  bufSize?: bigint;
}

/** virDomainSnapshotCreateXML flags. */
export interface SnapshotCreateOptions {
  diskOnly?: boolean;
  /** No libvirt snapshot object is kept: the overlays are the only trace. */
  noMetadata?: boolean;
  /** All disks or none. */
  atomic?: boolean;
  /** Freeze the guest's filesystems through the QEMU guest agent for the moment of the snapshot. */
  quiesce?: boolean;
  reuseExternal?: boolean;
}

/** virDomainBlockCommit. Never VIR_DOMAIN_BLOCK_COMMIT_DELETE: merged layers are the agent's to remove. */
export interface BlockCommitOptions {
  /** The layer merged into: a path or libvirt's `vda[N]` name; undefined = the deepest layer. */
  base?: string;
  /** The top layer merged: a path or `vda[N]`; undefined = the active layer. */
  top?: string;
  /** bytes/s; 0 or undefined = unlimited */
  bandwidth?: bigint;
  /** base = the layer right below top */
  shallow?: boolean;
  /** Required when top is the active layer: the job then waits at ready for a pivot or an abort. */
  active?: boolean;
  /** Keep backing names relative in the layers above base. */
  relative?: boolean;
}

/** virDomainBlockRebase without COPY: a pull of the layers above base into the active layer. */
export interface BlockPullOptions {
  /** The layer kept as the new backing: a path or `vda[N]`; undefined = pull the whole chain. */
  base?: string;
  /** bytes/s; 0 or undefined = unlimited */
  bandwidth?: bigint;
}

export interface BlockJobAbortOptions {
  /** Return at once; completion arrives as a BLOCK_JOB_2 event. */
  async?: boolean;
  /** Switch the guest onto the copy (only valid once the job is ready). */
  pivot?: boolean;
}

export type BlockJobStatus = 'completed' | 'failed' | 'canceled' | 'ready';

export interface BlockJobEvent {
  kind: 'blockJob';
  domain: { name: string; uuid: string };
  /** Disk target (BLOCK_JOB_2 reports the target, e.g. "vda"). */
  disk: string;
  type: BlockJobType;
  status: BlockJobStatus;
}

export type LifecycleEventName =
  'defined' | 'undefined' | 'started' | 'suspended' | 'resumed' | 'stopped' | 'shutdown' | 'pmsuspended' | 'crashed' | 'unknown';

export interface LifecycleEvent {
  kind: 'lifecycle';
  domain: { name: string; uuid: string };
  event: LifecycleEventName;
  /** libvirt's detail code for the event (virDomainEvent*DetailType). */
  detail: number;
}

/**
 * A domain job's statistics as libvirt names them (VIR_DOMAIN_JOB_* fields: `operation`,
 * `time_elapsed`, `disk_total`, `disk_processed`, `success`, `errmsg`, …): 32-bit ints and
 * doubles as numbers, 64-bit ints as bigints. Fields a job does not have are absent.
 */
export type JobStatsFields = Record<string, number | bigint | boolean | string>;

/** VIR_DOMAIN_EVENT_ID_JOB_COMPLETED: a domain job (backup, migration) ended; its stats. */
export interface JobCompletedEvent {
  kind: 'jobCompleted';
  domain: { name: string; uuid: string };
  /** As getJobStats({completed}) would report them; `success` false plus `errmsg` on failure. */
  stats: JobStatsFields;
}

export type DomainEvent = BlockJobEvent | LifecycleEvent | JobCompletedEvent;

/** virDomainJobType. */
export type DomainJobType = 'none' | 'bounded' | 'unbounded' | 'completed' | 'failed' | 'cancelled' | 'unknown';

/** virDomainJobOperation (the `operation` stats field): 9 = backup. */
export const JOB_OPERATION_BACKUP = 9;

export interface DomainJobStats {
  type: DomainJobType;
  stats: JobStatsFields;
}

export interface JobStatsOptions {
  /** The last completed job's stats instead of the current job's (VIR_DOMAIN_JOB_STATS_COMPLETED). */
  completed?: boolean;
  /** Leave those stats in libvirt for later readers (VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED). */
  keepCompleted?: boolean;
}

/** A checkpoint (a set of dirty bitmaps) of a domain, from virDomainListAllCheckpoints. */
export interface CheckpointEntry {
  name: string;
  /** The checkpoint before it; null for the first. */
  parent: string | null;
  /** virDomainCheckpointGetXMLDesc(NO_DOMAIN): creationTime, disks and bitmaps. */
  xml: string;
}

export type CloseReason = 'error' | 'eof' | 'keepalive' | 'client' | 'unknown';

export interface Versions {
  /** libvirt library version, e.g. "9.0.0" */
  libvirt: string;
  /** hypervisor driver name, e.g. "QEMU" */
  hypervisorType: string;
  /** hypervisor version, e.g. "7.2.0" */
  hypervisor: string;
}

declare const diskXmlBrand: unique symbol;
/**
 * A destination <disk> element the agent serialized itself from checked fields
 * (src/destination/xml.ts toDiskXml is its only producer): a caller's string cannot reach
 * virDomainBlockCopy.
 */
export type DiskXml = string & { readonly [diskXmlBrand]: true };

declare const backupXmlBrand: unique symbol;
/**
 * A <domainbackup> or <domaincheckpoint> document the agent serialized itself from checked
 * fields (src/jobs/kinds/backup/xml.ts is its only producer).
 */
export type BackupXml = string & { readonly [backupXmlBrand]: true };

declare const snapshotXmlBrand: unique symbol;
/**
 * A <domainsnapshot> document the agent serialized itself from checked fields
 * (src/jobs/kinds/snapshot/xml.ts is its only producer).
 */
export type SnapshotXml = string & { readonly [snapshotXmlBrand]: true };

/**
 * One open libvirt connection. All methods run on the connection's own threads and return
 * Promises; each call's wait is bounded (LibvirtTimeout) and so is the number of calls waiting
 * (LibvirtBusy), so a hung libvirtd never blocks the JS thread or the process's other I/O.
 */
export interface Connection {
  readonly uri: string;
  readonly closed: boolean;
  lookupDomain(key: string): Promise<DomainRef>;
  listDomains(opts?: { activeOnly?: boolean }): Promise<DomainRef[]>;
  getXml(domain: string, opts?: { inactive?: boolean }): Promise<string>;
  /** The path of storage pool `pool`'s volume `volume` (virStorageVolGetPath). */
  storageVolPath(pool: string, volume: string): Promise<string>;
  /** Storage pool `pool`'s XML (virStoragePoolLookupByName + virStoragePoolGetXMLDesc). */
  storagePoolXml(pool: string): Promise<string>;
  /** virStoragePoolRefresh: the pool's volume list picks up new files. */
  storagePoolRefresh(pool: string): Promise<void>;
  blockCopy(domain: string, disk: string, destinationXml: DiskXml, opts?: BlockCopyOptions): Promise<void>;
  /** virDomainSnapshotCreateXML; resolves to the snapshot's name (the handle is freed). */
  snapshotCreateXml(domain: string, xml: SnapshotXml, opts?: SnapshotCreateOptions): Promise<string>;
  /** Starts a commit block job (virDomainBlockCommit, bandwidth in bytes/s). */
  blockCommit(domain: string, disk: string, opts?: BlockCommitOptions): Promise<void>;
  /** Starts a pull block job (virDomainBlockRebase without COPY, bandwidth in bytes/s). */
  blockPull(domain: string, disk: string, opts?: BlockPullOptions): Promise<void>;
  /**
   * Starts a push-mode backup (virDomainBackupBegin); with checkpointXml the checkpoint is
   * created at the same moment. The job then runs inside QEMU: JOB_COMPLETED tells its end.
   */
  backupBegin(domain: string, backupXml: BackupXml, checkpointXml: BackupXml | null, opts?: { reuseExternal?: boolean }): Promise<void>;
  /** The running backup's XML (virDomainBackupGetXMLDesc); fails when no backup runs. */
  backupGetXmlDesc(domain: string): Promise<string>;
  /** virDomainAbortJob: aborts the domain's current async job, whatever it is. */
  abortJob(domain: string): Promise<void>;
  /** virDomainGetJobStats: the current (or, with completed, the last completed) domain job. */
  getJobStats(domain: string, opts?: JobStatsOptions): Promise<DomainJobStats>;
  /** The domain's checkpoints, parents before children. */
  listCheckpoints(domain: string): Promise<CheckpointEntry[]>;
  /** virDomainCheckpointDelete of one checkpoint (its bitmaps too unless metadataOnly). */
  checkpointDelete(domain: string, name: string, opts?: { metadataOnly?: boolean }): Promise<void>;
  /** null when the disk has no block job. */
  getBlockJobInfo(domain: string, disk: string): Promise<BlockJobInfo | null>;
  /** The disk's sizes (virDomainGetBlockInfo); `disk` is a target (vda) or the top image's path. */
  getBlockInfo(domain: string, disk: string): Promise<BlockInfo>;
  blockJobAbort(domain: string, disk: string, opts?: BlockJobAbortOptions): Promise<void>;
  blockJobSetSpeed(domain: string, disk: string, bandwidthBytesPerSecond: bigint): Promise<void>;
  versions(): Promise<Versions>;
  /** Pauses the guest's vCPUs (virDomainSuspend). */
  suspend(domain: string): Promise<number>;
  resume(domain: string): Promise<number>;
  /** Freezes every guest filesystem through the QEMU guest agent; resolves to how many were frozen. */
  fsFreeze(domain: string): Promise<number>;
  fsThaw(domain: string): Promise<number>;
  /** The run state (virDomainGetState) and libvirt's reason code for it (for paused: 1 = user). */
  getState(domain: string): Promise<DomainState>;
  /** Subscribe to BLOCK_JOB_2, lifecycle and JOB_COMPLETED events of all domains. Returns the unsubscribe function. */
  onEvent(listener: (event: DomainEvent) => void): Promise<() => Promise<void>>;
  /**
   * Called once when the connection is closed by libvirt (not by close()); a listener added
   * after that close is called at once (asynchronously). Never called after close().
   */
  onClose(listener: (reason: CloseReason) => void): void;
  /** Idempotent. */
  close(): Promise<void>;
}

export interface OpenOptions {
  /** seconds between keepalive probes; 0 disables keepalive (default 5) */
  keepaliveInterval?: number;
  /** unanswered probes before the connection is considered dead (default 3) */
  keepaliveCount?: number;
  /**
   * bound on libvirtd's answer to each call, open and close included, in ms (default 10000):
   * counted from when a thread takes the call, not from when it was queued
   */
  callTimeoutMs?: number;
  /**
   * bound on a call's wait in the binding's own queue, behind calls on the same domain (or, for
   * calls naming no domain, on the connection), in ms (default 2 × callTimeoutMs); past it the
   * call is never sent and fails with LibvirtBusy
   */
  queueTimeoutMs?: number;
  /** threads for calls on domains, each with its own libvirt connection (default 8; 0 = the main thread for all) */
  domainThreads?: number;
  /** calls queued or running before new ones are refused with LibvirtBusy (default 64) */
  maxPendingCalls?: number;
}
