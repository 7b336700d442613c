// A fleet on one machine: three agents, each in its own network namespace with its own address,
// server certificate and token (standing in for three hypervisors), all on the host's one
// libvirtd through its unix socket. One ansible-playbook run moves a disk on each of them in
// parallel with block_move over wss://; while the copies run, one "hypervisor" is cut off (its
// veth down). The run reports that host failed with a clear message (not a traceback), the
// other two complete (XML on the new files, qemu-img compare equal); once the link is back, the
// cut-off agent still has its move (it went on locally and pivoted by itself), a rerun for that
// host converges (changed=false), and no domain is left with a mirror or a block job. Each agent
// also serves /metrics on its namespace's own address (not loopback: TLS and a scrapers' token),
// scraped from the root namespace over the veth as a central Prometheus would.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent, type ServedAgent } from '../../harness/agent.js';
import { AgentClient } from '../../src/client/index.js';
import type { Job } from '../../src/generated/api.js';
import { fleetPlaybook, type TaskResult } from '../helpers/ansible.js';
import { errorName } from '../helpers/rejects.js';
import { makeNetns, sweepStaleNetns, type Netns } from '../helpers/netns.js';
import { makePki, serverCertFor } from '../helpers/pki.js';
import { scrapeTls } from '../helpers/scrape.js';
import { isBlockJob } from '../../src/job-types.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const HOSTS = ['hv1', 'hv2', 'hv3'];
const VICTIM = 'hv2';
const TASK = 'Move every disk of the VM';
/** Per copy: 24 MiB of guest data at 3 MiB/s keeps the copies running for some seconds. */
const DATA_MiB = 24;
const BANDWIDTH = 3 * MiB;

interface Member {
  host: string;
  ns: Netns;
  agent: ServedAgent;
  dom: hv.TestDomain;
  dest: string;
}

const METRICS_PORT = 9879;

/** GET /metrics at the agent's own address over TLS, with a bearer token or none. */
const scrape = (host: string, ca: string, token?: string) => scrapeTls(METRICS_PORT, { host, ca, token });

const until = async (what: string, check: () => Promise<boolean>, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

t.test('fleet: one playbook, three agents in their own namespaces, one cut off mid-run', async (t) => {
  sweepStaleNetns();
  const pki = await makePki(t);
  // The scrapers' own token (not an API token), in a root-only file as the agent requires.
  const scrapeToken = randomBytes(24).toString('hex');
  const scrapeTokens = join(pki.dir, 'scrape-tokens.json');
  writeFileSync(scrapeTokens, JSON.stringify({ tokens: [{ name: 'prometheus', token: scrapeToken }] }), { mode: 0o600 });
  const members: Member[] = [];
  for (const [i, host] of HOSTS.entries()) {
    const ns = await makeNetns(t, i);
    const { cert, key } = await serverCertFor(pki, ns.address);
    const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 32 }] });
    await hv.guestWrite(dom, 'vda', { pattern: 0x41 + i, offset: 0, length: DATA_MiB * MiB });
    const dest = hv.scratchDir(`fleet-${host}-`);
    t.teardown(() => rmSync(dest, { recursive: true, force: true }));
    // Each agent may write only under its own destination directory: its own "storage".
    const agent = await serveAgent(t, {
      wrap: ['ip', 'netns', 'exec', ns.name],
      urlHost: ns.address,
      config: {
        listen: { host: ns.address, port: 7879 },
        tls: { cert, key },
        allowedRoots: [dest],
        // Its own domain only: without this every agent adopts the others' copies (one libvirtd).
        domains: [dom.name],
        heartbeatMs: 5000,
        metrics: { enabled: true, host: ns.address, port: METRICS_PORT, tls: { cert, key }, tokensFile: scrapeTokens },
      },
    });
    members.push({ host, ns, agent, dom, dest });
  }
  const victim = members.find((m) => m.host === VICTIM)!;

  const inventory = join(pki.dir, 'inventory.json');
  const hostvars = (m: Member) => ({
    ansible_connection: 'local',
    ansible_python_interpreter: '/usr/bin/python3',
    agent_endpoint: m.agent.url,
    agent_token: m.agent.token,
    vm: m.dom.name,
    move_to: m.dest,
  });
  writeFileSync(inventory, JSON.stringify({ all: { hosts: Object.fromEntries(members.map((m) => [m.host, hostvars(m)])) } }));
  const playbookFile = join(pki.dir, 'fleet.yml');
  writeFileSync(
    playbookFile,
    JSON.stringify([
      {
        name: 'Move the fleet',
        hosts: 'all',
        gather_facts: false,
        tasks: [
          {
            name: TASK,
            'blockcopy.agent.block_move': {
              endpoint: '{{ agent_endpoint }}',
              token: '{{ agent_token }}',
              ca_path: pki.ca,
              connection_timeout: 10,
              domain: '{{ vm }}',
              dir: '{{ move_to }}',
              bandwidth: BANDWIDTH,
              timeout: 150,
            },
          },
        ],
      },
    ]),
  );
  const newPath = (m: Member) => join(m.dest, `${m.dom.name}-vda.raw`);

  // The run, and the cut once the victim's copy runs (libvirt shows its mirror, not yet ready).
  // Bounded: the module's own timeout (150 s) would end a hung victim's task before this.
  const running = fleetPlaybook(playbookFile, inventory, [], 240_000);
  let cutWhile = '';
  await until(
    "the victim's copy to run",
    async () => {
      const xml = await hv.liveXml(victim.dom);
      cutWhile = /<mirror[^>]*ready='yes'/.test(xml) ? 'ready' : xml.includes('<mirror') ? 'copying' : '';
      return cutWhile !== '';
    },
    60_000,
  );
  await victim.ns.down();
  t.teardown(() => victim.ns.up().catch(() => {}));
  t.equal(cutWhile, 'copying', 'the victim was cut off while its copy ran');
  const r = await running;

  for (const m of members.filter((x) => x !== victim)) {
    t.match(r.tasks[TASK]?.[m.host], { changed: true, failed: undefined }, `${m.host}: the move completed`);
    t.match(r.stats[m.host], { failures: 0 }, `${m.host}: no failure`);
  }
  const cut = r.tasks[TASK]?.[VICTIM] as TaskResult & Record<string, unknown>;
  t.match(cut, { failed: true, error: 'transport' }, `${VICTIM}: failed`);
  t.match(cut?.msg, /lost the connection to the agent/, `${VICTIM}: a clear message: ${cut?.msg}`);
  t.notMatch(JSON.stringify(cut), /Traceback|module_stderr/, `${VICTIM}: no traceback`);
  t.match(r.stats[VICTIM], { failures: 1 }, `${VICTIM}: counted as failed`);

  // The hypervisor comes back: its agent kept the move, which went on and pivoted locally.
  await victim.ns.up();
  const client = await AgentClient.connect(victim.agent.url, { headers: victim.agent.headers, ca: readFileSync(pki.ca) }).catch(async () => {
    // The route may take a moment after the link is up.
    await new Promise((res) => setTimeout(res, 2000));
    return AgentClient.connect(victim.agent.url, { headers: victim.agent.headers, ca: readFileSync(pki.ca) });
  });
  t.teardown(() => client.close());
  let kept: Job | undefined;
  await until(
    "the victim's move to end",
    async () => {
      const { jobs } = await client.call('listJobs', { includeEnded: true });
      kept = jobs.filter(isBlockJob).find((j) => j.domain.uuid === victim.dom.uuid && j.disk === 'vda');
      return kept !== undefined && ['pivoted', 'finished', 'cancelled', 'failed'].includes(kept.state);
    },
    120_000,
  );
  t.match(kept, { state: 'pivoted', destination: { path: newPath(victim) } }, `${VICTIM}: the agent kept the job, pivoted`);

  const again = await fleetPlaybook(playbookFile, inventory, ['--limit', VICTIM], 120_000);
  t.match(again.tasks[TASK]?.[VICTIM], { changed: false, failed: undefined }, `${VICTIM}: the rerun converges (changed=false)`);
  t.match(again.stats[VICTIM], { failures: 0 }, `${VICTIM}: the rerun has no failure`);

  for (const m of members) {
    t.equal((await hv.liveChain(m.dom, 'vda'))[0], newPath(m), `${m.host}: the guest runs on ${newPath(m)}`);
    t.equal(await hv.compareImages(m.dom.disks[0]!.path, newPath(m)), 'identical', `${m.host}: qemu-img compare: equal`);
    t.notMatch(await hv.liveXml(m.dom), /<mirror/, `${m.host}: no mirror left`);
    const { stdout } = await run('virsh', ['-c', 'qemu:///system', 'blockjob', m.dom.name, 'vda', '--info']);
    t.match(stdout, /No current block job/, `${m.host}: no block job left`);
  }

  // Metrics on each agent's own (non-loopback) address, from the root namespace over the veth.
  for (const m of members) {
    const ok = await scrape(m.ns.address, pki.ca, scrapeToken);
    t.equal(ok.status, 200, `${m.host}: /metrics at ${m.ns.address}:${METRICS_PORT} over TLS with the scrapers' token`);
    t.match(ok.body, /^blockcopy_agent_build_info\{/m, `${m.host}: build_info is served`);
    t.match(ok.body, new RegExp(`job_id="[^"]+".*domain="${m.dom.name}"|domain="${m.dom.name}".*job_id="[^"]+"`), `${m.host}: its own copy's series, by job id`);
    t.equal((await scrape(m.ns.address, pki.ca)).status, 401, `${m.host}: without a token: 401`);
    t.equal((await scrape(m.ns.address, pki.ca, m.agent.token)).status, 401, `${m.host}: the API's token does not scrape`);
  }

  // Ownership: each agent's jobs are of its own domain only (report what it adopted).
  for (const m of members) {
    const c = m === victim ? client : await AgentClient.connect(m.agent.url, { headers: m.agent.headers, ca: readFileSync(pki.ca) });
    if (c !== client) t.teardown(() => c.close());
    const other = members[(members.indexOf(m) + 1) % members.length]!;
    t.equal(
      await errorName(c.call('blockCopyGroup', { domain: other.dom.name, target: { dir: m.dest }, dryRun: true })),
      'notFound',
      `${m.host}: another agent's domain is not found here`,
    );
    const { jobs } = await c.call('listJobs', { includeEnded: true });
    const foreign = jobs.filter((j) => j.domain.uuid !== m.dom.uuid).map((j) => `${j.domain.name}/${isBlockJob(j) ? j.disk : j.kind} ${j.state}`);
    t.same(foreign, [], `${m.host}: no job of another agent's domain`);
    t.ok(
      jobs.some((j) => j.domain.uuid === m.dom.uuid && j.state === 'pivoted'),
      `${m.host}: its own job, pivoted`,
    );
  }
});
