// The commit and active-commit kinds (blockCommit): what the job core calls. See layers.ts for
// how layers are named and compared, and test/fixtures/chain-*.xml for what libvirt 9.0 shows.
export { plan, planCommit } from './plan.js';
export { mismatch } from './mismatch.js';
export { conclude } from './conclude.js';
export { adopted, adoptedKind, type ChainJobRecord } from './adopt.js';
export { planFields, destinationOf, samePlan, type ChainFields } from './fields.js';
export type { Plan, CommitParamsLike } from './address.js';
export type { Layer, Layers } from './layers.js';
export { BLOCK_JOB_TYPE, kindOfBlockJob, type ChainDecision, type ChainJob, type ChainKind } from './types.js';
