// Restarting libvirtd the way this host runs it: through systemd when it manages libvirtd, else
// as the daemons scripts/setup-host.sh starts. Running QEMU domains survive a libvirtd restart.
import { execFile, execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

function underSystemd(): boolean {
  try {
    return (
      execFileSync('systemctl', ['is-active', 'libvirtd.service'], { stdio: ['ignore', 'pipe', 'ignore'] })
        .toString()
        .trim() === 'active'
    );
  } catch {
    return false;
  }
}

async function answers(): Promise<boolean> {
  return run('virsh', ['-q', '-c', 'qemu:///system', 'version']).then(
    () => true,
    () => false,
  );
}

/** Whether a libvirtd process exists (it may have exited on its own, e.g. crashed). */
export async function libvirtdRunning(): Promise<boolean> {
  return run('pgrep', ['-x', 'libvirtd']).then(
    () => true,
    () => false,
  );
}

/** Stops and starts libvirtd; resolves when it answers again, with that moment (ms since the epoch). */
export async function restartLibvirtd(): Promise<{ upAt: number }> {
  if (underSystemd()) {
    await run('systemctl', ['restart', 'libvirtd.service']);
  } else {
    await run('pkill', ['-TERM', '-x', 'libvirtd']).catch(() => {});
    for (let i = 0; i < 200 && (await libvirtdRunning()); i++) await new Promise((r) => setTimeout(r, 50));
    if (await libvirtdRunning()) await run('pkill', ['-KILL', '-x', 'libvirtd']).catch(() => {});
    rmSync('/run/libvirtd.pid', { force: true });
    await run('libvirtd', ['-d']);
  }
  for (let i = 0; i < 600; i++) {
    if (await answers()) return { upAt: Date.now() };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('libvirtd does not answer after the restart');
}
