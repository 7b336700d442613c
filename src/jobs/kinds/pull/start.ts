// How a pull starts (blockPull): the layers planned from the live chain (plan.ts), the job,
// and virDomainBlockRebase without COPY, base named by libvirt's index.
import type { BlockPullParams, Job } from '../../../generated/api.js';
import type { DomainRef } from '../../../libvirt/index.js';
import { fromByteCount } from '../../numbers.js';
import type { StartSpec } from '../../start.js';
import { assertNotShared, chainJob, describeLayer, layerIs, libvirtName, liveChainDisk, type ChainDeps } from '../chain-start.js';
import { planFields } from '../commit/fields.js';
import { pullPlan } from './plan.js';

export function pullSpec(deps: ChainDeps, params: BlockPullParams, dom: DomainRef): StartSpec {
  const describe = (job: Job) =>
    job.kind === 'pull'
      ? `a pull into ${describeLayer(job.disk, job.layers?.top)}${job.layers?.base ? ` down to ${describeLayer(job.disk, job.layers.base)}` : ' of the whole chain'}`
      : `a ${job.kind}`;
  return {
    op: 'blockPull',
    params,
    dom,
    sameAs: (job) =>
      job.kind === 'pull' && (params.base === undefined ? job.layers?.base === null : layerIs(job.layers?.base, params.base, job.disk)),
    whyNot: (job) => `${describe(job)}, not this request's pull`,
    describe,
    prepare: async () => {
      const disk = await liveChainDisk(deps, dom, params.disk);
      const p = await pullPlan(params, disk);
      // The data lands in the active layer: it must be this domain's alone.
      await assertNotShared(deps, dom, p.top, 'the active layer');
      const job = chainJob('pull', params, dom, disk.target, planFields('pull', disk, p), 'none', deps.iso());
      const base = p.base;
      return {
        job,
        call: () =>
          deps.conn.blockPull(dom.uuid, disk.target, {
            ...(base ? { base: libvirtName(disk.target, base) } : {}),
            bandwidth: fromByteCount(params.bandwidth),
          }),
      };
    },
  };
}
