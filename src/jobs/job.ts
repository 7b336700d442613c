// One job: how it is created (by a blockCopy call or by adopting a copy found running), the
// bookkeeping the manager keeps beside it, and the public view callers see.
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import type { BlockCopyParams, Destination, Job } from '../generated/api.js';
import { DEFAULTS } from '../generated/api.js';
import type { BlockJobInfo, DomainRef } from '../libvirt/index.js';
import type { DiskInfo, MirrorInfo } from '../libvirt/disk-xml.js';
import type { JobRecord } from './journal.js';
import { fromByteCount, toByteCount } from './numbers.js';
import { RateSampler } from './sampler.js';
import { isTerminal } from './state-machine.js';

/** One job in memory (an entry): its journaled record (`rec`) plus in-memory bookkeeping. */
export interface JobEntry {
  rec: JobRecord;
  sampler: RateSampler;
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
  /** Wall-clock ms when the block job was first found gone while the XML still showed its <mirror>. */
  mirrorWithoutJobSince?: number;
  /** Wall-clock ms when the poll first found the domain gone or stopped. */
  goneSince?: number;
  timeoutTimer?: NodeJS.Timeout;
}

export function track(rec: JobRecord): JobEntry {
  return {
    rec,
    sampler: new RateSampler(),
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

/**
 * Why libvirt's <mirror> on the job's disk is not this job's copy (job type, destination,
 * kind, format), or null when it is. "A block job exists" proves nothing: an operator may have
 * aborted the job's copy and started another one on the same disk.
 */
export function mirrorMismatch(job: Job, m: MirrorInfo): string | null {
  // libvirt 9.0 shows job='' while it processes the end of a copy (pivot, finish): the same copy.
  if (m.job !== 'copy' && m.job !== '') return `libvirt runs a ${m.job} job on disk ${job.disk}, not a copy`;
  if (!samePath(m.path, job.destination.path))
    return `libvirt's copy of disk ${job.disk} goes to ${m.path ?? 'an unknown destination'}, not to this job's destination ${job.destination.path}`;
  if ((m.type === 'block') !== (job.destination.type === 'block'))
    return `libvirt's copy of disk ${job.disk} writes a ${m.type} destination, this job a ${job.destination.type}`;
  if (job.destination.format && m.format && m.format !== job.destination.format)
    return `libvirt's copy of disk ${job.disk} writes ${m.format}, this job ${job.destination.format}`;
  return null;
}

export const diskKey = (uuid: string, disk: string) => `${uuid}/${disk}`;

/** A new job for a blockCopy call that passed validation. */
export function newJob(params: BlockCopyParams, dom: DomainRef, disk: DiskInfo, dest: Destination, nowIso: string, groupId?: string): Job {
  return {
    jobId: params.jobId ?? randomUUID(),
    ...(groupId !== undefined ? { groupId } : {}),
    domain: { name: dom.name, uuid: dom.uuid },
    disk: params.disk,
    source: { path: disk.sourcePath, format: disk.format },
    destination: { path: dest.path, format: dest.format ?? null, type: dest.type ?? DEFAULTS.Destination.type },
    state: 'copying',
    progress: { cur: 0, end: 0, percent: null, rate: null, eta: null },
    bandwidth: toByteCount(fromByteCount(params.bandwidth) ?? 0n),
    options: {
      shallow: params.shallow ?? DEFAULTS.BlockCopyParams.shallow,
      reuseExternal: params.reuseExternal ?? DEFAULTS.BlockCopyParams.reuseExternal,
      // Persistent domains need (and get by default) a transient job: libvirt 9 refuses a
      // non-transient copy of a persistent domain ("domain is not transient").
      transientJob: params.transientJob ?? dom.persistent,
      synchronousWrites: params.synchronousWrites ?? DEFAULTS.BlockCopyParams.synchronousWrites,
      ...(params.granularity !== undefined ? { granularity: params.granularity } : {}),
      ...(params.bufSize !== undefined ? { bufSize: toByteCount(BigInt(params.bufSize)) } : {}),
    },
    whenReady: params.whenReady ?? DEFAULTS.BlockCopyParams.whenReady,
    owner: 'agent',
    createdAt: nowIso,
    updatedAt: nowIso,
  };
}

/** A job for a copy found running that this agent did not start (virsh, another tool, a lost journal). */
export function adoptedJob(dom: { name: string; uuid: string }, disk: DiskInfo, info: BlockJobInfo | null, nowIso: string): Job {
  const m = disk.mirror;
  const ready = m?.ready === 'yes';
  return {
    jobId: `adopted-${dom.uuid.slice(0, 8)}-${disk.target}-${Date.parse(nowIso).toString(36)}`,
    domain: { name: dom.name, uuid: dom.uuid },
    disk: disk.target,
    source: { path: disk.sourcePath, format: disk.format },
    destination: {
      path: m?.path ?? '',
      format: m?.format === 'raw' || m?.format === 'qcow2' ? m.format : null,
      type: m?.type === 'block' || m?.type === 'network' ? m.type : 'file',
    },
    state: ready ? 'ready' : 'copying',
    progress: { cur: info ? toByteCount(info.cur) : 0, end: info ? toByteCount(info.end) : 0, percent: null, rate: null, eta: null },
    bandwidth: info ? toByteCount(info.bandwidth) : 0,
    options: { shallow: false, reuseExternal: false, transientJob: false, synchronousWrites: false },
    whenReady: 'none',
    owner: 'adopted',
    createdAt: nowIso,
    updatedAt: nowIso,
    ...(ready ? { readyAt: nowIso } : {}),
    evidence: `found running in the live XML (mirror ready='${m?.ready ?? 'no'}'): started outside this agent, so its options are unknown`,
  };
}

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
  return structuredClone({ ...job, progress });
}
