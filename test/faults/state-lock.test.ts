// One agent owns a state directory at a time: a second `serve` on it refuses to start and says
// who owns it, the owner is untouched; once the owner is killed (SIGKILL leaves its lock file
// behind), the next agent takes the directory over and finds the owner's jobs.
import { spawn } from 'node:child_process';
import t from 'tap';
import { CLI, serveAgent, stateDir } from '../../harness/agent.js';
import { report } from '../helpers/faults.js';
import * as hv from '../../harness/hypervisor.js';

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
