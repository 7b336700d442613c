// What a commit's and a pull's start share: the disk read from the live XML with nothing
// changed, the layer a request names compared with a job's, the guard against writing into a
// layer another domain uses, and the job built from the kind's plan.
import { promises as fs } from 'node:fs';
import { AgentError } from '../../errors.js';
import type { Job, JobKind as JobKindName } from '../../generated/api.js';
import type { DomainRef } from '../../libvirt/index.js';
import { findDisk, type DiskInfo } from '../../libvirt/disk-xml.js';
import { canonicalOf, clash, identitiesOf } from '../../destination/identity.js';
import type { JobContext } from '../context.js';
import { domainStorage } from '../inventory.js';
import { cleanupPromise } from '../cleanup.js';
import { samePath } from '../job.js';
import { toAgentError } from '../libvirt-errors.js';
import { toByteCount, fromByteCount } from '../numbers.js';
import type { ByteCount } from '../../generated/api.js';
import { randomUUID } from 'node:crypto';

/** What a commit's or pull's start reads of the kernel. */
export type ChainDeps = Pick<JobContext, 'conn' | 'log' | 'iso'>;

type Layer = NonNullable<NonNullable<Job['layers']>['top']>;

/** The disk as the live XML shows it, ready for a chain job: running domain, a disk, no job on it. */
export async function liveChainDisk(deps: ChainDeps, dom: DomainRef, target: string): Promise<DiskInfo> {
  if (!dom.active) throw new AgentError('invalidState', `domain '${dom.name}' is not running`);
  const xml = await deps.conn.getXml(dom.uuid).catch((e) => {
    throw toAgentError(e, 'cannot read the domain');
  });
  const disk = findDisk(xml, target);
  if (!disk) throw new AgentError('notFound', `domain '${dom.name}' has no disk '${target}'`);
  if (disk.mirror) throw new AgentError('jobExists', `disk ${target} of '${dom.name}' already has a ${disk.mirror.job} job`);
  return disk;
}

/** Whether a request's layer (a path, or libvirt's `vda[N]`) is the job's recorded layer. */
export function layerIs(layer: Layer | null | undefined, spec: string, target: string): boolean {
  if (!layer) return false;
  const m = /^([a-z0-9]+)\[(\d+)\]$/.exec(spec);
  if (m) return m[1] === target && layer.index === Number(m[2]);
  return samePath(layer.path, spec);
}

/** How libvirt is told a layer: by its index where the live XML gave one (unambiguous), else by path. */
export const libvirtName = (target: string, l: Layer): string => (l.index !== null ? `${target}[${l.index}]` : l.path!);

export function describeLayer(target: string, l: Layer | null | undefined): string {
  if (!l) return 'an unknown layer';
  return l.index !== null ? `${target}[${l.index}] (${l.path ?? 'no path'})` : (l.path ?? 'a layer without a path');
}

/**
 * The layer a commit or pull writes into must be this domain's alone: a base image another
 * domain (running or defined) also uses, by identity, would change under that domain.
 */
export async function assertNotShared(deps: ChainDeps, dom: DomainRef, written: Layer, role: string): Promise<void> {
  if (!written.path?.startsWith('/')) return;
  const others = await domainStorage(deps.conn, deps.log, { except: dom.uuid });
  const ids = await identitiesOf(others);
  const canonical = await canonicalOf(written.path);
  const st = await fs.stat(canonical).catch(() => null);
  const why = clash(ids, canonical, st);
  if (why)
    throw new AgentError(
      'destinationRejected',
      `${role} ${written.path} is also used by another domain (${why}): writing into it would change that domain's disk`,
      { reason: why },
    );
}

/** A new commit or pull job from its plan's fields. */
export function chainJob(
  kind: JobKindName,
  params: { jobId?: string; bandwidth?: ByteCount; deleteMerged?: boolean },
  dom: DomainRef,
  target: string,
  fields: Pick<Job, 'source' | 'destination' | 'layers'>,
  whenReady: Job['whenReady'],
  nowIso: string,
): Job {
  return {
    jobId: params.jobId ?? randomUUID(),
    kind,
    domain: { name: dom.name, uuid: dom.uuid },
    disk: target,
    ...fields,
    state: 'copying',
    progress: { cur: 0, end: 0, percent: null, rate: null, eta: null },
    bandwidth: toByteCount(fromByteCount(params.bandwidth) ?? 0n),
    whenReady,
    ...cleanupPromise(params.deleteMerged),
    owner: 'agent',
    createdAt: nowIso,
    updatedAt: nowIso,
  };
}

export type { DiskInfo };
