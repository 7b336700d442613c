// Maps whatever a handler throws to a JSON-RPC error object. Only AgentErrors and validation
// failures carry details to the caller; anything else is logged and becomes -32603.
import { CODES, agentError, type ErrorObject } from '../protocol/index.js';
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ValidationErrors } from '../schemas.js';

export class InvalidParams extends Error {
  constructor(readonly errors: ValidationErrors) {
    super('Invalid params');
  }
}

export function toErrorObject(e: unknown, log: Logger): ErrorObject {
  if (e instanceof InvalidParams) {
    return { code: CODES.invalidParams, message: 'Invalid params', data: { errors: e.errors } };
  }
  if (e instanceof AgentError) {
    return agentError(e.errorName, e.message, e.data);
  }
  log.error('internal error', { error: e instanceof Error ? { name: e.name, message: e.message, stack: e.stack } : String(e) });
  return { code: CODES.internalError, message: 'Internal error' };
}
