// What a test proves unchanged: the contents (and, if asked, the owner) of every file under some paths.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** sha256 of every regular file under each path (recursively), keyed by path; `owner`: prefixed "uid:gid ". */
export function fingerprint(paths: string[], opts: { owner?: boolean } = {}): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (p: string) => {
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
    else if (st.isFile()) {
      const hash = createHash('sha256').update(readFileSync(p)).digest('hex');
      out.set(p, opts.owner ? `${st.uid}:${st.gid} ${hash}` : hash);
    }
  };
  for (const p of paths) walk(p);
  return out;
}
