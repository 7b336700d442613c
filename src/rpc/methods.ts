// The methods the agent serves: one typed table keyed by the generated method types
// (schemas/methods/<name>.params.json and .result.json), so that a method without a handler,
// a handler for no method, or a handler of the wrong shape does not compile.
import type { MethodTypes } from '../generated/api.js';
import type { BackupPort, GroupPort, JobPort, SnapshotPort } from './ports.js';
import type { Session } from './session.js';

export type MethodName = keyof MethodTypes;

export interface CallContext {
  session: Session;
  requestId: string;
  jobs: JobPort;
  groups: GroupPort;
  snapshots: SnapshotPort;
  backups: BackupPort;
}

export interface MethodSpec<M extends MethodName> {
  summary: string;
  /** Changes a job or a copy: audited, refused to read-only principals. */
  mutating: boolean;
  handle(params: MethodTypes[M][0], ctx: CallContext): Promise<MethodTypes[M][1]>;
}

export type MethodTable = { [M in MethodName]: MethodSpec<M> };

export const METHODS: MethodTable = {
  blockCopy: {
    summary: 'Start a live copy of a disk (virsh blockcopy); optionally wait, pivot or finish.',
    mutating: true,
    handle: (p, ctx) => ctx.jobs.blockCopy(p, ctx.session.signal, { principal: ctx.session.owner }),
  },
  blockCommit: {
    summary:
      'Merge layers of a disk into a lower one (virsh blockcommit): without top an active commit (ready, then pivot/finish/abort); else it completes on its own.',
    mutating: true,
    handle: (p, ctx) => ctx.jobs.blockCommit(p, ctx.session.signal, { principal: ctx.session.owner }),
  },
  blockPull: {
    summary: 'Pull the layers above base into the active layer (virsh blockpull); completes on its own.',
    mutating: true,
    handle: (p, ctx) => ctx.jobs.blockPull(p, ctx.session.signal, { principal: ctx.session.owner }),
  },
  jobInfo: { summary: 'Read one job.', mutating: false, handle: (p, ctx) => ctx.jobs.jobInfo(p) },
  diskInfo: {
    summary: "Read one disk's backing chain (with libvirt's vda[N] indexes) and <mirror> from the live XML.",
    mutating: false,
    handle: (p, ctx) => ctx.jobs.diskInfo(p),
  },
  pivot: {
    summary: 'Switch the guest onto the copy once ready (virsh blockjob --pivot).',
    mutating: true,
    handle: (p, ctx) => ctx.jobs.pivot(p),
  },
  finish: {
    summary: 'Stop mirroring and keep the copy as a point-in-time image (virsh blockjob --abort on a ready copy).',
    mutating: true,
    handle: (p, ctx) => ctx.jobs.finish(p),
  },
  abort: {
    summary: 'Cancel a copy; the guest stays on its source (virsh blockjob --abort).',
    mutating: true,
    handle: (p, ctx) => ctx.jobs.abort(p),
  },
  setSpeed: {
    summary: 'Change the bandwidth limit (virsh blockjob --bandwidth).',
    mutating: true,
    handle: (p, ctx) => ctx.jobs.setSpeed(p),
  },
  listJobs: { summary: 'List known jobs.', mutating: false, handle: (p, ctx) => ctx.jobs.listJobs(p) },
  wait: { summary: 'Wait until a job is ready or has ended.', mutating: false, handle: (p, ctx) => ctx.jobs.wait(p, ctx.session.signal) },
  blockCopyGroup: {
    summary:
      'Copy several disks of one domain as a group: ready together, pivoted or finished at one point in time (guest paused for a moment).',
    mutating: true,
    handle: (p, ctx) => ctx.groups.blockCopyGroup(p, ctx.session.signal),
  },
  groupInfo: { summary: 'Read one group.', mutating: false, handle: (p, ctx) => ctx.groups.groupInfo(p) },
  pivotGroup: {
    summary: 'Pause the guest, pivot every disk of the group, resume; reports the pause and each disk.',
    mutating: true,
    handle: (p, ctx) => ctx.groups.pivotGroup(p),
  },
  finishGroup: {
    summary: 'Pause the guest, finish every disk of the group (copies of one moment), resume.',
    mutating: true,
    handle: (p, ctx) => ctx.groups.finishGroup(p),
  },
  abortGroup: { summary: 'Cancel every copy of the group.', mutating: true, handle: (p, ctx) => ctx.groups.abortGroup(p) },
  snapshotDisks: {
    summary:
      'Take an external disk-only snapshot of some disks at one moment (virsh snapshot-create-as --disk-only --no-metadata --atomic): a new qcow2 overlay on top of each.',
    mutating: true,
    handle: (p, ctx) => ctx.snapshots.snapshotDisks(p, { principal: ctx.session.owner }),
  },
  backup: {
    summary:
      'Back up some or all disks of a running domain at one moment (virDomainBackupBegin, push mode): full or incremental since a checkpoint, optionally creating the next checkpoint.',
    mutating: true,
    handle: (p, ctx) => ctx.backups.backup(p, { principal: ctx.session.owner }),
  },
  checkpoints: { summary: "List a domain's checkpoints, oldest first.", mutating: false, handle: (p, ctx) => ctx.backups.checkpoints(p) },
  deleteCheckpoints: {
    summary: "Retention: delete a domain's oldest checkpoints, keeping the newest N.",
    mutating: true,
    handle: (p, ctx) => ctx.backups.deleteCheckpoints(p),
  },
  capabilities: {
    summary: 'Agent, libvirt and QEMU versions, supported flags and methods.',
    mutating: false,
    handle: async (_p, ctx) => ({ ...(await ctx.jobs.capabilities()), methods: METHOD_NAMES }),
  },
  subscribe: {
    summary: 'Receive job.changed notifications on this session.',
    mutating: false,
    handle: async (p, ctx) => {
      ctx.session.subscribe(p);
      return { subscribed: true };
    },
  },
  unsubscribe: {
    summary: 'Stop receiving notifications on this session.',
    mutating: false,
    handle: async (_p, ctx) => {
      ctx.session.unsubscribe();
      return { subscribed: false };
    },
  },
};

/** Every method in the table, in its order; rpc.discover is served beside them. */
export const METHOD_NAMES: string[] = [...(Object.keys(METHODS) as MethodName[]), 'rpc.discover'];

/** The table as a list, for registration and the OpenRPC document. */
export const methodList = (): Array<{ name: MethodName } & MethodSpec<MethodName>> =>
  (Object.keys(METHODS) as MethodName[]).map((name) => ({ name, ...(METHODS[name] as unknown as MethodSpec<MethodName>) }));
