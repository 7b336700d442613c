// Building and serializing JSON-RPC responses. Every error answer the agent writes outside a
// method (junk, limits, refusals) is built here, so that all transports answer alike.
import { ERRORS, type ErrorName } from '../errors.js';
import type { Id } from './messages.js';

export const CODES = { parseError: -32700, invalidRequest: -32600, methodNotFound: -32601, invalidParams: -32602, internalError: -32603 } as const;

export interface ErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

export type Response = { jsonrpc: '2.0'; id: Id; result: unknown } | { jsonrpc: '2.0'; id: Id; error: ErrorObject };

export const errorResponse = (id: Id, error: ErrorObject): Response => ({ jsonrpc: '2.0', id, error });

/** An error from the agent's table (src/errors.ts): its code, name and retryability. */
export const agentError = (name: ErrorName, message: string, data: Record<string, unknown> = {}): ErrorObject =>
  ({ code: ERRORS[name].code, message, data: { name, retryable: ERRORS[name].retryable, ...data } });

export const parseError = (detail?: string): Response =>
  errorResponse(null, { code: CODES.parseError, message: detail ? `Parse error: ${detail}` : 'Parse error' });

export const invalidRequest = (id: Id = null, detail?: string, data?: unknown): Response =>
  errorResponse(id, { code: CODES.invalidRequest, message: detail ? `Invalid Request: ${detail}` : 'Invalid Request', ...(data !== undefined ? { data } : {}) });

export const rateLimited = (id: Id): Response => errorResponse(id, agentError('rateLimited', 'rate limit exceeded'));

/**
 * One response as text. `rawId`, when given, is the id's exact text from the request (a number
 * JS cannot hold); `resultJson` lets a cached serialization be spliced in without parsing it.
 */
export function serialize(r: Response, rawId?: string, resultJson?: string): string {
  const id = rawId ?? JSON.stringify(r.id);
  const body = resultJson !== undefined ? `"result":${resultJson}` : JSON.stringify('error' in r ? { error: r.error } : { result: r.result }).slice(1, -1);
  return `{"jsonrpc":"2.0","id":${id},${body}}`;
}

/** A batch's answers as one frame (null when every message was a notification). */
export const serializeBatch = (parts: string[]): string | null => (parts.length > 0 ? `[${parts.join(',')}]` : null);
