// Probes of a running agent from outside: a WebSocket upgrade's outcome, a line of its log.
import WebSocket from 'ws';
import type { ServedAgent } from '../../harness/agent.js';

/** The HTTP status of a refused upgrade, or 'open'. */
export function attempt(url: string, opts: ConstructorParameters<typeof WebSocket>[2] = {}): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, opts);
    ws.on('open', () => {
      resolve('open');
      ws.close();
    });
    ws.on('unexpected-response', (_req, res) => {
      resolve(`HTTP ${res.statusCode}`);
      res.destroy();
    });
    ws.on('error', (e) => resolve(`error: ${e.message}`));
  });
}

/** Waits for a log line of the agent matching `re` (or says it did not come within a minute). */
export function logged(agent: ServedAgent, re: RegExp): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const on = (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => re.test(l));
      if (line) done(line);
    };
    const timer = setTimeout(() => done(`no log line matching ${re} within 60 s`), 60_000);
    const done = (line: string) => {
      clearTimeout(timer);
      agent.process.stderr!.off('data', on);
      resolve(line);
    };
    agent.process.stderr!.on('data', on);
  });
}
