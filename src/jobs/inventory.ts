// Every domain's storage, as the destination identity check needs it: each disk of every
// domain (running and defined; live and inactive XML) of type file, block, dir, network and
// volume (volumes resolved through libvirt's storage pools), each layer of each backing chain,
// each mirror, and the files each local image's header makes QEMU open (backing file, external
// data file). Fails closed: when libvirt cannot tell all of it, the call is refused.
import { ImageHeaderError, readImageHeader, referenceOf } from '../destination/image-header.js';
import type { Connection, DomainRef } from '../libvirt/index.js';
import { LibvirtError, VirErrorCode } from '../libvirt/index.js';
import { DomainXmlError, parseDisks, type BackingLayer, type DiskInfo } from '../libvirt/disk-xml.js';
import type { Logger } from '../log.js';
import { canonicalPath } from './job.js';
import { toAgentError } from './libvirt-errors.js';
import { promises as fs } from 'node:fs';

/** Domain XML reads (and header reads) in flight at once. */
export const INVENTORY_CONCURRENCY = 4;
/** Backing files followed through image headers below what libvirt's XML shows (QEMU's own limit is near this). */
export const MAX_HEADER_CHAIN = 64;

/** The refusal when libvirt cannot tell every domain's storage: retryable, nothing was started. */
function incomplete(e: unknown, what: string): unknown {
  const why = `cannot tell every domain's storage, so no destination can be checked against it: ${what}`;
  // A libvirtd that does not answer keeps its usual names (libvirtTimeout, libvirtBusy, unavailable).
  return toAgentError(e, why, { refused: 'inventoryIncomplete', other: 'inventoryIncomplete' });
}

/** Runs `f` over `items`, at most `n` at a time; the first failure rejects (the others still settle). */
async function eachLimited<T>(items: T[], n: number, f: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await f(items[next++]!);
  };
  const runs = Array.from({ length: Math.min(n, items.length) }, worker);
  const results = await Promise.allSettled(runs);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** A local image whose header to read: its path and the format libvirt names it by (null: unknown). */
interface Image {
  path: string;
  format: string | null;
  /** The domain whose disk led here. */
  owner: string;
}

class Inventory {
  readonly paths = new Set<string>();
  /** Which domains use each path (for messages: who keeps a file in use). */
  readonly owners = new Map<string, Set<string>>();
  private readonly images: Image[] = [];
  private readonly volumes = new Map<string, Promise<string | null>>();

  constructor(
    private readonly conn: Connection,
    private readonly log?: Logger,
  ) {}

  async domain(d: DomainRef): Promise<void> {
    for (const inactive of [false, true]) {
      if (!inactive && !d.active) continue;
      if (inactive && !d.persistent) continue;
      let xml: string;
      try {
        xml = await this.conn.getXml(d.uuid, { inactive });
      } catch (e) {
        // Undefined (or, transient, stopped) since the list: it has no storage left to protect.
        if (e instanceof LibvirtError && e.code === VirErrorCode.NO_DOMAIN) return;
        throw incomplete(e, `cannot read the ${inactive ? 'inactive' : 'live'} XML of domain '${d.name}'`);
      }
      let disks: DiskInfo[];
      try {
        disks = parseDisks(xml);
      } catch (e) {
        if (e instanceof DomainXmlError) throw incomplete(e, `cannot read the XML of domain '${d.name}'`);
        throw e;
      }
      for (const disk of disks) await this.disk(d, disk);
    }
  }

  private async disk(d: DomainRef, disk: DiskInfo): Promise<void> {
    await this.layer(d, { type: disk.type, path: disk.sourcePath, volume: disk.volume ?? null, format: disk.format });
    for (const l of disk.backing ?? []) await this.layer(d, l);
    if (disk.mirror) {
      await this.layer(d, { type: disk.mirror.type, path: disk.mirror.path, volume: null, format: disk.mirror.format });
      for (const l of disk.mirror.backing ?? []) await this.layer(d, l);
    }
  }

  private async layer(d: DomainRef, l: Pick<BackingLayer, 'type' | 'path' | 'volume' | 'format'>): Promise<void> {
    let path = l.path;
    if (l.volume) path = await this.volumePath(d, l.volume.pool, l.volume.volume);
    if (!path) return;
    this.add(canonicalPath(path), d.name);
    // A directory (type dir) has no header; a network source is not the agent's to open.
    if (path.startsWith('/') && l.type !== 'dir' && l.type !== 'network') this.images.push({ path, format: l.format, owner: d.name });
  }

  private add(path: string, owner: string): void {
    this.paths.add(path);
    let o = this.owners.get(path);
    if (!o) this.owners.set(path, (o = new Set()));
    o.add(owner);
  }

  /** The volume's path, or null when the pool has no such volume (nothing there to protect). */
  private volumePath(d: DomainRef, pool: string, volume: string): Promise<string | null> {
    const key = `${pool}\u0000${volume}`;
    let p = this.volumes.get(key);
    if (!p) {
      p = this.conn.storageVolPath(pool, volume).catch((e: unknown) => {
        if (e instanceof LibvirtError && e.code === VirErrorCode.NO_STORAGE_VOL) return null;
        throw incomplete(e, `cannot resolve volume '${volume}' of storage pool '${pool}' (a disk of domain '${d.name}')`);
      });
      this.volumes.set(key, p);
    }
    return p;
  }

  /**
   * Reads the header of every local image found (following symlinks, as QEMU opens them) and
   * adds what it names: the external data file, and the backing file, whose header is read in
   * turn (a stopped domain's XML shows no chain: the headers are all there is). An image that
   * does not exist yet names nothing; one that exists but cannot be read is protected by its
   * own identity only (logged).
   */
  async headers(): Promise<void> {
    const seen = new Set<string>();
    let level = this.images.splice(0);
    for (let depth = 0; level.length > 0 && depth <= MAX_HEADER_CHAIN; depth++) {
      const found: Image[] = [];
      await eachLimited(level, INVENTORY_CONCURRENCY, async (img) => {
        // QEMU reads no header of an image libvirt names raw (or any other non-qcow2 format).
        if (img.format !== null && img.format !== 'qcow2') return;
        const real = await fs.realpath(img.path).catch(() => null);
        if (real === null) return;
        // Once per name and file: a relative name inside depends on both.
        const key = `${img.path}\u0000${real}`;
        if (seen.has(key)) return;
        seen.add(key);
        let h;
        try {
          h = await readImageHeader(real);
        } catch (e) {
          if (!(e instanceof ImageHeaderError)) throw e;
          this.log?.warn('inventory: cannot read an image header; the image is protected by its own identity only', {
            path: img.path,
            error: e,
          });
          return;
        }
        if (h.detected !== 'qcow2') return;
        for (const name of [h.dataFile, h.backing]) {
          if (name === null) continue;
          // QEMU resolves a relative name against the image's name as opened (a symlink's
          // directory); both that and the real directory are taken.
          for (const r of [referenceOf(name, img.path), referenceOf(name, real)]) {
            this.add(r.kind === 'file' ? canonicalPath(r.path) : r.name, img.owner);
            if (r.kind === 'file' && name === h.backing) found.push({ path: r.path, format: h.backingFormat, owner: img.owner });
          }
        }
      });
      level = found;
    }
  }
}

/**
 * Every path (canonical) and network URL any domain's storage uses. Domains are listed once;
 * their XML is read with bounded concurrency. Throws a retryable AgentError (inventoryIncomplete,
 * or libvirtTimeout / libvirtBusy / unavailable when libvirtd does not answer) when any of it
 * cannot be read: a destination is never checked against a partial inventory.
 */
export async function domainStorage(conn: Connection, log?: Logger, opts: { except?: string } = {}): Promise<Set<string>> {
  return (await storageOwners(conn, log, opts)).paths;
}

/** domainStorage, with the domains that use each path (by name). */
export async function storageOwners(
  conn: Connection,
  log?: Logger,
  opts: { except?: string } = {},
): Promise<{ paths: Set<string>; owners: Map<string, Set<string>> }> {
  const doms = await conn.listDomains().catch((e: unknown) => {
    throw incomplete(e, 'cannot list the domains');
  });
  const inv = new Inventory(conn, log);
  // `except`: every other domain's storage (what a commit into a shared base would change).
  await eachLimited(
    doms.filter((d) => d.uuid !== opts.except),
    INVENTORY_CONCURRENCY,
    (d) => inv.domain(d),
  );
  await inv.headers();
  return { paths: inv.paths, owners: inv.owners };
}
