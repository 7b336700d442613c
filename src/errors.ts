// The agent's error tables: the JSON-RPC 2.0 protocol errors it answers, and one stable name
// per failure a caller can branch on, its code, and whether retrying the same call later can
// succeed. docs/errors.md is generated from both (scripts/gen-docs.mjs, run by the build).
import type { ErrorName as SchemaErrorName } from './generated/api.js';

/** The JSON-RPC 2.0 codes the agent answers before (or instead of) running a method. */
export const PROTOCOL_ERRORS = {
  parseError: {
    code: -32700,
    description: 'The frame (or stdio line) is not JSON, or a stdio line is longer than maxPayloadBytes; `id` is null.',
  },
  invalidRequest: {
    code: -32600,
    description:
      'Not a JSON-RPC 2.0 request: not an object, wrong `jsonrpc`, no method, a bad `id` (an id longer than 256 bytes included: data.maxIdBytes), primitive `params`, an empty batch.',
  },
  methodNotFound: { code: -32601, description: 'No method of that name.' },
  invalidParams: {
    code: -32602,
    description: "The params break the method's schema; data.errors holds ajv's errors, each naming the field (instancePath).",
  },
  internalError: {
    code: -32603,
    description: 'An unexpected failure (a defect): logged with its request id and stack, no detail is sent.',
  },
} as const;

/** One agent error: its JSON-RPC code (-32000…-32099), whether the same call may succeed later, and what it means. */
export interface ErrorInfo {
  readonly code: number;
  readonly retryable: boolean;
  readonly description: string;
}

export const ERRORS = {
  notFound: { code: -32000, retryable: false, description: 'The domain, disk or job does not exist.' },
  jobExists: { code: -32001, retryable: false, description: 'A different copy job already runs on this disk.' },
  noJob: { code: -32002, retryable: false, description: 'There is no copy job on this disk (or with this id), or no group with this id.' },
  notReady: { code: -32003, retryable: true, description: 'The job has not reached (or has dropped out of) the ready phase.' },
  pivotFailed: {
    code: -32004,
    retryable: false,
    description: 'libvirt could not switch the guest onto the copy, or the switch could not be verified.',
  },
  destinationRejected: { code: -32005, retryable: false, description: 'The destination breaks the destination policy.' },
  libvirtError: {
    code: -32006,
    retryable: false,
    description: 'libvirt refused or failed the operation; data.libvirt holds its code, domain and message.',
  },
  recovering: { code: -32007, retryable: true, description: 'The agent is reconciling jobs after a start or reconnect.' },
  unauthorized: { code: -32008, retryable: false, description: 'The caller is not allowed to call this method.' },
  timeout: { code: -32009, retryable: true, description: 'The wait or timeout given by the caller expired.' },
  unsupported: {
    code: -32010,
    retryable: false,
    description: 'The disk or option is not supported for block copy (e.g. a cdrom, a network disk, a flag this libvirt lacks).',
  },
  invalidState: {
    code: -32011,
    retryable: false,
    description: 'The job is in a state that does not allow this operation (e.g. finish after pivot).',
  },
  tooManyJobs: { code: -32012, retryable: true, description: 'The host already runs its maximum number of concurrent copies.' },
  unavailable: {
    code: -32013,
    retryable: true,
    description:
      'No connection to libvirtd right now, or it dropped during the request; a mutating request may have taken effect: its job (data.job) shows it after the reconnect.',
  },
  rateLimited: { code: -32014, retryable: true, description: 'This connection sent requests faster than its configured rate.' },
  libvirtTimeout: {
    code: -32015,
    retryable: true,
    description:
      'libvirtd did not answer in time (hung or overloaded): a call exceeded its bound (10 s; data.libvirt), or a read its 1 s bound. A mutating request may still take effect: its job (data.job) shows it once libvirtd answers.',
  },
  libvirtBusy: { code: -32016, retryable: true, description: 'Too many libvirt calls already wait for libvirtd; this one was not sent.' },
  stateUnavailable: {
    code: -32017,
    retryable: true,
    description:
      'The state directory cannot be written (full, read-only, failing; data.errno says why): nothing was changed; reads still work.',
  },
  responseTooLarge: {
    code: -32018,
    retryable: true,
    description:
      "The answers of this batch together exceed the connection's output bound: this read-only call's answer was dropped; send fewer calls per batch.",
  },
  auditFailed: {
    code: -32019,
    retryable: true,
    description: 'The audit record of this mutating call could not be written, so the call was refused before it acted.',
  },
  inventoryIncomplete: {
    code: -32020,
    retryable: true,
    description: "libvirt could not tell every domain's storage (data.libvirt says why), so nothing was checked or started.",
  },
  tooManyPending: {
    code: -32021,
    retryable: true,
    description:
      "The connection's running calls fill its budget (limits.maxPendingCalls, maxPendingBytes): refused before it ran; retry once earlier calls (waits) answer.",
  },
  interrupted: {
    code: -32022,
    retryable: true,
    description:
      "A group switch was interrupted (the agent stopped or lost libvirtd) while the agent had the guest paused or frozen: the agent released the guest and says what it did in the group's error (group.error); each disk's job shows where it ended, and pivotGroup or finishGroup again switches the disks still ready.",
  },
  quiesceFailed: {
    code: -32023,
    retryable: false,
    description: 'quiesce "required": the guest\'s filesystems could not be frozen (data.libvirt: why); nothing was changed.',
  },
  insufficientSpace: {
    code: -32024,
    retryable: true,
    description:
      "The destination's filesystem (or block device) has less room than the copy can need (a group: its copies on that filesystem together): data.needed and data.available in bytes, data.path and data.filesystem, data.disks each copy's figure; nothing was started or created. The figure's rule is in docs/jobs.md (Pre-flight).",
  },
  backupRunning: {
    code: -32025,
    retryable: true,
    description:
      "A backup of this domain already runs (the agent's, data.jobId, or one started elsewhere, e.g. virsh backup-begin): libvirt runs one per domain; retry once it has ended.",
  },
} as const satisfies Record<SchemaErrorName, ErrorInfo>;

/**
 * A name a caller can branch on. The schemas declare the same names (schemas/defs/error-name.json,
 * generated into api.ts): the `satisfies` above fails to compile when the two lists differ, and a
 * name that is in neither does not compile wherever an error is built or recorded.
 */
export type ErrorName = keyof typeof ERRORS;

/** Whether `name` is in the table (a record another version of the agent wrote may hold one that is not). */
export function isErrorName(name: unknown): name is ErrorName {
  return typeof name === 'string' && Object.hasOwn(ERRORS, name);
}

/** An error meant for the caller: its name, message and data reach the client unchanged. */
export class AgentError extends Error {
  readonly errorName: ErrorName;
  readonly data: Record<string, unknown>;

  constructor(name: ErrorName, message: string, data: Record<string, unknown> = {}) {
    super(message);
    this.errorName = name;
    this.data = data;
  }

  get code(): number {
    return ERRORS[this.errorName].code;
  }

  get retryable(): boolean {
    return ERRORS[this.errorName].retryable;
  }
}
