// A stand-in libvirt Connection for fast tests of the job manager's logic. It mimics what
// libvirt 9 was seen to do (error codes and messages, XML shape, async aborts followed by a
// BLOCK_JOB_2 event) but proves nothing about real copies: test/integration/jobs.test.ts does.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { Test } from 'tap';
import { join } from 'node:path';
import {
  LibvirtError,
  LibvirtTimeout,
  PAUSED_USER,
  VirErrorCode,
  type BlockCopyOptions,
  type BlockJobAbortOptions,
  type BlockCommitOptions,
  type BlockInfo,
  type BlockJobInfo,
  type BlockJobType,
  type BlockPullOptions,
  type CheckpointEntry,
  type CloseReason,
  type Connection,
  type DomainEvent,
  type DomainJobStats,
  type DomainRef,
  type DomainState,
  type SnapshotCreateOptions,
  type Versions,
} from '../../src/libvirt/index.js';
import type { JobRecord } from '../../src/jobs/journal.js';
import { makeDestinationCheck } from '../../src/destination/policy.js';

export interface FakeMirror {
  path: string;
  format: string | null;
  type: 'file' | 'block';
  /** libvirt's mirror phase: null while copying, then yes | pivot | abort */
  ready: null | 'yes' | 'pivot' | 'abort';
}

export interface FakeDisk {
  target: string;
  device: 'disk' | 'cdrom';
  type: 'file' | 'block' | 'network';
  source: string | null;
  format: string;
  mirror: FakeMirror | null;
  job: { cur: bigint; end: bigint; bandwidth: bigint; type?: BlockJobType } | null;
  /** The backing chain below the source, top first (external snapshots push onto it). */
  backing?: string[];
  /** The persistent definition's source (persistent domains). */
  configSource?: string | null;
}

export interface FakeDomain {
  name: string;
  uuid: string;
  active: boolean;
  persistent: boolean;
  disks: FakeDisk[];
  /** libvirt's XML of the domain as given (live and inactive alike), instead of one made from `disks`. */
  xml?: string;
}

export interface Call {
  method: string;
  args: unknown[];
  /** The journal records on disk at the moment of the call. */
  journal: JobRecord[];
}

const SIDE_EFFECTS = new Set([
  'blockCopy',
  'snapshotCreateXml',
  'blockCommit',
  'blockPull',
  'blockJobAbort',
  'blockJobSetSpeed',
  'suspend',
  'resume',
  'fsFreeze',
  'fsThaw',
]);

const lverr = (code: number, message: string) => new LibvirtError(code, 10, message);
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/</g, '&lt;');
/** A live XML backing chain, top first, as libvirt nests it (indexes counting down from 3). */
const backingXml = (chain: string[], index = chain.length + 1): string =>
  chain.length === 0
    ? '<backingStore/>'
    : `<backingStore type='file' index='${index}'><format type='qcow2'/><source file='${esc(chain[0]!)}'/>${backingXml(chain.slice(1), index - 1)}</backingStore>`;

export class FakeConnection implements Connection {
  readonly uri = 'fake:///system';
  closed = false;
  domains: FakeDomain[] = [];
  calls: Call[] = [];
  private listeners = new Set<(e: DomainEvent) => void>();
  /** Refuse the next N pivots with libvirt 9's "not ready for pivot yet". */
  pivotNotReady = 0;
  /** After an async abort: send the BLOCK_JOB_2 event (false: the job just vanishes). */
  sendEndEvents = true;
  /** After an async pivot: actually switch the source (false: a pivot that silently did not happen). */
  pivotSwitches = true;
  /** After an async abort/pivot the job vanishes and libvirt never concludes it: the <mirror>
   *  stays (as libvirt 9.0 does after dropping a job across a restart). */
  dropJobs = false;
  /** ms between an async abort request and its completion. */
  endDelayMs = 5;
  /** Delays getBlockJobInfo (to keep a read in flight across a stop). */
  infoDelayMs = 0;
  /** Delays listDomains (to hold the manager in `recovering`). */
  listDelayMs = 0;
  /** Runs inside blockCopy before libvirt would add the <mirror> (to put events in that window). */
  duringBlockCopy?: () => Promise<void>;
  /** Storage volumes: "pool/volume" → path (storageVolPath). */
  volumes = new Map<string, string>();
  /** Storage pools: name → XML (storagePoolXml). */
  pools = new Map<string, string>();
  /** Domains have a QEMU guest agent that answers: fsFreeze freezes (2 filesystems), fsThaw thaws. */
  guestAgent = false;
  /** Domains whose filesystems the guest agent froze. */
  frozenFs = new Set<string>();
  /** Errors to throw from the next call of a method. */
  failNext = new Map<string, Error>();
  /** An error to throw from any call it returns one for (e.g. the getXml of one domain only). */
  failIf?: (method: string, args: unknown[]) => Error | undefined;
  /** While set, every libvirt call (but versions(), which the real connection caches) waits, like a SIGSTOPped libvirtd. */
  private frozen: { released: Promise<void>; release: () => void; timeoutMs?: number } | null = null;

  constructor(private readonly stateDir?: string) {}

  addDomain(d: Partial<Omit<FakeDomain, 'disks'>> & { name: string; disks?: Array<Partial<FakeDisk> & { target: string }> }): FakeDomain {
    const n = this.domains.length + 1;
    const dom: FakeDomain = {
      uuid: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
      active: true,
      persistent: false,
      ...d,
      disks: (d.disks ?? [{ target: 'vda' }]).map((x) => ({
        device: 'disk',
        type: 'file',
        source: `/images/${d.name}-${x.target}.qcow2`,
        format: 'qcow2',
        mirror: null,
        job: null,
        ...x,
      })),
    };
    for (const disk of dom.disks) if (dom.persistent && disk.configSource === undefined) disk.configSource = disk.source;
    this.domains.push(dom);
    return dom;
  }

  disk(dom: FakeDomain, target = 'vda'): FakeDisk {
    const d = dom.disks.find((x) => x.target === target);
    if (!d) throw new Error(`fake: no disk ${target}`);
    return d;
  }

  emit(e: DomainEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** Phase 1 done: libvirt marks the mirror ready (and sends READY unless told not to). */
  makeReady(dom: FakeDomain, target = 'vda', opts: { event?: boolean } = {}): void {
    const d = this.disk(dom, target);
    if (!d.mirror || !d.job) throw new Error('fake: no copy to make ready');
    d.job.cur = d.job.end;
    d.mirror.ready = 'yes';
    if (opts.event !== false) this.blockEvent(dom, target, 'ready');
  }

  progress(dom: FakeDomain, target: string, cur: bigint, end: bigint): void {
    const d = this.disk(dom, target);
    if (!d.job) throw new Error('fake: no job');
    d.job.cur = cur;
    d.job.end = end;
  }

  blockEvent(dom: FakeDomain, disk: string, status: 'completed' | 'failed' | 'canceled' | 'ready'): void {
    this.emit({ kind: 'blockJob', domain: { name: dom.name, uuid: dom.uuid }, disk, type: 'copy', status });
  }

  /** The domain stops (destroy): jobs vanish, a lifecycle event follows. */
  stopDomain(dom: FakeDomain): void {
    dom.active = false;
    for (const d of dom.disks) {
      d.mirror = null;
      d.job = null;
    }
    this.emit({ kind: 'lifecycle', domain: { name: dom.name, uuid: dom.uuid }, event: 'stopped', detail: 1 });
  }

  /** Another tool (virsh) starts a copy. */
  startOutside(dom: FakeDomain, target: string, dest: string, ready = false): void {
    const d = this.disk(dom, target);
    d.mirror = { path: dest, format: 'qcow2', type: 'file', ready: ready ? 'yes' : null };
    d.job = { cur: ready ? 100n : 10n, end: 100n, bandwidth: 0n };
  }

  /**
   * libvirtd stops answering: calls are recorded but wait until thaw(), or, with `timeoutMs`
   * (the binding's call bound), fail with LibvirtTimeout after it.
   */
  freeze(opts: { timeoutMs?: number } = {}): void {
    if (this.frozen) return;
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    this.frozen = { released, release, ...opts };
  }

  thaw(): void {
    this.frozen?.release();
    this.frozen = null;
  }

  private async answer(method: string): Promise<void> {
    const f = this.frozen;
    if (!f) return;
    if (f.timeoutMs === undefined) return f.released;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LibvirtTimeout(`libvirtd did not answer ${method} within ${f.timeoutMs} ms; it may still take effect`)),
        f.timeoutMs,
      );
    });
    try {
      await Promise.race([f.released, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  sideEffects(): Call[] {
    return this.calls.filter((c) => SIDE_EFFECTS.has(c.method));
  }

  private record(method: string, args: unknown[]): void {
    this.calls.push({ method, args, journal: SIDE_EFFECTS.has(method) ? this.readJournal() : [] });
    const err = this.failNext.get(method);
    if (err) {
      this.failNext.delete(method);
      throw err;
    }
    const cond = this.failIf?.(method, args);
    if (cond) throw cond;
  }

  readJournal(): JobRecord[] {
    if (!this.stateDir) return [];
    try {
      return readdirSync(this.stateDir)
        .filter((f) => /^job-.*\.json$/.test(f))
        .map((f) => JSON.parse(readFileSync(join(this.stateDir!, f), 'utf8')) as JobRecord);
    } catch {
      return [];
    }
  }

  private find(key: string): FakeDomain {
    const d = this.domains.find((x) => x.name === key || x.uuid === key);
    if (!d) throw lverr(VirErrorCode.NO_DOMAIN, `Domain not found: no domain with matching name '${key}'`);
    return d;
  }

  private running(key: string): FakeDomain {
    const d = this.find(key);
    if (!d.active) throw lverr(VirErrorCode.OPERATION_INVALID, 'Requested operation is not valid: domain is not running');
    return d;
  }

  private ref(d: FakeDomain): DomainRef {
    return { name: d.name, uuid: d.uuid, id: d.active ? 1 : -1, active: d.active, persistent: d.persistent };
  }

  async lookupDomain(key: string): Promise<DomainRef> {
    this.record('lookupDomain', [key]);
    await this.answer('lookupDomain');
    return this.ref(this.find(key));
  }

  async listDomains(opts?: { activeOnly?: boolean }): Promise<DomainRef[]> {
    this.record('listDomains', [opts]);
    await this.answer('listDomains');
    if (this.listDelayMs) await new Promise((r) => setTimeout(r, this.listDelayMs));
    return this.domains.filter((d) => !opts?.activeOnly || d.active).map((d) => this.ref(d));
  }

  async getXml(domain: string, opts?: { inactive?: boolean }): Promise<string> {
    this.record('getXml', [domain, opts]);
    await this.answer('getXml');
    const d = this.find(domain);
    if (d.xml !== undefined) return d.xml;
    const inactive = !!opts?.inactive || !d.active;
    const disks = d.disks
      .map((k) => {
        const source = inactive && d.persistent ? (k.configSource ?? null) : k.source;
        const srcXml =
          source === null
            ? ''
            : k.type === 'block'
              ? `<source dev='${esc(source)}' index='1'/>`
              : k.type === 'network'
                ? `<source protocol='nbd' name='${esc(source)}'><host name='nbd.example' port='10809'/></source>`
                : `<source file='${esc(source)}' index='1'/>`;
        const m =
          !inactive && k.mirror
            ? `<mirror type='${k.mirror.type}' job='copy'${k.mirror.ready ? ` ready='${k.mirror.ready}'` : ''}>` +
              `${k.mirror.format ? `<format type='${k.mirror.format}'/>` : ''}` +
              `<source ${k.mirror.type === 'block' ? 'dev' : 'file'}='${esc(k.mirror.path)}' index='5'/><backingStore/></mirror>`
            : '';
        return (
          `    <disk type='${k.type}' device='${k.device}'>\n      <driver name='qemu' type='${k.format}'/>\n      ${srcXml}\n` +
          `      ${backingXml(inactive ? [] : (k.backing ?? []))}\n      ${m}\n      <target dev='${k.target}' bus='virtio'/>\n    </disk>`
        );
      })
      .join('\n');
    const channel = this.guestAgent ? "\n    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>" : '';
    return `<domain type='kvm'${d.active && !inactive ? " id='1'" : ''}>\n  <name>${d.name}</name>\n  <uuid>${d.uuid}</uuid>\n  <devices>\n${disks}${channel}\n  </devices>\n</domain>\n`;
  }

  async storageVolPath(pool: string, volume: string): Promise<string> {
    this.record('storageVolPath', [pool, volume]);
    await this.answer('storageVolPath');
    if (![...this.volumes.keys()].some((k) => k.startsWith(`${pool}/`)))
      throw new LibvirtError(VirErrorCode.NO_STORAGE_POOL, 18, `Storage pool not found: no storage pool with matching name '${pool}'`);
    const path = this.volumes.get(`${pool}/${volume}`);
    if (path === undefined)
      throw new LibvirtError(VirErrorCode.NO_STORAGE_VOL, 18, `Storage volume not found: no storage vol with matching name '${volume}'`);
    return path;
  }

  async storagePoolXml(pool: string): Promise<string> {
    this.record('storagePoolXml', [pool]);
    await this.answer('storagePoolXml');
    const xml = this.pools.get(pool);
    if (xml === undefined)
      throw new LibvirtError(VirErrorCode.NO_STORAGE_POOL, 18, `Storage pool not found: no storage pool with matching name '${pool}'`);
    return xml;
  }

  async storagePoolRefresh(pool: string): Promise<void> {
    this.record('storagePoolRefresh', [pool]);
    await this.answer('storagePoolRefresh');
    if (!this.pools.has(pool))
      throw new LibvirtError(VirErrorCode.NO_STORAGE_POOL, 18, `Storage pool not found: no storage pool with matching name '${pool}'`);
  }

  async blockCopy(domain: string, disk: string, destinationXml: string, opts?: BlockCopyOptions): Promise<void> {
    this.record('blockCopy', [domain, disk, destinationXml, opts]);
    await this.answer('blockCopy');
    const d = this.running(domain);
    const k = d.disks.find((x) => x.target === disk);
    if (!k) throw lverr(VirErrorCode.INVALID_ARG, `invalid argument: disk '${disk}' not found in domain`);
    if (k.job) throw lverr(VirErrorCode.BLOCK_COPY_ACTIVE, `block copy still active: disk '${disk}' already in active block job`);
    if (d.persistent && !opts?.transientJob)
      throw lverr(VirErrorCode.OPERATION_INVALID, 'Requested operation is not valid: domain is not transient');
    await this.duringBlockCopy?.();
    const path = /(?:file|dev)='([^']*)'/.exec(destinationXml)?.[1] ?? '';
    const type = /<disk type='block'/.test(destinationXml) ? 'block' : 'file';
    const format = /<driver type='([^']*)'/.exec(destinationXml)?.[1] ?? null;
    k.mirror = {
      path: path
        .replace(/&apos;/g, "'")
        .replace(/&lt;/g, '<')
        .replace(/&amp;/g, '&'),
      format,
      type,
      ready: null,
    };
    k.job = { cur: 0n, end: 1n, bandwidth: opts?.bandwidth ?? 0n };
  }

  /**
   * An external disk-only snapshot: each disk the XML names snapshot='external' gets its overlay
   * as the new source, the old source on top of its backing chain. No file is created.
   */
  async snapshotCreateXml(domain: string, xml: string, opts?: SnapshotCreateOptions): Promise<string> {
    this.record('snapshotCreateXml', [domain, xml, opts]);
    await this.answer('snapshotCreateXml');
    const d = this.running(domain);
    if (opts?.quiesce && !this.guestAgent)
      throw lverr(VirErrorCode.ARGUMENT_UNSUPPORTED, 'argument unsupported: QEMU guest agent is not configured');
    const unesc = (v: string) =>
      v
        .replace(/&apos;/g, "'")
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&quot;/g, '"')
        .replace(/&amp;/g, '&');
    const changes: Array<[FakeDisk, string]> = [];
    for (const m of xml.matchAll(/<disk name='([^']*)' snapshot='external'[^>]*>\s*(?:<driver [^>]*\/>\s*)?<source file='([^']*)'/g)) {
      const k = d.disks.find((x) => x.target === unesc(m[1]!));
      if (!k) throw lverr(VirErrorCode.INVALID_ARG, `invalid argument: no disk named '${unesc(m[1]!)}'`);
      if (k.job) throw lverr(VirErrorCode.BLOCK_COPY_ACTIVE, `block copy still active: disk '${k.target}' already in active block job`);
      changes.push([k, unesc(m[2]!)]);
    }
    for (const [k, overlay] of changes) {
      k.backing = [...(k.source !== null ? [k.source] : []), ...(k.backing ?? [])];
      k.source = overlay;
      k.format = 'qcow2';
    }
    return '1700000000';
  }

  /** Starts a commit job (no chain change until it ends; the fake never ends it by itself). */
  async blockCommit(domain: string, disk: string, opts?: BlockCommitOptions): Promise<void> {
    this.record('blockCommit', [domain, disk, opts]);
    await this.answer('blockCommit');
    const k = this.running(domain).disks.find((x) => x.target === disk);
    if (!k) throw lverr(VirErrorCode.INVALID_ARG, `invalid argument: disk '${disk}' not found in domain`);
    if (k.job) throw lverr(VirErrorCode.BLOCK_COPY_ACTIVE, `block copy still active: disk '${disk}' already in active block job`);
    k.job = { cur: 0n, end: 1n, bandwidth: opts?.bandwidth ?? 0n, type: opts?.active ? 'activeCommit' : 'commit' };
  }

  /** Starts a pull job (no chain change until it ends; the fake never ends it by itself). */
  async blockPull(domain: string, disk: string, opts?: BlockPullOptions): Promise<void> {
    this.record('blockPull', [domain, disk, opts]);
    await this.answer('blockPull');
    const k = this.running(domain).disks.find((x) => x.target === disk);
    if (!k) throw lverr(VirErrorCode.INVALID_ARG, `invalid argument: disk '${disk}' not found in domain`);
    if (k.job) throw lverr(VirErrorCode.BLOCK_COPY_ACTIVE, `block copy still active: disk '${disk}' already in active block job`);
    k.job = { cur: 0n, end: 1n, bandwidth: opts?.bandwidth ?? 0n, type: 'pull' };
  }

  // Domain jobs (backups) and checkpoints: the fake runs none. A domain with no job, no
  // checkpoint; starting one is refused as unsupported (unit tests of backups use the real libvirtd).
  async backupBegin(domain: string, xml: string, checkpointXml: string | null): Promise<void> {
    this.record('backupBegin', [domain, xml, checkpointXml]);
    await this.answer('backupBegin');
    this.running(domain);
    throw lverr(VirErrorCode.OPERATION_UNSUPPORTED, 'Operation not supported: the fake connection runs no backup');
  }
  async backupGetXmlDesc(domain: string): Promise<string> {
    this.record('backupGetXmlDesc', [domain]);
    await this.answer('backupGetXmlDesc');
    this.running(domain);
    throw lverr(VirErrorCode.NO_DOMAIN_BACKUP, 'Domain backup job id not found: no domain backup job present');
  }
  async abortJob(domain: string): Promise<void> {
    this.record('abortJob', [domain]);
    await this.answer('abortJob');
    this.running(domain);
    throw lverr(VirErrorCode.OPERATION_INVALID, 'Requested operation is not valid: no job is active on the domain');
  }
  async getJobStats(domain: string): Promise<DomainJobStats> {
    this.record('getJobStats', [domain]);
    await this.answer('getJobStats');
    this.running(domain);
    return { type: 'none', stats: {} };
  }
  async listCheckpoints(domain: string): Promise<CheckpointEntry[]> {
    this.record('listCheckpoints', [domain]);
    await this.answer('listCheckpoints');
    this.running(domain);
    return [];
  }
  async checkpointDelete(domain: string, name: string): Promise<void> {
    this.record('checkpointDelete', [domain, name]);
    await this.answer('checkpointDelete');
    this.running(domain);
    throw lverr(VirErrorCode.NO_DOMAIN_CHECKPOINT, `Domain checkpoint not found: no domain checkpoint with matching name '${name}'`);
  }

  async getBlockJobInfo(domain: string, disk: string): Promise<BlockJobInfo | null> {
    this.record('getBlockJobInfo', [domain, disk]);
    await this.answer('getBlockJobInfo');
    if (this.infoDelayMs) await new Promise((r) => setTimeout(r, this.infoDelayMs));
    const d = this.running(domain);
    const k = d.disks.find((x) => x.target === disk);
    if (!k) throw lverr(VirErrorCode.INVALID_ARG, `invalid argument: disk '${disk}' not found in domain`);
    if (!k.job) return null;
    return { type: k.job.type ?? 'copy', bandwidth: k.job.bandwidth, bandwidthSource: 'bytes', cur: k.job.cur, end: k.job.end };
  }

  /** Sizes the fake's disks report (virDomainGetBlockInfo): a small, mostly empty disk. */
  blockInfo: BlockInfo = { capacity: 64n << 20n, allocation: 1n << 20n, physical: 64n << 20n };

  async getBlockInfo(domain: string, disk: string): Promise<BlockInfo> {
    this.record('getBlockInfo', [domain, disk]);
    await this.answer('getBlockInfo');
    const d = this.running(domain);
    if (!d.disks.some((x) => x.target === disk))
      throw lverr(VirErrorCode.INVALID_ARG, `invalid argument: invalid path ${disk} not assigned to domain`);
    return { ...this.blockInfo };
  }

  async blockJobAbort(domain: string, disk: string, opts?: BlockJobAbortOptions): Promise<void> {
    this.record('blockJobAbort', [domain, disk, opts]);
    await this.answer('blockJobAbort');
    const d = this.running(domain);
    const k = d.disks.find((x) => x.target === disk);
    if (!k) throw lverr(VirErrorCode.INVALID_ARG, `invalid argument: disk '${disk}' not found in domain`);
    if (!k.job || !k.mirror) throw lverr(VirErrorCode.INVALID_ARG, `invalid argument: disk ${disk} does not have an active block job`);
    if (opts?.pivot && (k.mirror.ready !== 'yes' || this.pivotNotReady > 0)) {
      if (this.pivotNotReady > 0) this.pivotNotReady--;
      throw lverr(VirErrorCode.BLOCK_COPY_ACTIVE, "block copy still active: block job 'copy-vda-libvirt-1-format' not ready for pivot yet");
    }
    const pivot = !!opts?.pivot;
    k.mirror.ready = pivot ? 'pivot' : 'abort';
    if (this.dropJobs) {
      k.job = null;
      return;
    }
    const end = () => {
      const m = k.mirror!;
      if (pivot && this.pivotSwitches) {
        k.source = m.path;
        k.format = m.format ?? k.format;
        k.type = m.type;
      }
      k.mirror = null;
      k.job = null;
      if (this.sendEndEvents) this.blockEvent(d, disk, pivot ? 'completed' : 'canceled');
    };
    if (opts?.async) setTimeout(end, this.endDelayMs);
    else end();
  }

  async blockJobSetSpeed(domain: string, disk: string, bandwidth: bigint): Promise<void> {
    this.record('blockJobSetSpeed', [domain, disk, bandwidth]);
    await this.answer('blockJobSetSpeed');
    const k = this.running(domain).disks.find((x) => x.target === disk);
    if (!k?.job) throw lverr(VirErrorCode.INVALID_ARG, `invalid argument: disk ${disk} does not have an active block job`);
    k.job.bandwidth = bandwidth;
  }

  /** Domains whose vCPUs are paused (suspend/resume). */
  paused = new Set<string>();

  async suspend(domain: string): Promise<number> {
    this.record('suspend', [domain]);
    await this.answer('suspend');
    this.paused.add(this.running(domain).uuid);
    return 0;
  }

  async resume(domain: string): Promise<number> {
    this.record('resume', [domain]);
    await this.answer('resume');
    const d = this.running(domain);
    if (!this.paused.delete(d.uuid)) throw lverr(VirErrorCode.OPERATION_INVALID, 'Requested operation is not valid: domain is not paused');
    return 0;
  }

  async fsFreeze(domain: string): Promise<number> {
    this.record('fsFreeze', [domain]);
    await this.answer('fsFreeze');
    const d = this.running(domain);
    if (!this.guestAgent) throw lverr(VirErrorCode.ARGUMENT_UNSUPPORTED, 'argument unsupported: QEMU guest agent is not configured');
    this.frozenFs.add(d.uuid);
    return 2;
  }

  async getState(domain: string): Promise<DomainState> {
    this.record('getState', [domain]);
    await this.answer('getState');
    const d = this.running(domain);
    return this.paused.has(d.uuid) ? { state: 'paused', reason: PAUSED_USER } : { state: 'running', reason: 1 };
  }

  async fsThaw(domain: string): Promise<number> {
    this.record('fsThaw', [domain]);
    await this.answer('fsThaw');
    const d = this.running(domain);
    return this.frozenFs.delete(d.uuid) ? 2 : 0;
  }

  async versions(): Promise<Versions> {
    return { libvirt: '9.0.0', hypervisorType: 'QEMU', hypervisor: '7.2.0' };
  }

  async onEvent(listener: (event: DomainEvent) => void): Promise<() => Promise<void>> {
    this.listeners.add(listener);
    return async () => {
      this.listeners.delete(listener);
    };
  }

  onClose(_listener: (reason: CloseReason) => void): void {}

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A destination policy whose one root is a test's own directory (owned by whoever runs the tests). */
export const ownRoot = (dir: string) =>
  makeDestinationCheck({ roots: [dir], devices: [], trustedOwners: new Set([process.getuid!()]), network: [] });

/**
 * A test's scratch host: a state directory, a destination directory (its allowed root) and a
 * fake libvirt keeping its disks' files under the state directory; all removed at teardown.
 */
export function fakeHost(t: Test, prefix: string): { root: string; stateDir: string; destDir: string; conn: FakeConnection } {
  const root = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const stateDir = join(root, 'state');
  const destDir = join(root, 'dest');
  mkdirSync(destDir);
  return { root, stateDir, destDir, conn: new FakeConnection(stateDir) };
}
