// Telling the two shapes of job apart: a block job (copy, commit, pull: one disk, libvirt's
// block job) or a backup (a domain job of one or more disks). jobInfo, wait, listJobs, abort and
// job.changed carry either; the agent and clients narrow with these, never by field sniffing.
import type { AnyJob, BackupJob, Job } from './generated/api.js';

export const isBackupJob = (j: AnyJob): j is BackupJob => j.kind === 'backup';
export const isBlockJob = (j: AnyJob): j is Job => j.kind !== 'backup';
