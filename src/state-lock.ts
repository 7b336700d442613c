// One agent owns a state directory at a time, decided by the kernel: the owner holds an
// exclusive flock(2) on the lock file, which the kernel drops when the process dies, however it
// dies. The file's content only tells others who the owner is and where it listens (so a
// `stdio` invocation can relay to the running daemon instead of competing); it is written only
// while the lock is held, and a reader never takes or moves anything.
import { closeSync, fstatSync, ftruncateSync, lstatSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { native } from './libvirt/binding.js';
import { checkOwnDirectory, openOwnFile } from './own-files.js';

export interface LockInfo {
  pid: number;
  listen: { host: string; port: number } | null;
  /** Secret that authenticates the local stdio relay; the file is 0600, the agent's user's alone. */
  relayToken?: string;
  tls?: boolean;
  /** The daemon's frame and batch limits, which the relay applies to the lines it forwards. */
  limits?: { maxPayloadBytes: number; maxBatch: number };
  /** The local unix socket it serves JSON-RPC on (the CLI connects there directly). */
  socket?: string;
}

/** flock(2): true once held, false if another holds it (nonblocking). */
export type Flock = (fd: number, exclusive: boolean, nonblocking: boolean) => boolean;

/** `holder` is null when the owner has not said who it is within the wait (it just started, or is stuck). */
export type LockResult =
  { acquired: true; release: () => void; update: (info: LockInfo) => void } | { acquired: false; holder: LockInfo | null };

export const LOCK_FILE = 'agent.lock';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readAll(fd: number): string {
  const buf = Buffer.alloc(64 * 1024);
  let n = 0;
  for (let got; n < buf.length && (got = readSync(fd, buf, n, buf.length - n, n)) > 0;) n += got;
  return buf.subarray(0, n).toString('utf8');
}

/** What the lock file says, if it names a live process other than this one. */
function readHolder(path: string): LockInfo | null {
  try {
    const fd = openOwnFile(path, 'read');
    try {
      const info = JSON.parse(readAll(fd)) as LockInfo;
      return typeof info?.pid === 'number' && info.pid !== process.pid && alive(info.pid) ? info : null;
    } finally {
      closeSync(fd);
    }
  } catch {
    return null; // empty, torn or gone
  }
}

/** Rewritten in place (no truncation first): on a full filesystem the file keeps the block it has. */
function writeInPlace(fd: number, text: string): void {
  const n = writeSync(fd, text, 0);
  ftruncateSync(fd, n);
}

/**
 * Checks (and creates, 0700) the state directory, then takes its lock without waiting for it.
 * The lock file is opened as the agent's own (no symbolic link, its user's, one link, 0600).
 * While it is held by an owner that has not said who it is yet (it writes right after taking
 * the lock; or it is stopping and has emptied it), the lock is tried again for `waitMs`.
 */
export async function acquireStateLock(stateDir: string, flock: Flock = native.flock, waitMs = 3000): Promise<LockResult> {
  await checkOwnDirectory(stateDir, 'state directory', { create: true });
  const path = join(stateDir, LOCK_FILE);
  const until = Date.now() + waitMs;
  for (;;) {
    const fd = openOwnFile(path, 'lock');
    let held = false;
    try {
      if (flock(fd, true, true)) {
        // The path still names the file locked (the agent never removes it; someone else might have).
        const locked = fstatSync(fd);
        const now = lstatSync(path, { throwIfNoEntry: false });
        if (now?.ino === locked.ino && now.dev === locked.dev) {
          const lock = owned(fd);
          held = true;
          return lock;
        }
      } else {
        const holder = readHolder(path);
        if (holder || Date.now() >= until) return { acquired: false, holder };
      }
    } finally {
      if (!held) closeSync(fd);
    }
    if (Date.now() >= until) throw new Error(`cannot take the lock ${path}: it keeps being replaced`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The lock, held on `fd`: its content written now, updated in place, emptied on release. */
function owned(fd: number): LockResult {
  const write = (info: LockInfo) => writeInPlace(fd, JSON.stringify(info));
  write({ pid: process.pid, listen: null });
  let released = false;
  return {
    acquired: true,
    update: write,
    release: () => {
      if (released) return;
      released = true;
      // Emptied of the owner's details (the relay token), not removed: a removed lock file
      // lets a waiter lock a file nobody finds. Kept a block long, for a full filesystem.
      try {
        writeInPlace(fd, '{}');
      } finally {
        closeSync(fd);
      }
    },
  };
}
