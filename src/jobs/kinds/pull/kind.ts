// The pull kind (blockPull; libvirt's PULL job, no <mirror>): it completes on its own,
// verified by the chain below the active layer.
import type { JobKind } from '../kind.js';
import { asChainJob } from '../chain-job.js';
import { adoptAs, SELF_ENDING_NEXT } from '../commit/kind.js';
import { mismatch } from '../commit/mismatch.js';
import { conclude } from './conclude.js';
import { mergedLayers } from '../commit/merged.js';

export const pullKind: JobKind = {
  name: 'pull',
  noun: 'pull',
  blockJobType: 'pull',
  mirrorJob: null,
  next: SELF_ENDING_NEXT,
  requests: new Set(['abort', 'setSpeed']),
  mismatch: (job, disk, info) => mismatch(asChainJob(job), disk, info ?? null),
  stateFromLive: (journaled) => (journaled === 'cancelling' ? 'cancelling' : 'copying'),
  conclude: (job, facts) => conclude(asChainJob(job), facts),
  cleanupOption: 'deleteMerged',
  mergedPaths: (job, ended) => mergedLayers('pull', ended, asChainJob(job).layers)?.map((l) => l.path) ?? null,
  adopted: adoptAs('pull'),
};
