// One frame (a WebSocket message or a stdio line) parsed into its messages, keeping the exact
// text of every numeric id that a JS number cannot hold (123456789012345678901234567890 would
// come back as 1.2345678901234568e+29): the answer echoes that text. JSON.parse in Node 20 has no
// source-text access, so a small scanner finds the `id` member's raw text, and only for frames
// where a numeric id is not a safe integer (the common case costs nothing).

export type Parsed = { ok: false } | { ok: true; batch: boolean; items: unknown[]; rawIds: Array<string | undefined> };

const needsRaw = (m: unknown) => {
  const id = typeof m === 'object' && m !== null ? (m as { id?: unknown }).id : undefined;
  return typeof id === 'number' && !Number.isSafeInteger(id);
};

export function parseFrame(text: string): Parsed {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false };
  }
  const batch = Array.isArray(v);
  const items = batch ? (v as unknown[]) : [v];
  const rawIds: Array<string | undefined> = new Array(items.length);
  if (items.some(needsRaw)) {
    const raw = scanIds(text, batch);
    items.forEach((m, i) => {
      if (needsRaw(m)) rawIds[i] = raw[i];
    });
  }
  return { ok: true, batch, items, rawIds };
}

// --- a scanner for text JSON.parse already accepted (so it may assume valid JSON) ---

const WS = new Set([' ', '\t', '\n', '\r']);
const skipWs = (s: string, i: number) => {
  while (WS.has(s[i]!)) i++;
  return i;
};

function skipString(s: string, i: number): number {
  for (i++; s[i] !== '"'; i++) if (s[i] === '\\') i++;
  return i + 1;
}

/** Index just past the value starting at i; iterative, so that nesting depth costs no stack. */
function skipValue(s: string, i: number): number {
  const c = s[i];
  if (c === '"') return skipString(s, i);
  if (c !== '{' && c !== '[') {
    while (i < s.length && !WS.has(s[i]!) && s[i] !== ',' && s[i] !== '}' && s[i] !== ']') i++;
    return i;
  }
  let depth = 0;
  for (; i < s.length; i++) {
    const ch = s[i];
    if (ch === '"') i = skipString(s, i) - 1;
    else if (ch === '{' || ch === '[') depth++;
    else if ((ch === '}' || ch === ']') && --depth === 0) return i + 1;
  }
  return i;
}

/** The raw text of member `id` of the object at i (the last one, as JSON.parse keeps), and its end. */
function rawIdOf(s: string, i: number): [string | undefined, number] {
  if (s[i] !== '{') return [undefined, skipValue(s, i)];
  let id: string | undefined;
  i = skipWs(s, i + 1);
  while (s[i] !== '}') {
    const keyEnd = skipString(s, i);
    const key = JSON.parse(s.slice(i, keyEnd)) as string;
    i = skipWs(s, skipWs(s, keyEnd) + 1); // past ':'
    const end = skipValue(s, i);
    // A copy: a slice would keep the whole frame alive for as long as the id is kept.
    if (key === 'id') id = Buffer.from(s.slice(i, end), 'latin1').toString('latin1');
    i = skipWs(s, end);
    if (s[i] === ',') i = skipWs(s, i + 1);
  }
  return [id, i + 1];
}

function scanIds(s: string, batch: boolean): Array<string | undefined> {
  let i = skipWs(s, 0);
  if (!batch) return [rawIdOf(s, i)[0]];
  const out: Array<string | undefined> = [];
  i = skipWs(s, i + 1);
  while (s[i] !== ']') {
    const [id, end] = rawIdOf(s, i);
    out.push(id);
    i = skipWs(s, end);
    if (s[i] === ',') i = skipWs(s, i + 1);
  }
  return out;
}
