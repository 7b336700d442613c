// Which directories a destination may be created in, after sshd's StrictModes: every directory
// from "/" down to the destination's parent must be a real directory (no symlink), owned by
// root (or a configured trusted owner such as libvirt-qemu) and writable by nobody else. Then
// no local user but root can swap a component between the check and QEMU's open, so the path
// the agent checked is the path libvirt opens.
import { promises as fs, type Stats } from 'node:fs';
import { readFileSync } from 'node:fs';
import { dirname, resolve, sep } from 'node:path';

const STICKY = 0o1000;
const GROUP_OTHER_WRITE = 0o022;
const ROOT: ReadonlySet<number> = new Set([0]);

export class UntrustedPath extends Error {}
/** A directory on the way is missing (every one above it passed). */
export class MissingPath extends UntrustedPath {}

/** "/a/b/c" → ["/", "/a", "/a/b", "/a/b/c"]. */
export function chain(p: string): string[] {
  const out = ['/'];
  let cur = '';
  for (const part of p.split(sep).filter(Boolean)) out.push((cur += sep + part));
  return out;
}

export const isUnder = (p: string, root: string) => root === '/' || p === root || p.startsWith(root + sep);
export const isNormalAbsolute = (p: string) => p.startsWith('/') && resolve(p) === p;

const octal = (m: number) => (m & 0o7777).toString(8).padStart(4, '0');

async function lstatDir(d: string): Promise<Stats> {
  let st: Stats;
  try {
    st = await fs.lstat(d);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new (code === 'ENOENT' ? MissingPath : UntrustedPath)(`'${d}' does not exist (${code})`);
  }
  if (st.isSymbolicLink()) throw new UntrustedPath(`'${d}' is a symbolic link`);
  if (!st.isDirectory()) throw new UntrustedPath(`'${d}' is not a directory`);
  return st;
}

/**
 * Checks a configured root at start-up: canonical, and every ancestor owned by root and not
 * writable by group or others, unless sticky and root-owned (/tmp, /var/tmp: others may add
 * entries there but not replace root's); the root itself as strictly as any directory below it.
 * `ancestorOwners`: who may own an ancestor (the agent's own directories also allow its user).
 */
export async function checkRoot(root: string, trusted: Set<number>, ancestorOwners: ReadonlySet<number> = ROOT): Promise<void> {
  if (!isNormalAbsolute(root)) throw new UntrustedPath(`'${root}' is not an absolute, normalized path`);
  const dirs = chain(root);
  for (const d of dirs.slice(0, -1)) {
    const st = await lstatDir(d);
    if (!ancestorOwners.has(st.uid))
      throw new UntrustedPath(`ancestor '${d}' is owned by uid ${st.uid}, not root${ancestorOwners.size > 1 ? ' or the agent' : ''}`);
    if (st.mode & GROUP_OTHER_WRITE && !(st.mode & STICKY))
      throw new UntrustedPath(`ancestor '${d}' is writable by group or others (mode ${octal(st.mode)}) and not sticky`);
  }
  await checkTrusted(root, trusted);
  const real = await fs.realpath(root);
  if (real !== root) throw new UntrustedPath(`'${root}' resolves to '${real}'; configure the canonical path`);
}

async function checkTrusted(d: string, trusted: Set<number>): Promise<void> {
  const st = await lstatDir(d);
  if (st.uid !== 0 && !trusted.has(st.uid))
    throw new UntrustedPath(`'${d}' is owned by uid ${st.uid}, not root${trusted.size ? ' or a trusted owner' : ''}`);
  if (st.mode & GROUP_OTHER_WRITE) throw new UntrustedPath(`'${d}' is writable by group or others (mode ${octal(st.mode)})`);
}

/**
 * Per call: `path`'s parent and every directory between it and `root` (both included) are
 * trustworthy directories, and the parent's real path is what the agent checked.
 */
export async function checkParents(root: string, path: string, trusted: Set<number>): Promise<void> {
  const parent = dirname(path);
  for (const d of chain(parent)) {
    if (isUnder(d, root)) await checkTrusted(d, trusted);
  }
  const real = await fs.realpath(parent);
  if (real !== parent) throw new UntrustedPath(`'${parent}' resolves to '${real}'`);
}

/** Numeric uids, or user names looked up in /etc/passwd (no NSS: the agent runs before it may be up). */
export function resolveOwners(owners: string[], passwd = '/etc/passwd'): Set<number> {
  const out = new Set<number>();
  let table: Map<string, number> | null = null;
  for (const o of owners) {
    if (/^\d+$/.test(o)) {
      out.add(Number(o));
      continue;
    }
    table ??= new Map(
      readFileSync(passwd, 'utf8')
        .split('\n')
        .map((l) => l.split(':'))
        .filter((f) => f.length > 3)
        .map((f) => [f[0]!, Number(f[2])]),
    );
    const uid = table.get(o);
    if (uid === undefined) throw new UntrustedPath(`trusted directory owner '${o}' is not a user of this host`);
    out.add(uid);
  }
  return out;
}

/**
 * For a file the agent does not create but lets QEMU open (an image's backing file): every
 * directory from "/" down to `path`'s parent is a real directory that only root (or a trusted
 * owner) can change: owned by one of them and not group/other-writable, unless sticky and
 * root-owned (/var/tmp). Then nobody else can swap the name after the check.
 */
export async function checkChain(path: string, trusted: Set<number>): Promise<void> {
  for (const d of chain(dirname(path))) {
    const st = await lstatDir(d);
    if (st.uid !== 0 && !trusted.has(st.uid)) throw new UntrustedPath(`'${d}' is owned by uid ${st.uid}, not root`);
    if (st.mode & GROUP_OTHER_WRITE && !(st.mode & STICKY && st.uid === 0))
      throw new UntrustedPath(`'${d}' is writable by group or others (mode ${octal(st.mode)})`);
  }
}
