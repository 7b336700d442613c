// diskInfo: one disk of a running domain as libvirt's live XML shows it now (its chain with
// libvirt's image indexes, its <mirror>), read within the read bound like every read.
import { AgentError } from '../errors.js';
import type { DiskInfoParams, DiskInfoResult } from '../generated/api.js';
import { findDisk } from '../libvirt/disk-xml.js';
import type { JobContext } from './context.js';
import { toAgentError } from './libvirt-errors.js';
import { READ_WAIT_MS, within } from './read-bound.js';

type Layer = { path: string | null; format: string | null; index?: number | null };
const layer = (l: Layer) => ({ path: l.path, format: l.format, index: l.index ?? null });

export async function readDisk(ctx: Pick<JobContext, 'registry' | 'conn'>, params: DiskInfoParams): Promise<DiskInfoResult> {
  const { uuid, dom } = await ctx.registry.resolveDomain(params.domain, READ_WAIT_MS);
  const read = await within(
    ctx.conn.getXml(uuid).catch((e: unknown) => {
      throw toAgentError(e, 'cannot read the domain');
    }),
    READ_WAIT_MS,
  );
  if (!read)
    throw new AgentError('libvirtTimeout', `libvirtd has not answered the read of domain '${params.domain}' within the read bound; retry`);
  const disk = findDisk(read.value, params.disk);
  if (!disk) throw new AgentError('notFound', `domain '${params.domain}' has no disk '${params.disk}' (or is not running)`);
  const m = disk.mirror;
  return {
    domain: { name: dom?.name ?? params.domain, uuid },
    disk: disk.target,
    type: disk.type,
    chain: [layer({ path: disk.sourcePath, format: disk.format, index: disk.index ?? null }), ...(disk.backing ?? []).map(layer)],
    mirror: m ? { job: m.job, ready: m.ready, path: m.path, format: m.format } : null,
  };
}
