// A bandwidth as people write it, to bytes/s: the one parser behind the API's `bandwidth`
// (schemas/defs/bandwidth.json, normalised at validation in src/schemas.ts) and the CLI's
// --bandwidth. Units are virsh's scaled integers: K, M, G, T, P, E and KiB…EiB are powers of
// 1024; KB, MB, … EB are powers of 1000; B (byte, bytes) is 1; letter case does not matter; an
// optional "/s" may follow. A number without a unit is in `bareUnit`: bytes/s on the API (as it
// always was), MiB/s on the CLI (as virsh's --bandwidth; --bytes makes it bytes/s). A fraction
// is allowed ("1.5G") and the result is rounded down to whole bytes/s, but a non-zero value
// that would round down to 0 (which means "unlimited") is refused. A leaf module: no imports.

export const MAX_BANDWIDTH = (1n << 64n) - 1n;

/** The grammar, as the JSON schema's pattern (ECMA-262, no flags: letter case spelled out). */
export const BANDWIDTH_UNIT_PATTERN = '^[0-9]+(\\.[0-9]+)? ?([bB]|[bB][yY][tT][eE][sS]?|[kKmMgGtTpPeE]|[kKmMgGtTpPeE][iI]?[bB])(/[sS])?$';

const GRAMMAR = /^([0-9]+)(?:\.([0-9]+))? ?([a-z]*)(\/s)?$/i;

const POWERS: Record<string, number> = { k: 1, m: 2, g: 3, t: 4, p: 5, e: 6 };

export class BandwidthError extends Error {}

/** The multiplier of a unit ('' = the bare unit's), or undefined for an unknown one. */
function scale(unit: string, bareUnit: 'B' | 'MiB'): bigint | undefined {
  const u = unit.toLowerCase();
  if (u === '') return bareUnit === 'MiB' ? 1n << 20n : 1n;
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
 * above. Throws BandwidthError saying what is wrong (unknown unit, above 2^64−1, a non-zero value
 * below 1 byte/s, a negative or fractional number of bytes).
 */
export function parseBandwidth(value: string | number | bigint, bareUnit: 'B' | 'MiB' = 'B'): bigint {
  if (typeof value === 'bigint') value = value.toString();
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new BandwidthError(`bandwidth must be 0 or more, got ${value}`);
    value = Number.isInteger(value) ? BigInt(value).toString() : String(value);
  }
  const text = value.trim();
  const m = GRAMMAR.exec(text);
  if (!m || text.length > 64) {
    throw new BandwidthError(`bandwidth '${value}' is not a number with an optional unit (e.g. 100M, 100MiB, 1.5G, 512K, 100MB, 1048576B)`);
  }
  const [, whole, frac = '', unit = ''] = m;
  const mult = scale(unit, bareUnit);
  if (mult === undefined) {
    throw new BandwidthError(
      `bandwidth '${value}': unknown unit '${unit}' (B, K, M, G, T, P, E, KiB…EiB are powers of 1024, KB…EB of 1000)`,
    );
  }
  const den = 10n ** BigInt(frac.length);
  const exact = BigInt(whole! + frac) * mult;
  const bytes = exact / den;
  if (bytes === 0n && exact !== 0n) throw new BandwidthError(`bandwidth '${value}' is below 1 byte/s (0 means unlimited)`);
  if (bytes > MAX_BANDWIDTH) throw new BandwidthError(`bandwidth '${value}' is above 2^64-1 bytes/s`);
  return bytes;
}

/** Whether `value` names its unit explicitly (a string with a unit suffix). */
export const hasUnit = (value: unknown): value is string => typeof value === 'string' && /[a-z]/i.test(value);

/** A byte count as the API carries it: a number up to 2^53−1, a decimal string above. */
export function byteCountOf(v: bigint): number | string {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
}
