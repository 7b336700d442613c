// `blockcopy-agent stdio` when a daemon already owns the jobs: pass lines to it over its
// loopback WebSocket and its frames back, so both callers see one set of jobs.
import { WebSocket } from 'ws';
import type { LockInfo } from '../state-lock.js';

/** How many answers a line will get (0 for a notification-only line). */
function answersExpected(line: string): number {
  try {
    const msg = JSON.parse(line);
    if (Array.isArray(msg)) return msg.length === 0 || msg.some((m) => typeof m !== 'object' || m === null || 'id' in m) ? 1 : 0;
    return typeof msg === 'object' && msg !== null && !('id' in msg) && typeof msg.method === 'string' ? 0 : 1;
  } catch {
    return 1;
  }
}

export function relayStdio(holder: LockInfo): Promise<void> {
  const listen = holder.listen!;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  // The daemon's own certificate may name another host than loopback: the relay token, read
  // from the root-only state directory, is what authenticates both ends here.
  const ws = new WebSocket(`${holder.tls ? 'wss' : 'ws'}://${host}:${listen.port}`, {
    headers: holder.relayToken ? { authorization: `Bearer ${holder.relayToken}` } : {},
    rejectUnauthorized: false,
  });
  let expected = 0;
  let received = 0;
  let inputEnded = false;
  let buf = '';
  return new Promise((resolve, reject) => {
    const maybeDone = () => {
      if (inputEnded && received >= expected) {
        ws.close();
        resolve();
      }
    };
    ws.on('error', (e) => reject(new Error(`cannot reach the running agent at ${host}:${listen.port}: ${e.message}`)));
    ws.on('message', (data) => {
      const text = data.toString();
      process.stdout.write(text + '\n');
      if (/^\s*[[{]/.test(text) && /"id"\s*:/.test(text)) received++;
      maybeDone();
    });
    ws.on('open', () => {
      process.stdin.setEncoding('utf8');
      process.stdin.on('data', (chunk: string) => {
        buf += chunk;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim() === '') continue;
          expected += answersExpected(line);
          ws.send(line);
        }
      });
      process.stdin.on('end', () => {
        if (buf.trim() !== '') {
          expected += answersExpected(buf);
          ws.send(buf);
        }
        inputEnded = true;
        maybeDone();
      });
    });
  });
}
