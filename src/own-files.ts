// The agent's own files (the state directory with its lock and journal, the audit file, the
// socket directory) under one rule, the destination roots' (destination/dirs.ts, after sshd's
// StrictModes): each directory, and every directory above it, is a real directory owned by root
// or the agent's user and writable by nobody else. Then only root can plant a link where the
// agent writes. The files themselves are opened here only, never through a symbolic link:
// created with O_EXCL, or checked after opening to be the agent's own regular file with one link.
import { closeSync, constants as C, fchmodSync, fstatSync, lstatSync, mkdirSync, openSync, promises as fs, type Stats } from 'node:fs';
import { checkRoot, MissingPath, UntrustedPath } from './destination/dirs.js';

/** A directory or file of the agent's own that it refuses to use; the message names it and why. */
export class UntrustedOwnPath extends Error {
  /** The errno of a refused open (ELOOP, EEXIST), for stateUnavailable. */
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

const uid = () => process.getuid!();

/**
 * How a file is opened:
 * - `new`: created here, and nothing may be at the path (temp files);
 * - `append`: created if missing, writes go to its end (the audit file);
 * - `lock`: created if missing, read and written in place, kept 0600 (the state lock);
 * - `read`: read only (journal records).
 */
export type OwnFileUse = 'new' | 'append' | 'lock' | 'read';

// O_NONBLOCK: a FIFO at the path fails the checks instead of hanging the open (no effect on files).
const FLAGS: Record<OwnFileUse, number> = {
  new: C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW,
  append: C.O_WRONLY | C.O_CREAT | C.O_APPEND | C.O_NOFOLLOW | C.O_NONBLOCK,
  lock: C.O_RDWR | C.O_CREAT | C.O_NOFOLLOW | C.O_NONBLOCK,
  read: C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK,
};

function refuseOpen(path: string, e: unknown): never {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ELOOP') throw new UntrustedOwnPath(`'${path}' is a symbolic link; the agent never follows one to its own files`, code);
  if (code === 'EEXIST') throw new UntrustedOwnPath(`'${path}' already exists; the agent creates this file itself`, code);
  throw e;
}

/** Why an opened file is not the agent's own plain file, or null. */
function notOwn(st: Stats): string | null {
  if (!st.isFile()) return 'not a regular file';
  if (st.uid !== uid()) return `owned by uid ${st.uid}, not the agent's (uid ${uid()})`;
  if (st.nlink !== 1) return `a file with ${st.nlink} hard links`;
  return null;
}

function settle(path: string, use: OwnFileUse, st: Stats, chmod: (mode: number) => void): void {
  const why = notOwn(st);
  if (why) throw new UntrustedOwnPath(`'${path}' is ${why}; not using it`);
  // The lock holds the relay token: root's alone, whatever an older agent or an admin left.
  if (use === 'lock' && (st.mode & 0o7777) !== 0o600) chmod(0o600);
}

/** Opens one of the agent's own files (a file descriptor; closing it is the caller's). */
export function openOwnFile(path: string, use: OwnFileUse): number {
  let fd: number;
  try {
    fd = openSync(path, FLAGS[use], 0o600);
  } catch (e) {
    refuseOpen(path, e);
  }
  try {
    settle(path, use, fstatSync(fd), (m) => fchmodSync(fd, m));
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** openOwnFile, as a FileHandle. */
export async function openOwnFileHandle(path: string, use: OwnFileUse): Promise<fs.FileHandle> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(path, FLAGS[use], 0o600);
  } catch (e) {
    refuseOpen(path, e);
  }
  try {
    const st = await fh.stat();
    settle(path, use, st, () => {
      throw new Error('unreachable: only the lock is chmodded');
    });
    return fh;
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/**
 * Checks a directory of the agent's own (`what` names it in the message): every directory from
 * "/" down to it owned by root or the agent's user, none writable by group or others (an
 * ancestor may be a root-owned sticky one such as /var/tmp), no symbolic link. `create`: made
 * 0700 if missing (never chmodded if present). `private`: it may not even be readable by others.
 */
export async function checkOwnDirectory(dir: string, what: string, opts: { create?: boolean; private?: boolean } = {}): Promise<void> {
  const check = () => checkRoot(dir, new Set([uid()]), new Set([0, uid()]));
  try {
    try {
      await check();
    } catch (e) {
      // Only the missing tail is created, once every existing directory above it passed.
      if (!opts.create || !(e instanceof MissingPath)) throw e;
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      await check();
    }
  } catch (e) {
    if (e instanceof UntrustedPath) throw new UntrustedOwnPath(`the ${what} '${dir}' is not trustworthy: ${e.message}`);
    throw e;
  }
  const st = lstatSync(dir);
  if (opts.private && st.mode & 0o077)
    throw new UntrustedOwnPath(
      `the ${what} '${dir}' is open to group or others (mode ${(st.mode & 0o7777).toString(8)}); make it 0700 (the agent does not change it)`,
    );
}
