// JSON-RPC 2.0 message shapes, by the spec's rules: what one parsed message is, and whether the
// other side owes an answer for it. The server, the transports, the relay and the client all ask here.

export type Id = string | number | null;
export type Kind = 'request' | 'notification' | 'response' | 'invalid';

export function validId(id: unknown): id is Id {
  return id === null || typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id));
}

const isObject = (m: unknown): m is Record<string, unknown> => typeof m === 'object' && m !== null && !Array.isArray(m);

/** Classifies one message of a frame (a batch's element, or the whole frame). */
export function classify(m: unknown): Kind {
  if (!isObject(m)) return 'invalid';
  const hasId = 'id' in m;
  if (hasId && !validId(m.id)) return 'invalid';
  if ('method' in m) {
    if (m.jsonrpc !== '2.0' || typeof m.method !== 'string') return 'invalid';
    if ('params' in m && (typeof m.params !== 'object' || m.params === null)) return 'invalid';
    return hasId ? 'request' : 'notification';
  }
  return hasId && m.jsonrpc === '2.0' && 'result' in m !== 'error' in m ? 'response' : 'invalid';
}

/** The id an answer to this message carries: its own when it has a valid one, else null. */
export function answerId(m: unknown): Id {
  return isObject(m) && 'id' in m && validId(m.id) ? m.id : null;
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
