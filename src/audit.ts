// The audit trail: one JSON line per mutating call, appended to a file or handed to the log.
import { openSync, writeSync, closeSync, constants } from 'node:fs';
import type { Logger } from './log.js';
import type { AuditEntry } from './rpc/server.js';

const SECRET = /token|password|secret|passphrase|key$/i;

/** Replaces the values of secret-looking keys, at any depth. */
export function redact(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(redact);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, SECRET.test(k) ? '[redacted]' : redact(x)]));
  }
  return v;
}

export interface AuditSink {
  write(entry: AuditEntry): void;
  close(): void;
}

export function openAudit(file: string | undefined, log: Logger): AuditSink {
  if (!file) {
    return { write: (e) => log.info('audit', { audit: redact(e) }), close: () => {} };
  }
  // O_APPEND: every line lands at the end even if another writer (logrotate's copytruncate) moved it.
  const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND, 0o600);
  return {
    write: (e) => { writeSync(fd, JSON.stringify(redact(e)) + '\n'); },
    close: () => closeSync(fd),
  };
}
