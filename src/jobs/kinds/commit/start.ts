// How a commit starts (blockCommit): the layers planned from the live chain with virsh's
// defaults (plan.ts), the base guarded against other domains' use, the job, and
// virDomainBlockCommit with the layers named by libvirt's indexes.
import { AgentError } from '../../../errors.js';
import type { BlockCommitParams, Job } from '../../../generated/api.js';
import type { DomainRef } from '../../../libvirt/index.js';
import { fromByteCount } from '../../numbers.js';
import type { StartSpec } from '../../start.js';
import { assertNotShared, chainJob, describeLayer, layerIs, libvirtName, liveChainDisk, type ChainDeps } from '../chain-start.js';
import { planFields } from './fields.js';
import { plan } from './plan.js';

const COMMITS: ReadonlySet<string> = new Set(['commit', 'activeCommit']);

export function commitSpec(deps: ChainDeps, params: BlockCommitParams, dom: DomainRef): StartSpec {
  const describe = (job: Job) =>
    `${job.kind === 'activeCommit' ? 'an active commit' : `a ${job.kind}`} of ${describeLayer(job.disk, job.layers?.top)} into ${describeLayer(job.disk, job.layers?.base)}`;
  return {
    op: 'blockCommit',
    params,
    dom,
    // The same layers, as the request names them; an unnamed top is the active layer.
    sameAs: (job) =>
      COMMITS.has(job.kind) &&
      (params.top !== undefined ? layerIs(job.layers?.top, params.top, job.disk) : job.kind === 'activeCommit') &&
      (params.base === undefined || layerIs(job.layers?.base, params.base, job.disk)),
    whyNot: (job) => `${describe(job)}, not this request's commit`,
    describe,
    prepare: async () => {
      const disk = await liveChainDisk(deps, dom, params.disk);
      const p = await plan(params, disk);
      const kind = p.active ? 'activeCommit' : 'commit';
      const whenReady = params.whenReady ?? 'none';
      if (!p.active && whenReady !== 'none')
        throw new AgentError(
          'unsupported',
          `whenReady applies to an active commit only; this commit of ${describeLayer(disk.target, p.top)} completes on its own`,
        );
      if (!p.base) throw new AgentError('invalidState', `disk ${disk.target} has no layer below top to commit into`);
      await assertNotShared(deps, dom, p.base, 'the base');
      const job = chainJob(kind, params, dom, disk.target, planFields(kind, disk, p), whenReady, deps.iso());
      const base = p.base;
      const top = p.top;
      return {
        job,
        call: () =>
          deps.conn.blockCommit(dom.uuid, disk.target, {
            base: libvirtName(disk.target, base),
            ...(p.active ? { active: true } : { top: libvirtName(disk.target, top) }),
            bandwidth: fromByteCount(params.bandwidth),
          }),
      };
    },
  };
}
