// The Debian package, for real: `npm run package` builds it (lintian clean), it installs into a
// clean Debian 12 root (debootstrap minbase: no compiler, no Node.js) with apt resolving its
// Depends, and the installed agent — started with the unit's own ExecStart — copies and pivots
// a running VM's disk on the host's libvirtd; the packaged CLI reaches it as the modules do
// (`blockcopy-agent stdio`, relaying to the daemon). Then it purges cleanly.
import t from 'tap';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as hv from '../../harness/hypervisor.js';
import { debianRoot, ensurePackage, REPO } from '../helpers/debroot.js';

const MiB = 1024 * 1024;

t.test('the .deb installs on a clean Debian 12 root and moves a running disk', async (t) => {
  const { deb, build } = await ensurePackage();
  if (build) t.notMatch(build.stdout + build.stderr, /^E: /m, 'lintian reports no error');
  const root = await debianRoot(t);

  const bare = await root.exec(['sh', '-c', 'for c in cc gcc make node nodejs npm python3; do command -v $c; done; true']);
  t.equal(bare.stdout.trim(), '', 'the root has no compiler, Node.js, npm or Python');

  const { execFileSync } = await import('node:child_process');
  execFileSync('cp', [deb, join(root.dir, 'tmp/agent.deb')]);
  const first = await root.exec(['dpkg', '-i', '/tmp/agent.deb']);
  t.not(first.code, 0, 'dpkg -i alone stops at the missing dependencies');
  t.match(first.stderr, /depends on libvirt0/, 'Depends names libvirt0');
  const upd = await root.apt(['update']);
  t.equal(upd.code, 0, `apt-get update ${upd.stderr.slice(-300)}`);
  const fix = await root.apt(['-f', 'install']);
  t.equal(fix.code, 0, `apt-get -f install ${(fix.stdout + fix.stderr).slice(-600)}`);
  const status = await root.exec(['dpkg-query', '-W', '-f', '${Status} ${Version}', 'blockcopy-agent']);
  const version = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version;
  t.equal(status.stdout, `install ok installed ${version}`, 'dpkg: installed');

  const v = await root.exec(['blockcopy-agent', '--version']);
  t.equal(v.stdout.trim(), version, 'blockcopy-agent on PATH runs');
  const nodeV = await root.exec(['/usr/lib/blockcopy-agent/node', '-v']);
  t.equal(nodeV.stdout.trim(), process.version, 'it carries the Node.js runtime it was tested with');
  const conff = await root.exec(['dpkg-query', '-W', '-f', '${Conffiles}', 'blockcopy-agent']);
  t.match(conff.stdout, '/etc/blockcopy-agent/config.json', 'config.json is a conffile');
  const check = await root.exec(['blockcopy-agent', 'config', 'check', '/etc/blockcopy-agent/config.json']);
  t.equal(check.code, 0, 'the packaged config passes config check');
  t.equal(statSync(join(root.dir, 'var/lib/blockcopy-agent')).mode & 0o777, 0o700, 'state directory 0700');
  const unitText = readFileSync(join(root.dir, 'lib/systemd/system/blockcopy-agent.service'), 'utf8');
  t.equal(unitText, readFileSync(join(REPO, 'systemd/blockcopy-agent.service'), 'utf8'), "the unit is the repository's");
  t.ok(
    statSync(join(root.dir, 'etc/systemd/system/multi-user.target.wants/blockcopy-agent.service'), { throwIfNoEntry: false }) !==
      undefined ||
      readFileSync(join(root.dir, 'var/lib/systemd/deb-systemd-helper-enabled/blockcopy-agent.service.dsh-also'), 'utf8').length > 0,
    'postinst enabled the service (deb-systemd-helper) without systemd running',
  );

  // The daemon exactly as systemd would start it (ExecStart), on a free port; the destination
  // directory is allowed through the environment, as /etc/default/blockcopy-agent would.
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  const w = { pattern: 0xe7, offset: 0, length: 16 * MiB };
  await hv.guestWrite(dom, 'vda', w);
  const exec = /^ExecStart=(.*)$/m.exec(unitText)![1]!.split(' ');
  const env = { BLOCKCOPY_ALLOWED_ROOTS: dom.dir, BLOCKCOPY_LISTEN: '127.0.0.1:0' };
  const daemon = root.spawn(exec, env);
  let log = '';
  const listening = new Promise<void>((resolve, reject) => {
    // The agent logs JSON lines on stderr (journald takes them under systemd).
    const onData = (d: Buffer) => {
      log += d;
      if (log.includes('"listening"')) resolve();
    };
    daemon.stdout!.on('data', onData);
    daemon.stderr!.on('data', onData);
    daemon.on('exit', (code) => reject(new Error(`the agent exited (${code}): ${log.slice(-500)}`)));
  });
  const exited = new Promise<number | null>((r) => daemon.on('exit', (code) => r(code)));
  t.teardown(async () => {
    if (daemon.exitCode === null) {
      daemon.kill('SIGTERM');
      await exited;
    }
  });
  await listening;
  t.pass("the unit's ExecStart serves inside the root");

  const dest = join(dom.dir, 'moved.qcow2');
  const copy = await root.exec(
    ['blockcopy-agent', 'copy', dom.name, 'vda', dest, '--format', 'qcow2', '--wait', '--pivot', '--timeout', '120', '--json'],
    env,
  );
  t.equal(copy.code, 0, `blockcopy-agent copy --pivot: ${copy.stderr.slice(-300)}`);
  t.match(copy.stdout, '"state":"pivoted"', 'the CLI reports the job pivoted');
  const xml = await hv.liveXml(dom);
  t.match(xml, `<source file='${dest}'`, 'virsh: the guest runs on the copy');
  t.notMatch(xml, /<mirror/, 'virsh: no copy job left');
  t.ok(await hv.readPattern(dest, 'qcow2', w), 'qemu-img: the copy holds what the guest wrote');
  const jobs = await root.exec(['blockcopy-agent', 'jobs', dom.name, '--json'], env);
  t.match(jobs.stdout, '"pivoted"', 'the daemon owns the job (the stdio command relayed to it)');
  daemon.kill('SIGTERM');
  t.equal(await exited, 0, 'the agent stops cleanly on SIGTERM');

  const purge = await root.exec(['dpkg', '--purge', 'blockcopy-agent']);
  t.equal(purge.code, 0, `dpkg --purge ${purge.stderr}`);
  const left = await root.exec([
    'sh',
    '-c',
    'ls -d /usr/lib/blockcopy-agent /var/lib/blockcopy-agent /etc/blockcopy-agent /usr/bin/blockcopy-agent 2>/dev/null; true',
  ]);
  t.equal(left.stdout.trim(), '', 'purge leaves nothing behind');
});
