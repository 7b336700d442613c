// The agent's reads while its libvirtd hangs: a PRIVATE libvirtd (test driver behind a real
// daemon, test/helpers/private-libvirtd.ts) SIGSTOPped for 25 s, past the libvirt call bound
// (10 s) and keepalive's drop. listJobs, jobInfo and capabilities answer within the read bound
// (1 s) throughout, listJobs says when it may miss an outside copy, the agent never crashes, and
// once libvirtd continues it reconnects and lists completely again. The shared system libvirtd is
// never touched, so this runs with the parallel suite. (The test driver has no block jobs: the
// adoption of real outside copies is checked against QEMU in ownership.test.ts and jobs.test.ts.)
import { errorName } from '../helpers/rejects.js';
import t from 'tap';
import { RpcError, type AgentClient } from '../../src/client/index.js';
import { serveAgent } from '../../harness/agent.js';
import { startPrivateLibvirtd } from '../helpers/private-libvirtd.js';

const FROZEN_MS = 25_000;
/** Generous, for a loaded 2-core host: the point is "not the 10 s libvirt call bound". */
const READ_BOUND_MS = 2000;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : NaN;
}

t.test('reads while a private libvirtd is frozen answer within the read bound', async (t) => {
  const d = await startPrivateLibvirtd();
  t.teardown(() => d.close());
  const agent = await serveAgent(t, { config: { uri: d.uri } });
  const client: AgentClient = await agent.connect();
  const connection: string[] = [];
  client.on('agent.connection', (e: { state: string }) => connection.push(e.state));
  await client.call('subscribe', {});
  t.same(await client.call('listJobs', {}), { jobs: [] }, 'healthy: a complete, empty list');
  t.equal(await errorName(client.call('jobInfo', { domain: 'test', disk: 'vda' })), 'noJob', "healthy: the test domain's disk has no job");

  const ms: Record<string, number[]> = { listJobs: [], 'listJobs(domain)': [], 'jobInfo(domain, disk)': [], capabilities: [] };
  const answers: Record<string, Record<string, number>> = {};
  d.stop();
  const frozenAt = Date.now();
  try {
    while (Date.now() - frozenAt < FROZEN_MS) {
      for (const [method, call] of [
        ['listJobs', () => client.call('listJobs', {})],
        ['listJobs(domain)', () => client.call('listJobs', { domain: 'test' })],
        ['jobInfo(domain, disk)', () => client.call('jobInfo', { domain: 'test', disk: 'vda' })],
        ['capabilities', () => client.call('capabilities', {})],
      ] as const) {
        const t0 = Date.now();
        let answer: string;
        try {
          const r = await (call as () => Promise<{ incomplete?: boolean }>)();
          answer = r.incomplete ? 'incomplete' : 'ok';
        } catch (e) {
          answer = e instanceof RpcError ? (e.errorName ?? e.message) : String(e);
        }
        ms[method]!.push(Date.now() - t0);
        (answers[method] ??= {})[answer] = (answers[method]![answer] ?? 0) + 1;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    t.equal(agent.process.exitCode, null, 'the agent is alive while libvirtd is frozen');
  } finally {
    d.cont();
  }
  for (const [method, xs] of Object.entries(ms)) {
    t.comment(
      `${method} while frozen: n=${xs.length} p50 ${pct(xs, 50)} ms, p99 ${pct(xs, 99)} ms, max ${Math.max(...xs)} ms; answers ${JSON.stringify(answers[method])}`,
    );
    t.ok(Math.max(...xs) < READ_BOUND_MS, `${method} always answered well under the 10 s libvirt call bound (max ${Math.max(...xs)} ms)`);
  }
  t.same(
    Object.keys(answers.listJobs!).filter((a) => a !== 'ok' && a !== 'incomplete'),
    [],
    'listJobs always answered a list',
  );
  t.ok((answers.listJobs!.incomplete ?? 0) > 0, 'and said it may be incomplete while libvirtd did not answer');
  t.same(
    Object.keys(answers['jobInfo(domain, disk)']!).filter((a) => !['libvirtTimeout', 'unavailable', 'noJob'].includes(a)),
    [],
    'jobInfo by domain and disk: noJob, or a named retryable error when libvirtd could not tell',
  );
  t.same(Object.keys(answers.capabilities!), ['ok'], 'capabilities answered throughout');

  // libvirtd continues: the agent (reconnected if keepalive dropped it) lists completely again.
  const end = Date.now() + 60_000;
  let last: unknown;
  while (Date.now() < end) {
    last = await client.call('listJobs', {}).catch((e: unknown) => e);
    if (JSON.stringify(last) === JSON.stringify({ jobs: [] })) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  t.same(last, { jobs: [] }, 'after the thaw: a complete list again');
  t.equal(await errorName(client.call('jobInfo', { domain: 'test', disk: 'vda' })), 'noJob', 'and jobInfo by disk can tell again');
  t.comment(`agent.connection notifications: ${connection.join(', ') || 'none'}`);
  t.equal(agent.process.exitCode, null, 'the agent never crashed');
});
