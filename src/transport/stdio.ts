// stdio transport: newline-delimited JSON on stdin/stdout. The caller already runs commands
// on this host, so it is trusted (no rate limit), but its output is bounded like any other:
// stdin is not read while stdout holds too much unread, and a reader that stays away is dropped.
import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../log.js';
import type { RefusalKind } from '../metrics/observer.js';
import { LineReader, parseError, serialize } from '../protocol/index.js';
import type { RpcServer } from '../rpc/server.js';
import { Session } from '../rpc/session.js';
import { Flow, type FlowLimits } from './flow.js';

export interface StdioOptions {
  input?: Readable;
  output?: Writable;
  /** Longest accepted line in bytes; a longer one is answered with a parse error and skipped. */
  maxLine: number;
  flow: FlowLimits;
  /** Told of every refused line (metrics). */
  onRefusal?: (kind: RefusalKind) => void;
  /** Who the caller is, for the audit (the local unix socket serves its clients through here too). */
  principal?: string;
  peer?: string;
}

/** How serving ended: input ended (answers all handed to stdout), or the caller stopped reading. */
export type StdioEnd = 'eof' | 'notReading';

/** Serves until stdin ends (or stdout is not read); resolves once every pending answer is written. */
export function serveStdio(rpc: RpcServer, opts: StdioOptions, log: Logger): Promise<StdioEnd> {
  const input = opts.input ?? process.stdin;
  const output = opts.output ?? process.stdout;
  return new Promise((resolve) => {
    let done = false;
    const finish = (how: StdioEnd) => {
      if (done) return;
      done = true;
      flow.dispose();
      rpc.detach(session);
      resolve(how);
    };
    const flow: Flow = new Flow(
      {
        write: (frame, cb) => {
          if (typeof frame === 'string') return void output.write(frame + '\n', () => cb());
          for (const part of frame) output.write(part);
          output.write('\n', () => cb());
        },
        buffered: () => output.writableLength,
        pause: () => input.pause(),
        resume: () => input.resume(),
        close: (reason) => {
          log.error('stdio: the caller does not read its answers; stopping', { reason });
          input.destroy();
          finish('notReading');
        },
      },
      opts.flow,
      (line) => rpc.handle(line, session),
      () => session.pending.full,
    );
    const session = new Session(
      { name: opts.principal ?? 'local', readOnly: false },
      opts.peer ?? 'stdio',
      (frame) => flow.send(frame),
      null,
      opts.flow,
    );
    rpc.attach(session);
    const lines = new LineReader({
      maxLine: opts.maxLine,
      onLine: (line) => flow.receive(line),
      // Too long to be a request we accept: answered once, the rest of the line dropped.
      onOversize: () => {
        opts.onRefusal?.('oversizedFrame');
        flow.send(serialize(parseError('line too long')));
      },
    });
    input.on('data', (chunk: Buffer | string) => lines.push(chunk));
    input.on('error', (e) => log.warn('stdio input error', { error: e.message }));
    input.on('end', async () => {
      lines.end();
      await flow.drained();
      finish('eof');
    });
  });
}
