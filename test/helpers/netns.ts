// Network namespaces standing in for hypervisors on one machine: each its own namespace, a veth
// pair to the root namespace and its own /24 (10.77.N.0: the root side .1, the namespace .2).
// Unix sockets stay reachable (a netns does not hide the file system), so an agent run with
// `ip netns exec NS …` still talks to the host's libvirtd. Removed at teardown; leftovers of
// dead test processes (bcfleet-<pid>-N) are swept first.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import type { TeardownHost } from '../../harness/hypervisor.js';

const run = promisify(execFile);
const ip = (...args: string[]) => run('ip', args);

export interface Netns {
  name: string;
  /** The namespace's address (an agent there listens on it). */
  address: string;
  /** The veth end in the root namespace. */
  hostIf: string;
  /** Cuts the namespace off (its link down) / restores it. */
  down(): Promise<void>;
  up(): Promise<void>;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Removes namespaces (and so their veths) of test processes that are gone. */
export function sweepStaleNetns(): void {
  const names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => /^bcfleet-\d+-\d+$/.test(n));
  for (const n of names) {
    const pid = Number(n.split('-')[1]);
    if (pid === process.pid || alive(pid)) continue;
    try {
      execFileSync('ip', ['link', 'del', `bcf${pid}h${n.split('-')[2]}`], { stdio: 'ignore' });
    } catch {
      // gone with its namespace
    }
    execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
  }
}

/** Namespace `index` (0…2) of this process, linked up, with loopback up. */
export async function makeNetns(host: TeardownHost, index: number): Promise<Netns> {
  const name = `bcfleet-${process.pid}-${index}`;
  const hostIf = `bcf${process.pid}h${index}`;
  const nsIf = `bcf${process.pid}n${index}`;
  const subnet = `10.77.${(process.pid % 80) * 3 + index}`;
  await ip('netns', 'add', name);
  host.teardown(async () => {
    await ip('link', 'del', hostIf).catch(() => {});
    await ip('netns', 'del', name).catch(() => {});
  });
  await ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
  await ip('link', 'set', nsIf, 'netns', name);
  await ip('addr', 'add', `${subnet}.1/24`, 'dev', hostIf);
  await ip('link', 'set', hostIf, 'up');
  await ip('-n', name, 'addr', 'add', `${subnet}.2/24`, 'dev', nsIf);
  await ip('-n', name, 'link', 'set', nsIf, 'up');
  await ip('-n', name, 'link', 'set', 'lo', 'up');
  return {
    name,
    address: `${subnet}.2`,
    hostIf,
    down: async () => void (await ip('link', 'set', hostIf, 'down')),
    up: async () => void (await ip('link', 'set', hostIf, 'up')),
  };
}
