// One agent owns a state directory at a time. The lock file names the owner's pid and where
// it listens, so a `stdio` invocation can relay to the running daemon instead of competing.
import { closeSync, ftruncateSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface LockInfo {
  pid: number;
  listen: { host: string; port: number } | null;
  /** Secret that authenticates the local stdio relay; the file is readable by root only. */
  relayToken?: string;
  tls?: boolean;
  /** The daemon's frame and batch limits, which the relay applies to the lines it forwards. */
  limits?: { maxPayloadBytes: number; maxBatch: number };
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

function writeInPlace(file: string, text: string): void {
  const fd = openSync(file, 'r+');
  try {
    const n = writeSync(fd, text, 0);
    ftruncateSync(fd, n);
  } finally {
    closeSync(fd);
  }
}

function acquired(path: string, write: (info: LockInfo) => void): LockResult {
  return {
    acquired: true,
    update: write,
    release: () => {
      try {
        const cur = JSON.parse(readFileSync(path, 'utf8')) as LockInfo;
        if (cur.pid === process.pid) rmSync(path, { force: true });
      } catch {
        /* already gone */
      }
    },
  };
}

export function acquireStateLock(stateDir: string): LockResult {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, 'agent.lock');
  // Rewritten in place (no truncation first): on a full filesystem the file keeps the block it
  // has, so taking over a dead agent's lock or updating it needs no free space.
  const write = (info: LockInfo, file = path) => writeInPlace(file, JSON.stringify(info));
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, JSON.stringify({ pid: process.pid, listen: null } satisfies LockInfo));
      closeSync(fd);
      return acquired(path, write);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let holder: LockInfo | null = null;
      try {
        holder = JSON.parse(readFileSync(path, 'utf8')) as LockInfo;
      } catch {
        /* torn or empty: treat as stale */
      }
      if (holder && holder.pid !== process.pid && alive(holder.pid)) return { acquired: false, holder };
      // Stale: its owner is gone. Taken over by moving it aside (one taker wins the rename),
      // rewriting it and linking it back (fails if another agent made a new lock meanwhile).
      const mine = `${path}.${process.pid}`;
      try {
        renameSync(path, mine);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      try {
        write({ pid: process.pid, listen: null }, mine);
        linkSync(mine, path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw err;
      } finally {
        rmSync(mine, { force: true });
      }
      return acquired(path, write);
    }
  }
  throw new Error(`cannot take the lock ${path}`);
}
