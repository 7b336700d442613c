// A stand-in job service for fast protocol tests. It proves nothing about copies: the
// integration tests do that against the real libvirtd.
import { EventEmitter } from 'node:events';
import { AgentError } from '../../src/errors.js';
import type { Group, Job } from '../../src/generated/api.js';
import type { GroupPort, JobPort } from '../../src/rpc/ports.js';

export function sampleJob(over: Partial<Job> = {}): Job {
  const now = new Date(0).toISOString();
  return {
    jobId: 'j1',
    kind: 'copy',
    domain: { name: 'vm1', uuid: '00000000-0000-0000-0000-000000000001' },
    disk: 'vda',
    source: { path: '/a.qcow2', format: 'qcow2' },
    destination: { path: '/b.qcow2', format: 'qcow2', type: 'file' },
    state: 'copying',
    progress: { cur: 0, end: 0, percent: null, rate: null, eta: null },
    bandwidth: 0,
    options: { shallow: false, reuseExternal: false, transientJob: false, synchronousWrites: false },
    whenReady: 'none',
    owner: 'agent',
    createdAt: now,
    updatedAt: now,
    ...over,
  };
}

export function sampleGroup(over: Partial<Group> = {}): Group {
  const job = sampleJob({ groupId: 'g1' });
  return {
    groupId: 'g1',
    domain: job.domain,
    state: 'copying',
    whenReady: 'none',
    jobs: [job],
    progress: { cur: 0, end: 0, percent: null },
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
    lastSwitch: null,
    ...over,
  };
}

export class FakeService extends EventEmitter {
  calls: Array<[string, unknown]> = [];
  failWith: Error | null = null;
  private record<T>(name: string, params: unknown, result: T): Promise<T> {
    this.calls.push([name, params]);
    return this.failWith ? Promise.reject(this.failWith) : Promise.resolve(result);
  }
  blockCopy = (p: unknown) => this.record('blockCopy', p, { job: sampleJob(), changed: true });
  jobInfo = (p: unknown) => this.record('jobInfo', p, { job: sampleJob() });
  pivot = (p: unknown) => this.record('pivot', p, { job: sampleJob({ state: 'pivoted' }), changed: true });
  finish = (p: unknown) => this.record('finish', p, { job: sampleJob({ state: 'finished' }), changed: true });
  abort = (p: unknown) => this.record('abort', p, { job: sampleJob({ state: 'cancelled' }), changed: true });
  setSpeed = (p: unknown) => this.record('setSpeed', p, { job: sampleJob() });
  listJobs = (p: unknown) => this.record('listJobs', p, { jobs: [sampleJob()] });
  wait = (p: unknown) => this.record('wait', p, { job: sampleJob({ state: 'ready' }) });
  capabilities = () =>
    this.record(
      'capabilities',
      {},
      {
        agent: { name: 'blockcopy-agent', version: 'test', mode: 'daemon' },
        libvirt: { version: '9.0.0' },
        hypervisor: { type: 'QEMU', version: '7.2.0' },
        flags: { shallow: true, reuseExternal: true, transientJob: true, synchronousWrites: true },
      },
    );
  blockCopyGroup = (p: unknown) => this.record('blockCopyGroup', p, { group: sampleGroup(), changed: true });
  groupInfo = (p: unknown) => this.record('groupInfo', p, { group: sampleGroup() });
  pivotGroup = (p: unknown) => this.record('pivotGroup', p, { group: sampleGroup({ state: 'pivoted' }), changed: true });
  finishGroup = (p: unknown) => this.record('finishGroup', p, { group: sampleGroup({ state: 'finished' }), changed: true });
  abortGroup = (p: unknown) => this.record('abortGroup', p, { group: sampleGroup({ state: 'cancelled' }), changed: true });
  noJob(): void {
    this.failWith = new AgentError('noJob', 'no job');
  }
}

export const asService = (f: FakeService) => f as unknown as JobPort;
export const asGroups = (f: FakeService) => f as unknown as GroupPort;
