// An existing image handed to libvirt is input: its header makes QEMU open other files and
// endpoints (a backing file, an external data file) that no caller named and no path check saw.
// One function reads the header and applies the destination policy to every one of them, for
// reused destinations now and for any other image the agent lets QEMU open later (overlays).
// It returns the facts it checked, so that the same check made again right before libvirt is
// called can refuse an image that changed in between.
import { promises as fs, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { DestinationPolicy } from './policy.js';
import { checkChain, checkParents, isNormalAbsolute, isUnder, UntrustedPath } from './dirs.js';
import { deviceKey, fileKey, identitiesOf, clash } from './identity.js';
import { ImageHeaderError, readImageHeader, referenceOf, type ImageHeader } from './image-header.js';
import { NetworkError, parseNetworkUrl } from '../net/network-url.js';
import { rejectDestination as reject } from './xml.js';

/** The one layer an image may name as its backing: a domain's own (trusted) layer. */
export interface ExpectedBacking {
  /** Its path, device or network URL, as libvirt's XML names it. */
  path: string;
  /** The backing format the image must record for it (null: none recorded). */
  format: string | null;
}

export interface ImageCheckContext {
  policy: Pick<DestinationPolicy, 'roots' | 'trustedOwners'>;
  /** The format libvirt will be told; only qcow2 makes QEMU interpret a header. */
  format: string;
  /** The backing the image must name, or null: it must name none. Called only when it names one. */
  backing: () => Promise<ExpectedBacking | null>;
  /** Whether the policy's network allowlist names this canonical URL. */
  networkAllowed: (url: string) => boolean;
  /** Every source, mirror and backing path of every domain: a data file may be none of them. */
  domainDisks: Iterable<string>;
}

/** What the check found, field by field; the same check again must find exactly this. */
export type ImageFacts = Record<string, string>;

const idOf = (st: Stats) => (st.isBlockDevice() ? `device ${deviceKey(st)}` : `file ${fileKey(st)}`);

async function statOrNull(p: string, follow: boolean): Promise<Stats | null> {
  try {
    return await (follow ? fs.stat(p) : fs.lstat(p));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return reject(`cannot inspect '${p}' (${(e as NodeJS.ErrnoException).code})`);
  }
}

async function trusted(what: string, f: () => Promise<void>): Promise<void> {
  try {
    await f();
  } catch (e) {
    if (e instanceof UntrustedPath) reject(`${what}: ${e.message}`);
    throw e;
  }
}

/**
 * Reads `path`'s header and checks every file or endpoint it would make QEMU open against the
 * policy. Throws destinationRejected naming the header field and the file; returns the facts.
 */
export async function checkImageReferences(path: string, ctx: ImageCheckContext): Promise<ImageFacts> {
  let h: ImageHeader;
  try {
    h = await readImageHeader(path);
  } catch (e) {
    if (e instanceof ImageHeaderError) return reject(`the header of '${path}' cannot be checked: ${e.message}`);
    throw e;
  }
  const facts: ImageFacts = { identity: idOf(h.stat) };
  if (ctx.format !== 'qcow2') return facts;
  // A format QEMU is told but does not find is an error at best, a probe at worst.
  if (h.detected !== 'qcow2')
    reject(`'${path}' is declared qcow2 but its header is ${h.detected ?? 'not a known image format (raw data)'}`);
  if (h.encrypted) reject(`'${path}' is encrypted (qcow2 header field crypt_method); encrypted images are not supported`);
  Object.assign(facts, {
    backing: String(h.backing),
    'backing format': String(h.backingFormat),
    'data file': String(h.dataFile),
    'external data file bit': String(h.needsDataFile),
  });
  if (h.backing !== null) facts['backing file identity'] = await checkBacking(path, h, ctx);
  if (h.dataFile !== null || h.needsDataFile) facts['data file identity'] = await checkDataFile(path, h, ctx);
  return facts;
}

/** The backing name must lead to exactly the expected layer (by identity), with its format. */
async function checkBacking(path: string, h: ImageHeader, ctx: ImageCheckContext): Promise<string> {
  const name = h.backing!;
  const field = `backing file '${name}' in the header of '${path}'`;
  const want = await ctx.backing();
  if (!want)
    return reject(
      `${field}: this copy's destination must have no backing file (only a shallow copy of a disk with a backing chain shares it)`,
    );
  const ref = referenceOf(name, path);
  const id =
    ref.kind === 'protocol' ? checkProtocol(field, name, ref.protocol, want, ctx) : await checkBackingFile(field, ref.path, want, ctx);
  // The same layer, read as the same format (a raw read of a qcow2 layer would show its metadata).
  if (h.backingFormat !== want.format)
    reject(`${field}: backing format ${h.backingFormat ?? '(none)'} is not ${want.format ?? '(none)'}, the disk's backing format`);
  return id;
}

function checkProtocol(field: string, name: string, protocol: string, want: ExpectedBacking, ctx: ImageCheckContext): string {
  if (protocol === 'json') return reject(`${field}: a json: description is not allowed`);
  let url: string;
  try {
    const t = parseNetworkUrl(name);
    url = `${t.protocol}://${t.host}:${t.port}/${t.name}`;
  } catch (e) {
    if (e instanceof NetworkError) return reject(`${field}: protocol '${protocol}' is not allowed (${e.message})`);
    throw e;
  }
  if (!ctx.networkAllowed(url)) reject(`${field}: ${url} is not listed in allowedNetworkDestinations`);
  if (url !== want.path) reject(`${field}: ${url} is not ${want.path}, the disk's backing layer`);
  return `url ${url}`;
}

/** A local backing file: the very file of the disk's layer, reached through names only root can change. */
async function checkBackingFile(field: string, path: string, want: ExpectedBacking, ctx: ImageCheckContext): Promise<string> {
  if (!want.path.startsWith('/')) return reject(`${field}: a local file is not ${want.path}, the disk's backing layer`);
  // As QEMU opens it: the name resolved against the image's directory, symbolic links followed.
  const st = await statOrNull(path, true);
  if (!st) return reject(`${field}: '${path}' does not exist`);
  const ws = await statOrNull(want.path, true);
  if (!ws || idOf(st) !== idOf(ws)) return reject(`${field}: '${path}' is not the disk's backing layer '${want.path}'`);
  // The same file now; and nobody but root can make the name lead elsewhere later.
  await trusted(field, () => checkChain(path, ctx.policy.trustedOwners));
  const l = await statOrNull(path, false);
  if (l?.isSymbolicLink()) {
    const real = await fs.realpath(path);
    const hop = resolve(dirname(path), await fs.readlink(path));
    if (hop !== real) reject(`${field}: '${path}' reaches '${real}' through more than one symbolic link`);
    await trusted(field, () => checkChain(real, ctx.policy.trustedOwners));
  }
  return idOf(st);
}

/** An external data file is written by the copy: the same rules as a destination file, by identity. */
async function checkDataFile(path: string, h: ImageHeader, ctx: ImageCheckContext): Promise<string> {
  const name = h.dataFile;
  if (name === null) return reject(`the header of '${path}' requires an external data file (incompatible feature bit) but names none`);
  const field = `data file '${name}' in the header of '${path}'`;
  if (referenceOf(name, path).kind === 'protocol') return reject(`${field}: a protocol or json: name is not allowed`);
  // QEMU opens a relative data-file name from its own working directory, not the image's.
  if (!isNormalAbsolute(name)) return reject(`${field}: the name must be absolute and normalized`);
  const root = ctx.policy.roots.find((r) => isUnder(dirname(name), r));
  if (!root) return reject(`${field}: not under an allowed root (${ctx.policy.roots.join(', ') || 'none configured'})`);
  await trusted(field, () => checkParents(root, name, ctx.policy.trustedOwners));
  const st = await statOrNull(name, false);
  if (!st) return reject(`${field}: it does not exist`);
  if (st.isSymbolicLink()) reject(`${field}: it is a symbolic link`);
  if (!st.isFile()) reject(`${field}: it is not a regular file`);
  if (st.nlink > 1) reject(`${field}: it has ${st.nlink} hard links; a data file must have one name`);
  if (idOf(st) === idOf(h.stat)) reject(`${field}: it is the image itself`);
  const hit = clash(await identitiesOf(ctx.domainDisks), name, st);
  if (hit) reject(`${field}: it is the same file as '${hit}', a disk, backing file or mirror of a domain`);
  return idOf(st);
}

/** Checks the image again and refuses it if anything the first check found differs now. */
export async function recheckImageReferences(path: string, ctx: ImageCheckContext, before: ImageFacts): Promise<void> {
  const now = await checkImageReferences(path, ctx);
  for (const k of new Set([...Object.keys(before), ...Object.keys(now)])) {
    if (before[k] !== now[k])
      reject(`'${path}' changed after it was checked: its ${k} was ${before[k] ?? '(none)'}, is now ${now[k] ?? '(none)'}`);
  }
}
