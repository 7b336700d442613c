// A second libvirtd with its own qemu hooks, so that libvirt itself calls a hook script, without
// touching the host's /etc/libvirt/hooks or restarting the system libvirtd: a session daemon run
// as `nobody` (plus the kvm group, for the same capabilities) in a private mount namespace where
// /etc/libvirt is a scratch directory holding hooks/qemu.d/ (libvirt looks for hooks in
// SYSCONFDIR/libvirt/hooks only, at start-up), with a host UUID of its own so that the system
// libvirtd accepts it as another host. An offline migration (`virsh migrate --offline
// --persistent DOM URI`) from the system libvirtd to it runs `DOM migrate begin -` there, as on
// a real destination; nothing of the guest moves, the domain is only defined there.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface HookLibvirtd {
  /** The URI a `virsh migrate` (or a client) reaches it with. */
  uri: string;
  /** Scratch directory (0755): files the hook must read go here. */
  dir: string;
  close(): Promise<void>;
}

const NOBODY = 65534;

function kvmGid(): number | undefined {
  try {
    return Number(execFileSync('getent', ['group', 'kvm']).toString().split(':')[2]);
  } catch {
    return undefined;
  }
}

/** Starts the daemon with `hook(dir)` (a shell script's text) as /etc/libvirt/hooks/qemu.d/NAME. */
export async function startHookLibvirtd(name: string, hook: (dir: string) => string): Promise<HookLibvirtd> {
  const base = mkdtempSync(join(tmpdir(), 'bctest-hookd-'));
  chmodSync(base, 0o755);
  const etc = join(base, 'etc');
  const home = join(base, 'home');
  const run = join(base, 'run');
  mkdirSync(join(etc, 'hooks', 'qemu.d'), { recursive: true });
  writeFileSync(join(etc, 'hooks', 'qemu.d', name), hook(base), { mode: 0o755 });
  mkdirSync(join(home, '.config', 'libvirt'), { recursive: true });
  writeFileSync(join(home, '.config', 'libvirt', 'libvirtd.conf'), `host_uuid = "${randomUUID()}"\n`);
  mkdirSync(run, { mode: 0o700 });
  for (const d of [home, join(home, '.config'), join(home, '.config', 'libvirt'), join(home, '.config', 'libvirt', 'libvirtd.conf'), run]) {
    chownSync(d, NOBODY, NOBODY);
  }
  const gid = kvmGid();
  const groups = gid !== undefined ? `--groups ${gid}` : '--clear-groups';
  // unshare execs (no fork): the child is the daemon itself.
  const child: ChildProcess = spawn(
    'unshare',
    [
      '-m',
      '--propagation',
      'private',
      'sh',
      '-c',
      `mount --bind ${etc} /etc/libvirt && exec setpriv --reuid ${NOBODY} --regid ${NOBODY} ${groups} ` +
        `env -i HOME=${home} XDG_RUNTIME_DIR=${run} PATH=/usr/sbin:/usr/bin:/sbin:/bin libvirtd`,
    ],
    { stdio: 'ignore' },
  );
  const socket = join(run, 'libvirt', 'libvirt-sock');
  for (let i = 0; i < 400 && !existsSync(socket); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const exited = new Promise((r) => child.once('exit', r));
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(base, { recursive: true, force: true });
  };
  if (!existsSync(socket)) {
    await close();
    throw new Error(`the hook libvirtd did not start (exit ${child.exitCode})`);
  }
  return { uri: `qemu+unix:///session?socket=${socket}`, dir: base, close };
}
