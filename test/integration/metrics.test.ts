// /metrics against the real agent and libvirtd: scraped during a real copy (the job's progress
// is there and moves), checked by `promtool check metrics`, then after the pivot (durations,
// calls, the per-job series dropped once the job ended), refusals counted by kind, and the
// listener's own rules (loopback only without TLS, GET /metrics only).
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { errorName } from '../helpers/rejects.js';
import t from 'tap';
import { WebSocket } from 'ws';
import { AgentClient, RpcError } from '../../src/client/index.js';
import { blockJob, CLI, serveAgent, stateDir, untilState } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (res.status !== 200) throw new Error(`scrape: HTTP ${res.status}`);
  return res.text();
}

/** The value of one series, or undefined when it is absent. */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + (Object.keys(labels).length || line[name.length] === '{' ? '{' : ' '))) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** The agent's error name a call was refused with. */

/** Jobs by state, as the agent lists them. */
async function counts(client: AgentClient): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const j of (await client.call('listJobs', { kind: ['copy'] })).jobs) out[j.state] = (out[j.state] ?? 0) + 1;
  return out;
}

const between = (v: number, a: number, b: number) => v >= Math.min(a, b) && v <= Math.max(a, b);

function promtool(text: string): { code: number | null; out: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { code: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

t.test("scraped during a real copy: the job's progress, then durations and calls after the pivot", async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x5a, offset: 0, length: 40 * MiB });
  const port = await freePort();
  const agent = await serveAgent(t, { config: { metrics: { enabled: true, port, endedJobSeconds: 4 }, allowedRoots: [dom.dir] } });
  const client = await agent.connect();

  const before = await scrape(port);
  t.equal(value(before, 'blockcopy_libvirt_connected'), 1, 'connected to libvirtd');
  t.equal(value(before, 'blockcopy_refusals_total', { kind: 'authFailed' }), 0, 'refusal series exist from the start, at 0');

  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: join(dom.dir, 'm.qcow2'), format: 'qcow2' },
    bandwidth: 8 * MiB,
  });
  const labels = { domain: dom.name, disk: 'vda', job_id: job.jobId, kind: 'copy' };
  // Two scrapes while it copies (8 MiB/s over 40 MiB of data: several seconds). QEMU's rate
  // limit lets a first burst through and then pauses for up to a couple of seconds, so the second
  // scrape is the first one, 500 ms apart, that shows more bytes (within 4 s).
  const first = await scrape(port);
  const copiedIn = (text: string) => value(text, 'blockcopy_job_bytes_copied', labels);
  let listedBefore: Record<string, number>, during: string, listedAfter: Record<string, number>;
  const deadline = Date.now() + 4000;
  do {
    await new Promise((r) => setTimeout(r, 500));
    // Other tests' copies on this host are adopted too: counts by state are checked against the
    // agent's own job list, read just before and after the scrape.
    [listedBefore, during, listedAfter] = [await counts(client), await scrape(port), await counts(client)];
  } while (!((copiedIn(during) ?? 0) > (copiedIn(first) ?? 0)) && Date.now() < deadline);
  const info = blockJob((await client.call('jobInfo', { jobId: job.jobId })).job);
  t.equal(info.state, 'copying', 'still copying at the second scrape');
  const check = promtool(during);
  t.equal(check.code, 0, `promtool check metrics accepts the exposition during the copy${check.out ? `: ${check.out}` : ''}`);
  for (const state of ['copying', 'ready', 'pivoted']) {
    const v = value(during, 'blockcopy_jobs', { kind: 'copy', state });
    t.ok(
      v !== undefined && between(v, listedBefore[state] ?? 0, listedAfter[state] ?? 0),
      `blockcopy_jobs{kind="copy",state="${state}"} ${v}: as listJobs says (${listedBefore[state] ?? 0}…${listedAfter[state] ?? 0})`,
    );
  }
  t.equal(value(during, 'blockcopy_job_state', { ...labels, state: 'copying' }), 1, "the job's state series");
  const c1 = value(first, 'blockcopy_job_bytes_copied', labels);
  const c2 = value(during, 'blockcopy_job_bytes_copied', labels);
  const total = value(during, 'blockcopy_job_size_bytes', labels);
  const remaining = value(during, 'blockcopy_job_bytes_remaining', labels);
  t.comment(
    `copied ${c1} → ${c2} of ${total}, remaining ${remaining}, rate ${value(during, 'blockcopy_job_copy_rate_bytes_per_second', labels)}`,
  );
  t.ok(c1 !== undefined && c2 !== undefined && c2 > c1, 'bytes copied appear per job and grow between scrapes');
  t.ok(total !== undefined && total >= 64 * MiB && remaining === total - c2!, 'total and remaining agree with copied');
  t.ok(Number(info.progress.cur) >= c2!, 'the scrape matches what jobInfo says (it can only be behind)');

  t.equal(
    await errorName(client.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: join(dom.dir, 'other.qcow2') } })),
    'jobExists',
    'a second copy of the disk is refused',
  );

  await untilState(client, job.jobId, ['ready']);
  t.equal((await client.call('pivot', { jobId: job.jobId })).job.state, 'pivoted', 'pivoted');
  const [pivotedBefore, after, pivotedAfter] = [await counts(client), await scrape(port), await counts(client)];
  t.equal(promtool(after).code, 0, 'promtool accepts it after the pivot');
  const pivoted = value(after, 'blockcopy_jobs', { kind: 'copy', state: 'pivoted' });
  t.ok(
    pivoted !== undefined && pivoted >= 1 && between(pivoted, pivotedBefore.pivoted ?? 0, pivotedAfter.pivoted ?? 0),
    `blockcopy_jobs{kind="copy",state="pivoted"} ${pivoted}: as listJobs says`,
  );
  t.equal(
    value(after, 'blockcopy_job_state', { ...labels, state: 'pivoted' }),
    1,
    "the ended job's state series says pivoted (within endedJobSeconds)",
  );
  t.equal(value(after, 'blockcopy_job_time_to_ready_seconds_count'), 1, 'time to ready observed once');
  t.equal(value(after, 'blockcopy_job_switch_duration_seconds_count', { operation: 'pivot' }), 1, 'pivot duration observed once');
  // Every pivoted job this fresh agent knows ended while it ran (adoption finds running copies only).
  t.ok(
    between(
      value(after, 'blockcopy_job_ends_total', { kind: 'copy', state: 'pivoted' }) ?? -1,
      pivotedBefore.pivoted ?? 0,
      pivotedAfter.pivoted ?? 0,
    ),
    'ends by state match the pivoted jobs listed',
  );
  t.equal(value(after, 'blockcopy_rpc_calls_total', { method: 'pivot' }), 1, 'the pivot call is counted');
  t.ok((value(after, 'blockcopy_rpc_calls_total', { method: 'jobInfo' }) ?? 0) >= 1, 'jobInfo calls are counted');
  t.equal(
    value(after, 'blockcopy_rpc_errors_total', { method: 'blockCopy', error: 'jobExists' }),
    1,
    'the refused blockCopy is counted with its error name',
  );
  await new Promise((r) => setTimeout(r, 4500)); // endedJobSeconds: 4
  const later = await scrape(port);
  t.equal(value(later, 'blockcopy_job_bytes_copied', labels), undefined, "the ended job's per-job series are gone after endedJobSeconds");
  t.equal(value(later, 'blockcopy_job_state', { ...labels, state: 'pivoted' }), undefined, 'its state series too');
});

t.test('build_info names the versions capabilities reports; a group job carries group_id', async (t) => {
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16 },
    ],
  });
  const port = await freePort();
  const agent = await serveAgent(t, { config: { metrics: { enabled: true, port }, allowedRoots: [dom.dir] } });
  const client = await agent.connect();
  const caps = await client.call('capabilities', {});
  const text = await scrape(port);
  const info = text.split('\n').filter((l) => l.startsWith('blockcopy_agent_build_info'));
  t.same(
    info,
    [`blockcopy_agent_build_info{version="${caps.agent.version}",libvirt="${caps.libvirt.version}",qemu="${caps.hypervisor.version}"} 1`],
    `one build_info series: ${info.join(' | ')}`,
  );
  t.match(caps.libvirt.version, /^\d+\.\d+/, 'a real libvirt version');
  t.match(caps.hypervisor.version, /^\d+\.\d+/, 'a real QEMU version');

  const groupId = `metrics-${dom.name}`;
  const started = await client.call('blockCopyGroup', {
    domain: dom.name,
    groupId,
    wait: 'ready',
    disks: dom.disks.map((d) => ({
      disk: d.target,
      destination: { path: join(dom.dir, `g-${d.target}.qcow2`), format: 'qcow2' as const },
    })),
  });
  t.teardown(() => client.call('abortGroup', { groupId }).catch(() => {}));
  const during = await scrape(port);
  t.equal(promtool(during).code, 0, 'promtool accepts the exposition with group_id');
  for (const j of started.group!.jobs) {
    t.equal(
      value(during, 'blockcopy_job_state', { domain: dom.name, disk: j.disk, job_id: j.jobId, group_id: groupId, state: 'ready' }),
      1,
      `${j.disk}: job_id and group_id on its state series`,
    );
    t.ok(
      value(during, 'blockcopy_job_bytes_copied', { domain: dom.name, disk: j.disk, job_id: j.jobId, group_id: groupId }) !== undefined,
      `${j.disk}: and on its bytes`,
    );
  }
  t.notOk(/[{,]job="/.test(during), 'no series carries a job label (Prometheus owns it)');
  await client.call('abortGroup', { groupId });
});

t.test('refusals by kind: bad credentials, rate limit, oversized frame, read-only caller, destination', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const port = await freePort();
  const agent = await serveAgent(t, {
    tokens: [{ name: 'reader', token: 'r'.repeat(40), readOnly: true }],
    config: {
      metrics: { enabled: true, port },
      allowedRoots: [dom.dir],
      maxPayloadBytes: 4096,
      limits: { requestsPerSecond: 1, burst: 3 },
    },
  });
  // Bad credentials, twice.
  for (let i = 0; i < 2; i++)
    await t.rejects(AgentClient.connect(agent.url, { headers: { authorization: 'Bearer wrong' } }), 'a wrong token is refused');
  // Rate limit: a burst of 3 allowed, the rest refused.
  const client = await agent.connect();
  const answers = await Promise.allSettled(Array.from({ length: 6 }, () => client.call('capabilities', {})));
  const limited = answers.filter((a) => a.status === 'rejected' && (a.reason as RpcError).errorName === 'rateLimited').length;
  t.ok(limited >= 2, `${limited} of 6 calls rate-limited`);
  // A destination outside the allowed roots (after the bucket refilled).
  await new Promise((r) => setTimeout(r, 3000));
  t.equal(
    await errorName(
      client.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: '/var/tmp/bc-metrics-outside.qcow2' } }),
    ),
    'destinationRejected',
    'destination outside the allowed roots',
  );
  // A read-only principal calling a mutating method.
  const reader = await AgentClient.connect(agent.url, { headers: { authorization: `Bearer ${'r'.repeat(40)}` } });
  t.teardown(() => reader.close());
  t.equal(await errorName(reader.call('abort', { domain: dom.name, disk: 'vda' })), 'unauthorized', 'read-only caller refused');
  // A frame above maxPayloadBytes closes the connection (1009).
  const ws = new WebSocket(agent.url, { headers: agent.headers });
  await new Promise((r) => ws.once('open', r));
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
  ws.send('x'.repeat(8192));
  t.equal(await closed, 1009, 'an oversized frame closes the connection with 1009');

  const text = await scrape(port);
  t.equal(promtool(text).code, 0, 'promtool accepts the exposition');
  t.equal(value(text, 'blockcopy_refusals_total', { kind: 'authFailed' }), 2, 'authFailed 2');
  t.equal(value(text, 'blockcopy_refusals_total', { kind: 'rateLimited' }), limited, `rateLimited ${limited}`);
  t.equal(value(text, 'blockcopy_refusals_total', { kind: 'destinationRejected' }), 1, 'destinationRejected 1');
  t.equal(value(text, 'blockcopy_refusals_total', { kind: 'unauthorized' }), 1, 'unauthorized 1');
  t.equal(value(text, 'blockcopy_refusals_total', { kind: 'oversizedFrame' }), 1, 'oversizedFrame 1');
  t.equal(value(text, 'blockcopy_refusals_total', { kind: 'connectionLimit' }), 0, 'connectionLimit 0');
});

t.test('the listener: GET /metrics only, loopback only without TLS', async (t) => {
  const port = await freePort();
  await serveAgent(t, { config: { metrics: { enabled: true, port } } });
  t.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404, 'another path: 404');
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST', body: 'x' })).status, 405, 'POST: 405');
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics?x=1`, { method: 'HEAD' })).status, 200, 'HEAD with a query: 200');

  const dir = stateDir(t);
  writeFileSync(
    join(dir, 'c.json'),
    JSON.stringify({ metrics: { enabled: true, host: '0.0.0.0', port: 0 }, socket: { path: join(dir, 'run', 'agent.sock') } }),
  );
  const r = spawnSync(process.execPath, [CLI, 'serve', '--state-dir', dir, '--no-listen', '--config', join(dir, 'c.json')], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.equal(r.status, 1, 'metrics on 0.0.0.0 without TLS: the agent refuses to start');
  t.match(r.stderr, /metrics\/host 0\.0\.0\.0 is not a loopback address: .*only over TLS with client authentication/, 'and says why');
});
