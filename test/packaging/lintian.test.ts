// The Debian package by the book: `npm run package` (dpkg-buildpackage, debhelper) gives a .deb
// that lintian passes with no error, no warning and no info tag, with an override only where
// debian/blockcopy-agent.lintian-overrides says why; it has its man page, blockcopy-agent(8),
// made from the CLI's own --help; dh_shlibdeps found the addon's libvirt0; the unit and the
// conffile are where debhelper puts them.
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ensurePackage, REPO } from '../helpers/debroot.js';

const run = promisify(execFile);
const out = (cmd: string, args: string[]) =>
  run(cmd, args, { maxBuffer: 64 * 1024 * 1024 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
  );

t.test('lintian: no error, no warning, no info tag', async (t) => {
  const { deb } = await ensurePackage();
  const l = await out('lintian', ['--fail-on', 'error,warning', '--display-info', '--tag-display-limit', '0', deb]);
  const tags = l.stdout.split('\n').filter((line) => /^[EWIXP]: /.test(line));
  t.equal(l.code, 0, `lintian --fail-on error,warning exits 0 ${l.stdout.slice(-1500)}${l.stderr.slice(-500)}`);
  t.same(tags, [], 'no tag at any level (an unused override would be one)');
});

t.test('every lintian override says why', async (t) => {
  // A comment right above an override, or above the run of overrides it belongs to; a blank line
  // ends the run.
  const lines = readFileSync(join(REPO, 'debian/blockcopy-agent.lintian-overrides'), 'utf8').split('\n');
  let reason = false;
  let overrides = 0;
  for (const line of lines) {
    if (!line.trim()) reason = false;
    else if (line.startsWith('#')) reason = true;
    else {
      overrides++;
      t.ok(reason, `a comment says why: ${line}`);
    }
  }
  t.ok(overrides > 0, 'the overrides file is read');
});

t.test('the .deb: man page, Depends from dh_shlibdeps, unit, conffile', async (t) => {
  const { deb } = await ensurePackage();
  const contents = (await out('dpkg-deb', ['-c', deb])).stdout;
  t.match(contents, /\.\/usr\/share\/man\/man8\/blockcopy-agent\.8\.gz$/m, 'blockcopy-agent(8) is installed');
  t.match(contents, /\.\/lib\/systemd\/system\/blockcopy-agent\.service$/m, 'the unit');
  const depends = (await out('dpkg-deb', ['-f', deb, 'Depends'])).stdout;
  t.match(depends, /\blibvirt0 \(>= /, "Depends: libvirt0, from the addon's NEEDED");
  t.match(depends, /\blibc6 \(>= /, 'Depends: libc6');
  const conffiles = (await out('sh', ['-c', `dpkg-deb --ctrl-tarfile ${deb} | tar -xOf - ./conffiles`])).stdout;
  t.equal(conffiles.trim(), '/etc/blockcopy-agent/config.json', 'the config is the conffile');
  const postinst = (await out('sh', ['-c', `dpkg-deb --ctrl-tarfile ${deb} | tar -xOf - ./postinst`])).stdout;
  t.match(postinst, /# Automatically added by dh_installsystemd/, 'dh_installsystemd wrote the unit handling');

  // The man page, as man renders it: help2man's sections from --help and the include file.
  const page = await out('sh', ['-c', `dpkg-deb --fsys-tarfile ${deb} | tar -xOf - ./usr/share/man/man8/blockcopy-agent.8.gz | gunzip`]);
  const text = await out('sh', ['-c', `printf %s "$0" | MANWIDTH=100 man --warnings -l - 2>&1`, page.stdout]);
  t.match(text.stdout, /^NAME\n\s+blockcopy-agent - live block copy/m, 'NAME');
  t.match(text.stdout, /^SYNOPSIS\n\s+blockcopy-agent serve \[options\]/m, 'SYNOPSIS from the Usage: lines');
  t.match(text.stdout, /^FILES\n\s+\/etc\/blockcopy-agent\/config\.json/m, 'FILES from the include file');
  t.match(
    text.stdout,
    /^( +)copy DOMAIN DISK DEST \[options\]\n\1 +copy +a +running +disk/m,
    'each client command: its line, then its text',
  );
  t.notMatch(text.stdout, /^\s+blockcopy-agent\s+(copy|commit|pull|move)\s+DOMAIN/m, 'no wrapped command line run into its neighbours');
  t.notMatch(text.stdout, /warning|troff:/, 'groff has no warning');
});
