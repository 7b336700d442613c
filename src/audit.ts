// The audit trail: one JSON line per audit entry, appended to a file or handed to the log.
// Entries carry caller-supplied params, so what is written is bounded and redacted without
// recursion: hostile nesting or size can neither overflow the stack nor bloat the trail.
import { writeSync, closeSync } from 'node:fs';
import type { Logger } from './log.js';
import { openOwnFile } from './own-files.js';
import type { AuditEntry } from './generated/api.js';

const SECRET = /token|password|secret|passphrase|key$/i;

export const REDACT_LIMITS = { depth: 8, keys: 200, string: 1024 } as const;

/**
 * A copy of `v` with the values of secret-looking keys replaced, objects deeper than
 * `depth` replaced by '[too deep]', at most `keys` members in all (the rest summarized), and
 * strings cut to `string` characters. Iterative: an explicit stack instead of recursion.
 */
export function redact(v: unknown, limits: { depth: number; keys: number; string: number } = REDACT_LIMITS): unknown {
  let budget = limits.keys;
  const cut = (s: string) => (s.length > limits.string ? `${s.slice(0, limits.string)}…[${s.length - limits.string} more]` : s);
  const root: { value?: unknown } = {};
  const stack: Array<{ src: unknown; set: (x: unknown) => void; depth: number }> = [
    {
      src: v,
      set: (x) => {
        root.value = x;
      },
      depth: 0,
    },
  ];
  while (stack.length > 0) {
    const { src, set, depth } = stack.pop()!;
    if (typeof src === 'string') {
      set(cut(src));
      continue;
    }
    if (src === null || typeof src !== 'object') {
      set(typeof src === 'bigint' ? String(src) : src);
      continue;
    }
    if (depth >= limits.depth) {
      set('[too deep]');
      continue;
    }
    const arr = Array.isArray(src);
    const out: Record<string, unknown> | unknown[] = arr ? [] : {};
    set(out);
    const keys = Object.keys(src);
    let taken = 0;
    for (const k of keys) {
      if (budget <= 0) break;
      budget--;
      taken++;
      const x = (src as Record<string, unknown>)[k];
      const put = (y: unknown) => {
        (out as Record<string, unknown>)[k] = y;
      };
      if (!arr && SECRET.test(k)) put('[redacted]');
      else stack.push({ src: x, set: put, depth: depth + 1 });
    }
    if (taken < keys.length) (out as Record<string, unknown>)[arr ? String(taken) : '…'] = `[${keys.length - taken} more omitted]`;
  }
  return root.value;
}

export interface AuditSink {
  /** Throws when the entry could not be recorded (the caller refuses the call). */
  write(entry: AuditEntry): void;
  close(): void;
}

export function openAudit(file: string | undefined, log: Logger): AuditSink {
  if (!file) {
    return { write: (e) => log.info('audit', { audit: redact(e) }), close: () => {} };
  }
  // O_APPEND: every line lands at the end even if another writer (logrotate's copytruncate) moved
  // it. Never through a link: the agent's own regular file (its directory was checked at start).
  const fd = openOwnFile(file, 'append');
  return {
    write: (e) => {
      const line = Buffer.from(JSON.stringify(redact(e)) + '\n');
      // A short write would leave half a record: treat it as a failure too.
      if (writeSync(fd, line) !== line.length) throw new Error('short write to the audit file');
    },
    close: () => closeSync(fd),
  };
}
