// What every adopted job (one found running that this agent did not start) has, whatever its
// kind: its id, where it runs, libvirt's progress and bandwidth, no promises (whenReady none),
// and the moment it was found. Each kind adds what it knows of the job.
import type { Job } from '../../generated/api.js';
import type { BlockJobInfo } from '../../libvirt/index.js';
import type { DiskInfo } from '../../libvirt/disk-xml.js';
import { toByteCount } from '../numbers.js';

export type AdoptedCommon = Omit<Job, 'kind' | 'destination'>;

export function adoptedCommon(
  dom: { name: string; uuid: string },
  disk: DiskInfo,
  info: BlockJobInfo | null,
  nowIso: string,
  ready: boolean,
): AdoptedCommon {
  return {
    jobId: `adopted-${dom.uuid.slice(0, 8)}-${disk.target}-${Date.parse(nowIso).toString(36)}`,
    domain: { name: dom.name, uuid: dom.uuid },
    disk: disk.target,
    source: { path: disk.sourcePath, format: disk.format },
    state: ready ? 'ready' : 'copying',
    progress: { cur: info ? toByteCount(info.cur) : 0, end: info ? toByteCount(info.end) : 0, percent: null, rate: null, eta: null },
    bandwidth: info ? toByteCount(info.bandwidth) : 0,
    whenReady: 'none',
    owner: 'adopted',
    createdAt: nowIso,
    updatedAt: nowIso,
    ...(ready ? { readyAt: nowIso } : {}),
  };
}
