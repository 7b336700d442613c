// JSON-RPC 2.0 message shapes, by the spec's rules: what one parsed message is, and whether the
// other side owes an answer for it. The server, the transports, the relay and the client all ask here.

export type Id = string | number | null;
export type Kind = 'request' | 'notification' | 'response' | 'invalid';

const isObject = (m: unknown): m is Record<string, unknown> => typeof m === 'object' && m !== null && !Array.isArray(m);

/**
 * The longest id the agent keeps, in bytes (a string's UTF-8, a number's text): an id is held for
 * as long as its call runs and echoed in the answer, so a longer one is refused as Invalid
 * Request (id null), as JSON-RPC allows a server that cannot keep an id.
 */
export const MAX_ID_BYTES = 256;

const stringFits = (s: string) =>
  s.length <= MAX_ID_BYTES && (s.length * 3 <= MAX_ID_BYTES || Buffer.byteLength(s, 'utf8') <= MAX_ID_BYTES);

/** Whether an id is one the agent keeps and echoes; `rawId` is a number's exact text, when kept (frame.ts). */
export function validId(id: unknown, rawId?: string): id is Id {
  if (id === null) return true;
  if (typeof id === 'string') return stringFits(id);
  return typeof id === 'number' && Number.isFinite(id) && (rawId === undefined || rawId.length <= MAX_ID_BYTES);
}

/** Why a message's id is refused (too long, or not a string, number or null), or undefined. */
export function idProblem(m: unknown, rawId?: string): string | undefined {
  if (!isObject(m) || !('id' in m) || validId(m.id, rawId)) return undefined;
  const id = m.id;
  if (typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id))) return `the id is longer than ${MAX_ID_BYTES} bytes`;
  return 'the id must be a string, a finite number or null';
}

/** Classifies one message of a frame (a batch's element, or the whole frame). */
export function classify(m: unknown, rawId?: string): Kind {
  if (!isObject(m)) return 'invalid';
  const hasId = 'id' in m;
  if (hasId && !validId(m.id, rawId)) return 'invalid';
  if ('method' in m) {
    if (m.jsonrpc !== '2.0' || typeof m.method !== 'string') return 'invalid';
    if ('params' in m && (typeof m.params !== 'object' || m.params === null)) return 'invalid';
    return hasId ? 'request' : 'notification';
  }
  return hasId && m.jsonrpc === '2.0' && 'result' in m !== 'error' in m ? 'response' : 'invalid';
}

/** The id an answer to this message carries: its own when it has a valid one, else null. */
export function answerId(m: unknown, rawId?: string): Id {
  return isObject(m) && 'id' in m && validId(m.id, rawId) ? m.id : null;
}

/**
 * Whether a server owes an answer frame for these messages (one frame per incoming frame at most):
 * everything but a frame made only of notifications is answered (junk and [] included).
 */
export function answerOwed(items: unknown[] | null, batch: boolean): boolean {
  if (items === null) return true; // not JSON
  if (batch && items.length === 0) return true;
  return items.some((m) => classify(m) !== 'notification');
}

/** A message the server sends on its own: a notification (method, no id). */
export function isNotification(m: unknown): m is { method: string; params?: unknown } {
  return classify(m) === 'notification';
}

/** What a call keeps of its message: the frame and the message's other members are let go. */
export interface CallMessage {
  kind: Kind;
  /** The id its answer carries (null for a message without a valid one). */
  id: Id;
  /** A number's exact text, when JS cannot hold it (only with a valid id). */
  rawId?: string;
  /** Why the id is refused (too long), for the Invalid Request answer. */
  idProblem?: string;
  method?: string;
  params?: unknown;
}

export function callMessage(m: unknown, rawId: string | undefined): CallMessage {
  const kind = classify(m, rawId);
  const id = answerId(m, rawId);
  const problem = idProblem(m, rawId);
  const out: CallMessage = {
    kind,
    id,
    ...(id !== null && rawId !== undefined ? { rawId } : {}),
    ...(problem ? { idProblem: problem } : {}),
  };
  if (kind === 'request' || kind === 'notification') {
    const r = m as { method: string; params?: unknown };
    out.method = r.method;
    if (r.params !== undefined) out.params = r.params;
  }
  return out;
}
