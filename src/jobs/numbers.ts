// libvirt counts in 64-bit integers; JSON numbers are exact only up to 2^53. The range
// (0…2^64−1) is enforced by schemas/defs/bytes.json before a value gets here.
import type { ByteCount } from '../generated/api.js';

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export function toByteCount(v: bigint): ByteCount {
  return v <= SAFE ? Number(v) : v.toString();
}

export function fromByteCount(v: ByteCount | undefined): bigint | undefined {
  if (v === undefined) return undefined;
  return BigInt(v);
}
