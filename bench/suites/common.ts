// Settings and helpers every suite shares.
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
