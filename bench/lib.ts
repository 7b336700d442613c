// Shared pieces of the benchmarks: a teardown host, timing, percentiles, process usage.
import { readFileSync } from 'node:fs';
import type { TeardownHost } from '../harness/hypervisor.js';

export const MiB = 1024 * 1024;

export class Scope implements TeardownHost {
  private fns: Array<() => unknown> = [];
  teardown(fn: () => unknown): void {
    this.fns.push(fn);
  }
  async close(): Promise<void> {
    for (const fn of this.fns.reverse())
      await Promise.resolve()
        .then(fn)
        .catch(() => {});
    this.fns = [];
  }
}

export const now = () => performance.now();

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export const median = (xs: number[]) => percentile(xs, 50);
export const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

/** CPU seconds (user+system) and resident memory of a process, from /proc. */
export function usage(pid: number): { cpuSeconds: number; rssMiB: number; peakRssMiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { cpuSeconds: ticks / 100, rssMiB: round(kb('VmRSS') / 1024, 1), peakRssMiB: round(kb('VmHWM') / 1024, 1) };
}

export interface SuiteResult {
  name: string;
  /** What the table in the report shows: one row per measurement. */
  rows: Array<{ metric: string; value: string; target?: string; met?: boolean | null }>;
  /** Raw numbers for the JSON file. */
  data: Record<string, unknown>;
  notes?: string[];
}

export interface BenchContext {
  quick: boolean;
  /** The scale suite's number of copies (default 32: 8 VMs × 4 disks; spread over 8 VMs). */
  scaleCopies?: number;
  log: (msg: string) => void;
}
