// The client verbs' command line: the option table, its parsed values, and the small checks
// every verb shares (numbers, naming a job). A usage error is thrown before anything connects.
import { parseArgs } from 'node:util';
import { BandwidthError, bandwidthParam, parseBandwidth } from '../bandwidth.js';

export const EXIT = { ok: 0, agentError: 1, usage: 2, connection: 3, timeout: 4, interrupted: 130 } as const;

export const OPTIONS = {
  url: { type: 'string' },
  socket: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  'state-dir': { type: 'string' },
  json: { type: 'boolean' },
  job: { type: 'string' },
  params: { type: 'string' },
  format: { type: 'string' },
  type: { type: 'string' },
  bandwidth: { type: 'string' },
  bytes: { type: 'boolean' },
  granularity: { type: 'string' },
  'buf-size': { type: 'string' },
  'job-id': { type: 'string' },
  shallow: { type: 'boolean' },
  'reuse-external': { type: 'boolean' },
  'transient-job': { type: 'boolean' },
  'synchronous-writes': { type: 'boolean' },
  wait: { type: 'boolean' },
  pivot: { type: 'boolean' },
  'remove-source': { type: 'boolean' },
  finish: { type: 'boolean' },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  'group-id': { type: 'string' },
  'max-pause': { type: 'string' },
  diskspec: { type: 'string', multiple: true },
  quiesce: { type: 'string' },
  checksum: { type: 'string' },
  top: { type: 'string' },
  base: { type: 'string' },
  active: { type: 'boolean' },
  'keep-overlay': { type: 'boolean' },
  verbose: { type: 'boolean' },
  kind: { type: 'string', multiple: true },
  dir: { type: 'string' },
  pool: { type: 'string' },
  disks: { type: 'string' },
  'dry-run': { type: 'boolean' },
  incremental: { type: 'string' },
  checkpoint: { type: 'string' },
  keep: { type: 'string' },
} as const;

export class UsageError extends Error {}

export type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

export const num = (s: string | undefined, name: string): number | undefined => {
  if (s === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(s)) throw new UsageError(`--${name} must be a number, got '${s}'`);
  return Number(s);
};

/**
 * A bandwidth as typed on the command line (--bandwidth, set-speed's BANDWIDTH) as the request's
 * value: a bare number is MiB/s as in virsh, bytes/s with --bytes; a unit (100M, 512K, 1G, 10MiB)
 * says it outright (src/bandwidth.ts). Sent as bytes/s (a string with its B above 2^53-1), so the
 * API never guesses. A usage error names what is wrong.
 */
export function bandwidthArg(s: string, v: Values, what = '--bandwidth'): number | string {
  try {
    return bandwidthParam(parseBandwidth(s, v.bytes ? 'B' : 'MiB'));
  } catch (e) {
    if (e instanceof BandwidthError) throw new UsageError(`${what}: ${e.message}`);
    throw e;
  }
}

/** --bandwidth, if given, as request params; --bytes alone is a usage error. */
export function bandwidthOption(v: Values): { bandwidth: number | string } | Record<string, never> {
  if (v.bandwidth === undefined) {
    if (v.bytes) throw new UsageError('--bytes applies to --bandwidth');
    return {};
  }
  return { bandwidth: bandwidthArg(v.bandwidth, v) };
}

export function jobRef(v: Values, pos: string[]): { jobId: string } | { domain: string; disk: string } {
  if (v.job) return { jobId: v.job };
  if (pos.length !== 2) throw new UsageError('name the job: DOMAIN DISK, or --job ID');
  return { domain: pos[0]!, disk: pos[1]! };
}
