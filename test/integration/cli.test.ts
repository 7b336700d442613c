// The command-line client against the real agent and libvirtd: copy --wait --pivot, --json
// output line by line, Ctrl-C in phase 1, timeout, errors and their exit codes, remote --url.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent, stateDir, TEST_AGENT_ENV } from '../../harness/agent.js';

const MiB = 1024 * 1024;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(
  args: string[],
  opts: { onLine?: (line: string, child: ReturnType<typeof spawn>) => void; env?: NodeJS.ProcessEnv } = {},
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...TEST_AGENT_ENV, ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      stdout += d;
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        opts.onLine?.(buf.slice(0, nl), child);
        buf = buf.slice(nl + 1);
      }
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('copy --wait --pivot --json: exits 0, every line is JSON, the guest moved', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0xf1, offset: 0, length: 48 * MiB });
  const dest = `${dom.dir}/cli.qcow2`;
  const r = await cli([
    'copy',
    dom.name,
    'vda',
    dest,
    '--format',
    'qcow2',
    // Phase 1 lasts about 3 s: long enough for progress lines even on a loaded host.
    '--bandwidth',
    '16M',
    '--wait',
    '--pivot',
    '--json',
    '--state-dir',
    stateDir(t),
  ]);
  t.equal(r.code, 0, `exit 0 ${r.stderr}`);
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.ok(
    lines.some((l) => l.event === 'job.changed' && l.job.state === 'copying'),
    'progress lines',
  );
  t.match(
    lines[lines.length - 1],
    { event: 'pivoted', job: { state: 'pivoted', destination: { path: dest } } },
    'the last line says pivoted',
  );
  t.match(await hv.liveXml(dom), `<source file='${dest}'`, 'virsh: the guest runs on the copy');
});

t.test('copy-group --finish --json, then group: one pause, every disk finished', async (t) => {
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 32 },
      { format: 'raw', sizeMiB: 32 },
    ],
  });
  for (const d of ['vda', 'vdb']) await hv.guestWrite(dom, d, { pattern: 0xf4, offset: 0, length: 8 * MiB });
  const sd = stateDir(t);
  const r = await cli([
    'copy-group',
    dom.name,
    `vda=${dom.dir}/g-a.qcow2`,
    `vdb=${dom.dir}/g-b.raw`,
    '--finish',
    '--group-id',
    `cli-${dom.name}`,
    '--json',
    '--state-dir',
    sd,
  ]);
  t.equal(r.code, 0, `exit 0 ${r.stderr}`);
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.ok(
    lines.some((l) => l.event === 'jobs.changed' && l.jobs.length >= 1),
    'progress lines for the group',
  );
  t.match(
    lines.at(-1),
    { event: 'group', group: { groupId: `cli-${dom.name}`, state: 'finished', lastSwitch: { operation: 'finish' } } },
    'the last line: finished in one pause',
  );
  const info = await cli(['group', `cli-${dom.name}`, '--json', '--state-dir', sd]);
  t.match(
    JSON.parse(info.stdout),
    {
      group: {
        state: 'finished',
        jobs: [
          { disk: 'vda', state: 'finished' },
          { disk: 'vdb', state: 'finished' },
        ],
      },
    },
    'group ID shows it',
  );
  t.equal(
    await hv.compareImages(dom.disks[1]!.path, `${dom.dir}/g-b.raw`),
    'identical',
    'qemu-img compare: the copy equals the source (nothing wrote since)',
  );
  const bad = await cli(['copy-group', dom.name, 'vda', '--state-dir', sd]);
  t.equal(bad.code, 2, 'DISK without =DEST: usage error');
});

t.test('Ctrl-C during phase 1 cancels the copy and says so', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 128 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0xf2, offset: 0, length: 96 * MiB });
  let sent = false;
  const r = await cli(
    ['copy', dom.name, 'vda', `${dom.dir}/ctrlc.qcow2`, '--bandwidth', '1M', '--wait', '--json', '--state-dir', stateDir(t)],
    {
      onLine: (line, child) => {
        if (!sent && JSON.parse(line).event === 'job.changed') {
          sent = true;
          child.kill('SIGINT');
        }
      },
    },
  );
  t.equal(r.code, 130, 'exit 130');
  const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
  t.match(last, { event: 'interrupted', action: 'cancelled' }, 'says it cancelled the copy');
  const xml = await hv.liveXml(dom);
  t.notMatch(xml, /<mirror/, 'no copy left');
  t.match(xml, `<source file='${dom.disks[0]!.path}'`, 'the guest stays on its source');
});

t.test('exit codes: timeout, agent error, usage, connection', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 128 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0xf3, offset: 0, length: 96 * MiB });
  const dir = stateDir(t);
  const timeout = await cli([
    'copy',
    dom.name,
    'vda',
    `${dom.dir}/slow.qcow2`,
    '--bandwidth',
    '1M',
    '--wait',
    '--timeout',
    '1',
    '--json',
    '--state-dir',
    dir,
  ]);
  t.equal(timeout.code, 4, 'timeout: exit 4');
  t.match(JSON.parse(timeout.stdout.trim().split('\n').pop()!), { event: 'timeout', job: { state: 'cancelled' } });
  const unknown = await cli(['copy', 'bctest-no-such', 'vda', `${dom.dir}/x.qcow2`, '--state-dir', dir]);
  t.equal(unknown.code, 1, 'agent error: exit 1');
  t.match(JSON.parse(unknown.stderr.trim()), { error: 'notFound' }, 'the error name on stderr');
  // A usage error starts nothing: no local agent is spawned (it would create its state directory).
  const untouched = join(dir, 'never-created');
  const usage = [
    ['copy', dom.name],
    ['copy', dom.name, 'vda', '/x', '--pivot', '--finish'],
    ['copy', dom.name, 'vda', '/x', '--bandwidth', 'fast'],
    ['copy-group', dom.name],
    ['copy-group', dom.name, 'vda'],
    ['copy-group', dom.name, 'vda=/x', '--pivot', '--finish'],
    ['info', dom.name],
    ['pivot-group'],
    ['call'],
  ];
  for (const args of usage) {
    const r = await cli([...args, '--state-dir', untouched]);
    t.equal(r.code, 2, `usage error, exit 2: ${args.join(' ')}`);
  }
  t.notOk(existsSync(untouched), 'no agent was started for a usage error');
  t.equal((await cli(['jobs', '--url', 'ws://127.0.0.1:1'])).code, 3, 'no agent there: exit 3');
});

t.test('remote: the token from a file or the environment, never needed in argv', async (t) => {
  const agent = await serveAgent(t);
  const dir = stateDir(t);
  const file = join(dir, 'token');
  writeFileSync(file, agent.token + '\n', { mode: 0o600 });
  const viaFile = await cli(['call', 'capabilities', '--url', agent.url, '--token-file', file, '--json']);
  t.equal(viaFile.code, 0, '--token-file: connected');
  t.match(JSON.parse(viaFile.stdout), { agent: { name: 'blockcopy-agent' } });
  t.equal(viaFile.stderr, '', 'no warning');
  const viaEnv = await cli(['call', 'capabilities', '--url', agent.url, '--json'], { env: { BLOCKCOPY_TOKEN: agent.token } });
  t.same([viaEnv.code, viaEnv.stderr], [0, ''], 'BLOCKCOPY_TOKEN: connected, no warning');
  const viaArgv = await cli(['call', 'capabilities', '--url', agent.url, '--token', agent.token, '--json']);
  t.equal(viaArgv.code, 0, '--token still works');
  t.match(viaArgv.stderr, /warning: --token shows the token to every user .*--token-file/, 'but warns on stderr');
  t.notOk(viaArgv.stderr.includes(agent.token), 'the warning does not repeat the token');
  const both = await cli(['call', 'capabilities', '--url', agent.url, '--token', agent.token, '--token-file', file]);
  t.equal(both.code, 2, '--token with --token-file: usage error');
  const missing = await cli(['call', 'capabilities', '--url', agent.url, '--token-file', join(dir, 'nope')]);
  t.equal(missing.code, 2, 'an unreadable token file: usage error');
  t.match(missing.stderr, /--token-file: cannot read .*ENOENT/);
  writeFileSync(file, '\n');
  t.equal((await cli(['call', 'capabilities', '--url', agent.url, '--token-file', file])).code, 2, 'an empty token file: usage error');
});

t.test('remote: --url with a token, call and info', async (t) => {
  const agent = await serveAgent(t);
  const caps = await cli(['call', 'capabilities', '--url', agent.url, '--json'], { env: { BLOCKCOPY_TOKEN: agent.token } });
  t.equal(caps.code, 0);
  t.match(JSON.parse(caps.stdout), { agent: { name: 'blockcopy-agent' } });
  const refused = await cli(['jobs', '--url', agent.url, '--token', 'wrong-token-wrong-token-wrong']);
  t.equal(refused.code, 3, 'a wrong token cannot connect: exit 3');
  const info = await cli(['info', '--job', 'nope', '--url', agent.url, '--token', agent.token]);
  t.equal(info.code, 1);
  // The last line: --token prints its warning first.
  t.match(JSON.parse(info.stderr.trim().split('\n').at(-1)!), { error: 'noJob' });
});
