// The file side of deleteMerged (cleanup.ts): whether the agent may delete a layer that left a
// chain, and the deletion itself. A file is deleted only when it is a regular file with one
// link, under one of the destination policy's roots, in directories only root (or a trusted
// owner) can change (destination/dirs.ts: then nobody else can swap the name between the check
// and the unlink), and no domain, running or defined, uses it by identity (dev+ino; by
// canonical path for names). Right before the unlink the file is opened without following a
// link and its identity compared with the one journaled when it was chosen.
import { constants as C, promises as fs } from 'node:fs';
import { checkParents, isNormalAbsolute, isUnder, UntrustedPath } from '../destination/dirs.js';
import { canonicalOf, clash, fileKey, type DiskIdentities } from '../destination/identity.js';

/** Where the agent may delete: the destination policy's roots and trusted directory owners. */
export interface CleanupPolicy {
  roots: string[];
  trustedOwners: Set<number>;
}

/** delete: the file and its identity (st_dev:st_ino); gone: nothing there; keep: why not. */
export type Verdict = { verdict: 'delete'; id: string } | { verdict: 'gone' } | { verdict: 'keep'; reason: string; user?: string };

const errno = (e: unknown) => (e as NodeJS.ErrnoException).code;

/** Whether `path` (a layer that left the chain) may be deleted; `ids`: every domain's storage. */
export async function mayDelete(path: string | null, policy: CleanupPolicy, ids: DiskIdentities): Promise<Verdict> {
  if (!path || !path.startsWith('/')) return { verdict: 'keep', reason: 'not a local file' };
  if (!isNormalAbsolute(path)) return { verdict: 'keep', reason: 'not a normalized absolute path' };
  const root = policy.roots.find((r) => isUnder(path, r));
  if (!root) return { verdict: 'keep', reason: `not under the destination policy's roots (${policy.roots.join(', ') || 'none'})` };
  try {
    await checkParents(root, path, policy.trustedOwners);
  } catch (e) {
    if (errno(e) === 'ENOENT') return { verdict: 'gone' };
    if (e instanceof UntrustedPath) return { verdict: 'keep', reason: `its directory is not trusted: ${e.message}` };
    throw e;
  }
  const st = await fs.lstat(path).catch((e: unknown) => {
    if (errno(e) === 'ENOENT') return null;
    throw e;
  });
  if (!st) return { verdict: 'gone' };
  if (st.isSymbolicLink()) return { verdict: 'keep', reason: 'a symbolic link' };
  if (st.isBlockDevice()) return { verdict: 'keep', reason: 'a block device (the agent never deletes one)' };
  if (!st.isFile()) return { verdict: 'keep', reason: 'not a regular file' };
  if (st.nlink !== 1) return { verdict: 'keep', reason: `a file with ${st.nlink} hard links` };
  const who = clash(ids, await canonicalOf(path), st);
  if (who) return { verdict: 'keep', reason: `a domain (running or defined) still uses it, as ${who}`, user: who };
  return { verdict: 'delete', id: fileKey(st) };
}

/**
 * Deletes `path` if it is still the file chosen (`id`): opened without following a link
 * (O_NOFOLLOW; O_NONBLOCK so a FIFO cannot hang it), its identity compared, then unlinked by
 * name. A file already gone is `removed` (a crash after the unlink and before its record).
 */
export async function unlinkIfSame(path: string, id: string): Promise<{ removed: true } | { removed: false; reason: string }> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(path, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  } catch (e) {
    if (errno(e) === 'ENOENT') return { removed: true };
    if (errno(e) === 'ELOOP') return { removed: false, reason: 'it became a symbolic link after it was chosen' };
    throw e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || fileKey(st) !== id)
      return { removed: false, reason: `its identity changed after it was chosen (was ${id}, now ${fileKey(st)})` };
  } finally {
    await fh.close();
  }
  await fs.unlink(path).catch((e: unknown) => {
    if (errno(e) !== 'ENOENT') throw e;
  });
  return { removed: true };
}
