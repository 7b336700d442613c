// What a test proves unchanged: the contents (and, if asked, the owner) of every file under some paths.
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';

/**
 * sha256 of every regular file under each path (recursively), keyed by path; `owner`: prefixed
 * "uid:gid ". A symbolic link inside a walked directory is recorded as its target and not
 * followed: a test's prop `root/etc -> /etc` must not make the proof cover the host's /etc,
 * which other tests change (domains defined and undefined) while this one runs. A path given
 * itself is followed.
 */
export function fingerprint(paths: string[], opts: { owner?: boolean } = {}): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (p: string, given: boolean) => {
    const st = given ? statSync(p, { throwIfNoEntry: false }) : lstatSync(p, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isSymbolicLink()) out.set(p, `symlink -> ${readlinkSync(p)}`);
    else if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e), false);
    else if (st.isFile()) {
      const hash = createHash('sha256').update(readFileSync(p)).digest('hex');
      out.set(p, opts.owner ? `${st.uid}:${st.gid} ${hash}` : hash);
    }
  };
  for (const p of paths) walk(p, true);
  return out;
}
