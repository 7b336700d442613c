// The package's library entry: the typed client and the API types.
export { AgentClient, RpcError, type ConnectOptions, type MethodName, type Methods } from './client/index.js';
export type * from './generated/api.js';
export { ERRORS, type ErrorName } from './errors.js';
export { isBackupJob, isBlockJob } from './job-types.js';
