// Fuzzing both transports of the real agent with 100,000 generated messages (seeded, so a
// failure replays): malformed JSON, wrong types, huge numbers, deep nesting, odd unicode,
// partial and binary frames, unknown methods, batches of junk. The agent must never crash
// or hang, must answer every request per JSON-RPC 2.0, and must serve a normal call after.
import t from 'tap';
import { spawn } from 'node:child_process';
import { WebSocket } from 'ws';
import { AgentClient } from '../../src/client/index.js';
import { CLI, serveAgent, stateDir, TEST_AGENT_ENV } from '../../harness/agent.js';
import { report } from '../helpers/faults.js';
import { expectsAnswer, generator, isNotification, problem, rng } from '../helpers/fuzz.js';

const TOTAL = Number(process.env.BLOCKCOPY_FUZZ_MESSAGES ?? 100_000);

function summarize(
  t: { comment: (...a: unknown[]) => void },
  transport: string,
  sent: Map<string, number>,
  answers: number,
  problems: string[],
) {
  const kinds = [...sent.entries()].map(([k, n]) => `${k} ${n}`).join(', ');
  const total = [...sent.values()].reduce((a, b) => a + b, 0);
  t.comment(`${transport}: sent ${total} (${kinds}); answers ${answers}; problems ${problems.length}`);
  report(t, { fault: `fuzzed messages over ${transport}`, at: kinds, count: total, recovered: problems.length === 0, mismatches: null });
}

t.test(`WebSocket: ${TOTAL / 2} generated frames`, async (t) => {
  const agent = await serveAgent(t, { config: { limits: { requestsPerSecond: 1e6, burst: 1e6 }, logLevel: 'error' } });
  const next = generator(1);
  const sent = new Map<string, number>();
  const problems: string[] = [];
  let expected = 0;
  let answers = 0;
  const ws = new WebSocket(agent.url, { headers: agent.headers });
  await new Promise((r, j) => {
    ws.once('open', r);
    ws.once('error', j);
  });
  const allAnswered = new Promise<void>((resolve) => {
    ws.on('message', (d) => {
      const text = d.toString();
      // Notifications are not answers: a subscribed session hears about jobs on this host,
      // including copies that other tests run (the agent adopts every running copy).
      if (isNotification(text)) return;
      answers++;
      const p = problem(text);
      if (p && problems.length < 20) problems.push(p);
      if (answers === expected && done) resolve();
    });
  });
  let done = false;
  for (let i = 0; i < TOTAL / 2; i++) {
    const g = next();
    sent.set(g.kind, (sent.get(g.kind) ?? 0) + 1);
    if (expectsAnswer(g.frame.toString())) expected++;
    ws.send(g.frame, { binary: g.kind === 'binary' });
    if (i % 2000 === 0) await new Promise((r) => setImmediate(r));
  }
  done = true;
  if (answers < expected) await Promise.race([allAnswered, new Promise((r) => setTimeout(r, 60_000))]);
  summarize(t, 'ws', sent, answers, problems);
  t.same(problems, [], 'every answer is a well-formed JSON-RPC response, none an internal error');
  t.equal(answers, expected, `every request answered, and nothing else (${answers} answers for ${expected} requests)`);
  t.equal(agent.process.exitCode, null, 'the agent is alive');
  ws.close();
  const client = await agent.connect();
  t.match(await client.call('capabilities', {}), { agent: { name: 'blockcopy-agent' } }, 'a normal call right after still works');
});

t.test(`stdio: ${TOTAL / 2} generated lines, split at random points`, async (t) => {
  const child = spawn(process.execPath, [CLI, 'stdio', '--state-dir', stateDir(t), '--log-level', 'error'], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...TEST_AGENT_ENV },
  });
  t.teardown(() => {
    child.kill();
  });
  child.stderr.resume();
  const next = generator(2);
  const r = rng(3);
  const sent = new Map<string, number>();
  const problems: string[] = [];
  let answers = 0;
  let buf = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (isNotification(line)) continue;
      answers++;
      const p = problem(line);
      if (p && problems.length < 20) problems.push(p);
    }
  });
  const write = (s: string) => new Promise<void>((res) => (child.stdin.write(s) ? res() : child.stdin.once('drain', res)));
  let pending = '';
  let expected = 0;
  for (let i = 0; i < TOTAL / 2; i++) {
    const g = next();
    sent.set(g.kind, (sent.get(g.kind) ?? 0) + 1);
    // A line holds one message: binary junk becomes text junk here, and newlines inside are escaped.
    const line = (typeof g.frame === 'string' ? g.frame : g.frame.toString('latin1')).replace(/\n/g, '\\n') + '\n';
    if (line.trim() !== '' && expectsAnswer(line)) expected++;
    pending += line;
    // Partial frames: flush at random cut points, not at line ends.
    if (pending.length > 4096 || r() < 0.1) {
      const cut = Math.floor(r() * pending.length);
      await write(pending.slice(0, cut));
      pending = pending.slice(cut);
    }
  }
  await write(pending);
  child.stdin.end();
  const code = await new Promise<number | null>((res) => child.once('exit', res));
  summarize(t, 'stdio', sent, answers, problems);
  t.equal(code, 0, 'the agent exits cleanly at the end of its input');
  t.same(problems, [], 'every answer is a well-formed JSON-RPC response, none an internal error');
  t.equal(answers, expected, `every request answered, and nothing else (${answers} answers for ${expected} requests)`);
  const again = AgentClient.spawn(process.execPath, [CLI, 'stdio', '--state-dir', stateDir(t)], {
    stderr: 'ignore',
    env: { ...process.env, ...TEST_AGENT_ENV },
  });
  t.teardown(() => again.close());
  t.match(await again.call('capabilities', {}), { agent: {} }, 'and serves normally afterwards');
});
