// AgentMetrics on a scripted job source (fast; the real agent is scraped in
// test/integration/metrics.test.ts): what is counted once, what is bounded, what is dropped.
import { EventEmitter } from 'node:events';
import t from 'tap';
import type { AnyJob, BackupJob, ErrorName, Job, JobState } from '../../src/generated/api.js';
import { AgentMetrics } from '../../src/metrics/metrics.js';

let clock = Date.parse('2026-01-01T00:00:00Z');

function job(id: string, state: JobState, extra: Partial<Job> = {}): Job {
  return {
    jobId: id,
    kind: 'copy',
    domain: { name: 'vm1', uuid: '00000000-0000-0000-0000-000000000001' },
    disk: 'vda',
    source: { path: '/a', format: 'qcow2' },
    destination: { path: '/b', format: 'qcow2', type: 'file' },
    state,
    progress: { cur: 10, end: 30, percent: 33, rate: 5, eta: 4 },
    bandwidth: 0,
    options: { shallow: false, reuseExternal: false, transientJob: true, synchronousWrites: false },
    whenReady: 'none',
    owner: 'agent',
    createdAt: new Date(clock).toISOString(),
    updatedAt: new Date(clock).toISOString(),
    ...extra,
  } as Job;
}

class Source extends EventEmitter {
  jobs: Job[] = [];
  async listJobs() {
    return { jobs: this.jobs };
  }
  change(j: Job) {
    this.jobs = [...this.jobs.filter((x) => x.jobId !== j.jobId), j];
    this.emit('job.changed', j);
  }
}

const line = (text: string, start: string) => text.split('\n').find((l) => l.startsWith(start));

t.test('failures and ends are counted once per job, with bounded reason labels', async (t) => {
  const src = new Source();
  const m = new AgentMetrics({ endedJobSeconds: 60, version: '1.2.3', now: () => clock });
  m.observeJobs(src);
  src.change(job('a', 'copying'));
  src.change(job('a', 'failed', { error: { name: 'libvirtError', message: 'x' }, endedAt: new Date(clock).toISOString() }));
  src.change(job('a', 'failed', { error: { name: 'libvirtError', message: 'x' }, endedAt: new Date(clock).toISOString() }));
  src.change(job('b', 'failed', { error: { name: 'made-up name from an old journal' as ErrorName, message: 'x' } }));
  const text = await m.render();
  t.equal(
    line(text, 'blockcopy_job_failures_total{reason="libvirtError"}'),
    'blockcopy_job_failures_total{reason="libvirtError"} 1',
    'one failure for a repeated notification',
  );
  t.equal(
    line(text, 'blockcopy_job_failures_total{reason="other"}'),
    'blockcopy_job_failures_total{reason="other"} 1',
    'an unknown reason is "other"',
  );
  t.equal(
    line(text, 'blockcopy_job_ends_total{kind="copy",state="failed"}'),
    'blockcopy_job_ends_total{kind="copy",state="failed"} 2',
    'two ends',
  );
  m.close();
  t.equal(src.listenerCount('job.changed'), 0, 'close() detaches');
});

t.test('durations only from transitions this agent saw; per-job series dropped after endedJobSeconds', async (t) => {
  const src = new Source();
  const m = new AgentMetrics({ endedJobSeconds: 60, version: '1.2.3', now: () => clock });
  m.observeJobs(src);
  // A journaled job already ready at start: no time-to-ready from an unknown start.
  src.change(job('old', 'ready', { readyAt: new Date(clock).toISOString() }));
  src.change(job('n', 'copying'));
  clock += 42_000;
  src.change(job('n', 'ready', { readyAt: new Date(clock).toISOString(), createdAt: new Date(clock - 42_000).toISOString() }));
  src.change(job('n', 'pivoting'));
  clock += 1500;
  src.change(job('n', 'pivoted', { endedAt: new Date(clock).toISOString() }));
  let text = await m.render();
  t.equal(line(text, 'blockcopy_job_time_to_ready_seconds_count'), 'blockcopy_job_time_to_ready_seconds_count 1', 'one time to ready');
  t.equal(line(text, 'blockcopy_job_time_to_ready_seconds_sum'), 'blockcopy_job_time_to_ready_seconds_sum 42', 'of 42 s');
  t.equal(
    line(text, 'blockcopy_job_switch_duration_seconds_sum{operation="pivot"}'),
    'blockcopy_job_switch_duration_seconds_sum{operation="pivot"} 1.5',
    'pivot took 1.5 s',
  );
  t.ok(line(text, 'blockcopy_job_bytes_copied{domain="vm1",disk="vda",job_id="n",kind="copy"}'), 'the ended job still has its series');
  t.equal(line(text, 'blockcopy_jobs{kind="copy",state="pivoted"}'), 'blockcopy_jobs{kind="copy",state="pivoted"} 1');
  clock += 61_000;
  text = await m.render();
  t.notOk(line(text, 'blockcopy_job_bytes_copied{domain="vm1",disk="vda",job_id="n",kind="copy"}'), 'dropped 60 s after it ended');
  t.ok(line(text, 'blockcopy_job_bytes_copied{domain="vm1",disk="vda",job_id="old",kind="copy"}'), 'the running job keeps its series');
  t.equal(
    line(text, 'blockcopy_jobs{kind="copy",state="pivoted"}'),
    'blockcopy_jobs{kind="copy",state="pivoted"} 1',
    'the count by state still includes it',
  );
});

t.test('per-job labels: job_id (not job, which Prometheus owns), group_id only on a group job', async (t) => {
  const src = new Source();
  const m = new AgentMetrics({ endedJobSeconds: 60, version: '1.2.3', now: () => clock });
  m.observeJobs(src);
  src.change(job('solo', 'copying'));
  src.change(job('member', 'copying', { disk: 'vdb', groupId: 'g1' }));
  const text = await m.render();
  t.ok(line(text, 'blockcopy_job_bytes_copied{domain="vm1",disk="vda",job_id="solo",kind="copy"} 10'), 'a job of its own: no group_id');
  t.ok(
    line(text, 'blockcopy_job_bytes_copied{domain="vm1",disk="vdb",job_id="member",kind="copy",group_id="g1"} 10'),
    "a group's job carries group_id",
  );
  t.ok(line(text, 'blockcopy_job_state{domain="vm1",disk="vdb",job_id="member",kind="copy",group_id="g1",state="copying"} 1'));
  t.notOk(/[{,]job="/.test(text), 'no series has a job label');
  t.notOk(/group_id=""/.test(text), 'no empty group_id');
});

t.test('blockcopy_agent_build_info: version, then libvirt and QEMU from the connection', async (t) => {
  const m = new AgentMetrics({ endedJobSeconds: 60, version: '1.2.3' });
  let text = await m.render();
  t.equal(
    line(text, 'blockcopy_agent_build_info{'),
    'blockcopy_agent_build_info{version="1.2.3",libvirt="",qemu=""} 1',
    'before a connection',
  );
  const src = new Source() as Source & { connection: { versions(): Promise<{ libvirt: string; hypervisor: string }> } };
  let versions: { libvirt: string; hypervisor: string } | null = { libvirt: '9.0.0', hypervisor: '7.2.0' };
  src.connection = { versions: async () => versions ?? Promise.reject(new Error('libvirtd away')) };
  m.observeJobs(src);
  text = await m.render();
  const all = text.split('\n').filter((l) => l.startsWith('blockcopy_agent_build_info{'));
  t.same(all, ['blockcopy_agent_build_info{version="1.2.3",libvirt="9.0.0",qemu="7.2.0"} 1'], 'one series, from the connection');
  versions = null;
  text = await m.render();
  t.equal(
    line(text, 'blockcopy_agent_build_info{'),
    'blockcopy_agent_build_info{version="1.2.3",libvirt="9.0.0",qemu="7.2.0"} 1',
    'kept while unreadable',
  );
  versions = { libvirt: '10.0.0', hypervisor: '8.2.1' };
  src.emit('agent.connection', { state: 'lost', at: '', reason: 'x' });
  text = await m.render();
  t.equal(
    line(text, 'blockcopy_agent_build_info{'),
    'blockcopy_agent_build_info{version="1.2.3",libvirt="9.0.0",qemu="7.2.0"} 1',
    'not read while the connection is lost',
  );
  src.emit('agent.connection', { state: 'restored', at: '', downMs: 5 });
  text = await m.render();
  t.same(
    text.split('\n').filter((l) => l.startsWith('blockcopy_agent_build_info{')),
    ['blockcopy_agent_build_info{version="1.2.3",libvirt="10.0.0",qemu="8.2.1"} 1'],
    'an upgraded libvirtd after a reconnect replaces the series',
  );
});

t.test('rpc calls, errors, refusals and the connection', async (t) => {
  const src = new Source();
  const m = new AgentMetrics({ endedJobSeconds: 60, version: '1.2.3' });
  m.observeJobs(src);
  m.call('pivot', 0.01);
  m.call('blockCopy', 0.02, 'destinationRejected');
  m.call('abort', 0.001, 'unauthorized');
  m.call('jobInfo', 0.001, '<script>');
  src.emit('agent.connection', { state: 'lost', at: '', reason: 'x' });
  m.groupSwitched('pivot', 35);
  let text = await m.render();
  t.equal(line(text, 'blockcopy_libvirt_connected'), 'blockcopy_libvirt_connected 0', 'disconnected');
  t.equal(line(text, 'blockcopy_libvirt_connection_losses_total'), 'blockcopy_libvirt_connection_losses_total 1');
  t.equal(line(text, 'blockcopy_refusals_total{kind="destinationRejected"}'), 'blockcopy_refusals_total{kind="destinationRejected"} 1');
  t.equal(line(text, 'blockcopy_refusals_total{kind="unauthorized"}'), 'blockcopy_refusals_total{kind="unauthorized"} 1');
  t.equal(
    line(text, 'blockcopy_rpc_errors_total{method="jobInfo",error="other"}'),
    'blockcopy_rpc_errors_total{method="jobInfo",error="other"} 1',
    'an unexpected error name is "other"',
  );
  t.equal(line(text, 'blockcopy_group_pause_seconds_sum{operation="pivot"}'), 'blockcopy_group_pause_seconds_sum{operation="pivot"} 0.035');
  src.emit('agent.connection', { state: 'restored', at: '', downMs: 5 });
  text = await m.render();
  t.equal(line(text, 'blockcopy_libvirt_connected'), 'blockcopy_libvirt_connected 1', 'connected again');
});

t.test('docs/grafana-dashboard.json: every query parses (promtool) and names only metrics the agent exposes', async (t) => {
  const { readFileSync, writeFileSync, mkdtempSync, rmSync } = await import('node:fs');
  const { spawnSync } = await import('node:child_process');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dash = JSON.parse(readFileSync(new URL('../../../docs/grafana-dashboard.json', import.meta.url), 'utf8'));
  const exprs: string[] = dash.panels.flatMap((p: { targets?: Array<{ expr: string }> }) => (p.targets ?? []).map((x) => x.expr));
  t.ok(exprs.length >= 15, `${exprs.length} queries`);
  // Grafana's variables, as Grafana would substitute them.
  const concrete = exprs.map((e) =>
    e.replaceAll('$__rate_interval', '1m').replaceAll('$__range', '1h').replaceAll('$instance', '.*').replaceAll('$domain', '.*'),
  );
  const dir = mkdtempSync(join(tmpdir(), 'bc-dash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const rules = { groups: [{ name: 'dashboard', rules: concrete.map((expr, i) => ({ record: `dashboard:q${i}`, expr })) }] };
  writeFileSync(join(dir, 'rules.json'), JSON.stringify(rules)); // YAML is a superset of JSON
  const r = spawnSync('promtool', ['check', 'rules', join(dir, 'rules.json')], { encoding: 'utf8' });
  t.equal(r.status, 0, `promtool check rules: ${(r.stdout + r.stderr).trim().split('\n').pop()}`);

  const m = new AgentMetrics({ endedJobSeconds: 60, version: '1.2.3' });
  const exposed = new Set(
    (await m.render())
      .split('\n')
      .filter((l) => l.startsWith('# TYPE '))
      .flatMap((l) => {
        const [, , name, type] = l.split(' ');
        return type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name!];
      }),
  );
  const used = new Set(concrete.flatMap((e) => [...e.matchAll(/\b((?:blockcopy|process|nodejs)_[a-z0-9_]+)/g)].map((x) => x[1]!)));
  for (const name of used) t.ok(exposed.has(name), `${name} is exposed`);

  // Legends name the agent's labels or the target's `instance`; `job` is the scrape job's name.
  const legends: string[] = dash.panels.flatMap((p: { targets?: Array<{ legendFormat?: string }> }) =>
    (p.targets ?? []).map((x) => x.legendFormat ?? ''),
  );
  const names = new Set(legends.flatMap((l) => [...l.matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((x) => x[1]!)));
  const known = ['domain', 'disk', 'job_id', 'group_id', 'kind', 'state', 'method', 'error', 'reason', 'operation', 'instance'];
  for (const name of names) t.ok(known.includes(name), `legend label ${name} is one the series carry`);
  t.ok(
    legends.some((l) => l.includes('{{job_id}}')),
    "the progress legend names the copy job's id",
  );
});

t.test('a backup: per-job series with kind backup and its disks, counted by state and ended once', async (t) => {
  const src = new Source();
  const m = new AgentMetrics({ endedJobSeconds: 60, version: '1.2.3', now: () => clock });
  m.observeJobs(src);
  const backup = (state: BackupJob['state'], processed: number): AnyJob => ({
    jobId: 'bk',
    kind: 'backup',
    domain: { name: 'vm1', uuid: '00000000-0000-0000-0000-000000000001' },
    state,
    mode: 'full',
    since: null,
    checkpoint: null,
    dir: '/backups',
    manifest: null,
    disks: [
      { disk: 'vda', file: '/backups/a', format: 'qcow2' },
      { disk: 'vdb', file: '/backups/b', format: 'qcow2' },
    ],
    progress: { processed: String(processed), total: '100', percent: processed },
    owner: 'agent',
    createdAt: new Date(clock).toISOString(),
    updatedAt: new Date(clock).toISOString(),
    ...(state === 'running' ? {} : { endedAt: new Date(clock).toISOString() }),
  });
  (src as unknown as { change(j: AnyJob): void }).change(backup('running', 40));
  let text = await m.render();
  const labels = 'domain="vm1",disk="vda,vdb",job_id="bk",kind="backup"';
  t.equal(line(text, `blockcopy_job_bytes_copied{${labels}}`), `blockcopy_job_bytes_copied{${labels}} 40`, 'bytes processed');
  t.equal(line(text, `blockcopy_job_bytes_remaining{${labels}}`), `blockcopy_job_bytes_remaining{${labels}} 60`, 'remaining');
  t.equal(
    line(text, 'blockcopy_jobs{kind="backup",state="running"}'),
    'blockcopy_jobs{kind="backup",state="running"} 1',
    'counted running',
  );
  (src as unknown as { change(j: AnyJob): void }).change(backup('completed', 100));
  (src as unknown as { change(j: AnyJob): void }).change(backup('completed', 100));
  text = await m.render();
  t.equal(
    line(text, 'blockcopy_job_ends_total{kind="backup",state="completed"}'),
    'blockcopy_job_ends_total{kind="backup",state="completed"} 1',
    'its end counted once',
  );
  t.equal(
    line(text, 'blockcopy_jobs{kind="backup",state="running"}'),
    'blockcopy_jobs{kind="backup",state="running"} 0',
    'no longer running',
  );
  m.close();
});
