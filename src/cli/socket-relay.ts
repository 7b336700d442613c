// `blockcopy-agent stdio` when the running agent serves its unix socket: stdin and stdout are
// joined to the socket as they are (same line framing), before anything of the agent is
// loaded. This is what makes an Ansible task or a script's stdio call cost one short Node
// start instead of a second agent relaying over the WebSocket.
import { createConnection } from 'node:net';

/** Relays until the agent has answered everything stdin sent; false if the socket cannot be reached. */
export function relayToSocket(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection(path);
    let connected = false;
    sock.once('error', (e) => {
      if (!connected) return resolve(false);
      process.stderr.write(`blockcopy-agent: connection to the agent lost: ${e.message}\n`);
      process.exitCode = 1;
      resolve(true);
    });
    sock.once('connect', () => {
      connected = true;
      // stdin's end half-closes the socket; the agent answers what is pending, then ends.
      process.stdin.pipe(sock);
      sock.pipe(process.stdout, { end: false });
      sock.once('end', () => resolve(true));
    });
  });
}
