// A copy job's own shape: a new job for a blockCopy call, a job for a copy found running, and
// the copy's identity in libvirt's XML (its <mirror>).
import { randomUUID } from 'node:crypto';
import type { BlockCopyParams, Destination, Job, JobState } from '../../../generated/api.js';
import { DEFAULTS } from '../../../generated/api.js';
import type { BlockJobInfo, DomainRef } from '../../../libvirt/index.js';
import type { DiskInfo, MirrorInfo } from '../../../libvirt/disk-xml.js';
import { fromByteCount, toByteCount } from '../../numbers.js';
import { samePath } from '../../job.js';
import { adoptedCommon } from '../adopted.js';
import { cleanupPromise } from '../../cleanup.js';
import { chainOf, layerOf } from '../commit/layers.js';

/** A copy job: its options are always known. */
export type CopyJob = Job & Required<Pick<Job, 'options'>>;

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

const MiB = 1n << 20n;

/**
 * The copy's buffer: the caller's, or under a bandwidth limit about one second's worth (1 to
 * 16 MiB). QEMU copies a buffer's worth and then sleeps buffer/limit with its counters still, so
 * with its 16 MiB default a 1 MiB/s copy would show no progress for 16 s at a time and the
 * convergence estimate (convergence.ts) could not judge it within 10 s. Unlimited: QEMU's default.
 */
function bufSizeOption(params: BlockCopyParams): { bufSize?: Job['bandwidth'] } {
  if (params.bufSize !== undefined) return { bufSize: toByteCount(BigInt(params.bufSize)) };
  const limit = fromByteCount(params.bandwidth) ?? 0n;
  if (limit === 0n) return {};
  return { bufSize: toByteCount(limit < MiB ? MiB : limit > 16n * MiB ? 16n * MiB : limit) };
}

/** A new job for a blockCopy call that passed validation. */
export function newJob(
  params: BlockCopyParams,
  dom: DomainRef,
  disk: DiskInfo,
  dest: Destination,
  nowIso: string,
  groupId?: string,
): CopyJob {
  return {
    jobId: params.jobId ?? randomUUID(),
    kind: 'copy',
    ...(groupId !== undefined ? { groupId } : {}),
    domain: { name: dom.name, uuid: dom.uuid },
    disk: params.disk,
    source: { path: disk.sourcePath, format: disk.format },
    layers: sourceLayers(disk, params.shallow ?? DEFAULTS.BlockCopyParams.shallow),
    ...cleanupPromise(params.removeSource, 'removeSource'),
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
      ...bufSizeOption(params),
    },
    whenReady: params.whenReady ?? DEFAULTS.BlockCopyParams.whenReady,
    owner: 'agent',
    createdAt: nowIso,
    updatedAt: nowIso,
  };
}

/**
 * The source's chain when the copy starts (what removeSource may delete from): top is the
 * active layer, base the layer a shallow copy keeps below the destination (null: a full copy).
 */
function sourceLayers(disk: DiskInfo, shallow: boolean): NonNullable<Job['layers']> {
  const chain = chainOf(disk).map(layerOf);
  return { top: chain[0]!, base: shallow ? (chain[1] ?? null) : null, chain };
}

/**
 * The files a copy takes out of use when it pivots: the old active layer, and for a full copy
 * every backing layer too (the destination holds all their data); a shallow copy's destination
 * still reads the old backing chain, so only the old top. Nothing for any other end; null when
 * the chain was not recorded (a copy adopted from another tool, or journaled by an older agent).
 */
export function sourceFiles(job: Job, ended: JobState): Array<string | null> | null {
  if (ended !== 'pivoted') return [];
  if (!job.layers?.chain) return null;
  const chain = job.layers.chain;
  return (job.layers.base === null ? chain : chain.slice(0, 1)).map((l) => l.path);
}

/** A copy that ended without a pivot: the guest still runs on its source, which stays. */
export function keptSource(job: Job, ended: JobState): Array<{ path: string; reason: string }> {
  if (ended === 'pivoted' || !job.source.path) return [];
  return [{ path: job.source.path, reason: `the copy ended ${ended}, not pivoted: the guest still runs on its source` }];
}

/** A job for a copy found running that this agent did not start (virsh, another tool, a lost journal). */
export function adoptedJob(dom: { name: string; uuid: string }, disk: DiskInfo, info: BlockJobInfo | null, nowIso: string): Job {
  const m = disk.mirror;
  const ready = m?.ready === 'yes';
  return {
    ...adoptedCommon(dom, disk, info, nowIso, ready),
    kind: 'copy',
    destination: {
      path: m?.path ?? '',
      format: m?.format === 'raw' || m?.format === 'qcow2' ? m.format : null,
      type: m?.type === 'block' || m?.type === 'network' ? m.type : 'file',
    },
    options: { shallow: false, reuseExternal: false, transientJob: false, synchronousWrites: false },
    evidence: `found running in the live XML (mirror ready='${m?.ready ?? 'no'}'): started outside this agent, so its options are unknown`,
  };
}
