// One job of any kind in memory: the bookkeeping the kernel keeps beside its journaled record,
// path comparison, and the public view callers see. (How a job is created is its kind's.)
import { resolve } from 'node:path';
import type { Job } from '../generated/api.js';
import type { JobRecord } from './journal.js';
import type { Timer } from './clock.js';
import { RateSampler } from './sampler.js';
import { ConvergenceTracker, convergenceOf } from './convergence.js';
import { isTerminal } from './state-machine.js';
import type { SpaceNeed } from './space.js';

/** One job in memory (an entry): its journaled record (`rec`) plus in-memory bookkeeping. */
export interface JobEntry {
  rec: JobRecord;
  sampler: RateSampler;
  /** The (time, cur, end) samples the convergence estimate is made of (convergence.ts). */
  convergence: ConvergenceTracker;
  /** Journal writes of this job, chained so they land in order. */
  writes: Promise<void>;
  /** Wall-clock ms of the last job.changed notification (progress is throttled on it). */
  lastEmit: number;
  lastXmlCheck: number;
  /** Wall-clock ms of the last pivot/finish/abort request sent to libvirt. */
  requestedAt: number;
  /** Journaling the start or virDomainBlockCopy in flight: libvirt shows nothing of this copy
   *  yet, and an end event now is a late one of the disk's previous job. */
  starting: boolean;
  /** A BLOCK_JOB_2 completed/canceled event arrived for the current request. */
  sawEnd: boolean;
  /** The verification against the live XML in flight, if any (one at a time). */
  settling: Promise<void> | null;
  /** The deleteMerged step in flight after the job's end, if any (cleanup.ts). */
  cleaning?: Promise<void> | null;
  /** Wall-clock ms when the block job was first found gone while the XML still showed its <mirror>. */
  mirrorWithoutJobSince?: number;
  /** Wall-clock ms when the poll first found the domain gone or stopped. */
  goneSince?: number;
  timeoutTimer?: Timer;
  /** A copy's pre-flight figure (space.ts), in memory only: what it still may write is reserved. */
  space?: SpaceNeed;
}

export function track(rec: JobRecord): JobEntry {
  return {
    rec,
    sampler: new RateSampler(),
    convergence: new ConvergenceTracker(),
    writes: Promise.resolve(),
    lastEmit: 0,
    lastXmlCheck: 0,
    requestedAt: 0,
    starting: false,
    sawEnd: false,
    settling: null,
  };
}

/** Same file or device, compared as normalized absolute paths. */
/** A destination as compared: a file or device path normalized, a network URL as written. */
export const canonicalPath = (p: string): string => (p.startsWith('/') ? resolve(p) : p);

export function samePath(a: string | null | undefined, b: string | null | undefined): boolean {
  return !!a && !!b && canonicalPath(a) === canonicalPath(b);
}

export const diskKey = (uuid: string, disk: string) => `${uuid}/${disk}`;

/** The job as callers see it: a deep copy with percent, rate and ETA computed from the samples. */
export function publicJob(t: JobEntry): Job {
  const job = t.rec.job;
  const cur = Number(job.progress.cur);
  const end = Number(job.progress.end);
  const terminal = isTerminal(job.state);
  const progress = {
    cur: job.progress.cur,
    end: job.progress.end,
    // cur=0/end=1 is libvirt's "not known yet"; end=0 has no meaning at all.
    percent: end > 1 ? Math.min(100, Math.round((cur / end) * 1000) / 10) : null,
    rate: terminal ? null : t.sampler.rate(),
    eta: job.state === 'copying' && end > 1 ? t.sampler.eta(end) : null,
  };
  const convergence = convergenceOf(job, t.convergence, terminal);
  return structuredClone({ ...job, progress, ...(convergence ? { convergence } : {}) });
}
