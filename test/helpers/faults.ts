// What the reliability suite needs besides the hypervisor: a reference image that receives
// every guest write too (so "no data lost" is a byte comparison against what the guest wrote,
// not against the source, which may itself be wrong), and one line per fault for the summary
// table that scripts/tap-summary.mjs prints at the end of `npm test`.
import { closeSync, copyFileSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import * as hv from '../../harness/hypervisor.js';
import type { ServedAgent } from '../../harness/agent.js';

/** A raw image of the disk as the guest wrote it. */
export class Reference {
  readonly path: string;
  private constructor(path: string) {
    this.path = path;
  }

  /** An all-zero reference of `sizeMiB`, beside the domain's files (removed with them). */
  static create(dom: hv.TestDomain, sizeMiB: number): Reference {
    const path = join(dom.dir, `reference-${Math.random().toString(16).slice(2, 8)}.raw`);
    const fd = openSync(path, 'w');
    try {
      ftruncateSync(fd, sizeMiB * 1024 * 1024);
    } finally {
      closeSync(fd);
    }
    return new Reference(path);
  }

  /** A copy of the reference as it is now (the guest's disk at this moment). */
  snapshot(): Reference {
    const path = this.path.replace(/\.raw$/, `-at-${Date.now()}.raw`);
    copyFileSync(this.path, path);
    return new Reference(path);
  }

  /** A guest write (through QEMU's monitor), recorded here once QEMU has done it. */
  async write(dom: hv.TestDomain, target: string, w: hv.WriteSpec): Promise<void> {
    await hv.guestWrite(dom, target, w);
    const fd = openSync(this.path, 'r+');
    try {
      writeSync(fd, Buffer.alloc(w.length, w.pattern), 0, w.length, w.offset);
    } finally {
      closeSync(fd);
    }
  }

  /** 'identical', or qemu-img's account of the first difference. */
  compare(image: string, format: hv.ImageFormat): Promise<string> {
    return hv.compareImages(this.path, image, ['raw', format]);
  }
}

export interface FaultRow {
  /** Kind of fault, one row of the summary table per kind. */
  fault: string;
  /** The exact point or case, for the log. */
  at: string;
  recovered: boolean;
  /** Bytes compared and found different (per image); null where no data is involved. */
  mismatches: number | null;
  /** How many faults this row stands for (generated messages); default 1. */
  count?: number;
}

/** One TAP comment the summary collects: `# reliability: {...}`. */
export function report(t: { comment: (...a: unknown[]) => void }, row: FaultRow): void {
  t.comment(`reliability: ${JSON.stringify(row)}`);
}

/** Resolves with the signal the agent died of, once it has died (at its fault point, or killed from outside). */
export async function killed(agent: ServedAgent, timeoutMs = 60_000): Promise<NodeJS.Signals | null> {
  const p = agent.process;
  if (p.exitCode === null && p.signalCode === null) {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the agent did not die at the fault point')), timeoutMs);
      p.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  return p.signalCode;
}
