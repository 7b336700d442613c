// The pull kind (blockPull): what the job core calls. It shares the layer handling, identity
// check and adoption with the commit kinds (../commit/); its plan and conclusion are its own.
export { pullPlan as plan, planPull } from './plan.js';
export { mismatch } from '../commit/mismatch.js';
export { conclude } from './conclude.js';
export { adopted } from '../commit/adopt.js';
export type { Plan, PullParamsLike } from '../commit/address.js';
