// Settings and helpers every suite shares.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { MiB } from '../lib.js';

/** The bench measures the agent, not its protections: limits far above the load. */
export const BENCH_AGENT_CONFIG = {
  limits: { requestsPerSecond: 1_000_000, burst: 1_000_000, maxConnections: 4096 },
  maxConcurrentCopies: 256,
  logLevel: 'warn',
};

/** Fills a disk with a pattern as the guest would, in 256 MiB writes. */
export async function fill(dom: hv.TestDomain, target: string, sizeMiB: number, pattern: number): Promise<void> {
  for (let off = 0; off < sizeMiB; off += 256) {
    await hv.guestWrite(dom, target, { pattern, offset: off * MiB, length: Math.min(256, sizeMiB - off) * MiB });
  }
}

/** Every timed run starts from the same state: dirty data written back, page cache dropped. */
export async function settle(): Promise<void> {
  await promisify(execFile)('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3\n');
}
