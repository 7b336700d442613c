// Why QEMU failed a block job. libvirt's BLOCK_JOB_2 "failed" event carries no reason (QEMU's
// error text stays inside libvirtd), so the agent looks where jobs most often fail: the
// filesystem of where the data lands (a copy's destination, a commit's base, a pull's active
// layer). Only what it can observe is claimed.
import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Job } from '../generated/api.js';
import { rawDeviceSizeMismatch } from './sizes.js';

/** Below this much free space the filesystem is taken as full: QEMU writes in clusters and
 *  buffers of at most a few MiB, so a failure with less than that left is the space running out. */
const FULL_BELOW_BYTES = 16 * 1024 * 1024;

export interface Diagnosis {
  message: string;
  evidence: string;
}

export async function diagnoseFailure(dest: Job['destination'], state: string, source?: Job['source'], noun = 'copy'): Promise<Diagnosis> {
  const generic: Diagnosis = {
    message: `QEMU reported the ${noun} job failed while ${state} (an I/O error on the source or the destination); the guest stays on its source`,
    evidence: 'BLOCK_JOB_2 failed event',
  };
  if (dest.type === 'block' && source) {
    const size = await rawDeviceSizeMismatch(source, dest);
    if (size)
      return { message: `the ${noun} failed: ${size}; the guest stays on its source`, evidence: `BLOCK_JOB_2 failed event; ${size}` };
  }
  if (dest.type === 'block' || !dest.path) return generic;
  const dir = dirname(dest.path);
  try {
    const fs = await statfs(dir);
    const free = fs.bavail * fs.bsize;
    const total = fs.blocks * fs.bsize;
    const evidence = `BLOCK_JOB_2 failed event; statfs(${dir}): ${free} bytes free of ${total}`;
    if (free < FULL_BELOW_BYTES) {
      return {
        message: `the ${noun} failed: the destination filesystem is full (${free} bytes free of ${total} at ${dir}); the guest stays on its source`,
        evidence,
      };
    }
    return { ...generic, evidence };
  } catch (e) {
    return { ...generic, evidence: `BLOCK_JOB_2 failed event; statfs(${dir}) failed: ${(e as Error).message}` };
  }
}

/** virDomainEventStoppedDetailType, in words. */
const STOPPED_DETAIL = [
  'shut down',
  'destroyed',
  'crashed',
  'migrated away',
  'saved',
  'QEMU exited unexpectedly',
  'restored from a snapshot',
];

/** Why a copy ended with its domain: from the lifecycle event libvirt sent. */
export function domainGoneReason(event: 'stopped' | 'crashed', detail: number): Diagnosis {
  const how = event === 'crashed' ? 'the guest crashed' : (STOPPED_DETAIL[detail] ?? `detail ${detail}`);
  return {
    message: `the domain ${event} during the copy (${how}); the copy is lost, the source disk is as the guest left it`,
    evidence: `lifecycle event ${event} (detail ${detail}: ${how})`,
  };
}
