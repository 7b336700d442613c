// Whether the block job libvirt runs on a disk is this commit or pull job's: the block job type
// (getBlockJobInfo), the <mirror> (an active commit shows <mirror job='active-commit'> whose
// source is its base; a commit below the active layer and a pull show none) and the job's
// layers, which must still be in the chain. "A block job exists" proves nothing: an operator
// may have aborted this job and started another one on the same disk. Pure.
import type { DiskInfo } from '../../../libvirt/disk-xml.js';
import type { BlockJobInfo } from '../../../libvirt/index.js';
import { chainOf, describeChain, nameOf, sameLayer, type Layer } from './layers.js';
import { BLOCK_JOB_TYPE, BLOCK_JOB_WORDS, KIND_WORDS, type ChainJob } from './types.js';

/**
 * Why what libvirt runs on the job's disk is not this job, or null when it is (or when nothing
 * runs: how the job ended is conclude's to say). `info` is getBlockJobInfo's answer (null: no
 * block job on the disk); `disk` the disk in the live XML.
 */
export function mismatch(job: ChainJob, disk: DiskInfo, info: BlockJobInfo | null): string | null {
  if (job.kind === 'copy') return null;
  const kind = job.kind;
  const d = job.disk;
  if (info && info.type !== BLOCK_JOB_TYPE[kind])
    return `libvirt runs a ${BLOCK_JOB_WORDS[info.type]} on disk ${d}, not this job's ${KIND_WORDS[kind]}`;
  const m = disk.mirror;
  if (m) {
    if (kind !== 'activeCommit')
      return `libvirt runs a ${m.job || 'mirror'} job on disk ${d} (a <mirror> to ${m.path ?? 'an unknown destination'}), not this job's ${KIND_WORDS[kind]}`;
    // libvirt 9.0 shows job='' while it processes the end of a mirror job (pivot, abort).
    if (m.job !== 'active-commit' && m.job !== '') return `libvirt runs a ${m.job} job on disk ${d}, not this job's active commit`;
    const into: Layer = { path: m.path, format: m.format, index: m.index ?? null };
    const base = job.layers.base;
    if (base && !sameLayer(base, into))
      return `libvirt's active commit of disk ${d} merges into ${nameOf(d, into)}, not into this job's base ${nameOf(d, base)}`;
    if (m.job === '') return null;
  }
  if (!info && !m) return null;
  // A job of this type runs: this job's layers must still be the disk's.
  const now = chainOf(disk);
  const top = job.layers.top;
  if (top && (kind === 'activeCommit' || kind === 'pull') && !sameLayer(top, now[0]!))
    return `the active layer of disk ${d} is ${nameOf(d, now[0]!)}, not this job's ${nameOf(d, top)}`;
  for (const [role, l] of [
    ['top', top],
    ['base', job.layers.base],
  ] as const) {
    if (l && !now.some((n) => sameLayer(l, n)))
      return `this job's ${role} layer ${nameOf(d, l)} is no longer in disk ${d}'s chain (${describeChain(d, now)})`;
  }
  return null;
}
