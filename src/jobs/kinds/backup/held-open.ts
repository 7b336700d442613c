// Whether a file is still open in some process, told from the locks on its inode: QEMU takes OFD
// locks on every image it opens (file-posix locking, on by default) and they go when it closes
// the file. The check after libvirt's detach of a backup's targets that QEMU did close them
// (its close writes the last metadata). Read from /proc/locks, matched by device and inode.
import { promises as fs } from 'node:fs';

/** /proc/locks grows with the host's locks: read at most this much (beyond: unknown). */
const MAX_LOCKS_BYTES = 16 * 1024 * 1024;
const LOCKS = '/proc/locks';
const READ_BYTES = 64 * 1024;

/** The key /proc/locks prints for an inode: `MAJ:MIN:INO`, major and minor in hex (fs/locks.c). */
export async function inodeKey(path: string): Promise<string | null> {
  const st = await fs.stat(path, { bigint: true }).catch(() => null);
  if (!st) return null;
  // st_dev in glibc's encoding (gnu_dev_major / gnu_dev_minor).
  const dev = st.dev;
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
}

/** The inode keys that hold a lock now; null when the table cannot be read within its bound. */
export async function lockedInodes(): Promise<Set<string> | null> {
  // Read in small pieces (polled every few ms): memory follows the table's size, up to the bound.
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    const fh = await fs.open(LOCKS, 'r');
    try {
      for (;;) {
        const buf = Buffer.allocUnsafe(READ_BYTES);
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        chunks.push(buf.subarray(0, bytesRead));
        total += bytesRead;
        if (total > MAX_LOCKS_BYTES) return null;
      }
    } finally {
      await fh.close();
    }
  } catch {
    return null;
  }
  const text = Buffer.concat(chunks, total).toString('latin1');
  const keys = new Set<string>();
  for (const m of text.matchAll(/ ([0-9a-f]+:[0-9a-f]+:\d+) /g)) keys.add(m[1]!);
  return keys;
}

/** true: locked now; false: not; null: cannot tell (no such file, or the table unreadable). */
export async function isLocked(path: string): Promise<boolean | null> {
  const [key, locked] = await Promise.all([inodeKey(path), lockedInodes()]);
  return key === null || locked === null ? null : locked.has(key);
}
