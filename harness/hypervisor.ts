// Throwaway running domains on the real libvirtd, for tests and the demo. Uses virsh and
// qemu-img as independent tools (the product itself never does). Everything created is
// registered for teardown, which runs even when the test fails, plus a process-exit net.
import { execFile, execFileSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  writeSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  chmodSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const URI = 'qemu:///system';
export const PREFIX = 'bctest-';
/** Disks live here, not in /tmp: libvirt-qemu must traverse the path, and PrivateTmp hides /tmp. */
export const TEST_ROOT = '/var/tmp/blockcopy-test';

export type ImageFormat = 'raw' | 'qcow2';

export interface DiskSpec {
  format: ImageFormat;
  sizeMiB: number;
  /** qcow2 only: put the disk on top of a qcow2 backing file (holding data written at creation). */
  backing?: boolean;
  /** 'cdrom' attaches a read-only cdrom (not copyable) instead of a disk. */
  device?: 'disk' | 'cdrom';
  /** raw only: written at offset 0 before the domain starts. */
  bootSector?: Buffer;
  /** <boot order='N'/>: the BIOS boots the lowest and maps only disks with an order to int 13h drives (0x80, 0x81, …). */
  bootOrder?: number;
}

export interface DomainSpec {
  disks: DiskSpec[];
  /** Define (persistent) then start, instead of a transient `virsh create`. */
  persistent?: boolean;
  memoryMiB?: number;
  /** A QEMU guest agent channel (no agent runs in the guest: libvirt answers "not connected"). */
  guestAgentChannel?: boolean;
}

export interface TestDisk {
  target: string;
  path: string;
  format: ImageFormat;
  device: 'disk' | 'cdrom';
  backingPath?: string;
  bootOrder?: number;
}

export interface TestDomain {
  name: string;
  uuid: string;
  dir: string;
  persistent: boolean;
  disks: TestDisk[];
}

/** Anything with tap's teardown; keeps this helper usable outside tap (the demo). */
export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

const live = new Set<TestDomain>();
let accel: 'kvm' | 'qemu' | undefined;

export function virsh(...args: string[]): Promise<string> {
  return run('virsh', ['-q', '-c', URI, ...args], { maxBuffer: 64 * 1024 * 1024 }).then((r) => r.stdout);
}

/** 'kvm' when /dev/kvm is usable by QEMU here, else 'qemu' (TCG). Decided once. */
export function domainType(): 'kvm' | 'qemu' {
  if (accel) return accel;
  accel = 'qemu';
  try {
    const caps = execFileSync('virsh', ['-c', URI, 'domcapabilities', '--virttype', 'kvm'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    }).toString();
    if (existsSync('/dev/kvm') && /<domain>kvm<\/domain>/.test(caps)) accel = 'kvm';
  } catch {
    accel = 'qemu';
  }
  return accel;
}

export async function createImage(
  path: string,
  format: ImageFormat,
  sizeMiB: number,
  opts: { backingPath?: string; backingFormat?: ImageFormat } = {},
): Promise<void> {
  const args = ['create', '-q', '-f', format];
  if (opts.backingPath) args.push('-b', opts.backingPath, '-F', opts.backingFormat ?? 'qcow2');
  args.push(path, `${sizeMiB}M`);
  await run('qemu-img', args);
}

/** A fresh directory under TEST_ROOT, marked with its owner's pid, traversable by QEMU; with `host`,
 *  removed at its teardown (else swept by cleanupStale once its process is gone). */
export function scratchDir(prefix: string, host?: TeardownHost): string {
  execFileSync('mkdir', ['-p', TEST_ROOT]);
  chmodSync(TEST_ROOT, 0o755);
  const dir = mkdtempSync(join(TEST_ROOT, prefix));
  chmodSync(dir, 0o755);
  // Who owns it, so that a sweep never takes a running test's (or demo's) files away.
  writeFileSync(join(dir, OWNER), String(process.pid));
  host?.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const OWNER = '.owner-pid';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const targetOf = (i: number) => `vd${String.fromCharCode(97 + i)}`;

function diskXml(d: TestDisk): string {
  if (d.device === 'cdrom') {
    return (
      `<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='${d.path}'/>` +
      `<target dev='hdc' bus='ide'/><readonly/></disk>`
    );
  }
  return (
    `<disk type='file' device='disk'><driver name='qemu' type='${d.format}'/><source file='${d.path}'/>` +
    `<target dev='${d.target}' bus='virtio'/>${d.bootOrder ? `<boot order='${d.bootOrder}'/>` : ''}</disk>`
  );
}

const GUEST_AGENT_CHANNEL = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>";

/** Creates and starts a domain with the given disks; it is destroyed at `host`'s teardown. */
export async function createDomain(host: TeardownHost, spec: DomainSpec): Promise<TestDomain> {
  const name = `${PREFIX}${process.pid}-${randomBytes(3).toString('hex')}`;
  const dir = scratchDir('run-');
  const disks: TestDisk[] = [];
  let virtio = 0;
  for (const [i, s] of spec.disks.entries()) {
    const device = s.device ?? 'disk';
    const path = join(dir, `disk${i}.${s.format === 'raw' ? 'raw' : 'qcow2'}`);
    const d: TestDisk = {
      target: device === 'cdrom' ? 'hdc' : targetOf(virtio++),
      path,
      format: s.format,
      device,
      ...(s.bootOrder ? { bootOrder: s.bootOrder } : {}),
    };
    if (s.backing) {
      if (s.format !== 'qcow2') throw new Error('a backing file needs a qcow2 disk');
      d.backingPath = join(dir, `base${i}.qcow2`);
      await createImage(d.backingPath, 'qcow2', s.sizeMiB);
      // Data in the base image, so a shallow copy can be told apart from a full one.
      await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x0b 0 1M', d.backingPath]);
      await createImage(path, 'qcow2', s.sizeMiB, { backingPath: d.backingPath, backingFormat: 'qcow2' });
    } else {
      await createImage(path, s.format, s.sizeMiB);
    }
    if (s.bootSector) {
      if (s.format !== 'raw') throw new Error('a boot sector needs a raw disk');
      const fd = openSync(path, 'r+');
      try {
        writeSync(fd, s.bootSector, 0, s.bootSector.length, 0);
      } finally {
        closeSync(fd);
      }
    }
    disks.push(d);
  }
  const xml =
    `<domain type='${domainType()}'><name>${name}</name><memory unit='MiB'>${spec.memoryMiB ?? 64}</memory>` +
    `<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><on_crash>destroy</on_crash>` +
    `<devices>${disks.map(diskXml).join('')}${spec.guestAgentChannel ? GUEST_AGENT_CHANNEL : ''}</devices></domain>`;
  const xmlPath = join(dir, 'domain.xml');
  writeFileSync(xmlPath, xml);
  const dom: TestDomain = { name, uuid: '', dir, persistent: !!spec.persistent, disks };
  live.add(dom);
  host.teardown(() => destroy(dom));
  if (spec.persistent) {
    await virsh('define', xmlPath);
    await virsh('start', name);
  } else {
    await virsh('create', xmlPath);
  }
  dom.uuid = (await virsh('domuuid', name)).trim();
  return dom;
}

const STATUS_DIR = '/run/libvirt/qemu';

/**
 * When libvirtd, restarted, could not load its status XML of this running domain (libvirt 9.0
 * saves a pivot it has not finished processing as `<mirror job=''>`, then fails to parse it):
 * the offending element. The domain's QEMU then runs on without libvirt knowing it.
 */
export function forgottenByLibvirt(dom: TestDomain): string | undefined {
  if (knownToLibvirt(dom.name)) return undefined;
  try {
    return /<mirror [^>]*job=''[^>]*>/.exec(readFileSync(join(STATUS_DIR, `${dom.name}.xml`), 'utf8'))?.[0];
  } catch {
    return undefined;
  }
}

function knownToLibvirt(name: string): boolean {
  try {
    execFileSync('virsh', ['-q', '-c', URI, 'domstate', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Kills the QEMU of a domain libvirt no longer knows (see forgottenByLibvirt) and drops its status files. */
function killOrphan(name: string): void {
  try {
    const pid = Number(readFileSync(join(STATUS_DIR, `${name}.pid`), 'utf8'));
    if (pid > 1 && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(name)) process.kill(pid, 'SIGKILL');
  } catch {
    /* no such process */
  }
  for (const f of [`${name}.pid`, `${name}.xml`]) rmSync(join(STATUS_DIR, f), { force: true });
}

/** Destroys (and undefines) the domain and removes its files. Safe to call twice. */
export async function destroy(dom: TestDomain): Promise<void> {
  if (!live.has(dom)) return;
  live.delete(dom);
  await run('virsh', ['-q', '-c', URI, 'destroy', dom.name]).catch(() => {
    if (forgottenByLibvirt(dom)) killOrphan(dom.name);
  });
  if (dom.persistent) await run('virsh', ['-q', '-c', URI, 'undefine', dom.name]).catch(() => {});
  rmSync(dom.dir, { recursive: true, force: true });
}

export async function liveXml(dom: TestDomain | string): Promise<string> {
  return virsh('dumpxml', typeof dom === 'string' ? dom : dom.name);
}

/** The qdev id QEMU knows the disk by, from libvirt's alias in the live XML. */
/** The disk's chain as libvirt's live XML shows it (virsh dumpxml, the witness), active layer first. */
export async function liveChain(dom: TestDomain, target: string): Promise<string[]> {
  const xml = await liveXml(dom);
  const d = [...xml.matchAll(/<disk\b[\s\S]*?<\/disk>/g)].map((m) => m[0]).find((x) => x.includes(`<target dev='${target}'`));
  if (!d) throw new Error(`no disk ${target}`);
  return [...d.matchAll(/<source file='([^']*)'/g)].map((m) => m[1]!);
}

export async function diskAlias(dom: TestDomain, target: string): Promise<string> {
  const xml = await liveXml(dom);
  for (const m of xml.matchAll(/<disk\b[\s\S]*?<\/disk>/g)) {
    if (m[0].includes(`dev='${target}'`)) {
      const alias = /<alias name='([^']+)'/.exec(m[0]);
      if (alias) return alias[1]!;
    }
  }
  throw new Error(`no alias for disk ${target} of ${dom.name}`);
}

export interface WriteSpec {
  pattern: number;
  offset: number;
  length: number;
}

/**
 * Writes as the guest would: through QEMU's own block layer via the monitor's qemu-io, then
 * flushes, as a guest does before it counts on its data. An unflushed write (a qcow2's cached
 * metadata above all) is rightly lost when QEMU is killed, so the tests' references hold only
 * what a guest could count on.
 */
export async function guestWrite(dom: TestDomain, target: string, w: WriteSpec): Promise<void> {
  const alias = await diskAlias(dom, target);
  for (const io of [`write -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`, 'flush']) {
    const out = await virsh('qemu-monitor-command', dom.name, '--hmp', `qemu-io -d ${alias}/virtio-backend "${io}"`);
    // HMP reports failures in its output while virsh still exits 0.
    if (/error|fail/i.test(out)) throw new Error(`guest ${io.split(' ')[0]} failed: ${out.trim()}`);
  }
}

/** True when every byte of the range holds `pattern` (qemu-io read -P, sharing the image). */
export async function readPattern(path: string, format: ImageFormat, w: WriteSpec): Promise<boolean> {
  try {
    const r = await run('qemu-io', ['-r', '-U', '-f', format, '-c', `read -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`, path]);
    return !/Pattern verification failed|error/i.test(r.stdout + r.stderr);
  } catch {
    return false;
  }
}

/** 'identical', or qemu-img's description of the first difference. Formats are probed unless given. */
export async function compareImages(a: string, b: string, formats?: [ImageFormat, ImageFormat]): Promise<string> {
  try {
    await run('qemu-img', ['compare', '-U', ...(formats ? ['-f', formats[0], '-F', formats[1]] : []), a, b]);
    return 'identical';
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    return (err.stdout || err.stderr || err.message).trim();
  }
}

/** Removes leftovers of processes that are gone: bctest-<pid>-* domains and their files.
 *  Anything owned by a live process (a parallel test run, the demo) is left alone. */
export function cleanupStale(): void {
  let names: string[] = [];
  try {
    names = execFileSync('virsh', ['-q', '-c', URI, 'list', '--all', '--name'], { stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .split('\n')
      .map((s) => s.trim())
      .filter((s) => s.startsWith(PREFIX));
  } catch {
    return;
  }
  for (const n of names) {
    const pid = Number(/^bctest-(\d+)-/.exec(n)?.[1]);
    if (pid && alive(pid)) continue;
    for (const cmd of ['destroy', 'undefine']) {
      try {
        execFileSync('virsh', ['-q', '-c', URI, cmd, n], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
  }
  // QEMUs that libvirtd forgot (see forgottenByLibvirt) and whose test is gone.
  let status: string[] = [];
  try {
    status = readdirSync(STATUS_DIR);
  } catch {
    /* no libvirt state */
  }
  for (const f of status) {
    const m = /^(bctest-(\d+)-[0-9a-f]+)\.xml$/.exec(f);
    if (!m || alive(Number(m[2])) || names.includes(m[1]!)) continue;
    if (!knownToLibvirt(m[1]!)) killOrphan(m[1]!);
  }
  if (!existsSync(TEST_ROOT)) return;
  for (const entry of readdirSync(TEST_ROOT)) {
    const dir = join(TEST_ROOT, entry);
    let owner = 0;
    try {
      owner = Number(readFileSync(join(dir, OWNER), 'utf8'));
    } catch {
      /* no owner file */
    }
    if (owner && alive(owner)) continue;
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A tmpfs of `sizeMiB` mounted in a fresh scratch directory: a filesystem that fills up. */
export function smallFilesystem(host: TeardownHost, sizeMiB: number): string {
  const dir = scratchDir('smallfs-');
  const mnt = join(dir, 'fs');
  execFileSync('mkdir', [mnt]);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0755`, 'bctest-smallfs', mnt]);
  host.teardown(() => {
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
  });
  return mnt;
}

/** Lazily unmounts whatever is mounted below `dir` (a test's small filesystems). */
function unmountUnder(dir: string): void {
  let mounts: string[] = [];
  try {
    mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1] ?? '');
  } catch {
    return;
  }
  for (const m of mounts.filter((m) => m.startsWith(dir + '/')).reverse()) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
}

// Last-resort net for a crash between creation and teardown.
process.on('exit', () => {
  for (const dom of live) {
    try {
      execFileSync('virsh', ['-q', '-c', URI, 'destroy', dom.name], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
    if (dom.persistent) {
      try {
        execFileSync('virsh', ['-q', '-c', URI, 'undefine', dom.name], { stdio: 'ignore' });
      } catch {
        /* gone */
      }
    }
    rmSync(dom.dir, { recursive: true, force: true });
  }
});
