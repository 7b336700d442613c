// The shipped unit under a real systemd (this host's, version 252, as PID 1 of its own
// namespaces: test/helpers/systemd-pid1.ts): `systemctl start` returns only once the agent
// answers, `systemctl reload` rotates a token, the watchdog is fed, `systemctl stop` is told
// STOPPING=1. Only ExecStart differs from the shipped unit (this checkout's build and node).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from '../../harness/agent.js';
import { scratchDir } from '../../harness/hypervisor.js';
import { NODE_FLAGS } from '../../src/cli/node-flags.js';
import { AgentClient } from '../../src/client/index.js';
import { bootSystemd, systemdUnavailable } from '../helpers/systemd-pid1.js';
import { attempt } from '../helpers/ws-probe.js';
import { rmSync } from 'node:fs';

const UNIT = fileURLToPath(new URL('../../../systemd/blockcopy-agent.service', import.meta.url));
const unavailable = systemdUnavailable();

t.test('start, reload, watchdog, stop under systemd', { skip: unavailable ?? false }, async (t) => {
  const dir = scratchDir('systemd-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const units = join(dir, 'units');
  const files = join(dir, 'files');
  mkdirSync(join(units, 'blockcopy-agent.service.d'), { recursive: true });
  mkdirSync(files);
  writeFileSync(join(units, 'blockcopy-agent.service'), readFileSync(UNIT));
  writeFileSync(
    join(units, 'blockcopy-agent.service.d', 'test.conf'),
    `[Service]\nExecStart=\nExecStart=${process.execPath} ${NODE_FLAGS.join(' ')} ${CLI} serve --config /run/bctest/config.json\n` +
      'StandardOutput=append:/run/bctest/agent.log\nStandardError=append:/run/bctest/agent.log\n',
  );
  const old = randomBytes(24).toString('hex');
  const fresh = randomBytes(24).toString('hex');
  const tokens = (token: string) => JSON.stringify({ tokens: [{ name: 'admin', token }] });
  writeFileSync(join(files, 'tokens.json'), tokens(old));
  writeFileSync(
    join(files, 'config.json'),
    JSON.stringify({ auth: { tokensFile: '/run/bctest/tokens.json' }, listen: { host: '127.0.0.1', port: 0 }, allowedRoots: ['/srv'] }),
  );
  const sd = await bootSystemd(t, dir, units, files);
  const agentLog = () => readFileSync(sd.inside('/run/bctest/agent.log'), 'utf8');
  t.teardown(() => {
    if (t.passing() && !process.env.KEEP) return;
    t.comment(`agent log:\n${agentLog()}`);
    t.comment(`systemd log (tail):\n${sd.log().slice(-4000)}`);
  });

  // systemctl start: returns once READY=1 came, and then the agent answers at once.
  const start = await sd.systemctl('start', 'blockcopy-agent');
  t.equal(start.code, 0, `systemctl start: ${start.out.trim() || 'ok'}`);
  const status = await sd.show('blockcopy-agent', 'StatusText');
  const port = /^Serving on 127\.0\.0\.1:(\d+)$/.exec(status)?.[1];
  t.ok(port, `StatusText: ${status}`);
  const url = `ws://127.0.0.1:${port}`;
  const client = await AgentClient.connect(url, { headers: { authorization: `Bearer ${old}` } });
  t.same(await client.call('listJobs', {}).then((r) => typeof r), 'object', 'answers right after systemctl start returned');
  client.close();
  const mainPid = await sd.show('blockcopy-agent', 'MainPID');
  t.match(
    sd.log(),
    new RegExp(`Got notification message from PID ${mainPid} \\(READY=1, MAINPID=${mainPid}, STATUS=Serving on`),
    'systemd got READY=1 from the main pid',
  );
  t.equal(await sd.show('blockcopy-agent', 'ActiveState'), 'active');

  // systemctl reload: the tokens file rotated, the old token refused, the new one taken.
  writeFileSync(sd.inside('/run/bctest/tokens.json'), tokens(fresh));
  const reload = await sd.systemctl('reload', 'blockcopy-agent');
  t.equal(reload.code, 0, `systemctl reload: ${reload.out.trim() || 'ok'}`);
  t.equal(await attempt(url, { headers: { authorization: `Bearer ${old}` } }), 'HTTP 401', 'the old token is refused');
  t.equal(await attempt(url, { headers: { authorization: `Bearer ${fresh}` } }), 'open', 'the new token is accepted');
  t.match(await sd.show('blockcopy-agent', 'StatusText'), /^Credentials reloaded/, 'StatusText says so');
  t.match(
    sd.log(),
    new RegExp(`Got notification message from PID ${mainPid} \\(RELOADING=1, MONOTONIC_USEC=\\d+`),
    'systemd got RELOADING=1',
  );
  t.equal(await sd.show('blockcopy-agent', 'MainPID'), mainPid, 'the same process');

  // The watchdog: WatchdogSec=30s, fed every 7.5 s while both loops turn.
  t.equal(await sd.show('blockcopy-agent', 'WatchdogUSec'), '30s');
  const fed = await sd.show('blockcopy-agent', 'WatchdogTimestampMonotonic');
  let fedAgain = fed;
  for (let i = 0; i < 60 && fedAgain === fed; i++) {
    await new Promise((r) => setTimeout(r, 500));
    fedAgain = await sd.show('blockcopy-agent', 'WatchdogTimestampMonotonic');
  }
  t.not(fedAgain, fed, `the watchdog is fed (${fed} → ${fedAgain})`);

  // systemctl stop: STOPPING=1, a clean exit, nothing failed.
  const stop = await sd.systemctl('stop', 'blockcopy-agent');
  t.equal(stop.code, 0, `systemctl stop: ${stop.out.trim() || 'ok'}`);
  t.match(sd.log(), new RegExp(`Got notification message from PID ${mainPid} \\(STOPPING=1`), 'systemd got STOPPING=1');
  t.equal(await sd.show('blockcopy-agent', 'ActiveState'), 'inactive');
  t.equal(await sd.show('blockcopy-agent', 'Result'), 'success');
  t.equal(await sd.show('blockcopy-agent', 'ExecMainStatus'), '0');
});
