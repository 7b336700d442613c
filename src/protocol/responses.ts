// Building and serializing JSON-RPC responses. Every error answer the agent writes outside a
// method (junk, limits, refusals) is built here, so that all transports answer alike.
import { ERRORS, type ErrorName } from '../errors.js';
import type { Id } from './messages.js';

export const CODES = {
  parseError: -32700,
  invalidRequest: -32600,
  methodNotFound: -32601,
  invalidParams: -32602,
  internalError: -32603,
} as const;

export interface ErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

export type Response = { jsonrpc: '2.0'; id: Id; result: unknown } | { jsonrpc: '2.0'; id: Id; error: ErrorObject };

export const errorResponse = (id: Id, error: ErrorObject): Response => ({ jsonrpc: '2.0', id, error });

/** An error from the agent's table (src/errors.ts): its code, name and retryability. */
export const agentError = (name: ErrorName, message: string, data: Record<string, unknown> = {}): ErrorObject => ({
  code: ERRORS[name].code,
  message,
  data: { name, retryable: ERRORS[name].retryable, ...data },
});

export const parseError = (detail?: string): Response =>
  errorResponse(null, { code: CODES.parseError, message: detail ? `Parse error: ${detail}` : 'Parse error' });

export const invalidRequest = (id: Id = null, detail?: string, data?: unknown): Response =>
  errorResponse(id, {
    code: CODES.invalidRequest,
    message: detail ? `Invalid Request: ${detail}` : 'Invalid Request',
    ...(data !== undefined ? { data } : {}),
  });

export const rateLimited = (id: Id): Response => errorResponse(id, agentError('rateLimited', 'rate limit exceeded'));

/**
 * One response as text. `rawId`, when given, is the id's exact text from the request (a number
 * JS cannot hold); `resultJson` lets a cached serialization be spliced in without parsing it.
 */
export function serialize(r: Response, rawId?: string, resultJson?: string): string {
  const id = rawId ?? JSON.stringify(r.id);
  const body =
    resultJson !== undefined
      ? `"result":${resultJson}`
      : JSON.stringify('error' in r ? { error: r.error } : { result: r.result }).slice(1, -1);
  return `{"jsonrpc":"2.0","id":${id},${body}}`;
}

/** A notification (server → client) or a request (client → server) as text. */
export const notificationFrame = (method: string, params: unknown): string => JSON.stringify({ jsonrpc: '2.0', method, params });
export const requestFrame = (id: number | string, method: string, params: unknown): string =>
  JSON.stringify({ jsonrpc: '2.0', id, method, params });

/**
 * An outgoing frame: text, or pieces sent back to back as one message (WebSocket fragments, or
 * one stdio line), so that a large cached piece (rpc.discover) is shared, never copied per call.
 */
export type Frame = string | Array<string | Buffer>;

export const frameLength = (f: Frame): number => (typeof f === 'string' ? f.length : f.reduce((n, p) => n + p.length, 0));

export const frameText = (f: Frame): string => (typeof f === 'string' ? f : f.map((p) => p.toString()).join(''));

/** A result spliced in from its cached serialization (one shared Buffer). */
export const cachedResult = (id: Id, rawId: string | undefined, result: Buffer): Frame => [
  `{"jsonrpc":"2.0","id":${rawId ?? JSON.stringify(id)},"result":`,
  result,
  '}',
];

/** A batch's answers as one frame (null when every message was a notification). */
export function serializeBatch(answers: Frame[]): Frame | null {
  if (answers.length === 0) return null;
  if (answers.every((a) => typeof a === 'string')) return `[${answers.join(',')}]`;
  const parts: Array<string | Buffer> = ['['];
  answers.forEach((a, i) => parts.push(...(i > 0 ? [','] : []), ...(typeof a === 'string' ? [a] : a)));
  parts.push(']');
  return parts;
}
