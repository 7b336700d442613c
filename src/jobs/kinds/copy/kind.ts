// The copy kind (blockCopy; libvirt's COPY job with a <mirror job='copy'>).
import type { JobKind } from '../kind.js';
import { conclude } from './conclude.js';
import { adoptedJob, keptSource, mirrorMismatch, sourceFiles } from './job.js';
import { MIRROR_NEXT, stateFromMirror } from './state.js';

export const copyKind: JobKind = {
  name: 'copy',
  noun: 'copy',
  blockJobType: 'copy',
  mirrorJob: 'copy',
  next: MIRROR_NEXT,
  requests: new Set(['pivot', 'finish', 'abort', 'setSpeed']),
  mismatch: (job, disk) => (disk.mirror ? mirrorMismatch(job, disk.mirror) : null),
  stateFromLive: (journaled, disk) => stateFromMirror(journaled, disk.mirror?.ready ?? null),
  conclude,
  cleanupOption: 'removeSource',
  mergedPaths: sourceFiles,
  keptOnEnd: keptSource,
  deleteAfterDefinitionMatches: true,
  adopted: adoptedJob,
};
