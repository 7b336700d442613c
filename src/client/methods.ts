// Method name → params and result types, all from the generated schema types.
import type * as A from '../generated/api.js';

export interface Methods {
  blockCopy: [A.BlockCopyParams, A.BlockCopyResult];
  jobInfo: [A.JobInfoParams, A.JobInfoResult];
  pivot: [A.PivotParams, A.PivotResult];
  finish: [A.FinishParams, A.FinishResult];
  abort: [A.AbortParams, A.AbortResult];
  setSpeed: [A.SetSpeedParams, A.SetSpeedResult];
  listJobs: [A.ListJobsParams, A.ListJobsResult];
  wait: [A.WaitParams, A.WaitResult];
  capabilities: [A.CapabilitiesParams, A.CapabilitiesResult];
  subscribe: [A.SubscribeParams, A.SubscribeResult];
  unsubscribe: [A.UnsubscribeParams, A.UnsubscribeResult];
  'rpc.discover': [Record<string, never>, Record<string, unknown>];
}

export type MethodName = keyof Methods;
