// A private libvirtd for hang experiments: a session daemon run as `nobody` with its own HOME and
// XDG_RUNTIME_DIR, reached through `test+unix:///default?socket=…` (libvirt's test driver behind
// a real daemon: real RPC, keepalive, close callbacks and events). It can be SIGSTOPped without
// touching the system libvirtd that other tests share.
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PrivateLibvirtd {
  uri: string;
  pid: number;
  stop(): void;
  cont(): void;
  close(): Promise<void>;
}

const NOBODY = 65534;

export async function startPrivateLibvirtd(): Promise<PrivateLibvirtd> {
  const base = mkdtempSync(join(tmpdir(), 'bctest-libvirtd-'));
  const home = join(base, 'home');
  const run = join(base, 'run');
  mkdirSync(home);
  mkdirSync(run, { mode: 0o700 });
  for (const d of [base, home, run]) chownSync(d, NOBODY, NOBODY);
  const child: ChildProcess = spawn('libvirtd', [], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: 'ignore',
    env: { HOME: home, XDG_RUNTIME_DIR: run, PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  });
  const socket = join(run, 'libvirt', 'libvirt-sock');
  for (let i = 0; i < 200 && !existsSync(socket); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!existsSync(socket)) {
    child.kill('SIGKILL');
    rmSync(base, { recursive: true, force: true });
    throw new Error(`the private libvirtd did not start (exit ${child.exitCode})`);
  }
  const pid = child.pid!;
  let closed = false;
  return {
    uri: `test+unix:///default?socket=${socket}`,
    pid,
    stop: () => process.kill(pid, 'SIGSTOP'),
    cont: () => process.kill(pid, 'SIGCONT'),
    async close() {
      if (closed) return;
      closed = true;
      const exited = new Promise((r) => child.once('exit', r));
      try {
        process.kill(pid, 'SIGCONT');
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      if (child.exitCode === null && child.signalCode === null) await exited;
      rmSync(base, { recursive: true, force: true });
    },
  };
}
