// How a pull ended, decided from the live XML and never from the request alone: completed when
// the chain below the same active layer is exactly base and what lay below it (empty for a full
// pull: test/fixtures/chain-pull-*-done.xml), cancelled when the chain is unchanged; anything
// else fails with the evidence. Pure; called once libvirt shows no block job for the disk (or
// after the end event): a pull shows no <mirror> that would tell it still runs.
import { describeDisk, failure } from '../commit/evidence.js';
import { endOf } from '../commit/conclude.js';
import { chainOf } from '../commit/layers.js';
import { pullOutcome } from '../commit/outcome.js';
import type { ChainDecision, ChainJob } from '../commit/types.js';
import type { Facts } from '../decision.js';

export function conclude(job: ChainJob, f: Facts): ChainDecision {
  const evidence = `${f.why}; ${describeDisk(job.disk, f.disk)}`;
  if (!f.disk) return failure('invalidState', 'the disk is no longer in the live XML', evidence);
  return endOf(job, f, pullOutcome(job.disk, job.layers, job.owner, chainOf(f.disk)), evidence);
}
