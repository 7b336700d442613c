// The methods the agent serves: their schemas and what kind of call each is.

export interface MethodSpec {
  /** schemas/methods/<name>.params.json and .result.json */
  name: string;
  summary: string;
  /** Changes a job or a copy: audited, refused to read-only principals. */
  mutating: boolean;
}

export const METHODS: readonly MethodSpec[] = [
  { name: 'blockCopy', summary: 'Start a live copy of a disk (virsh blockcopy); optionally wait, pivot or finish.', mutating: true },
  { name: 'jobInfo', summary: 'Read one job.', mutating: false },
  { name: 'pivot', summary: 'Switch the guest onto the copy once ready (virsh blockjob --pivot).', mutating: true },
  { name: 'finish', summary: 'Stop mirroring and keep the copy as a point-in-time image (virsh blockjob --abort on a ready copy).', mutating: true },
  { name: 'abort', summary: 'Cancel a copy; the guest stays on its source (virsh blockjob --abort).', mutating: true },
  { name: 'setSpeed', summary: 'Change the bandwidth limit (virsh blockjob --bandwidth).', mutating: true },
  { name: 'listJobs', summary: 'List known jobs.', mutating: false },
  { name: 'wait', summary: 'Wait until a job is ready or has ended.', mutating: false },
  { name: 'blockCopyGroup', summary: 'Copy several disks of one domain as a group: ready together, pivoted or finished at one point in time (guest paused for a moment).', mutating: true },
  { name: 'groupInfo', summary: 'Read one group.', mutating: false },
  { name: 'pivotGroup', summary: 'Pause the guest, pivot every disk of the group, resume; reports the pause and each disk.', mutating: true },
  { name: 'finishGroup', summary: 'Pause the guest, finish every disk of the group (copies of one moment), resume.', mutating: true },
  { name: 'abortGroup', summary: 'Cancel every copy of the group.', mutating: true },
  { name: 'capabilities', summary: 'Agent, libvirt and QEMU versions, supported flags and methods.', mutating: false },
  { name: 'subscribe', summary: 'Receive job.changed notifications on this session.', mutating: false },
  { name: 'unsubscribe', summary: 'Stop receiving notifications on this session.', mutating: false },
];

export const METHOD_NAMES = [...METHODS.map((m) => m.name), 'rpc.discover'];
