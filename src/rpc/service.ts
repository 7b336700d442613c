// What the RPC layer needs from the job layer: the JobManager's methods and the GroupManager's.
import type { GroupManager } from '../jobs/groups.js';
import type { JobManager } from '../jobs/manager.js';

export type JobService = Pick<JobManager,
  'blockCopy' | 'jobInfo' | 'pivot' | 'finish' | 'abort' | 'setSpeed' | 'listJobs' | 'wait' | 'capabilities' | 'on' | 'off'>;

export type GroupService = Pick<GroupManager, 'blockCopyGroup' | 'groupInfo' | 'pivotGroup' | 'finishGroup' | 'abortGroup'>;
