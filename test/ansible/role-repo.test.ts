// The role installing from an apt repository (blockcopy_agent_apt_repo) on a clean Debian 12
// root with python3 and python3-apt: a local file-based repository made with dpkg-scanpackages
// from the .deb `npm run package` builds, as `deb [trusted=yes] file:/srv/blockcopy-repo ./`.
// Check mode changes nothing (no source added, nothing installed) and says it would install;
// the run adds the source and installs the package by name; a rerun and check mode change
// nothing. (test/helpers/role-root.ts says how the root is reached.)
import t from 'tap';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { ensurePackage, REPO } from '../helpers/debroot.js';
import { convergedAgain, failed, roleHost, task } from '../helpers/role-root.js';

const run = promisify(execFile);

t.test('the role installs the package from an apt repository, idempotently', async (t) => {
  const { deb } = await ensurePackage();
  const { root, role } = await roleHost(t, ['python3', 'python3-apt']);
  // The repository, inside the root (removed with it): the package and its index.
  const repo = join(root.dir, 'srv/blockcopy-repo');
  mkdirSync(repo, { recursive: true });
  copyFileSync(deb, join(repo, basename(deb)));
  const { stdout: index } = await run('dpkg-scanpackages', ['--multiversion', '.', '/dev/null'], { cwd: repo, maxBuffer: 16 * 1024 * 1024 });
  writeFileSync(join(repo, 'Packages'), index);
  t.match(index, /^Package: blockcopy-agent$/m, 'dpkg-scanpackages indexed the package');
  const vars = { apt_repo: 'deb [trusted=yes] file:/srv/blockcopy-repo ./' };
  const sources = join(root.dir, 'etc/apt/sources.list.d/blockcopy-agent.list');

  const dry = await role(vars, { check: true });
  t.equal(dry.stats.failures, 0, `check mode on a fresh host succeeds ${failed(dry)}`);
  t.match(task(dry, 'Add the apt repository'), { changed: true }, 'check mode: would add the source');
  t.match(task(dry, 'Install the package (check mode)'), { changed: true, msg: /from deb \[trusted=yes\] file:\/srv\/blockcopy-repo/ }, 'check mode: would install');
  t.notOk(existsSync(sources), 'check mode: no source added');
  t.equal((await root.exec(['dpkg-query', '-W', 'blockcopy-agent'])).code, 1, 'check mode: nothing installed');

  const first = await role(vars);
  t.equal(first.stats.failures, 0, `the role succeeds ${failed(first)}`);
  t.equal(readFileSync(sources, 'utf8'), `${vars.apt_repo}\n`, 'the source is in sources.list.d');
  t.match(task(first, 'Install the package from the repository'), { changed: true }, 'ansible.builtin.apt installed it by name');
  const status = await root.exec(['dpkg-query', '-W', '-f', '${Status} ${Version}', 'blockcopy-agent']);
  t.equal(status.stdout, `install ok installed ${JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version}`, 'dpkg: installed');
  t.notOk(existsSync(join(root.dir, 'var/cache/blockcopy-agent')), 'nothing was copied from the controller');
  t.equal((await root.exec(['blockcopy-agent', 'config', 'check', '/etc/blockcopy-agent/config.json'])).code, 0, 'the written config passes config check');

  await convergedAgain(t, role, vars);
});
