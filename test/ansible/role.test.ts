// The role, end to end, on a clean Debian 12 root (debootstrap minbase plus python3, which
// Ansible needs on any target): it copies the .deb from the controller and installs it, writes
// config and tokens, and a rerun changes nothing; check mode changes nothing.
// How the root is reached: ansible's built-in `local` connection with pipelining and an
// interpreter that runs /usr/bin/python3 chrooted into the root (in its own mount namespace),
// with Ansible's remote temp directory bound at the same path inside. So every module — copy,
// command, template and its validate — runs inside the root, as over ssh on a hypervisor;
// what community.general.chroot would do, with ansible-core alone.
import t from 'tap';
import { mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { debianRoot, ensurePackage, REPO } from '../helpers/debroot.js';
import { playbook } from '../helpers/ansible.js';

t.test('the role installs the package into a clean Debian 12 root, idempotently', async (t) => {
  const { deb } = await ensurePackage();
  const root = await debianRoot(t);
  const upd = await root.apt(['update']);
  t.equal(upd.code, 0, 'apt-get update in the root');
  const py = await root.apt(['install', 'python3']);
  t.equal(py.code, 0, `python3 in the root (what Ansible needs on a target) ${py.stderr.slice(-300)}`);
  const work = `/var/tmp/blockcopy-ansible-${process.pid}`;
  mkdirSync(join(work, 'tmp'), { recursive: true });
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  // No systemd runs in the root: the role installs the service and says how to start it. (The
  // fact is set because the root shares the host's /proc, whose pid 1 may be systemd.)
  const vars = { dir: work, deb, ansible_service_mgr: 'none', ansible_python_interpreter: root.python(work), ansible_remote_tmp: join(work, 'tmp') };
  const opts = { facts: true, env: { ANSIBLE_PIPELINING: 'True' } };
  const inRoot = (p: string) => join(root.dir, p);
  // Tasks of an included role are named '<role name> : <task>'.
  const task = (r: Awaited<ReturnType<typeof playbook>>, name: string) => {
    const key = Object.keys(r.tasks).find((k) => k === name || k.endsWith(` : ${name}`));
    if (!key) throw new Error(`no task '${name}' in ${JSON.stringify(Object.keys(r.tasks))}`);
    return r.tasks[key];
  };
  const failed = (r: Awaited<ReturnType<typeof playbook>>) => JSON.stringify(Object.entries(r.tasks).filter(([, x]) => x.failed)).slice(0, 800) + r.stderr.slice(-400);

  const dry = await playbook('role', vars, { ...opts, check: true });
  t.equal(dry.stats.failures, 0, `check mode on a fresh host succeeds ${failed(dry)}`);
  t.ok(dry.stats.changed >= 2, `check mode: would change (changed=${dry.stats.changed})`);
  t.equal((await root.exec(['dpkg-query', '-W', 'blockcopy-agent'])).code, 1, 'check mode: nothing installed');

  const first = await playbook('role', vars, opts);
  t.equal(first.stats.failures, 0, `the role succeeds ${failed(first)}`);
  t.match(task(first, 'Install the package'), { changed: true }, 'the package was installed');
  const status = await root.exec(['dpkg-query', '-W', '-f', '${Status} ${Version}', 'blockcopy-agent']);
  t.equal(status.stdout, `install ok installed ${JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version}`, 'dpkg: installed');
  const config = JSON.parse(readFileSync(inRoot('etc/blockcopy-agent/config.json'), 'utf8'));
  t.match(config, { allowedRoots: ['/var/lib/libvirt/images'], listen: { host: '127.0.0.1', port: 7879 },
    auth: { tokensFile: '/etc/blockcopy-agent/tokens.json' }, audit: { file: '/var/log/blockcopy-agent/audit.log' } });
  t.equal((await root.exec(['blockcopy-agent', 'config', 'check', '/etc/blockcopy-agent/config.json'])).code, 0, 'the written config passes config check');
  t.equal(statSync(inRoot('etc/blockcopy-agent/tokens.json')).mode & 0o777, 0o600, 'the tokens file is 0600');
  t.match(JSON.parse(readFileSync(inRoot('etc/blockcopy-agent/tokens.json'), 'utf8')).tokens, [{ name: 'ops' }, { name: 'monitor', readOnly: true }]);
  t.match(readFileSync(inRoot('lib/systemd/system/blockcopy-agent.service'), 'utf8'),
    /^ExecStart=\/usr\/lib\/blockcopy-agent\/node .* serve --config \/etc\/blockcopy-agent\/config\.json$/m, 'the packaged unit');
  t.match(task(first, 'Say how to run the agent without systemd'), { msg: /has no systemd/ }, 'no systemd in the root: the role says so');
  t.equal((await root.exec(['blockcopy-agent', '--version'])).code, 0, 'blockcopy-agent runs in the root');

  const again = await playbook('role', vars, opts);
  t.equal(again.stats.failures, 0, `rerun succeeds ${failed(again)}`);
  t.equal(again.stats.changed, 0, `rerun: changed=0 ${JSON.stringify(Object.keys(again.tasks).filter((k) => again.tasks[k]!.changed))}`);
  const dryAgain = await playbook('role', vars, { ...opts, check: true });
  t.equal(dryAgain.stats.failures, 0, 'check mode on the installed host succeeds');
  t.equal(dryAgain.stats.changed, 0, 'check mode on the installed host: changed=0');
});
