// systemd's side of the notify protocol (sd_notify(3)), for tests where no systemd is PID 1: a
// unix datagram socket with SO_PASSCRED, as the manager's own, that records each notification
// with the sender's pid the kernel attached (what NotifyAccess=main checks). Python receives:
// Node has no unix datagram sockets.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { TeardownHost } from '../../harness/hypervisor.js';

const RECEIVER = `
import json, socket, struct, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind("\\0" + path[1:] if path.startswith("@") else path)
print(json.dumps({"bound": path}), flush=True)
while True:
    data, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, cred in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", cred[:12])[0]
    print(json.dumps({"pid": pid, "text": data.decode(), "mono": time.monotonic_ns() // 1000}), flush=True)
`;

export interface Notification {
  pid: number | null;
  text: string;
  fields: Record<string, string>;
  /** CLOCK_MONOTONIC (µs) when it was received. */
  mono: number;
}

export interface NotifySocket {
  path: string;
  received: Notification[];
  /** The first notification from index `from` on that satisfies `ok` (waits for it). */
  next(ok: (n: Notification) => boolean, from?: number, timeoutMs?: number): Promise<Notification>;
}

export async function notifySocket(host: TeardownHost, path: string): Promise<NotifySocket> {
  const child = spawn('python3', ['-c', RECEIVER, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  host.teardown(() => {
    child.kill();
  });
  const received: Notification[] = [];
  const waiters = new Set<() => void>();
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`notify receiver exited with ${code}`)));
    lines.on('line', (line) => {
      const m = JSON.parse(line) as { bound?: string; pid: number | null; text: string; mono: number };
      if (m.bound) return resolve();
      const fields = Object.fromEntries(
        m.text
          .split('\n')
          .filter(Boolean)
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
      received.push({ pid: m.pid, text: m.text, fields, mono: m.mono });
      for (const w of waiters) w();
    });
  });
  return {
    path,
    received,
    next: (ok, from = 0, timeoutMs = 60_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const hit = received.slice(from).find(ok);
          if (!hit) return false;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no such notification; received: ${JSON.stringify(received.map((n) => n.text))}`));
        }, timeoutMs);
        if (!check()) waiters.add(check);
      }),
  };
}
