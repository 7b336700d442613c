// The role, end to end, on a clean Debian 12 root (debootstrap minbase plus python3, which
// Ansible needs on any target; no python3-apt, which ansible.builtin.apt installs itself): it
// copies the .deb from the controller and installs it with ansible.builtin.apt (deb), writes
// config and tokens (the API's and the scrapers'), and a rerun changes nothing; check mode
// changes nothing; scrapers' tokens given two ways are refused before anything is done.
// (test/helpers/role-root.ts says how the root is reached; role-repo.test.ts installs from an
// apt repository.)
import t from 'tap';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ensurePackage, REPO } from '../helpers/debroot.js';
import { convergedAgain, failed, roleHost, task } from '../helpers/role-root.js';

t.test('the role installs the package file into a clean Debian 12 root, idempotently', async (t) => {
  const { deb } = await ensurePackage();
  const { root, role } = await roleHost(t, ['python3']);
  const vars = { deb, domains: ['bc-*', 'guest?'], metrics_tokens: [{ name: 'prometheus', token: 'c'.repeat(40) }] };
  const inRoot = (p: string) => join(root.dir, p);

  const dry = await role(vars, { check: true });
  t.equal(dry.stats.failures, 0, `check mode on a fresh host succeeds ${failed(dry)}`);
  t.ok(dry.stats.changed >= 2, `check mode: would change (changed=${dry.stats.changed})`);
  t.match(task(dry, 'Install the package (check mode)'), { changed: true, msg: /python3-apt/ }, 'check mode: would install');
  t.equal((await root.exec(['dpkg-query', '-W', 'blockcopy-agent'])).code, 1, 'check mode: nothing installed');

  const first = await role(vars);
  t.equal(first.stats.failures, 0, `the role succeeds ${failed(first)}`);
  t.match(task(first, 'Install the package file'), { changed: true }, 'ansible.builtin.apt installed the package');
  const status = await root.exec(['dpkg-query', '-W', '-f', '${Status} ${Version}', 'blockcopy-agent']);
  t.equal(status.stdout, `install ok installed ${JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version}`, 'dpkg: installed');
  const config = JSON.parse(readFileSync(inRoot('etc/blockcopy-agent/config.json'), 'utf8'));
  t.match(config, { allowedRoots: ['/var/lib/libvirt/images'], listen: { host: '127.0.0.1', port: 7879 },
    auth: { tokensFile: '/etc/blockcopy-agent/tokens.json' }, audit: { file: '/var/log/blockcopy-agent/audit.log' } });
  t.same(config.domains, ['bc-*', 'guest?'], 'config: the domains this agent manages');
  t.same(config.metrics, { enabled: true, host: '127.0.0.1', port: 9879, tokensFile: '/etc/blockcopy-agent/metrics-tokens.json' },
    'config: metrics on, scrapers authenticated by their own tokens file');
  t.equal((await root.exec(['blockcopy-agent', 'config', 'check', '/etc/blockcopy-agent/config.json'])).code, 0, 'the written config passes config check');
  t.equal(statSync(inRoot('etc/blockcopy-agent/tokens.json')).mode & 0o777, 0o600, 'the tokens file is 0600');
  t.match(JSON.parse(readFileSync(inRoot('etc/blockcopy-agent/tokens.json'), 'utf8')).tokens, [{ name: 'ops' }, { name: 'monitor', readOnly: true }]);
  t.equal(statSync(inRoot('etc/blockcopy-agent/metrics-tokens.json')).mode & 0o777, 0o600, 'the scrapers\' tokens file is 0600');
  t.same(JSON.parse(readFileSync(inRoot('etc/blockcopy-agent/metrics-tokens.json'), 'utf8')).tokens, vars.metrics_tokens,
    'the scrapers\' tokens, apart from the API\'s');
  t.match(readFileSync(inRoot('lib/systemd/system/blockcopy-agent.service'), 'utf8'),
    /^ExecStart=\/usr\/lib\/blockcopy-agent\/node .* serve --config \/etc\/blockcopy-agent\/config\.json$/m, 'the packaged unit');
  t.match(task(first, 'Say how to run the agent without systemd'), { msg: /has no systemd/ }, 'no systemd in the root: the role says so');
  t.equal((await root.exec(['blockcopy-agent', '--version'])).code, 0, 'blockcopy-agent runs in the root');

  const dryAgain = await convergedAgain(t, role, vars);
  t.match(task(dryAgain, 'Install the package file'), { changed: false }, 'check mode asked apt (python3-apt is there now)');

  const before = readFileSync(inRoot('etc/blockcopy-agent/config.json'), 'utf8');
  const both = await role({ ...vars, metrics_tokens_file: '/etc/blockcopy-agent/other.json' });
  t.equal(both.stats.failures, 1, 'scrapers\' tokens given two ways: refused');
  t.match(task(both, "Check that the scrapers' tokens are given one way"), { failed: true, msg: /not both/ }, 'and says which two');
  t.equal(readFileSync(inRoot('etc/blockcopy-agent/config.json'), 'utf8'), before, 'the config is unchanged');
});
