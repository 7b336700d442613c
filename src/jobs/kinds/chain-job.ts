// A commit's or pull's job as its kind's pure code reads it: one with its layers recorded.
import type { Job } from '../../generated/api.js';
import type { ChainJob } from './commit/types.js';

export function asChainJob(job: Job): ChainJob {
  if (job.kind === 'copy' || !job.layers) throw new Error(`job ${job.jobId} is a ${job.kind} without layers`);
  return job as ChainJob;
}
