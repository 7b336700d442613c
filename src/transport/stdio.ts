// stdio transport: newline-delimited JSON on stdin/stdout. The caller already runs commands
// on this host, so it is trusted. Logs never go to stdout.
import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../log.js';
import type { RefusalKind } from '../metrics/observer.js';
import type { RpcServer } from '../rpc/server.js';
import { Session } from '../rpc/session.js';

export interface StdioOptions {
  input?: Readable;
  output?: Writable;
  /** Longest accepted line in bytes; a longer one is answered with a parse error and skipped. */
  maxLine: number;
  /** Told of every refused line (metrics). */
  onRefusal?: (kind: RefusalKind) => void;
}

/** Serves until stdin ends; resolves once every pending answer is written. */
export function serveStdio(rpc: RpcServer, opts: StdioOptions, log: Logger): Promise<void> {
  const input = opts.input ?? process.stdin;
  const output = opts.output ?? process.stdout;
  const write = (frame: string) => { output.write(frame + '\n'); };
  const session = new Session({ name: 'local', readOnly: false }, 'stdio', write);
  rpc.attach(session);
  const pending = new Set<Promise<void>>();
  let buf = '';
  let skipping = false;

  const dispatch = (line: string) => {
    if (line.trim() === '') return;
    const p = rpc.handle(line, session).then(
      (reply) => { if (reply !== null) write(reply); },
      (err) => log.error('unexpected failure handling a line', { error: err }),
    ).finally(() => pending.delete(p));
    pending.add(p);
  };

  return new Promise((resolve) => {
    input.setEncoding?.('utf8');
    input.on('data', (chunk: string) => {
      buf += chunk;
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (skipping) skipping = false;
        else dispatch(line);
        nl = buf.indexOf('\n');
      }
      if (Buffer.byteLength(buf) > opts.maxLine) {
        // Too long to be a request we accept: answer once, drop the rest of this line.
        if (!skipping) opts.onRefusal?.('oversizedFrame');
        if (!skipping) write(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error: line too long' } }));
        skipping = true;
        buf = '';
      }
    });
    input.on('end', async () => {
      if (!skipping && buf.trim() !== '') dispatch(buf);
      await Promise.all([...pending]);
      rpc.detach(session);
      resolve();
    });
  });
}
