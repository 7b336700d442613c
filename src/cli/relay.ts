// `blockcopy-agent stdio` when a daemon already owns the jobs: pass lines to it over its
// loopback WebSocket and its frames back, so both callers see one set of jobs. Lines are parsed
// with the protocol module to know which ones the daemon owes an answer; the relay ends only
// once every one of those has come back (or the daemon went away, which it reports).
import { WebSocket } from 'ws';
import { CODES, LineReader, answerOwed, classify, errorResponse, parseError, parseFrame, serialize } from '../protocol/index.js';
import type { LockInfo } from '../state-lock.js';

export interface RelayOptions {
  /** Longest accepted line in bytes (the daemon's frame limit); longer ones are answered here. */
  maxLine: number;
  /** The daemon's batch limit (it answers a larger batch even if it holds only notifications). */
  maxBatch: number;
  input?: NodeJS.ReadableStream & { pause(): unknown; resume(): unknown };
  output?: NodeJS.WritableStream;
}

/** Whether a frame from the daemon answers a line (rather than being a notification). */
function isAnswer(text: string): boolean {
  const p = parseFrame(text);
  return p.ok && (p.batch || classify(p.items[0]) === 'response');
}

export function relayStdio(holder: LockInfo, opts: RelayOptions): Promise<void> {
  const input = opts.input ?? process.stdin;
  const output = opts.output ?? process.stdout;
  const listen = holder.listen!;
  // The daemon accepts the relay token only from a loopback peer: a wildcard bind is reached there.
  const bound = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '::1' : listen.host;
  const host = bound.includes(':') ? `[${bound}]` : bound;
  // The daemon's own certificate may name another host than loopback: the relay token, read
  // from the root-only state directory, is what authenticates both ends here.
  const ws = new WebSocket(`${holder.tls ? 'wss' : 'ws'}://${host}:${listen.port}`, {
    headers: holder.relayToken ? { authorization: `Bearer ${holder.relayToken}` } : {},
    rejectUnauthorized: false,
    perMessageDeflate: false,
  });
  let owed = 0;
  let inputEnded = false;
  let settled = false;
  return new Promise((resolve, reject) => {
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      ws.close();
      if (err) reject(err);
      else resolve();
    };
    const maybeDone = () => {
      if (inputEnded && owed === 0) finish();
    };
    const out = (frame: string) => {
      // The reader of stdout sets the pace: stop reading the daemon while stdout is full.
      if (!output.write(frame + '\n')) {
        ws.pause();
        output.once('drain', () => ws.resume());
      }
    };
    const forward = (line: string) => {
      const p = parseFrame(line);
      if (p.ok && p.batch && p.items.length > opts.maxBatch) owed++;
      else if (answerOwed(p.ok ? p.items : null, p.ok && p.batch)) owed++;
      ws.send(line, () => {
        if (ws.bufferedAmount < opts.maxLine) input.resume();
      });
      if (ws.bufferedAmount >= opts.maxLine) input.pause();
    };
    const lines = new LineReader({ maxLine: opts.maxLine, onLine: forward, onOversize: () => out(serialize(parseError('line too long'))) });

    ws.on('error', (e) => finish(new Error(`cannot reach the running agent at ${host}:${listen.port}: ${e.message}`)));
    ws.on('close', (code, reason) => {
      if (owed > 0 || !inputEnded) {
        // Whatever the daemon still owed is answered here, so that no caller waits forever.
        const message = `the running agent closed the connection (${code}) before answering`;
        for (; owed > 0; owed--) out(serialize(errorResponse(null, { code: CODES.internalError, message })));
        finish(new Error(`the running agent closed the connection (${code}${reason.length ? ' ' + reason.toString() : ''})`));
      }
    });
    ws.on('message', (data) => {
      const text = data.toString();
      out(text);
      if (isAnswer(text) && owed > 0) owed--;
      maybeDone();
    });
    ws.on('open', () => {
      input.on('data', (chunk: Buffer | string) => lines.push(chunk));
      input.on('end', () => {
        lines.end();
        inputEnded = true;
        maybeDone();
      });
    });
  });
}
