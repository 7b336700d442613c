// How a commit ended, decided from the live XML and never from the request alone. An active
// commit is pivoted when the disk's source is the base and its <mirror> is gone (libvirt 9.0
// keeps the base's index: test/fixtures/chain-acommit-pivoted.xml), finished or cancelled when
// the guest still runs on top with the chain in place; a commit below the active layer is
// completed when top and the layers between top and base are gone and base is still there,
// cancelled when the chain is unchanged. Anything else fails with the evidence. Pure: the
// kernel reads the XML, this decides. The kernel calls it once libvirt shows no block job for
// the disk (or after the end event): a commit below the active layer has no <mirror> that
// would tell it still runs.
import type { DiskInfo, MirrorInfo } from '../../../libvirt/disk-xml.js';
import { STALE_MIRROR_MS, type Facts } from '../decision.js';
import { describeDisk, failure } from './evidence.js';
import { chainOf, nameOf, sameLayer } from './layers.js';
import { commitOutcome, type ChainOutcome } from './outcome.js';
import type { ChainDecision, ChainJob } from './types.js';

const REQUEST: Record<string, string> = { pivoting: 'pivot', finishing: 'finish', cancelling: 'abort' };

export function conclude(job: ChainJob, f: Facts, staleMirrorMs = STALE_MIRROR_MS): ChainDecision {
  const evidence = `${f.why}; ${describeDisk(job.disk, f.disk)}`;
  if (!f.disk) return failure('invalidState', 'the disk is no longer in the live XML', evidence);
  return job.kind === 'activeCommit' ? concludeActive(job, f, f.disk, evidence, staleMirrorMs) : concludeCommit(job, f, f.disk, evidence);
}

function concludeCommit(job: ChainJob, f: Facts, disk: DiskInfo, evidence: string): ChainDecision {
  return endOf(job, f, commitOutcome(job.disk, job.layers, chainOf(disk)), evidence);
}

/** A job that completes on its own (a commit below the active layer, a pull): its end from its chain outcome. */
export function endOf(job: ChainJob, f: Facts, o: ChainOutcome, evidence: string): ChainDecision {
  const what = job.kind === 'pull' ? 'pull' : 'commit';
  const outcome = f.sawEnd ? 'observed' : 'inferred';
  if (o.result === 'completed') {
    const late = job.state === 'cancelling' ? `; the ${what} completed before the abort took effect` : '';
    return { state: 'completed', outcome, evidence: `${evidence}${o.note ? `; ${o.note}` : ''}${late}` };
  }
  if (o.result === 'unchanged') {
    if (job.state === 'cancelling') return { state: 'cancelled', outcome, evidence };
    // Ended without a request from this agent and without merging: aborted by another tool, or failed.
    return {
      state: 'cancelled',
      outcome: 'inferred',
      evidence: `${evidence}; the ${what} ended without changing the chain (aborted outside the agent, or failed)`,
    };
  }
  const verb = job.state === 'cancelling' ? 'the abort' : `the ${what}`;
  return failure('invalidState', `${verb} could not be verified: ${o.why}`, evidence);
}

const ownMirror = (m: MirrorInfo | null): m is MirrorInfo => !!m && (m.job === 'active-commit' || m.job === '');

function concludeActive(job: ChainJob, f: Facts, disk: DiskInfo, evidence: string, staleMirrorMs: number): ChainDecision {
  const state = job.state;
  const request = REQUEST[state];
  if (ownMirror(disk.mirror)) {
    // libvirt drops the <mirror> when it processes the job's end; one still there after the end
    // event (and the kernel's settle wait) means the end did not do what it should.
    if (!f.sawEnd) {
      const ms = f.mirrorWithoutJobMs ?? 0;
      if (ms < staleMirrorMs) return { state: null, evidence };
      const stale = `libvirt still shows <mirror job='active-commit' ready='${disk.mirror.ready ?? 'no'}'> ${Math.round(ms / 1000)} s after the block job ended in QEMU: libvirt dropped the job and its view of this disk is no longer reliable`;
      if (state === 'pivoting')
        return failure(
          'pivotFailed',
          `libvirt lost track of the pivot: ${stale}; the guest may be running on either top or base`,
          evidence,
        );
      return failure('libvirtError', `libvirt lost track of the ${request ?? 'active commit'}: ${stale}`, evidence);
    }
    if (state === 'pivoting') return failure('pivotFailed', 'the pivot could not be verified: the mirror is still present', evidence);
    if (request) return failure('libvirtError', `the ${request} could not be verified: the mirror is still present`, evidence);
    return { state: null, evidence };
  }

  const now = chainOf(disk);
  const { top, base } = job.layers;
  const onBase = !!base && sameLayer(base, now[0]!);
  const onTop = !!top && sameLayer(top, now[0]!) && (!base || now.some((l) => sameLayer(base, l)));
  const where = onBase ? 'base' : onTop ? 'top' : 'neither';
  const neither = `the disk runs on ${nameOf(job.disk, now[0]!)}, neither top${top ? ` ${nameOf(job.disk, top)}` : ''} nor base${base ? ` ${nameOf(job.disk, base)}` : ''}`;
  const outcome = f.sawEnd ? 'observed' : 'inferred';
  switch (state) {
    case 'pivoting':
      if (where === 'base') return { state: 'pivoted', outcome, evidence };
      return failure(
        'pivotFailed',
        where === 'top' ? 'the pivot did not happen: the guest still runs on top' : `the pivot could not be verified: ${neither}`,
        evidence,
      );
    case 'finishing':
    case 'cancelling':
      if (where === 'top') return { state: state === 'finishing' ? 'finished' : 'cancelled', outcome, evidence };
      return failure(
        'libvirtError',
        where === 'base'
          ? `the ${request!} could not be verified: the guest was switched onto base instead`
          : `the ${request!} could not be verified: ${neither}`,
        evidence,
      );
    default:
      // Ended without a request from this agent: say what the XML shows, never more.
      if (where === 'base') return { state: 'pivoted', outcome: 'inferred', evidence };
      if (where === 'top') return { state: 'cancelled', outcome: 'inferred', evidence };
      return failure('invalidState', `the disk changed outside the agent: ${neither}`, evidence);
  }
}
