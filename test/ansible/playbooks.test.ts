// The Ansible collection, run as real playbooks (Debian's ansible-core) against localhost,
// the real agent (through `blockcopy-agent stdio`, as on a managed host) and real libvirtd.
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent, stateDir, TEST_AGENT_ENV } from '../../harness/agent.js';
import { camelCaseKeys, expectFailures, playbook } from '../helpers/ansible.js';
import { makePki } from '../helpers/pki.js';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../../', import.meta.url));
const MiB = 1024 * 1024;
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
  // Return values in snake_case, nested ones too (issue 26): the agent's jobId, createdAt, matchesLive.
  t.match(
    converge.tasks['Vda pivoted onto its copy'],
    { job: { job_id: String, created_at: String, ended_at: String, when_ready: 'none', persistent: { matches_live: Boolean } } },
    'the job comes back with snake_case keys',
  );
  t.same(camelCaseKeys(converge), [], 'no camelCase key in any task result');
  t.same(camelCaseKeys(dryConverge), [], 'no camelCase key in check mode either');
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
  expectFailures(t, bad, expect);
});

t.test('a pivot rerun after a later backup of the same disk changes nothing (module_defaults group)', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0xa5, offset: 0, length: 8 * MiB });
  const vars = { domain: dom.name, dir: dom.dir, agent_command: [process.execPath, CLI, 'stdio', '--state-dir', stateDir(t)] };
  const r = await playbook('rerun_pivot', vars);
  t.equal(r.stats.failures, 0, `rerun_pivot succeeds ${JSON.stringify(Object.entries(r.tasks).filter(([, x]) => x.failed))}`.slice(0, 600));
  t.match(r.tasks['Vda pivoted onto its copy'], { changed: true, job: { state: 'pivoted' } });
  t.match(r.tasks['Later backup of vda'], { changed: true, job: { state: 'finished' } });
  t.match(r.tasks['Vda pivoted onto its copy, again'], { changed: false }, 'the rerun: changed=false');
  t.equal(r.tasks['Vda pivoted onto its copy, again']!.failed, undefined, 'the rerun does not fail');
  t.equal(r.stats.changed, 2, 'changed=2: the pivot and the backup only');
  const xml = await hv.liveXml(dom);
  t.match(xml, `<source file='${dom.dir}/vda-a.qcow2'`, 'virsh: the guest still runs on its copy');
  t.notMatch(xml, /<mirror/, 'virsh: no copy started by the rerun');
  t.equal((await playbook('rerun_pivot', vars, { check: true })).stats.changed, 0, 'check mode, all of it again: changed=0');
  t.equal((await playbook('rerun_pivot', vars)).stats.changed, 0, 'all of it again: changed=0');
});

t.test('wait=false: refused over a stdio agent alone, pivoted by the daemon it relays to', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }, { format: 'qcow2', sizeMiB: 32 }] });
  const agent = await serveAgent(t);
  const vars = {
    domain: dom.name, dir: dom.dir, agent_command: [process.execPath, CLI, 'stdio', '--state-dir', stateDir(t)],
    daemon_agent_command: [process.execPath, CLI, 'stdio', '--state-dir', agent.stateDir],
  };
  const r = await playbook('wait_false', vars);
  const alone = r.tasks['Pivot later, with no daemon']!;
  t.equal(alone.failed, true, 'no daemon: the task fails');
  t.equal(alone.error, 'noDaemon', `error=noDaemon: ${alone.msg}`);
  t.match(alone.msg, /no blockcopy-agent daemon runs/);
  t.notOk(alone.changed, 'no daemon: changed=false');
  t.notOk(existsSync(`${dom.dir}/vda-later.qcow2`), 'no daemon: no copy started');
  const relayed = r.tasks['Pivot later, with the daemon']!;
  t.match(relayed, { changed: true, job: { when_ready: 'pivot' } }, 'with the daemon: changed, the agent will pivot');
  let xml = '';
  for (let i = 0; i < 240 && !xml.includes(`<source file='${dom.dir}/vdb-later.qcow2'`); i++) {
    await new Promise((res) => setTimeout(res, 500));
    xml = (await hv.liveXml(dom)).replace(/<mirror[\s\S]*?<\/mirror>/g, '');
  }
  t.match(xml, `<source file='${dom.dir}/vdb-later.qcow2'`, 'virsh: the daemon pivoted vdb after the module returned');
  t.match(await hv.liveXml(dom), `<source file='${dom.disks[0]!.path}'`, 'virsh: vda untouched');
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

t.test('mTLS: both modules present a client certificate; a bandwidth with a unit', async (t) => {
  const pki = await makePki(t);
  const agent = await serveAgent(t, { config: { tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requireClientCert: true } } });
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  const r = await playbook('mtls', {
    domain: dom.name,
    dir: dom.dir,
    endpoint: agent.url,
    ca_path: pki.ca,
    client_cert: pki.client.cert,
    client_key: pki.client.key,
  });
  t.equal(r.stats.failures, 0, `mtls.yml: every task as expected, refusals included ${r.stderr.slice(-400)}`);
  t.match(r.tasks['Copy through an mTLS endpoint, bandwidth with a unit'], { changed: true, job: { state: 'finished', bandwidth: 64 * MiB } });
  t.notOk(r.tasks['One finished job, its bandwidth in bytes/s']!.failed, 'block_copy_info over mTLS sees the job, bandwidth in bytes/s');
  const bare = r.tasks['Without a client certificate the handshake is refused']!;
  t.match(bare.msg, /cannot reach blockcopy-agent/, `no client certificate: ${bare.msg}`);
  const half = r.tasks['A certificate without its key is a usage error']!;
  t.match(half.msg, /client_cert and client_key go together/, `${half.msg}`);
  t.equal(await hv.compareImages(dom.disks[0]!.path, `${dom.dir}/via-mtls.qcow2`), 'identical', 'qemu-img: the copy equals the disk');
  t.match(
    r.tasks['Certificates from the environment, bandwidth from a template'],
    { changed: true, job: { state: 'finished', bandwidth: 64 * MiB } },
    'BLOCKCOPY_CA/CERT/KEY stand in for the options; a templated number (a string of digits) is bytes/s',
  );
  t.match(JSON.stringify(r.tasks['A bandwidth with an unknown unit is refused by the agent']!), /invalidParams.*unknown unit 'X'/, 'the agent\'s parser says why');
});

t.test('the collection documents its modules and passes the sanity checks that run offline', async (t) => {
  const r = await run('bash', [join(repo, 'ansible/run-sanity.sh')], { maxBuffer: 16 * MiB }).then((x) => ({ code: 0, out: x.stdout + x.stderr }), (e) => ({ code: e.code, out: `${e.stdout}${e.stderr}` }));
  t.equal(r.code, 0, `ansible/run-sanity.sh\n${r.out.split('\n').slice(-15).join('\n')}`);
  // validate-modules itself ran (ansible-test, over Debian's python3-voluptuous), and fails on a
  // module whose argument spec and DOCUMENTATION disagree.
  t.match(r.out, /Running sanity test "validate-modules"/, 'validate-modules ran');
  for (const code of ['doc-default-does-not-match-spec', 'undocumented-parameter', 'doc-choices-do-not-match-spec']) {
    t.match(r.out, `mismatch caught: ${code}`, `validate-modules catches ${code}`);
  }
});
