// Seeded generator of hostile JSON-RPC frames, and the spec's view of what each deserves.

export function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const METHODS = [
  'blockCopy',
  'jobInfo',
  'pivot',
  'finish',
  'abort',
  'setSpeed',
  'listJobs',
  'wait',
  'capabilities',
  'subscribe',
  'unsubscribe',
  'rpc.discover',
];
const ODD = ['', '\u0000', '\ud800', '💥', 'a'.repeat(5000), '../../etc/passwd', '\u202e', 'null', '{"a":1}', 'vda', 'bctest-fuzz-nope'];

export interface Generated {
  frame: string | Buffer;
  kind: string;
}

export function generator(seed: number) {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const value = (depth = 0): unknown => {
    const k = Math.floor(r() * (depth > 3 ? 6 : 9));
    switch (k) {
      case 0:
        return pick(ODD);
      case 1:
        return pick([0, -1, 1.5, 2 ** 53 + 1, 1e308, -1e308, Number.MAX_SAFE_INTEGER]);
      case 2:
        return r() < 0.5;
      case 3:
        return null;
      case 4:
        return pick(['/var/tmp/fuzz.qcow2', 'raw', 'qcow2', 'pivot', 'ready', 'done']);
      case 5:
        return Math.floor(r() * 100);
      case 6:
        return Array.from({ length: Math.floor(r() * 4) }, () => value(depth + 1));
      default:
        return Object.fromEntries(
          Array.from({ length: Math.floor(r() * 4) }, () => [
            pick(['domain', 'disk', 'jobId', 'destination', 'path', 'bandwidth', 'granularity', 'timeout', 'until', 'x']),
            value(depth + 1),
          ]),
        );
    }
  };
  const request = (id: unknown): Record<string, unknown> => ({
    jsonrpc: '2.0',
    method: r() < 0.9 ? pick(METHODS) : pick(ODD),
    params: value(),
    ...(id === undefined ? {} : { id }),
  });
  return (): Generated => {
    const kind = pick([
      'valid-shape',
      'malformed',
      'wrong-types',
      'huge-number',
      'deep',
      'unicode',
      'unknown-method',
      'batch',
      'notification',
      'binary',
    ]);
    switch (kind) {
      case 'malformed': {
        const s = JSON.stringify(request(1));
        return { kind, frame: s.slice(0, Math.floor(r() * s.length)) + pick(['', '}', ']', ',', '"']) };
      }
      case 'wrong-types':
        return {
          kind,
          frame: JSON.stringify({
            jsonrpc: pick(['2.0', '1.0', 2, null]),
            method: pick([5, null, [], 'jobInfo']),
            params: pick([5, 'x', null, {}]),
            id: pick([1, 'a', {}, [], null, true]),
          }),
        };
      case 'huge-number':
        return {
          kind,
          frame: `{"jsonrpc":"2.0","method":"setSpeed","params":{"jobId":"x","bandwidth":${'9'.repeat(1 + Math.floor(r() * 400))}},"id":${'1'.repeat(1 + Math.floor(r() * 30))}}`,
        };
      case 'deep': {
        const n = 1 + Math.floor(r() * 20000);
        return { kind, frame: `{"jsonrpc":"2.0","method":"jobInfo","params":{"jobId":${'['.repeat(n)}${']'.repeat(n)}},"id":7}` };
      }
      case 'unicode':
        return {
          kind,
          frame: JSON.stringify({ jsonrpc: '2.0', method: 'jobInfo', params: { domain: pick(ODD), disk: pick(ODD) }, id: pick(ODD) }),
        };
      case 'unknown-method':
        return { kind, frame: JSON.stringify({ jsonrpc: '2.0', method: `x${Math.floor(r() * 1e6)}`, id: 3 }) };
      case 'batch': {
        const items = Array.from({ length: Math.floor(r() * 6) }, () =>
          pick([1, 'x', null, [], {}, request(Math.floor(r() * 100)), request(undefined)]),
        );
        return { kind, frame: JSON.stringify(items) };
      }
      case 'notification':
        return { kind, frame: JSON.stringify(request(undefined)) };
      case 'binary':
        return { kind, frame: Buffer.from(Array.from({ length: 1 + Math.floor(r() * 64) }, () => Math.floor(r() * 256))) };
      default:
        return { kind, frame: JSON.stringify(request(Math.floor(r() * 1000))) };
    }
  };
}

/** Checks one answer frame against the JSON-RPC 2.0 response shape; returns a problem or null. */
export function problem(text: string): string | null {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return `not JSON: ${text.slice(0, 80)}`;
  }
  for (const m of Array.isArray(msg) ? msg : [msg]) {
    const o = m as Record<string, unknown>;
    if (o?.method === 'job.changed') continue;
    if (o?.jsonrpc !== '2.0' || !('id' in o) || 'result' in o === 'error' in o) return `not a response: ${text.slice(0, 120)}`;
    const e = o.error as { code?: unknown; message?: unknown } | undefined;
    if (e && (typeof e.code !== 'number' || typeof e.message !== 'string')) return `bad error object: ${text.slice(0, 120)}`;
    if (e?.code === -32603) return `internal error for fuzz input: ${text.slice(0, 120)}`;
  }
  return null;
}

export function isValidNotification(x: unknown): boolean {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const o = x as Record<string, unknown>;
  return (
    o.jsonrpc === '2.0' &&
    typeof o.method === 'string' &&
    !('id' in o) &&
    (!('params' in o) || (typeof o.params === 'object' && o.params !== null))
  );
}

/** Whether JSON-RPC 2.0 requires an answer to this frame (anything but notifications does). */
export function expectsAnswer(frame: string): boolean {
  let m: unknown;
  try {
    m = JSON.parse(frame);
  } catch {
    return true;
  }
  if (Array.isArray(m)) return m.length === 0 || m.some((x) => !isValidNotification(x));
  return !isValidNotification(m);
}

/** A job.changed notification from the agent (not an answer to anything). */
export function isNotification(text: string): boolean {
  return text.startsWith('{"jsonrpc":"2.0","method":"job.changed"');
}
