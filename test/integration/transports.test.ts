// The transports of the real agent process: hostile frames neither crash nor hang it, and a
// normal call right after still works; stdio handles partial and oversized lines and EOF;
// SIGTERM leaves running copies alone and the next start adopts them.
import t from 'tap';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { WebSocket } from 'ws';
import { AgentClient } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent, stateDir, TEST_AGENT_ENV } from '../../harness/agent.js';

const MiB = 1024 * 1024;

function rawWs(url: string, headers: Record<string, string>): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

const nextMessage = (ws: WebSocket) => new Promise<string>((r) => ws.once('message', (d) => r(d.toString())));

t.test('WebSocket: binary, oversized and unmasked frames', async (t) => {
  const agent = await serveAgent(t);
  const ws = await rawWs(agent.url, agent.headers);
  t.teardown(() => ws.close());
  ws.send(Buffer.from([0xff, 0x00, 0x13]), { binary: true });
  t.match(JSON.parse(await nextMessage(ws)), { error: { code: -32700 } }, 'a binary junk frame gets a parse error');
  ws.send(Buffer.from(JSON.stringify({ jsonrpc: '2.0', method: 'capabilities', params: {}, id: 1 })), { binary: true });
  t.match(
    JSON.parse(await nextMessage(ws)),
    { id: 1, result: { agent: { name: 'blockcopy-agent' } } },
    'a binary frame holding JSON is served',
  );

  const big = await rawWs(agent.url, agent.headers);
  const closed = new Promise<number>((r) => big.once('close', (code) => r(code)));
  big.on('error', () => {});
  big.send('x'.repeat(2 * MiB));
  t.equal(await closed, 1009, 'an oversized frame closes that connection with 1009');

  // A client frame without the mask bit: a protocol error that must not take the process down.
  const { port } = new URL(agent.url);
  await new Promise<void>((resolve) => {
    const sock = connect(Number(port), '127.0.0.1', () => {
      sock.write(
        `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${agent.token}\r\n\r\n`,
      );
      setTimeout(() => sock.write(Buffer.from([0x81, 0x02, 0x7b, 0x7d])), 100);
    });
    sock.on('error', () => resolve());
    sock.on('close', () => resolve());
    setTimeout(() => {
      sock.destroy();
      resolve();
    }, 2000);
  });
  const client = await agent.connect();
  t.match(await client.call('capabilities', {}), { agent: { name: 'blockcopy-agent' } }, 'the agent still answers afterwards');
  t.equal(agent.process.exitCode, null, 'the agent process is alive');
});

t.test('WebSocket: a peer that never answers pings is dropped', async (t) => {
  const agent = await serveAgent(t, { config: { heartbeatMs: 1000 } });
  const { port } = new URL(agent.url);
  // A raw socket completes the handshake and then stays silent: no pong will ever come.
  const closed = await new Promise<boolean>((resolve) => {
    const sock = connect(Number(port), '127.0.0.1', () => {
      sock.write(
        `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${agent.token}\r\n\r\n`,
      );
    });
    sock.on('data', () => {});
    sock.on('close', () => resolve(true));
    setTimeout(() => {
      sock.destroy();
      resolve(false);
    }, 30_000);
  });
  t.ok(closed, 'the agent closed the silent connection');
  const client = await agent.connect();
  await new Promise((r) => setTimeout(r, 2500));
  t.match(await client.call('capabilities', {}), { agent: {} }, 'a peer that answers pings stays connected');
});

t.test('stdio: partial lines, an oversized line, EOF', async (t) => {
  const dir = stateDir(t);
  const child = spawn(process.execPath, [CLI, 'stdio', '--state-dir', dir], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...TEST_AGENT_ENV },
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    out += d;
  });
  child.stderr.resume();
  const call = JSON.stringify({ jsonrpc: '2.0', method: 'capabilities', params: {}, id: 1 });
  child.stdin.write(call.slice(0, 10));
  await new Promise((r) => setTimeout(r, 200));
  child.stdin.write(call.slice(10) + '\n');
  child.stdin.write('x'.repeat(2 * MiB) + '\n');
  child.stdin.write('{"jsonrpc":"2.0","method":"listJobs","params":{},"id":2}\n');
  child.stdin.end();
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  t.equal(code, 0, 'exits cleanly on EOF');
  const lines = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.match(
    lines.find((l) => l.id === 1),
    { result: { agent: {} } },
    'a request split across writes is served',
  );
  t.match(
    lines.find((l) => l.error?.code === -32700),
    { id: null },
    'the oversized line gets a parse error',
  );
  t.match(
    lines.find((l) => l.id === 2),
    { result: { jobs: [] } },
    'the next line is served',
  );
  t.notMatch(out, /"level"/, 'no log line on stdout');
});

t.test('SIGTERM leaves a running copy alone; the next agent adopts and finishes it', async (t) => {
  const dir = stateDir(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 128 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x91, offset: 0, length: 96 * MiB });
  const first = await serveAgent(t, { dir });
  const c1 = await first.connect();
  const dest = `${dom.dir}/survivor.qcow2`;
  const { job } = await c1.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: dest, format: 'qcow2' },
    bandwidth: 4 * MiB,
    jobId: 'survivor',
  });
  c1.close();
  t.equal(await first.stop('SIGTERM'), 0, 'the agent exits 0 on SIGTERM');
  t.match(await hv.liveXml(dom), /<mirror [^>]*job='copy'/, 'the copy still runs inside QEMU');

  const second = await serveAgent(t, { dir });
  const c2 = await second.connect();
  const { job: again } = await c2.call('jobInfo', { jobId: job.jobId });
  t.match(again, { jobId: 'survivor', owner: 'agent' }, 'the journaled job is known after restart');
  t.ok(['copying', 'ready'].includes(again.state), `and reconciled to ${again.state}`);
  await c2.call('setSpeed', { jobId: 'survivor', bandwidth: 0 });
  await c2.call('wait', { jobId: 'survivor', until: 'ready', timeout: 60 });
  const p = await c2.call('pivot', { jobId: 'survivor' });
  t.equal(p.job.state, 'pivoted', 'it can be pivoted by the new agent');
  t.match(await hv.liveXml(dom), `<source file='${dest}'`);
});

t.test('stdio relays to the daemon that owns the state directory', async (t) => {
  const daemon = await serveAgent(t);
  const viaDaemon = await daemon.connect();
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  const relay = AgentClient.spawn(process.execPath, [CLI, 'stdio', '--state-dir', daemon.stateDir], { stderr: 'pipe' });
  t.teardown(() => relay.close());
  const { job } = await relay.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${dom.dir}/relayed.qcow2` },
    jobId: 'relayed',
    wait: 'ready',
  });
  t.equal(job.state, 'ready', 'a copy started through stdio');
  t.match((await viaDaemon.call('jobInfo', { jobId: 'relayed' })).job, { state: 'ready' }, "is the daemon's job: one agent owns the jobs");
  await relay.call('finish', { jobId: 'relayed' });
});

t.test('a copy started by virsh is adopted', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  const dest = `${dom.dir}/by-virsh.qcow2`;
  await hv.virsh('blockcopy', dom.name, 'vda', dest, '--transient-job', '--bandwidth', '1');
  t.teardown(() => hv.virsh('blockjob', dom.name, 'vda', '--abort').catch(() => {}));
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const { jobs } = await client.call('listJobs', { domain: dom.name });
  t.equal(jobs.length, 1, 'one job found');
  t.match(jobs[0], { owner: 'adopted', disk: 'vda', destination: { path: dest } }, 'adopted with its destination from the live XML');
  const aborted = await client.call('abort', { jobId: jobs[0]!.jobId });
  t.equal(aborted.job.state, 'cancelled', 'and can be aborted through the agent');
});

t.test('the typed client reconnects after an agent restart and subscribes again', async (t) => {
  const { createServer } = await import('node:net');
  const port = await new Promise<number>((r) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => r(p));
    });
  });
  const dir = stateDir(t);
  const first = await serveAgent(t, { dir, port });
  const client = await AgentClient.connect(first.url, { headers: first.headers, reconnect: { maxDelayMs: 500 } });
  t.teardown(() => client.close());
  await client.call('subscribe', {});
  const reconnected = new Promise<void>((r) => client.once('reconnect', () => r()));
  t.equal(await first.stop(), 0, 'the agent stops');
  const second = await serveAgent(t, { dir, port, token: first.token });
  await reconnected;
  t.pass('reconnected');
  const seen = new Promise<string>((r) => client.on('job.changed', (j: { state: string }) => r(j.state)));
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const other = await second.connect();
  await other.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${dom.dir}/after-reconnect.qcow2` },
    whenReady: 'finish',
    wait: 'done',
  });
  t.ok(await seen, 'notifications arrive again: the subscription was renewed');
});
