// A real systemd (this host's /lib/systemd/systemd) as PID 1 of its own PID, mount, UTS, IPC and
// cgroup namespaces, for tests of the service unit where the host's PID 1 is not systemd. It
// sees only the units of one directory (SYSTEMD_UNIT_PATH: the unit under test plus stand-in
// targets, so no host service is started), runs on fresh /run, /var/lib, /var/log (tmpfs, with
// /run/libvirt bound back in) and a cgroup2 tree made for it; the host's network stays shared, so
// the agent's listener and libvirtd's socket are the host's. Killing PID 1 ends every process
// and mount in it; the teardown also removes its cgroup directory.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TeardownHost } from '../../harness/hypervisor.js';

const CGROUP2 = '/sys/fs/cgroup/unified';
const SYSTEMD = '/lib/systemd/systemd';

/** Why no systemd can run here (null: it can). */
export function systemdUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!existsSync(SYSTEMD)) return `no ${SYSTEMD}`;
  if (!existsSync(join(CGROUP2, 'cgroup.procs')) && !existsSync('/sys/fs/cgroup/cgroup.procs')) return 'no cgroup2 hierarchy';
  return null;
}

export interface Pid1 {
  /** The host pid of the namespace's systemd. */
  pid: number;
  /** systemctl inside, with its output (exit code too: a failed command does not throw). */
  systemctl(...args: string[]): Promise<{ code: number; out: string }>;
  /** A unit property (`systemctl show -p NAME --value`). */
  show(unit: string, prop: string): Promise<string>;
  /** A path as seen inside (through /proc/PID/root). */
  inside(path: string): string;
  /** systemd's own debug log so far. */
  log(): string;
}

function removeTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
  rmdirSync(dir);
}

/** Every process in a cgroup tree. */
function cgroupPids(dir: string): number[] {
  try {
    const own = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    const subs = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory());
    return own.concat(...subs.map((e) => cgroupPids(join(dir, e.name))));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []; // removed meanwhile
    throw e;
  }
}

/** The process of the tree that is PID 1 of its own namespace and runs `exe` (0: none yet). */
function namespaceInit(cgroup: string, exe: string): number {
  for (const p of cgroupPids(cgroup)) {
    try {
      const nspid =
        /^NSpid:\s+(.*)$/m
          .exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]
          .trim()
          .split(/\s+/) ?? [];
      if (nspid.length > 1 && nspid[nspid.length - 1] === '1' && readlinkSync(`/proc/${p}/exe`) === realpathSync(exe)) return p;
    } catch {
      // Gone meanwhile.
    }
  }
  return 0;
}

/** The cgroup tree, once the killed processes have left it (EBUSY until then). */
async function removeCgroup(dir: string): Promise<void> {
  for (let i = 0; ; i++) {
    // Whatever is left in the tree (a process that escaped PID 1's end) is killed too.
    for (const p of cgroupPids(dir)) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
    try {
      return removeTree(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EBUSY' || i >= 100) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Boots systemd on `unitDir` (which holds the units to test); `files` are copied to /run/bctest (0600). */
export async function bootSystemd(host: TeardownHost, dir: string, unitDir: string, filesDir: string): Promise<Pid1> {
  for (const t of [
    'bc-test',
    'sysinit',
    'basic',
    'multi-user',
    'shutdown',
    'network',
    'local-fs',
    'sockets',
    'timers',
    'paths',
    'slices',
  ]) {
    writeFileSync(join(unitDir, `${t}.target`), `[Unit]\nDescription=${t} (stand-in)\n`);
  }
  const root = existsSync(join(CGROUP2, 'cgroup.procs')) ? CGROUP2 : '/sys/fs/cgroup';
  const cgroup = join(root, `bctest-systemd-${randomBytes(4).toString('hex')}`);
  mkdirSync(cgroup);
  const lv = join(dir, 'libvirt-run');
  mkdirSync(lv);
  const log = join(dir, 'systemd.log');
  writeFileSync(log, '');
  const inner = join(dir, 'pid1.sh');
  writeFileSync(
    inner,
    `set -e
mount --make-rprivate /
mount --bind /run/libvirt ${lv}
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/libvirt && mount --move ${lv} /run/libvirt
mount -t tmpfs tmpfs /sys/fs/cgroup && umount -l /sys/fs/cgroup
mount -t cgroup2 none /sys/fs/cgroup
mount -t proc proc /proc
# Kernel settings are the host's: read-only, as in a container (systemd then leaves them be).
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
# PID 1 logs to /dev/console, which must be a terminal: script(1)'s, which copies it to the log.
mount --bind "$(tty)" /dev/console
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /var/log
mkdir -p /run/bctest && cp ${filesDir}/* /run/bctest/ && chmod 600 /run/bctest/*
export container=bctest SYSTEMD_UNIT_PATH=${unitDir}
exec ${SYSTEMD} --system --unit=bc-test.target --log-target=console --log-level=debug --show-status=no
`,
  );
  const outer = `echo $$ > ${cgroup}/cgroup.procs && exec script -qfec 'unshare --pid --fork --mount --uts --ipc --cgroup bash ${inner}' ${log} < /dev/null > /dev/null 2>&1`;
  // SHELL=/bin/sh, as root's login gives CI: script(1) runs its command through it, and dash
  // forks where bash execs, so every run here sees the deeper tree CI sees.
  const unshare = spawn('bash', ['-c', outer], { stdio: 'ignore', env: { ...process.env, SHELL: '/bin/sh' } });
  let pid = 0;
  host.teardown(async () => {
    if (pid) process.kill(pid, 'SIGKILL');
    unshare.kill('SIGKILL');
    if (unshare.exitCode === null && unshare.signalCode === null) await new Promise((r) => unshare.once('exit', r));
    await removeCgroup(cgroup);
  });
  // systemd is the process that is PID 1 of a namespace inside our cgroup, found by what it is,
  // never by the shape of the tree above it (which depends on the shell, see above).
  for (let i = 0; !pid && i < 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
    pid = namespaceInit(cgroup, SYSTEMD);
  }
  if (!pid) throw new Error(`systemd did not start: ${existsSync(log) ? readFileSync(log, 'utf8') : ''}`);
  const run = promisify(execFile);
  const systemctl = (...args: string[]) =>
    // Inside its cgroup namespace too, from a cgroup in its tree: systemd refuses a peer whose
    // cgroup it cannot see as unprivileged.
    run('bash', [
      '-c',
      `echo $$ > ${cgroup}/cgroup.procs && exec nsenter -t ${pid} -m -p -C systemctl --no-pager "$@"`,
      'systemctl',
      ...args,
    ]).then(
      (r) => ({ code: 0, out: r.stdout + r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
    );
  // Up once its manager answers and the stand-in target is reached.
  for (let i = 0; ; i++) {
    const r = await systemctl('is-system-running');
    if (/^(running|degraded)/.test(r.out)) break;
    if (i > 300) throw new Error(`systemd is not up: ${r.out}\n${readFileSync(log, 'utf8').slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    pid,
    systemctl,
    show: async (unit, prop) => (await systemctl('show', unit, '-p', prop, '--value')).out.trim(),
    inside: (path) => `/proc/${pid}/root${path}`,
    log: () => readFileSync(log, 'utf8'),
  };
}
