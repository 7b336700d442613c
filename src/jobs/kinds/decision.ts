// What a kind's conclusion gets and gives: the facts the kernel read from libvirt, and the
// decision (no end yet, an end the XML proves, or a failure with its evidence). Pure types.
import type { ErrorName } from '../../errors.js';
import type { DiskInfo } from '../../libvirt/disk-xml.js';

export type Decision =
  /** Nothing to conclude: the job still runs. */
  | { state: null; evidence: string }
  | { state: 'pivoted' | 'finished' | 'completed' | 'cancelled'; outcome: 'observed' | 'inferred'; evidence: string }
  | { state: 'failed'; error: { name: ErrorName; message: string }; evidence: string };

export interface Facts {
  /** The disk in the live XML (undefined: the disk or the domain is gone). */
  disk: DiskInfo | undefined;
  /** A BLOCK_JOB_2 completed/canceled event arrived for this job. */
  sawEnd: boolean;
  /** What made the kernel look (goes into the evidence). */
  why: string;
  /** How long libvirt has shown a <mirror> for a block job that no longer exists (ms). */
  mirrorWithoutJobMs?: number;
}

/** libvirt processes a job's end within milliseconds; a <mirror> outliving its block job by this
 *  long means libvirt dropped the job (seen across a libvirtd restart) and will not conclude it. */
export const STALE_MIRROR_MS = 30_000;
