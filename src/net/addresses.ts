// Network address helpers (a leaf: no agent imports). The one definition of "loopback".
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

/** True for an IP literal in 127.0.0.0/8, ::1, or an IPv4-mapped 127.x (::ffff:127.0.0.1). */
export function isLoopbackAddress(addr: string | undefined): boolean {
  if (!addr) return false;
  const a = addr.toLowerCase().replace(/^\[|\]$/g, '');
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)?.[1] ?? a;
  if (isIP(v4) === 4) return v4.startsWith('127.');
  return isIP(a) === 6 && /^(0{0,4}:){2,7}0{0,3}1$|^::1$/.test(a);
}

/**
 * Every address a listen host stands for (a name may resolve to several, or to 0.0.0.0), and
 * whether all of them are loopback: only then may the agent listen without TLS.
 */
export async function resolvesToLoopbackOnly(
  host: string,
  resolve = (h: string) => lookup(h, { all: true }),
): Promise<{ loopback: boolean; addresses: string[] }> {
  const bare = host.replace(/^\[|\]$/g, '');
  const addresses = isIP(bare) ? [bare] : (await resolve(bare)).map((a) => a.address);
  return { loopback: addresses.length > 0 && addresses.every(isLoopbackAddress), addresses };
}
