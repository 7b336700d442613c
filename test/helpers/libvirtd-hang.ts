// Freezing the system libvirtd (SIGSTOP) and thawing it (SIGCONT), for the serial hang test only:
// it stops every libvirt client on the host. The thaw is also armed on process exit, so a failed
// test never leaves libvirtd stopped.
import { execFileSync } from 'node:child_process';

function libvirtdPid(): number {
  try {
    const main = execFileSync('systemctl', ['show', '-p', 'MainPID', '--value', 'libvirtd.service'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .toString()
      .trim();
    if (main && main !== '0') return Number(main);
  } catch {
    /* not under systemd */
  }
  const pids = execFileSync('pgrep', ['-x', 'libvirtd']).toString().trim().split('\n').map(Number);
  if (pids.length !== 1 || !pids[0]) throw new Error(`expected one libvirtd, found ${pids.join(', ')}`);
  return pids[0];
}

export interface Frozen {
  pid: number;
  thaw(): void;
}

export function freezeLibvirtd(): Frozen {
  const pid = libvirtdPid();
  let thawed = false;
  const onSignal = (sig: NodeJS.Signals) => {
    thaw();
    process.kill(process.pid, sig);
  };
  const thaw = () => {
    if (thawed) return;
    thawed = true;
    process.off('exit', thaw);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* gone */
    }
  };
  process.on('exit', thaw);
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  process.kill(pid, 'SIGSTOP');
  return { pid, thaw };
}
