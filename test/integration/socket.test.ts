// The local unix socket against the real agent and libvirtd: the CLI finds it through the state
// directory and drives a real copy over it (the audit names the socket, not the stdio relay);
// root only (runuser -u nobody cannot connect, even when the directory is opened up); a
// stale socket falls back and is replaced; a live one is never taken over; bad lines are
// answered and the socket keeps serving.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { dirname, join } from 'node:path';
import t from 'tap';
import { CLI, serveAgent, stateDir } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Sends lines on a fresh connection, half-closes, and returns every answer line. */
function exchange(path: string, payload: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const c = createConnection(path);
    let out = '';
    c.setEncoding('utf8');
    c.on('data', (d) => {
      out += d;
    });
    c.on('error', reject);
    c.on('end', () => resolve(out.split('\n').filter(Boolean)));
    c.end(payload);
  });
}

const socketOf = (dir: string) => join(dir, 'run', 'agent.sock');

t.test('the CLI drives a real copy over the socket it finds through the state directory', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x3c, offset: 0, length: 16 * MiB });
  const dir = stateDir(t);
  const agent = await serveAgent(t, { dir, config: { audit: { file: join(dir, 'audit.log') } } });
  t.equal(JSON.parse(readFileSync(join(dir, 'agent.lock'), 'utf8')).socket, socketOf(dir), 'the lock file names the socket');
  const st = statSync(socketOf(dir));
  t.ok(st.isSocket() && (st.mode & 0o777) === 0o600 && st.uid === 0, `socket 0600 root (${(st.mode & 0o777).toString(8)})`);
  t.equal(statSync(dirname(socketOf(dir))).mode & 0o777, 0o700, 'its directory 0700');

  const dest = join(dom.dir, 'sock.qcow2');
  const r = await cli(['copy', dom.name, 'vda', dest, '--wait', '--pivot', '--json', '--state-dir', dir]);
  t.equal(r.code, 0, `copy --wait --pivot exits 0 ${r.stderr}`);
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.ok(
    lines.some((l) => l.event === 'job.changed'),
    'progress notifications arrive over the socket',
  );
  t.match(lines.at(-1), { event: 'pivoted', job: { state: 'pivoted' } }, 'pivoted');
  t.match(await hv.liveXml(dom), `<source file='${dest}'`, 'virsh: the guest runs on the copy');
  const audit = readFileSync(join(dir, 'audit.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.match(
    audit.find((a) => a.method === 'blockCopy' && a.outcome !== 'accepted'),
    { principal: 'local-socket', peer: 'unix', outcome: 'ok' },
    'the audit: the call came over the unix socket, not the stdio relay',
  );

  // `stdio` (what Ansible and scripts start) relays through the socket too.
  const jobId = lines.at(-1).job.jobId;
  const relay = spawnSync(process.execPath, [CLI, 'stdio', '--state-dir', dir], {
    input: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'abort', params: { jobId } }) + '\n',
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.equal(relay.status, 0, `stdio exits 0 ${relay.stderr}`);
  const answer = JSON.parse(relay.stdout);
  t.ok(
    answer.id === 7 && ('result' in answer || 'error' in answer),
    `stdio answers the abort of the pivoted job: ${relay.stdout.trim().slice(0, 120)}`,
  );
  const relayed = readFileSync(join(dir, 'audit.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((a) => a.method === 'abort' && a.outcome !== 'accepted');
  t.match(relayed, [{ principal: 'local-socket', peer: 'unix' }], 'the audit: stdio relayed over the unix socket');

  const jobs = await cli(['jobs', dom.name, '--json', '--socket', socketOf(dir)]);
  t.equal(jobs.code, 0, '--socket PATH works');
  t.equal(JSON.parse(jobs.stdout).jobs[0].state, 'pivoted', 'and lists the job');
  const missing = await cli(['jobs', '--socket', join(dir, 'nope.sock')]);
  t.equal(missing.code, 3, 'a named socket that does not exist: exit 3, no fallback');
  t.match(missing.stderr, /nope\.sock.*ENOENT/, 'and says which socket');
  void agent;
});

t.test('root only: nobody cannot connect, even with the directory opened up', async (t) => {
  const dir = stateDir(t);
  await serveAgent(t, { dir });
  const path = socketOf(dir);
  // A clean environment (env -i): tap adds NODE_OPTIONS hooks to its children that write where nobody may not.
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  const clean = ['env', '-i', `PATH=${env.PATH}`];
  const tryAs = (user: string) =>
    spawnSync(
      'runuser',
      [
        '-u',
        user,
        '--',
        ...clean,
        process.execPath,
        '-e',
        `require('net').createConnection(${JSON.stringify(path)}).on('connect', () => { console.log('CONNECTED'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); })`,
      ],
      { encoding: 'utf8', env },
    );
  t.equal(tryAs('root').stdout.trim(), 'CONNECTED', 'root connects (the check itself works)');
  t.equal(tryAs('nobody').stdout.trim(), 'EACCES', 'nobody: EACCES (directory 0700)');
  const cliAsNobody = spawnSync('runuser', ['-u', 'nobody', '--', ...clean, process.execPath, CLI, 'jobs', '--socket', path], {
    encoding: 'utf8',
    env,
  });
  t.equal(cliAsNobody.status, 3, `the CLI as nobody: exit 3 ${cliAsNobody.stderr}`);
  t.match(cliAsNobody.stderr, /EACCES|permission denied/i, 'permission denied');
  // Someone opened the directory: the socket's own mode still keeps nobody out.
  chmodSync(dirname(path), 0o755);
  t.equal(tryAs('nobody').stdout.trim(), 'EACCES', 'directory 0755: nobody still gets EACCES (socket 0600)');
  chmodSync(dirname(path), 0o700);
});

t.test('bad lines are answered and the connection goes on; an oversized line is skipped', async (t) => {
  const dir = stateDir(t);
  writeFileSync(join(dir, 'small.json'), '{}');
  await serveAgent(t, { dir, config: { maxPayloadBytes: 2048 } });
  const answers = await exchange(
    socketOf(dir),
    [
      '{not json',
      `{"jsonrpc":"2.0","id":1,"method":"listJobs","params":{"x":"${'a'.repeat(4096)}"}}`,
      '{"jsonrpc":"2.0","id":2,"method":"nope"}',
      '{"jsonrpc":"2.0","id":3,"method":"listJobs","params":{}}',
    ].join('\n') + '\n',
  );
  const parsed = answers.map((a) => JSON.parse(a));
  t.equal(parsed.length, 4, 'one answer per line');
  t.equal(parsed.filter((p) => p.error?.code === -32700).length, 2, 'junk and the oversized line: parse errors');
  t.match(
    parsed.find((p) => p.id === 2),
    { error: { code: -32601 } },
    'unknown method: -32601',
  );
  t.match(
    parsed.find((p) => p.id === 3),
    { result: { jobs: Array } },
    'the next request is served',
  );
});

t.test('a stale socket: the CLI falls back, the next agent replaces it; a live one is never taken over', async (t) => {
  const dir = stateDir(t);
  const first = await serveAgent(t, { dir });
  first.process.kill('SIGKILL');
  await new Promise((r) => first.process.once('exit', r));
  t.ok(statSync(socketOf(dir)).isSocket(), 'SIGKILL left the socket file behind');
  const r = await cli(['jobs', '--json', '--state-dir', dir]);
  t.equal(r.code, 0, `the CLI falls back to a spawned agent ${r.stderr}`);
  const next = await serveAgent(t, { dir });
  const viaSocket = await cli(['jobs', '--json', '--socket', socketOf(dir)]);
  t.equal(viaSocket.code, 0, 'the next agent serves the socket again');

  // Another agent (its own state directory) pointed at this live socket refuses to start.
  const other = stateDir(t);
  writeFileSync(join(other, 'c.json'), JSON.stringify({ socket: { path: socketOf(dir) } }));
  const second = spawnSync(process.execPath, [CLI, 'serve', '--state-dir', other, '--no-listen', '--config', join(other, 'c.json')], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.equal(second.status, 1, 'a second agent on a live socket does not start');
  t.match(second.stderr, /another agent serves/, 'and says why');
  t.equal((await cli(['jobs', '--socket', socketOf(dir)])).code, 0, 'the first one still serves');
  void next;
});

t.test('an agent without the socket: stdio relays over the WebSocket, the CLI spawns it', async (t) => {
  const dir = stateDir(t);
  await serveAgent(t, { dir, config: { socket: { enabled: false }, audit: { file: join(dir, 'audit.log') } } });
  t.notOk('socket' in JSON.parse(readFileSync(join(dir, 'agent.lock'), 'utf8')), 'the lock file names no socket');
  const relay = spawnSync(process.execPath, [CLI, 'stdio', '--state-dir', dir], {
    input: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'abort', params: { jobId: 'none' } }) + '\n',
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.match(JSON.parse(relay.stdout), { id: 1, error: { data: { name: 'noJob' } } }, 'stdio answers');
  const audit = readFileSync(join(dir, 'audit.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.match(audit, [{ method: 'abort', principal: 'local-stdio' }], 'over the WebSocket relay (principal local-stdio)');
  const r = await cli(['jobs', '--json', '--state-dir', dir]);
  t.equal(r.code, 0, 'the CLI works by the old path');
});
