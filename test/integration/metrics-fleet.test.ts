// A central Prometheus scraping a fleet directly: three real agents, each serving /metrics over
// TLS on its own port, one with client certificates only, one with bearer tokens only, one with
// either; a real, short-lived `prometheus` (checked first by `promtool check config`) scrapes
// them every second while each runs a real copy. The shipped Grafana dashboard's own queries,
// with its variables substituted as Grafana would, are evaluated through Prometheus's HTTP
// API: per-disk progress for every agent, the copy's job id in the legend. Scrapes without a
// certificate, with a foreign one, without a token or with a wrong one are refused (by the
// agent directly and as Prometheus sees it: up == 0). SIGHUP rotates the metrics tokens and
// client CA. The Ansible role's metrics variables render a config that does the same.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AgentClient } from '../../src/client/index.js';
import { CLI, serveAgent, stateDir, type ServedAgent } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';
import { makePki, type Pki } from '../helpers/pki.js';
import { scrapeTls, type Scraper } from '../helpers/scrape.js';

const DASHBOARD = fileURLToPath(new URL('../../../docs/grafana-dashboard.json', import.meta.url));
const PROMETHEUS = '/usr/bin/prometheus';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

type Who = Omit<Scraper, 'ca' | 'host' | 'path'>;

/** GET /metrics (or `path`) on loopback over TLS as `who`. */
const scrape = (pki: Pki, port: number, who: Who = {}, path?: string) => scrapeTls(port, { ca: pki.ca, ...who, path });

/** A metrics tokens file (0600, as the agent demands). */
function tokensFile(dir: string, name: string, token: string): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify({ tokens: [{ name: 'prometheus', token }] }), { mode: 0o600 });
  return path;
}

interface FleetAgent {
  name: string;
  agent: ServedAgent;
  client: AgentClient;
  port: number;
  target: string;
  dom: hv.TestDomain;
  jobId: string;
}

/** Grafana's rendering of a regex variable of several values (prometheusSpecialRegexEscape), inside a PromQL string. */
const grafanaRegex = (values: string[]) => {
  const escaped = values.map((v) => v.replace(/[\\$^*{}[\]'+?.()|]/g, (c) => `\\\\${c}`));
  return escaped.length === 1 ? escaped[0]! : `(${escaped.join('|')})`;
};

interface Target {
  expr: string;
  legendFormat?: string;
}

function dashboardTargets(): Array<{ title: string; targets: Target[] }> {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Array<{ title: string; targets?: Target[] }> };
  return d.panels.filter((p) => p.targets?.length).map((p) => ({ title: p.title, targets: p.targets! }));
}

/** A dashboard expression with its variables as Grafana fills them (1 s scrapes: $__rate_interval is 4 × that). */
const substitute = (expr: string, instance: string, domain: string) =>
  expr.replaceAll('$instance', instance).replaceAll('$domain', domain).replaceAll('$__rate_interval', '4s').replaceAll('$__range', '5m');

/** Grafana's legend: {{label}} replaced by the series' label value. */
const legend = (format: string, labels: Record<string, string>) =>
  format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_m, k: string) => labels[k] ?? '');

type Series = Array<{ metric: Record<string, string>; value: [number, string] }>;

async function query(promPort: number, expr: string): Promise<Series> {
  const res = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: Series } };
  if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error}`);
  return body.data!.resultType === 'vector' ? body.data!.result : [];
}

async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 90_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** A real Prometheus in `dir`, on a free loopback port, stopped (SIGTERM, then SIGKILL) at teardown. */
async function startPrometheus(t: hv.TeardownHost, dir: string, configFile: string): Promise<number> {
  const port = await freePort();
  let log = '';
  const child: ChildProcess = spawn(
    PROMETHEUS,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--storage.tsdb.retention.time=1h',
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (log = (log + c).slice(-4000)));
  const exited = new Promise((r) => child.once('exit', r));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  });
  await until(
    `prometheus to be ready (${log})`,
    async () => ((await fetch(`http://127.0.0.1:${port}/-/ready`)).status === 200 ? true : undefined),
    60_000,
  );
  return port;
}

t.test('a central Prometheus scrapes three agents over TLS; the dashboard shows every copy', async (t) => {
  const pki = await makePki(t);
  const dir = stateDir(t);
  const token = { b: 'scrape-b-0123456789abcdef', c: 'scrape-c-0123456789abcdef' };
  const tls = { cert: pki.serverCert, key: pki.serverKey };
  // A: client certificates only (refused at the handshake without one); B: bearer token only;
  // C: either (a CA that asks for a certificate, and a tokens file).
  const configs = {
    a: { tls: { ...tls, ca: pki.ca, requireClientCert: true } },
    b: { tls, tokensFile: tokensFile(dir, 'b-tokens.json', token.b) },
    c: { tls: { ...tls, ca: pki.ca }, tokensFile: tokensFile(dir, 'c-tokens.json', token.c) },
  };
  const fleet: FleetAgent[] = [];
  for (const [name, metrics] of Object.entries(configs)) {
    const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
    await hv.guestWrite(dom, 'vda', { pattern: 0x11, offset: 0, length: 16 * 1024 * 1024 });
    const port = await freePort();
    const agent = await serveAgent(t, { config: { metrics: { enabled: true, host: '127.0.0.1', port, ...metrics } } });
    const client = await agent.connect();
    fleet.push({ name, agent, client, port, target: `127.0.0.1:${port}`, dom, jobId: '' });
  }
  const [a, b, c] = fleet as [FleetAgent, FleetAgent, FleetAgent];

  t.test('scrapes without the right credential are refused', async (t) => {
    t.equal((await scrape(pki, a.port, { cert: pki.client })).status, 200, 'A: with the client certificate');
    t.not((await scrape(pki, a.port)).status, 200, 'A: without a certificate, refused at the handshake');
    t.not((await scrape(pki, a.port, { cert: pki.rogueClient })).status, 200, "A: another CA's certificate, refused");
    t.not((await scrape(pki, a.port, { token: token.b })).status, 200, 'A: a token is no substitute for the certificate');
    t.equal((await scrape(pki, b.port, { token: token.b })).status, 200, 'B: with its token');
    t.equal((await scrape(pki, b.port)).status, 401, 'B: no token, 401');
    t.equal((await scrape(pki, b.port, { token: token.c })).status, 401, "B: another agent's token, 401");
    t.equal((await scrape(pki, b.port, { token: b.agent.token })).status, 401, 'B: the API token is not a metrics token');
    t.equal((await scrape(pki, b.port, { cert: pki.client })).status, 401, 'B: a certificate, but B trusts no client CA');
    t.equal((await scrape(pki, b.port, {}, '/')).status, 401, 'B: no path answered, not even 404, before credentials');
    t.equal((await scrape(pki, c.port, { cert: pki.client })).status, 200, 'C: with the client certificate');
    t.equal((await scrape(pki, c.port, { token: token.c })).status, 200, 'C: with its token');
    t.equal((await scrape(pki, c.port)).status, 401, 'C: neither, 401');
    t.equal((await scrape(pki, c.port, { cert: pki.rogueClient })).status, 401, "C: another CA's certificate, 401");
    t.equal((await scrape(pki, c.port, { cert: pki.expiredClient })).status, 401, 'C: an expired certificate, 401');
    const plain = await fetch(`http://127.0.0.1:${b.port}/metrics`).then(
      (r) => r.status,
      () => 'refused',
    );
    t.not(plain, 200, 'B: plain HTTP gets no metrics');
  });

  // The copies, left in ready (whenReady none) so that their series stay while Prometheus scrapes.
  for (const f of fleet) {
    const { job } = await f.client.call('blockCopy', {
      domain: f.dom.name,
      disk: 'vda',
      destination: { path: join(f.dom.dir, 'copy.qcow2'), format: 'qcow2' },
    });
    f.jobId = job.jobId;
    t.teardown(() => f.client.call('abort', { jobId: job.jobId }).catch(() => undefined));
  }

  // The scrape configuration a central Prometheus would use (docs/metrics.md), plus two jobs with
  // the wrong credentials.
  writeFileSync(join(dir, 'token-b'), token.b);
  writeFileSync(join(dir, 'token-c'), token.c);
  writeFileSync(join(dir, 'wrong-token'), 'not-a-token');
  const mtls = `    scheme: https\n    tls_config:\n      ca_file: ${pki.ca}\n      cert_file: ${pki.client.cert}\n      key_file: ${pki.client.key}\n`;
  const bearer = (file: string) =>
    `    scheme: https\n    tls_config:\n      ca_file: ${pki.ca}\n    authorization:\n      type: Bearer\n      credentials_file: ${join(dir, file)}\n`;
  const job = (name: string, targets: string[], auth: string) =>
    `  - job_name: ${name}\n${auth}    static_configs:\n      - targets: [${targets.map((x) => `'${x}'`).join(', ')}]\n`;
  const promConfig = join(dir, 'prometheus.yml');
  writeFileSync(
    promConfig,
    'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n' +
      job('blockcopy', [a.target], mtls) +
      job('blockcopy-token-b', [b.target], bearer('token-b')) +
      job('blockcopy-token-c', [c.target], bearer('token-c')) +
      job('refused-no-cert', [a.target], `    scheme: https\n    tls_config:\n      ca_file: ${pki.ca}\n`) +
      job('refused-wrong-token', [b.target], bearer('wrong-token')),
  );
  const check = spawnSync('promtool', ['check', 'config', promConfig], { encoding: 'utf8' });
  t.equal(check.status, 0, `promtool check config accepts the scrape configuration: ${check.stdout}${check.stderr}`.trim());
  const promPort = await startPrometheus(t, dir, promConfig);

  const good = ['blockcopy', 'blockcopy-token-b', 'blockcopy-token-c'];
  const ups = await until('every target scraped, the three agents up', async () => {
    const r = await query(promPort, 'up');
    return r.length === 5 && good.every((j) => r.some((s) => s.metric.job === j && s.value[1] === '1')) ? r : undefined;
  });
  const up = (job: string) => ups.find((s) => s.metric.job === job)?.value[1];
  for (const name of good) t.equal(up(name), '1', `${name}: up`);
  t.equal(up('refused-no-cert'), '0', 'a Prometheus without the client certificate gets nothing');
  t.equal(up('refused-wrong-token'), '0', 'a Prometheus with a wrong token gets nothing');

  // The dashboard's progress panel, with "All" selected (allValue .*) and with each hypervisor picked.
  const panels = dashboardTargets();
  const progress = panels.find((p) => p.targets[0]!.legendFormat?.includes('job_id'))!;
  t.ok(progress, `the dashboard has a per-job progress panel (${progress?.title})`);
  const target = progress.targets[0]!;
  const legendLabels = [...target.legendFormat!.matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]!);
  t.same(legendLabels, ['domain', 'disk', 'job_id'], `legend ${target.legendFormat}`);
  const all = await until('every copy in the progress panel', async () => {
    const r = await query(promPort, substitute(target.expr, '.*', '.*'));
    return fleet.every((f) => r.some((s) => s.metric.instance === f.target && s.metric.job_id === f.jobId)) ? r : undefined;
  });
  for (const f of fleet) {
    const mine = all.find((s) => s.metric.instance === f.target && s.metric.job_id === f.jobId)!;
    t.equal(
      legend(target.legendFormat!, mine.metric),
      `${f.dom.name}/vda (${f.jobId})`,
      `agent ${f.name}: the legend names the disk and the copy's job id`,
    );
    const ratio = Number(mine.value[1]);
    t.ok(ratio >= 0 && ratio <= 1, `agent ${f.name}: progress ${ratio} is a fraction`);
    const picked = await query(promPort, substitute(target.expr, grafanaRegex([f.target]), grafanaRegex([f.dom.name])));
    t.same(
      picked.map((s) => [s.metric.instance, s.metric.domain, s.metric.disk, s.metric.job_id]),
      [[f.target, f.dom.name, 'vda', f.jobId]],
      `agent ${f.name} and its domain picked in the variables: exactly its copy`,
    );
  }
  const two = await query(promPort, substitute(target.expr, grafanaRegex([a.target, b.target]), '.*'));
  t.ok(
    two.every((s) => s.metric.instance === a.target || s.metric.instance === b.target) &&
      [a, b].every((f) => two.some((s) => s.metric.job_id === f.jobId)),
    'two hypervisors picked: their copies only',
  );

  // Every other panel's query evaluates; those that read per-target series see all three agents.
  for (const p of panels) {
    for (const q of p.targets) {
      const r = await query(promPort, substitute(q.expr, '.*', '.*')).then(
        (x) => x,
        (e: Error) => e,
      );
      t.notOk(r instanceof Error, `panel "${p.title}": ${q.expr} evaluates${r instanceof Error ? `: ${r.message}` : ''}`);
    }
  }
  const connected = await query(promPort, substitute('blockcopy_libvirt_connected{instance=~"$instance"}', '.*', '.*'));
  t.same(
    connected.map((s) => s.metric.instance).sort(),
    fleet.map((f) => f.target).sort(),
    'the Hypervisor variable lists the three agents',
  );
  const remaining = await query(promPort, substitute(panels.find((p) => /remaining/i.test(p.title))!.targets[0]!.expr, '.*', '.*'));
  for (const f of fleet)
    t.ok(
      remaining.some((s) => s.metric.instance === f.target && s.metric.job_id === f.jobId),
      `agent ${f.name}: bytes remaining of its copy`,
    );
});

t.test('SIGHUP rotates the metrics tokens and the client CA', async (t) => {
  const [pki, next] = [await makePki(t), await makePki(t)];
  const dir = stateDir(t);
  const file = tokensFile(dir, 'metrics-tokens.json', 'old-token-0123456789abcdef');
  const ca = join(dir, 'metrics-ca.pem');
  writeFileSync(ca, readFileSync(pki.ca));
  const port = await freePort();
  const agent = await serveAgent(t, {
    config: { metrics: { enabled: true, port, tls: { cert: pki.serverCert, key: pki.serverKey, ca }, tokensFile: file } },
  });
  t.equal((await scrape(pki, port, { token: 'old-token-0123456789abcdef' })).status, 200, 'the old token scrapes');
  t.equal((await scrape(pki, port, { cert: pki.client })).status, 200, "the first CA's client certificate scrapes");
  t.equal((await scrape(pki, port, { cert: next.client })).status, 401, "the next CA's is not yet trusted");
  tokensFile(dir, 'metrics-tokens.json', 'new-token-0123456789abcdef');
  writeFileSync(ca, readFileSync(next.ca));
  agent.process.kill('SIGHUP');
  await until('the new token to be in force', async () =>
    (await scrape(pki, port, { token: 'new-token-0123456789abcdef' })).status === 200 ? true : undefined,
  );
  t.pass('the new token scrapes after SIGHUP');
  t.equal((await scrape(pki, port, { token: 'old-token-0123456789abcdef' })).status, 401, 'the old token is refused');
  t.equal((await scrape(pki, port, { cert: next.client })).status, 200, "the next CA's client certificate scrapes");
  t.equal((await scrape(pki, port, { cert: pki.client })).status, 401, "the first CA's is refused");
});

t.test("the role's variables turn metrics on over TLS; 0.0.0.0 without it fails the config check", async (t) => {
  const pki = await makePki(t);
  const dir = stateDir(t);
  const role = fileURLToPath(new URL('../../../ansible/ansible_collections/blockcopy/agent/roles/agent/', import.meta.url));
  const render = (vars: Record<string, unknown>) => {
    const play = join(dir, 'render.yml');
    const out = join(dir, 'rendered.json');
    writeFileSync(
      play,
      JSON.stringify([
        {
          hosts: 'all',
          gather_facts: false,
          vars_files: [join(role, 'defaults/main.yml')],
          tasks: [{ 'ansible.builtin.template': { src: join(role, 'templates/config.json.j2'), dest: out, mode: '0644' } }],
        },
      ]),
    );
    const r = spawnSync('ansible-playbook', ['-i', 'localhost,', '-c', 'local', '-e', JSON.stringify(vars), play], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ansible-playbook: ${r.stdout}${r.stderr}`);
    const check = spawnSync(process.execPath, [CLI, 'config', 'check', out], { encoding: 'utf8' });
    return { config: JSON.parse(readFileSync(out, 'utf8')) as { metrics?: Record<string, unknown> }, check };
  };
  t.notOk(render({}).config.metrics, 'by default the role leaves metrics off');
  const plain = render({ blockcopy_agent_metrics_enabled: true, blockcopy_agent_metrics_host: '0.0.0.0' });
  t.equal(plain.check.status, 1, "0.0.0.0 without TLS: the role's `config check` validation fails");
  t.match(plain.check.stderr, /metrics\/host 0\.0\.0\.0 is not a loopback address/, 'and says why');
  const token = 'role-scrape-0123456789abcdef';
  const port = await freePort();
  const vars = {
    blockcopy_agent_metrics_enabled: true,
    blockcopy_agent_metrics_host: '127.0.0.1',
    blockcopy_agent_metrics_port: port,
    blockcopy_agent_metrics_tls_cert: pki.serverCert,
    blockcopy_agent_metrics_tls_key: pki.serverKey,
    blockcopy_agent_metrics_tls_client_ca: pki.ca,
    blockcopy_agent_metrics_tokens_file: tokensFile(dir, 'role-tokens.json', token),
  };
  t.equal(render({ ...vars, blockcopy_agent_metrics_host: '0.0.0.0' }).check.status, 0, '0.0.0.0 with TLS, client CA and tokens: accepted');
  const { config } = render(vars);
  await serveAgent(t, { config: { metrics: config.metrics } });
  t.equal((await scrape(pki, port, { token })).status, 200, 'an agent on the rendered metrics block: the token scrapes');
  t.equal((await scrape(pki, port, { cert: pki.client })).status, 200, 'so does the client certificate');
  t.equal((await scrape(pki, port)).status, 401, 'nothing else');
});
