// The service unit: systemd itself accepts it, and it keeps the hardening it promises.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { NODE_FLAGS } from '../../src/cli/node-flags.js';

const unit = fileURLToPath(new URL('../../../systemd/blockcopy-agent.service', import.meta.url));

t.test('systemd-analyze verify passes', async (t) => {
  // The unit names the packaged runtime, /usr/lib/blockcopy-agent/node, which this host may not
  // have (verify checks that it is executable): verified here with this test's node in its
  // place; test/packaging/deb.test.ts runs the ExecStart command of the installed package.
  const dir = mkdtempSync(join(tmpdir(), 'unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const copy = join(dir, 'blockcopy-agent.service');
  writeFileSync(
    copy,
    readFileSync(unit, 'utf8').replace(/^ExecStart=\/usr\/lib\/blockcopy-agent\/node /m, `ExecStart=${process.execPath} `),
  );
  const r = await promisify(execFile)('systemd-analyze', ['verify', copy]).then(
    (x) => ({ code: 0, out: x.stderr }),
    (e) => ({ code: e.code, out: String(e.stderr) }),
  );
  t.equal(r.code, 0, `systemd-analyze verify: ${r.out.trim() || 'clean'}`);
  t.notMatch(r.out, /blockcopy-agent\.service:/, 'no complaint about the unit');
});

t.test('hardening directives', async (t) => {
  const text = readFileSync(unit, 'utf8');
  for (const d of [
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
    'Restart=on-failure',
    'StateDirectory=blockcopy-agent',
    'After=network.target libvirtd.service',
    'SystemCallFilter=@system-service',
  ]) {
    t.match(text, d, d);
  }
});

t.test('the agent runs with the V8 flags it is measured with', async (t) => {
  const exec = /^ExecStart=(.*)$/m.exec(readFileSync(unit, 'utf8'))?.[1] ?? '';
  t.match(
    exec,
    new RegExp(
      `^/usr/lib/blockcopy-agent/node ${NODE_FLAGS.join(' ')} /usr/lib/blockcopy-agent/dist/src/cli/main\\.js serve --config /etc/blockcopy-agent/config\\.json$`,
    ),
    `ExecStart: ${exec}`,
  );
});

t.test('supervised: readiness, reload, watchdog', async (t) => {
  const text = readFileSync(unit, 'utf8');
  const values = (key: string) => [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]);
  // READY=1 from the agent (src/sd-notify.ts), from its main process only.
  t.same(values('Type'), ['notify']);
  t.same(values('NotifyAccess'), ['main']);
  // SIGHUP is the agent's reload; RELOADING=1 … READY=1 frame it.
  t.same(values('ExecReload'), ['/bin/kill -HUP $MAINPID']);
  // The notification is an AF_UNIX datagram: the address families must keep AF_UNIX.
  t.match(values('RestrictAddressFamilies').join(' '), /\bAF_UNIX\b/);
  // The watchdog pings four times a period, from a one-second libvirt loop counter: at least 5 s.
  const watchdog = values('WatchdogSec');
  t.equal(watchdog.length, 1, 'WatchdogSec set');
  const sec = /^(\d+)s$/.exec(watchdog[0] ?? '')?.[1];
  t.ok(sec && Number(sec) >= 5, `WatchdogSec=${watchdog[0]} is at least 5 s`);
  // Start covers the first connection's retries (about two minutes at worst).
  t.match(values('TimeoutStartSec'), ['3min']);
  t.notMatch(text, /^Type=simple$/m, 'no longer Type=simple');
});
