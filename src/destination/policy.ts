// Where a copy may write: the destination policy, built once at start-up from the config
// (roots checked then; the agent refuses to start on an untrustworthy one) and applied to every
// destination before libvirt is asked anything, so a refused destination changes nothing.
import { promises as fs, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import type { AgentConfig, Destination } from '../generated/api.js';
import { DEFAULTS } from '../generated/api.js';
import type { DiskXml } from '../libvirt/types.js';
import type { DiskInfo } from '../libvirt/disk-xml.js';
import { checkParents, checkRoot, isNormalAbsolute, isUnder, resolveOwners, UntrustedPath } from './dirs.js';
import { clash, deviceKey, identitiesOf } from './identity.js';
import { NetworkError, parseNetworkUrl, type NetworkTarget } from '../net/network-url.js';
import { rejectDestination as reject, toDiskXml } from './xml.js';
import { checkImageReferences, recheckImageReferences, type ImageCheckContext } from './image-policy.js';
import { readImageHeader } from './image-header.js';

export interface DestinationContext {
  reuseExternal: boolean;
  /** The disk being copied. */
  disk: DiskInfo;
  /** Every source, mirror and backing path of every domain, running or defined (live and inactive XML). */
  domainDisks: Iterable<string>;
  /** A shallow copy: a reused destination must name the disk's backing layer (and nothing else). */
  shallow?: boolean;
}

/** A destination that passed the policy, in canonical form, and the XML libvirt gets for it. */
export interface CheckedDestination {
  destination: Destination;
  xml: DiskXml;
  /** A reused image: checks its header again, right before libvirt opens it; refuses any change. */
  recheck?: () => Promise<void>;
}

export type DestinationCheck = (dest: Destination, ctx: DestinationContext) => Promise<CheckedDestination>;

export interface DestinationPolicy {
  /** Canonical directories under which files may be created; ['/'] only with allowAnyDestination. */
  roots: string[];
  /** Block devices that may be destinations (as configured; compared by major:minor). */
  devices: string[];
  /** uids besides root that may own directories below a root. */
  trustedOwners: Set<number>;
  network: NetworkRule[];
}

type PolicyConfig = Pick<
  AgentConfig,
  'allowedRoots' | 'allowedDevices' | 'allowAnyDestination' | 'trustedDirectoryOwners' | 'allowedNetworkDestinations'
>;

/** The config schema's allowedRoots default. */
export const DEFAULT_ROOTS: string[] = [...DEFAULTS.AgentConfig.allowedRoots];

/**
 * The policy the config describes, after checking every root. Throws an Error naming the root
 * and the reason; the agent does not start with it. `warn` hears about allowAnyDestination.
 */
export async function loadDestinationPolicy(cfg: PolicyConfig, warn: (msg: string, data: object) => void): Promise<DestinationPolicy> {
  let trustedOwners: Set<number>;
  try {
    trustedOwners = resolveOwners(cfg.trustedDirectoryOwners ?? []);
  } catch (e) {
    throw new Error(`trustedDirectoryOwners: ${(e as Error).message}`);
  }
  const roots = cfg.allowAnyDestination ? ['/'] : (cfg.allowedRoots ?? DEFAULT_ROOTS);
  if (cfg.allowAnyDestination) {
    warn(
      'allowAnyDestination is set: file destinations may be created in any directory that passes the ownership checks, not only under allowedRoots',
      { allowedRoots: cfg.allowedRoots ?? DEFAULT_ROOTS },
    );
  }
  for (const r of roots) {
    try {
      await checkRoot(r, trustedOwners);
    } catch (e) {
      if (e instanceof UntrustedPath) throw new Error(`allowed root '${r}' is not trustworthy: ${e.message}`);
      throw e;
    }
  }
  for (const rule of cfg.allowedNetworkDestinations ?? []) {
    try {
      new RegExp(rule.namePattern, 'u');
    } catch (e) {
      throw new Error(
        `allowedNetworkDestinations: namePattern '${rule.namePattern}' is not a regular expression (${(e as Error).message})`,
      );
    }
  }
  return { roots, devices: cfg.allowedDevices ?? [], trustedOwners, network: cfg.allowedNetworkDestinations ?? [] };
}

type NetworkRule = NonNullable<AgentConfig['allowedNetworkDestinations']>[number];

/** The rule that allows `t`, if any. Hosts compare as written (no DNS: the rule names what libvirt gets). */
function allowingRule(t: NetworkTarget, rules: NetworkRule[]): NetworkRule | undefined {
  return rules.find(
    (r) =>
      r.protocol === t.protocol &&
      r.host.toLowerCase() === t.host &&
      r.port === t.port &&
      new RegExp(`^(?:${r.namePattern})$`, 'u').test(t.name),
  );
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await fs.lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return reject(`cannot inspect '${p}' (${(e as NodeJS.ErrnoException).code})`);
  }
}

async function untrusted<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof UntrustedPath) return reject(e.message);
    throw e;
  }
}

function checkNetwork(policy: DestinationPolicy, dest: Destination, ctx: DestinationContext): Destination {
  let t;
  try {
    t = parseNetworkUrl(dest.path);
  } catch (e) {
    return reject((e as NetworkError).message);
  }
  const url = `${t.protocol}://${t.host}:${t.port}/${t.name}`;
  if (!allowingRule(t, policy.network)) reject(`network destination ${url} is not listed in allowedNetworkDestinations`);
  if (ctx.reuseExternal && !dest.format) reject('reuseExternal needs an explicit format (libvirt would otherwise probe the image)');
  // The agent cannot read a remote image's header, so it cannot check what the header names.
  if (ctx.reuseExternal && dest.format === 'qcow2')
    reject(`reusing a qcow2 image on a network destination (${url}) is not supported: the agent cannot check its header`);
  for (const p of ctx.domainDisks) if (p === url) reject(`${url} is a disk of a domain`);
  return { ...dest, path: url };
}

export function makeDestinationCheck(policy: DestinationPolicy): DestinationCheck {
  return async (dest, ctx) => {
    const type = dest.type ?? DEFAULTS.Destination.type;
    let checked: Destination;
    if (type === 'network') {
      checked = checkNetwork(policy, dest, ctx);
    } else {
      const path = dest.path;
      if (!isNormalAbsolute(path)) reject(`path '${path}' must be absolute and normalized (no '..', '.', '//' or trailing '/')`);
      // eslint-disable-next-line no-control-regex
      if (/[\u0000-\u001f\u007f-\u009f]/.test(path)) reject('the path contains a control character');
      if (ctx.reuseExternal && !dest.format) reject('reuseExternal needs an explicit format (libvirt would otherwise probe the image)');
      if (type === 'block') await checkBlock(policy, path);
      else await checkFile(policy, path, ctx.reuseExternal);
      checked = { ...dest, path, type };
      const st = await lstatOrNull(path);
      const ids = await identitiesOf([...ctx.domainDisks, ...(ctx.disk.sourcePath ? [ctx.disk.sourcePath] : []), ...ctx.disk.backingPaths]);
      const hit = clash(ids, path, st);
      if (hit) {
        reject(
          st?.isBlockDevice() && ids.hosts.get(Number(st.rdev)) === hit
            ? `block device '${path}' holds the file system of '${hit}', a disk, backing file or mirror of a domain`
            : `'${path}' is the same ${st?.isBlockDevice() ? 'device' : 'file'} as '${hit}', a disk, backing file or mirror of a domain`,
        );
      }
      // A second name of any other file (one outside the roots, say) is not this destination's to overwrite.
      if (st?.isFile() && st.nlink > 1) reject(`'${path}' has ${st.nlink} hard links; a reused file must have one name`);
      if (ctx.reuseExternal) {
        const image = imageContext(policy, dest.format!, ctx);
        const facts = await checkImageReferences(path, image);
        return { destination: checked, xml: toDiskXml(checked), recheck: () => recheckImageReferences(path, image, facts) };
      }
    }
    return { destination: checked, xml: toDiskXml(checked) };
  };
}

/** What a reused image may make QEMU open: for a shallow copy the disk's first backing layer, else nothing. */
function imageContext(policy: DestinationPolicy, format: string, ctx: DestinationContext): ImageCheckContext {
  const layer = ctx.shallow ? ctx.disk.backingPaths[0] : undefined;
  return {
    policy,
    format,
    networkAllowed: (url) => !!allowingRule(parseNetworkUrl(url), policy.network),
    domainDisks: [...ctx.domainDisks, ...(ctx.disk.sourcePath ? [ctx.disk.sourcePath] : []), ...ctx.disk.backingPaths],
    backing: async () => {
      if (!layer) return null;
      // The disk's own header (a domain's disk, trusted) records its backing format.
      if (ctx.disk.format !== 'qcow2' || !ctx.disk.sourcePath) return { path: layer, format: null };
      const h = await readImageHeader(ctx.disk.sourcePath).catch((e: Error) =>
        reject(`cannot read the header of the disk '${ctx.disk.sourcePath}' (${e.message})`),
      );
      return { path: layer, format: h.backingFormat };
    },
  };
}

async function checkFile(policy: DestinationPolicy, path: string, reuse: boolean): Promise<void> {
  const root = policy.roots.find((r) => isUnder(dirname(path), r));
  if (!root) reject(`'${path}' is not under an allowed root (${policy.roots.join(', ') || 'none configured'})`);
  await untrusted(() => checkParents(root!, path, policy.trustedOwners));
  const st = await lstatOrNull(path);
  if (st?.isSymbolicLink()) reject(`'${path}' is a symbolic link`);
  if (st && !st.isFile()) reject(`'${path}' is not a regular file`);
  if (st && !reuse) reject(`'${path}' already exists (use reuseExternal to reuse it)`);
  if (!st && reuse) reject(`'${path}' does not exist, so it cannot be reused`);
}

async function checkBlock(policy: DestinationPolicy, path: string): Promise<void> {
  const st = await lstatOrNull(path);
  if (!st) reject(`'${path}' does not exist`);
  if (st!.isSymbolicLink()) reject(`'${path}' is a symbolic link; name the device itself`);
  if (!st!.isBlockDevice()) reject(`'${path}' is not a block device`);
  const allowed = await Promise.all(
    policy.devices.map((d) =>
      fs.stat(d).then(
        (s) => (s.isBlockDevice() ? deviceKey(s) : null),
        () => null,
      ),
    ),
  );
  if (!allowed.includes(deviceKey(st!))) reject(`block device '${path}' (${deviceKey(st!)}) is not in allowedDevices`);
  await untrusted(() => checkParents('/', path, new Set()));
}

/** The default roots, no devices, no network; roots not checked (the agent checks them at start-up). */
export const defaultDestinationCheck: DestinationCheck = makeDestinationCheck({
  roots: DEFAULT_ROOTS,
  devices: [],
  trustedOwners: new Set(),
  network: [],
});
