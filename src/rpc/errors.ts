// Maps whatever a handler throws to a JSON-RPC error object. Only AgentErrors and validation
// failures carry details to the caller; anything else is logged and becomes -32603.
import type { JSONRPCError as JSONRPCErrorObject } from 'json-rpc-2.0';
import { AgentError, ERRORS, PROTOCOL_ERRORS } from '../errors.js';
import type { Logger } from '../log.js';
import type { ValidationErrors } from '../schemas.js';

export class InvalidParams extends Error {
  constructor(readonly errors: ValidationErrors) {
    super('Invalid params');
  }
}

export function toErrorObject(e: unknown, log: Logger): JSONRPCErrorObject {
  if (e instanceof InvalidParams) {
    return { code: PROTOCOL_ERRORS.invalidParams.code, message: 'Invalid params', data: { errors: e.errors } };
  }
  if (e instanceof AgentError) {
    return { code: e.code, message: e.message, data: { name: e.errorName, retryable: ERRORS[e.errorName].retryable, ...e.data } };
  }
  log.error('internal error', { error: e instanceof Error ? { name: e.name, message: e.message, stack: e.stack } : String(e) });
  return { code: PROTOCOL_ERRORS.internalError.code, message: 'Internal error' };
}
