// How a copy starts: the destination (given, or parsed from destinationXml), the disk and the
// destination policy checked with nothing changed, the job, and virDomainBlockCopy.
import { AgentError } from '../../../errors.js';
import type { BlockCopyParams, Destination, Job } from '../../../generated/api.js';
import { DEFAULTS } from '../../../generated/api.js';
import type { DomainRef } from '../../../libvirt/index.js';
import type { CheckedDestination } from '../../../destination/policy.js';
import { destinationFromXml } from '../../../destination/xml.js';
import { findDisk, type DiskInfo } from '../../../libvirt/disk-xml.js';
import type { JobContext } from '../../context.js';
import { domainStorage } from '../../inventory.js';
import { samePath } from '../../job.js';
import { toAgentError } from '../../libvirt-errors.js';
import { fromByteCount } from '../../numbers.js';
import { assertRoom, sourceSizes, spaceNeed, stillNeeded, type SpaceNeed } from '../../space.js';
import type { StartSpec } from '../../start.js';
import { newJob } from './job.js';
import { promises as fs } from 'node:fs';
import { fileKey } from '../../../destination/identity.js';

/** What a copy's start reads of the kernel. */
export type CopyDeps = Pick<JobContext, 'conn' | 'checkDest' | 'log' | 'iso' | 'entries'>;

/** What the agent's copies still in phase 1 may yet write (space.ts), reserved against new ones. */
export function runningSpace(deps: Pick<JobContext, 'entries'>): Promise<SpaceNeed[]> {
  const running = [...deps.entries.values()]
    .filter((e) => e.space && e.rec.job.state === 'copying')
    .map((e) => ({ ...e.space!, jobId: e.rec.job.jobId }));
  return stillNeeded(running);
}

export function destinationOf(params: BlockCopyParams): Destination {
  // destinationXml is parsed (whitelisted shape) or refused here.
  return params.destination ?? destinationFromXml(params.destinationXml ?? '');
}

export function copySpec(deps: CopyDeps, params: BlockCopyParams, dom: DomainRef): StartSpec {
  const dest = destinationOf(params);
  return {
    op: 'blockCopy',
    params,
    dom,
    sameAs: (job: Job) => job.kind === 'copy' && samePath(job.destination.path, dest.path),
    whyNot: (job: Job) =>
      job.kind === 'copy' ? `a copy to another destination (${job.destination.path})` : `a ${job.kind} job, not a copy`,
    describe: (job: Job) => `a ${job.kind === 'copy' ? 'copy' : job.kind} to ${job.destination.path}`,
    prepare: async () => {
      const { disk, checked, space } = await validateCopy(deps, params, dom, dest);
      // The job records the canonical destination the policy checked; libvirt gets its XML.
      const job = newJob(params, dom, disk, checked.destination, deps.iso());
      // Each local layer's identity, journaled with the job: removeSource deletes a layer only while its path names that file.
      await recordIdentities(job);
      return {
        job,
        destinationXml: checked.xml,
        space,
        call: async () => {
          // A reused image's header, read again as late as the agent can: changed since the check, refused.
          await checked.recheck?.();
          await deps.conn.blockCopy(dom.uuid, params.disk, checked.xml, {
            shallow: job.options.shallow,
            reuseExternal: job.options.reuseExternal,
            transientJob: job.options.transientJob,
            synchronousWrites: job.options.synchronousWrites,
            bandwidth: fromByteCount(params.bandwidth),
            granularity: params.granularity,
            bufSize: fromByteCount(job.options.bufSize),
          });
        },
      };
    },
  };
}

/** The checks of a new copy; nothing here changes anything. Returns the disk as the live XML shows it. */
export async function validateCopy(
  deps: CopyDeps,
  params: BlockCopyParams,
  dom: DomainRef,
  dest: Destination,
): Promise<{ disk: DiskInfo; checked: CheckedDestination; space: SpaceNeed | null }> {
  if (!dom.active) throw new AgentError('invalidState', `domain '${dom.name}' is not running`);
  const xml = await deps.conn.getXml(dom.uuid).catch((e) => {
    throw toAgentError(e, 'cannot read the domain');
  });
  const disk = findDisk(xml, params.disk);
  if (!disk) throw new AgentError('notFound', `domain '${dom.name}' has no disk '${params.disk}'`);
  if (disk.device !== 'disk' || (disk.type !== 'file' && disk.type !== 'block') || !disk.sourcePath) {
    throw new AgentError(
      'unsupported',
      `disk ${params.disk} of '${dom.name}' is a ${disk.type} ${disk.device}; only file and block disks can be copied`,
    );
  }
  if (disk.mirror) {
    throw new AgentError('jobExists', `disk ${params.disk} of '${dom.name}' already has a ${disk.mirror.job} job`);
  }
  const checked = await deps.checkDest(dest, {
    reuseExternal: !!params.reuseExternal,
    shallow: params.shallow ?? DEFAULTS.BlockCopyParams.shallow,
    disk,
    domainDisks: await domainStorage(deps.conn, deps.log),
  });
  // Known before starting, so said before starting: a destination without room (QEMU would
  // fail mid-copy with ENOSPC) or a raw device of another size (QEMU: "an I/O error").
  const info = await deps.conn.getBlockInfo(dom.uuid, params.disk).catch((e) => {
    throw toAgentError(e, "cannot read the disk's sizes");
  });
  const space = await spaceNeed(checked.destination, disk, await sourceSizes(info, disk), {
    shallow: params.shallow ?? DEFAULTS.BlockCopyParams.shallow,
    reuseExternal: !!params.reuseExternal,
  });
  assertRoom([space], await runningSpace(deps));
  return { disk, checked, space };
}

/** Sets each local file layer's st_dev:st_ino in the job's recorded source chain. */
async function recordIdentities(job: Job): Promise<void> {
  for (const l of job.layers?.chain ?? []) {
    if (!l.path?.startsWith('/')) continue;
    const st = await fs.stat(l.path).catch(() => null);
    if (st?.isFile()) l.id = fileKey(st);
  }
}
