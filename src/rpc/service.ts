// What the RPC layer needs from the job layer (the JobManager provides it).
import type { JobManager } from '../jobs/manager.js';

export type JobService = Pick<JobManager,
  'blockCopy' | 'jobInfo' | 'pivot' | 'finish' | 'abort' | 'setSpeed' | 'listJobs' | 'wait' | 'capabilities' | 'on' | 'off'>;
