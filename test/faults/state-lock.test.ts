// One agent owns a state directory at a time: a second `serve` on it refuses to start and says
// who owns it, the owner is untouched; once the owner is killed (SIGKILL leaves its lock file
// behind), the next agent takes the directory over and finds the owner's jobs. Ownership is a
// kernel lock: two agents started together never both serve, and a lock file not yet written
// by its (live) owner is not taken for stale.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { CLI, serveAgent, stateDir } from '../../harness/agent.js';
import { native } from '../../src/libvirt/binding.js';
import { report } from '../helpers/faults.js';
import * as hv from '../../harness/hypervisor.js';
import { TEST_ROOT } from '../../harness/hypervisor.js';

t.test("one agent per state directory; a dead owner's lock is taken over", async (t) => {
  const dir = stateDir(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  const owner = await serveAgent(t, { dir });
  const client = await owner.connect();
  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${dom.dir}/copy.qcow2` },
    wait: 'ready',
  });

  const second = spawn(process.execPath, [CLI, 'serve', '--state-dir', dir, '--config', `${dir}/config.json`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  second.stderr!.on('data', (d) => {
    stderr += d;
  });
  const code = await new Promise<number | null>((r) => second.once('exit', r));
  t.not(code, 0, `a second agent on the same state directory does not start (exit ${code})`);
  t.match(stderr, new RegExp(`another agent \\(pid ${owner.process.pid}\\) owns this state directory`), 'and says who owns it');
  t.equal((await client.call('jobInfo', { jobId: job.jobId })).job.state, 'ready', 'the owner and its job are untouched');

  owner.process.kill('SIGKILL');
  await new Promise((r) => owner.process.once('exit', r));
  const next = await serveAgent(t, { dir });
  const client2 = await next.connect();
  const found = (await client2.call('jobInfo', { jobId: job.jobId })).job;
  t.equal(found.state, 'ready', 'the next agent takes the directory over and knows the job');
  t.equal((await client2.call('finish', { jobId: job.jobId })).job.state, 'finished', 'and can end it');
  report(t, {
    fault: 'second agent on a state directory; its owner killed',
    at: 'state-directory lock',
    recovered: code !== 0 && found.state === 'ready',
    mismatches: null,
  });
});

/**
 * `serve` on `dir`: 'owner' once it says it owns the state directory (it is left running, so
 * that the other of the pair races a live owner; `stop` ends it), else how it ended.
 */
async function race(dir: string, config: string): Promise<{ outcome: string; stop: (signal: NodeJS.Signals) => Promise<unknown> }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--state-dir', dir, '--config', config, '--log-level', 'info'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const exited = new Promise<number | null>((r) => child.once('exit', r));
  const stop = (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  const owner = await new Promise<boolean>((resolve) => {
    child.stderr!.on('data', (d) => {
      log += d;
      if (log.includes('"msg":"state directory owned"')) resolve(true);
    });
    void exited.then(() => resolve(false));
  });
  if (owner) return { outcome: 'owner', stop };
  const busy = /another agent (\(pid \d+\) )?owns this state directory/.test(log);
  return { outcome: busy ? 'busy' : `exit ${child.exitCode}: ${log.trim().split('\n').pop()}`, stop };
}

t.test('two agents started together on one state directory, 100 times: exactly one owns it', async (t) => {
  const TRIES = 100;
  const LANES = 6;
  const outcomes = new Map<string, number>();
  let bothOwned = 0;
  let noneOwned = 0;
  const lane = async (n: number) => {
    const dir = stateDir(t);
    const config = join(dir, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({ listen: { host: '127.0.0.1', port: 0 }, socket: { enabled: false }, allowedRoots: [TEST_ROOT] }),
    );
    for (let i = n; i < TRIES; i += LANES) {
      const pair = await Promise.all([race(dir, config), race(dir, config)]);
      // Stopped once both are known, either way a process ends: cleanly (the lock file emptied)
      // or killed (its content left behind for the next pair).
      await Promise.all(pair.map((p) => p.stop(i % 2 ? 'SIGKILL' : 'SIGTERM')));
      for (const { outcome } of pair) outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      const owners = pair.filter((p) => p.outcome === 'owner').length;
      if (owners > 1) bothOwned++;
      if (owners === 0) noneOwned++;
    }
  };
  await Promise.all(Array.from({ length: LANES }, (_, n) => lane(n)));
  t.comment(`outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`);
  t.equal(bothOwned, 0, 'never both own it');
  t.equal(noneOwned, 0, 'always one owns it');
  t.equal(outcomes.get('busy'), TRIES, 'the other says the directory is owned');
});

t.test('a lock held but not yet written (an owner just started) is not taken', async (t) => {
  const dir = stateDir(t);
  const path = join(dir, 'agent.lock');
  // The owner's first step: the file created and locked, nothing written yet.
  const fd = openSync(path, 'w', 0o600);
  t.teardown(() => closeSync(fd));
  t.ok(native.flock(fd, true, true), 'the test holds the lock');
  const config = join(dir, 'config.json');
  writeFileSync(config, JSON.stringify({ listen: { enabled: false }, socket: { enabled: false }, allowedRoots: [TEST_ROOT] }));
  const child = spawn(process.execPath, [CLI, 'serve', '--state-dir', dir, '--config', config, '--log-level', 'info'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const exited = new Promise<number | null>((r) => child.once('exit', r));
  // An agent that took the lock goes on to libvirt: stopped there, it has failed the test.
  const tookIt = new Promise<'took it'>((resolve) =>
    child.stderr!.on('data', (d) => {
      log += d;
      if (/"msg":"(state directory owned|libvirt connection)"/.test(log)) resolve('took it');
    }),
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const code = await Promise.race([exited, tookIt]);
  t.equal(code, 1, `the agent does not start (exit ${code})`);
  t.match(log, /another agent owns this state directory/, 'it says the directory is owned');
  t.ok(
    existsSync(path) && statSync(path).size === 0 && fstatSync(fd).ino === statSync(path).ino,
    'the lock file is where it was, untouched',
  );
});
