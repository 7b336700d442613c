// The Ansible collection, run as real playbooks (Debian's ansible-core) against localhost,
// the real agent (through `blockcopy-agent stdio`, as on a managed host) and real libvirtd.
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent, stateDir, TEST_AGENT_ENV } from '../../harness/agent.js';
import { NODE_FLAGS } from '../../src/cli/node-flags.js';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../../', import.meta.url));
const playbooks = join(repo, 'ansible/ansible_collections/blockcopy/agent/tests/integration/playbooks');
const MiB = 1024 * 1024;

interface TaskResult { changed?: boolean; failed?: boolean; msg?: string; error?: string; diff?: unknown; job?: { state: string } }
interface PlaybookRun { stats: { changed: number; failures: number; ok: number }; tasks: Record<string, TaskResult> }

async function playbook(name: string, vars: Record<string, unknown>, opts: { check?: boolean } = {}): Promise<PlaybookRun> {
  const varsFile = join(String(vars.dir), `vars-${name}.json`);
  writeFileSync(varsFile, JSON.stringify({ ...vars, ansible_python_interpreter: '/usr/bin/python3' }));
  const args = ['-i', 'localhost,', '-c', 'local', '-e', `@${varsFile}`, join(playbooks, `${name}.yml`), ...(opts.check ? ['--check', '--diff'] : [])];
  const env = {
    ...process.env, ...TEST_AGENT_ENV, ANSIBLE_COLLECTIONS_PATH: join(repo, 'ansible'), ANSIBLE_STDOUT_CALLBACK: 'results_json',
    ANSIBLE_CALLBACK_PLUGINS: join(repo, 'test/ansible/callback_plugins'), ANSIBLE_NOCOLOR: '1',
    ANSIBLE_LOCALHOST_WARNING: 'False', ANSIBLE_INVENTORY_UNPARSED_WARNING: 'False', ANSIBLE_RETRY_FILES_ENABLED: 'False',
  };
  const { stdout: out, stderr } = await run('ansible-playbook', args, { env, maxBuffer: 64 * MiB })
    .catch((e: { stdout: string; stderr: string }) => ({ stdout: e.stdout, stderr: e.stderr }));
  if (!out.includes('{')) throw new Error(`ansible-playbook printed no results: ${stderr.trim() || out.trim()}`);
  const doc = JSON.parse(out.slice(out.indexOf('{')));
  const tasks: Record<string, TaskResult> = {};
  for (const task of doc.plays[0].tasks) tasks[task.task.name] = task.hosts.localhost ?? {};
  return { stats: doc.stats.localhost, tasks };
}

t.test('playbooks: ready → pivoted / finished / absent, idempotency, check mode, failures', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }, { format: 'raw', sizeMiB: 32 }, { format: 'qcow2', sizeMiB: 128 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0xc1, offset: 0, length: 16 * MiB });
  await hv.guestWrite(dom, 'vdb', { pattern: 0xc2, offset: 0, length: 16 * MiB });
  await hv.guestWrite(dom, 'vdc', { pattern: 0xc3, offset: 0, length: 96 * MiB });
  const vars = { domain: dom.name, dir: dom.dir, source_vdb: dom.disks[1]!.path, agent_command: [process.execPath, CLI, 'stdio', '--state-dir', stateDir(t)] };
  // The disks' own sources, not the <source> inside a running <mirror>.
  const sources = async () => [...(await hv.liveXml(dom)).replace(/<mirror[\s\S]*?<\/mirror>/g, '').matchAll(/<source file='([^']+)'/g)].map((m) => m[1]);
  const original = await sources();

  const dry = await playbook('ready', vars, { check: true });
  t.equal(dry.stats.changed, 2, 'check mode: both tasks would change');
  t.notMatch(await hv.liveXml(dom), /<mirror/, 'check mode: no copy started');
  t.notOk(existsSync(`${dom.dir}/vda-moved.qcow2`), 'check mode: no file created');

  const ready = await playbook('ready', vars);
  t.equal(ready.stats.failures, 0, 'ready.yml succeeds');
  t.equal(ready.stats.changed, 2, 'ready.yml: changed=2');
  t.match(await hv.liveXml(dom), /<mirror [^>]*ready='yes'/, 'virsh: vda is mirroring');
  t.equal((await playbook('ready', vars)).stats.changed, 0, 'ready.yml again: changed=0');

  const dryConverge = await playbook('converge', vars, { check: true });
  t.equal(dryConverge.stats.changed, 3, 'check mode: pivot, finish and abort would happen');
  t.match(dryConverge.tasks['Vda pivoted onto its copy']!.diff, { before: { state: 'ready' }, after: { state: 'pivoted' } }, 'check mode shows a diff');
  t.same(await sources(), original, 'check mode: the guest still runs on its sources');

  const converge = await playbook('converge', vars);
  t.equal(converge.stats.failures, 0, `converge.yml succeeds ${JSON.stringify(converge.tasks)}`.slice(0, 400));
  t.equal(converge.stats.changed, 3, 'converge.yml: changed=3');
  t.match(converge.tasks['Vda pivoted onto its copy'], { changed: true, job: { state: 'pivoted' } });
  t.match(converge.tasks['Vdb finished to a point-in-time copy'], { changed: true, job: { state: 'finished' } });
  t.match(converge.tasks['No copy job left on vdc'], { changed: true, job: { state: 'cancelled' } });
  const xml = await hv.liveXml(dom);
  t.match(xml, `<source file='${dom.dir}/vda-moved.qcow2'`, 'virsh: vda runs on its copy');
  t.notMatch(xml, /<mirror/, 'virsh: no copy job left');
  t.equal(await hv.compareImages(dom.disks[1]!.path, `${dom.dir}/vdb-backup.raw`), 'identical', 'qemu-img: the vdb backup equals the disk');

  t.equal((await playbook('converge', vars)).stats.changed, 0, 'converge.yml again: changed=0');
  t.equal((await playbook('converge', vars, { check: true })).stats.changed, 0, 'check mode after converging: changed=0');

  const bad = await playbook('failures', vars);
  const expect: Array<[string, RegExp, string | undefined]> = [
    ['Unknown format', /value of format must be one of: raw, qcow2/, undefined],
    ['Relative destination', /absolute path/, 'invalidParams'],
    ['Unknown domain', /no domain 'bctest-no-such-domain'/, 'notFound'],
    ['Destination is the source', /destination rejected/, 'destinationRejected'],
    ['Agent not installed', /cannot run/, 'transport'],
  ];
  for (const [task, msg, error] of expect) {
    const r = bad.tasks[task]!;
    t.equal(r.failed, true, `${task}: fails`);
    t.match(r.msg, msg, `${task}: ${r.msg}`);
    if (error) t.equal(r.error, error, `${task}: error=${error}`);
    t.notOk(r.changed, `${task}: changed nothing`);
  }
});

t.test('the README example docs/pivot-one-disk.yml, unmodified, moves a disk', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0xd1, offset: 0, length: 16 * MiB });
  // The example uses the module's default agent_command, `blockcopy-agent stdio`, from PATH.
  const bin = join(dom.dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'blockcopy-agent'), `#!/bin/sh\nBLOCKCOPY_STATE_DIR=${stateDir(t)} exec ${process.execPath} ${CLI} "$@"\n`, { mode: 0o755 });
  const dest = `${dom.dir}/example.qcow2`;
  const varsFile = join(dom.dir, 'example-vars.json');
  writeFileSync(varsFile, JSON.stringify({ vm: dom.name, disk: 'vda', dest, ansible_python_interpreter: '/usr/bin/python3' }));
  const env = { ...process.env, ...TEST_AGENT_ENV, PATH: `${bin}:${process.env.PATH}`, ANSIBLE_COLLECTIONS_PATH: join(repo, 'ansible'), ANSIBLE_LOCALHOST_WARNING: 'False' };
  const r = await run('ansible-playbook', ['-i', 'localhost,', '-c', 'local', '-e', `@${varsFile}`, join(repo, 'ansible/ansible_collections/blockcopy/agent/docs/pivot-one-disk.yml')], { env })
    .then((x) => ({ code: 0, out: x.stdout }), (e) => ({ code: e.code, out: String(e.stdout) }));
  t.equal(r.code, 0, 'the playbook succeeds');
  t.match(r.out, `is pivoted onto ${dest}`);
  t.match(await hv.liveXml(dom), `<source file='${dest}'`, 'virsh: the guest runs on the new disk');
});

t.test('endpoint: the modules over WebSocket to a running agent', async (t) => {
  const agent = await serveAgent(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  const r = await playbook('endpoint', { domain: dom.name, dir: dom.dir, endpoint: agent.url, token: agent.token });
  t.equal(r.stats.failures, 0, 'endpoint.yml succeeds');
  t.match(r.tasks['Start a copy through the endpoint'], { changed: true, job: { state: 'finished' } });
  t.equal(await hv.compareImages(dom.disks[0]!.path, `${dom.dir}/via-ws.qcow2`), 'identical');
});

t.test('the role installs, configures and links the agent, idempotently', async (t) => {
  const root = hv.scratchDir('role-');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  // Extra vars outrank facts: this host has no systemd, and the test must not start services.
  const vars = { repo, root, dir: root, ansible_service_mgr: 'none' };
  const first = await playbook('role', vars);
  t.equal(first.stats.failures, 0, `the role succeeds ${JSON.stringify(Object.entries(first.tasks).filter(([, r]) => r.failed))}`.slice(0, 600));
  t.ok(first.stats.changed >= 5, `first run changes things (changed=${first.stats.changed})`);
  const again = await playbook('role', vars);
  t.equal(again.stats.changed, 0, 'second run: changed=0');
  const version = await run(`${root}/usr/local/bin/blockcopy-agent`, ['--version']);
  t.equal(version.stdout.trim(), JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).version, 'the linked command runs');
  const config = `${root}/etc/blockcopy-agent/config.json`;
  t.match(JSON.parse(readFileSync(config, 'utf8')), { allowedRoots: ['/var/lib/libvirt/images'], listen: { host: '127.0.0.1' } });
  t.equal((await run(`${root}/usr/local/bin/blockcopy-agent`, ['config', 'check', config]).then(() => 0, (e) => e.code)), 0, 'the written config passes config check');
  t.match(readFileSync(`${root}/etc/systemd/system/blockcopy-agent.service`, 'utf8'), `ExecStart=/usr/bin/node ${NODE_FLAGS.join(' ')} ${root}/opt/blockcopy-agent/dist/src/cli/main.js serve --config ${root}/etc/blockcopy-agent/config.json`);
  t.equal(statSync(config).mode & 0o777, 0o644);
  const tokens = `${root}/etc/blockcopy-agent/tokens.json`;
  t.equal(statSync(tokens).mode & 0o777, 0o600, 'the tokens file is 0600');
  t.match(JSON.parse(readFileSync(config, 'utf8')), { auth: { tokensFile: tokens }, audit: { file: `${root}/var/log/blockcopy-agent/audit.log` } });
  t.notOk(existsSync(`${root}/opt/blockcopy-agent/test`), 'tests are not shipped to hypervisors');
});

t.test('the collection documents its modules and passes the sanity checks that run offline', async (t) => {
  const r = await run('bash', [join(repo, 'ansible/run-sanity.sh')], { maxBuffer: 16 * MiB }).then((x) => ({ code: 0, out: x.stdout + x.stderr }), (e) => ({ code: e.code, out: `${e.stdout}${e.stderr}` }));
  t.equal(r.code, 0, `ansible/run-sanity.sh\n${r.out.split('\n').slice(-15).join('\n')}`);
});
