// A bandwidth as people write it, to bytes/s: the one parser behind the API's `bandwidth`
// (schemas/defs/bandwidth.json, normalised at validation in src/schemas.ts), the CLI's
// --bandwidth and `set-speed`. Units follow virsh's scaled integers (virScaleInteger): letter
// case never matters; B, byte, bytes = 1; K, M, G, T, P, E alone or followed by iB are powers of
// 1024; followed by B they are powers of 1000 ("b" is a byte, never a bit). An optional space
// may separate number and unit, an optional "/s" may follow. A fraction is allowed ("1.5G") and
// rounded down to whole bytes/s, but a non-zero value that would round down to 0 (which means
// "unlimited") is refused, as is anything above 2^64-1. What a number WITHOUT a unit means is the
// caller's: MiB/s on the CLI (as virsh's --bandwidth; --bytes makes it bytes/s); on the API a
// JSON integer is bytes/s and a string must name its unit. A leaf module: no imports.

export const MAX_BANDWIDTH = (1n << 64n) - 1n;

const GRAMMAR = /^([0-9]+)(?:\.([0-9]+))? ?([a-z]*)(\/s)?$/i;

const POWERS: Record<string, number> = { k: 1, m: 2, g: 3, t: 4, p: 5, e: 6 };

const EXAMPLES = 'e.g. 100M or 100MiB (MiB/s), 1.5G, 512K, 100MB (10^6), 1048576B';

export class BandwidthError extends Error {}

export type BareUnit = 'B' | 'MiB' | 'none';

/** The multiplier of a unit ('' = the bare unit's), or undefined for an unknown one. */
function scale(unit: string, bareUnit: BareUnit): bigint | undefined {
  const u = unit.toLowerCase();
  if (u === '') return bareUnit === 'MiB' ? 1n << 20n : bareUnit === 'B' ? 1n : undefined;
  if (u === 'b' || u === 'byte' || u === 'bytes') return 1n;
  const power = POWERS[u[0]!];
  if (power === undefined) return undefined;
  const rest = u.slice(1);
  if (rest === '' || rest === 'ib') return 1n << BigInt(10 * power);
  if (rest === 'b') return 10n ** BigInt(3 * power);
  return undefined;
}

/**
 * Bytes per second for `value`: a non-negative integer (in `bareUnit`), or a string as described
 * above. With bareUnit 'none' a string must name its unit. Throws BandwidthError saying what is
 * wrong (junk, unknown or missing unit, negative, above 2^64−1, a non-zero value below 1 byte/s).
 */
export function parseBandwidth(value: string | number | bigint, bareUnit: BareUnit): bigint {
  if (typeof value === 'bigint') value = value.toString();
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new BandwidthError(`bandwidth must be a number, got ${value}`);
    value = Number.isInteger(value) ? BigInt(value).toString() : String(value);
  }
  const text = value.trim();
  if (/^-/.test(text)) throw new BandwidthError(`bandwidth '${value}' is negative (0 means unlimited)`);
  const m = text.length <= 64 ? GRAMMAR.exec(text) : null;
  if (!m) {
    const form = bareUnit === 'none' ? 'a number with a unit' : 'a number with an optional unit';
    throw new BandwidthError(`bandwidth '${value}' is not ${form} (${EXAMPLES})`);
  }
  const [, whole, frac = '', unit = ''] = m;
  const mult = scale(unit, bareUnit);
  if (mult === undefined && unit === '') {
    throw new BandwidthError(`bandwidth '${value}' has no unit: a string must name one (${EXAMPLES}); a JSON number is bytes/s`);
  }
  if (mult === undefined) {
    throw new BandwidthError(
      `bandwidth '${value}': unknown unit '${unit}' (B; K, M, G, T, P, E or KiB…EiB are powers of 1024; KB…EB of 1000)`,
    );
  }
  const den = 10n ** BigInt(frac.length);
  const exact = BigInt(whole! + frac) * mult;
  const bytes = exact / den;
  if (bytes === 0n && exact !== 0n) throw new BandwidthError(`bandwidth '${value}' is below 1 byte/s (0 means unlimited)`);
  if (bytes > MAX_BANDWIDTH) throw new BandwidthError(`bandwidth '${value}' is above 2^64-1 bytes/s`);
  return bytes;
}

/** The API's rule for a string `bandwidth`: it must name its unit. */
export const parseApiBandwidth = (text: string): bigint => parseBandwidth(text, 'none');

/** A byte count as the agent carries it inside: a number up to 2^53−1, a decimal string above. */
export function byteCountOf(v: bigint): number | string {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : `${v}`;
}

/** bytes/s as a request's `bandwidth`: a JSON integer, or "<n>B" above 2^53−1. */
export function bandwidthParam(v: bigint): number | string {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : `${v}B`;
}
