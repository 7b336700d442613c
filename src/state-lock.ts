// One agent owns a state directory at a time. The lock file names the owner's pid and where
// it listens, so a `stdio` invocation can relay to the running daemon instead of competing.
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface LockInfo {
  pid: number;
  listen: { host: string; port: number } | null;
  /** Secret that authenticates the local stdio relay; the file is readable by root only. */
  relayToken?: string;
  tls?: boolean;
  /** The local unix socket it serves JSON-RPC on (the CLI connects there directly). */
  socket?: string;
}

export type LockResult = { acquired: true; release: () => void; update: (info: LockInfo) => void } | { acquired: false; holder: LockInfo };

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function acquireStateLock(stateDir: string): LockResult {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, 'agent.lock');
  // Replaced whole (temp file, rename): a reader never sees it empty or torn, which a second
  // agent would take for a stale lock and remove, and the CLI for no agent.
  const write = (info: LockInfo) => {
    const tmp = `${path}.${process.pid}.new`;
    const fd = openSync(tmp, 'w', 0o600);
    writeSync(fd, JSON.stringify(info));
    closeSync(fd);
    renameSync(tmp, path);
  };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, JSON.stringify({ pid: process.pid, listen: null } satisfies LockInfo));
      closeSync(fd);
      return {
        acquired: true,
        update: write,
        release: () => {
          try {
            const cur = JSON.parse(readFileSync(path, 'utf8')) as LockInfo;
            if (cur.pid === process.pid) rmSync(path, { force: true });
          } catch { /* already gone */ }
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let holder: LockInfo | null = null;
      try {
        holder = JSON.parse(readFileSync(path, 'utf8')) as LockInfo;
      } catch { /* torn or empty: treat as stale */ }
      if (holder && holder.pid !== process.pid && alive(holder.pid)) return { acquired: false, holder };
      rmSync(path, { force: true }); // stale: its owner is gone
    }
  }
  throw new Error(`cannot take the lock ${path}`);
}
