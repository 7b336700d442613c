// examples/migrate-to-shared.sh, run as an operator would, against the real agent and libvirtd:
// every local disk moved in one group of its own (formats kept), then `virsh migrate`; a job it
// did not start is never touched, and on interruption it aborts its own copies only.
// The migration itself cannot happen here: this host has one libvirtd, and libvirt refuses a
// migration to the same host; the test checks that the script gets that far and reports it.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as hv from '../../harness/hypervisor.js';
import { blockJob, CLI, serveAgent, untilState, type ServedAgent } from '../../harness/agent.js';
import type { AgentClient } from '../../src/client/index.js';
import { NODE_FLAGS } from '../../src/cli/node-flags.js';

const SCRIPT = fileURLToPath(new URL('../../../examples/migrate-to-shared.sh', import.meta.url));
const MiB = 1024 * 1024;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `blockcopy-agent` as installed, on PATH, talking to the test's agent over WebSocket. */
function operatorEnv(agent: ServedAgent, dir: string): Record<string, string> {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'blockcopy-agent'), `#!/bin/sh\nexec ${process.execPath} ${NODE_FLAGS.join(' ')} ${CLI} "$@"\n`, { mode: 0o755 });
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, agent.token, { mode: 0o600 });
  return {
    ...(process.env as Record<string, string>),
    PATH: `${bin}:${process.env.PATH}`,
    BLOCKCOPY_ARGS: `--url ${agent.url} --token-file ${tokenFile}`,
  };
}

function start(args: string[], env: Record<string, string>) {
  const child = spawn('bash', [SCRIPT, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<Run>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

async function jobsOf(client: AgentClient, dom: hv.TestDomain) {
  return (await client.call('listJobs', { domain: dom.name, includeEnded: true })).jobs.map(blockJob);
}

t.test('moves every local disk in one group, formats kept, then hands over to virsh migrate', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 32 },
      { format: 'raw', sizeMiB: 48 },
    ],
  });
  await hv.guestWrite(dom, 'vdb', { pattern: 0xa9, offset: 0, length: 32 * MiB });
  const shared = join(dom.dir, 'shared');
  mkdirSync(shared);

  // The destination is this host: libvirt refuses that, after the disks moved. `-- --unsafe`
  // (passed through to virsh migrate): the test's "shared" directory is a local one.
  const run = await start([dom.name, shared, 'qemu:///system', '--', '--unsafe'], operatorEnv(agent, dom.dir)).done;
  t.equal(run.code, 1, 'the migration step fails (same host)');
  t.match(run.stderr, /moving vda=.* vdb=.* \(group to-shared-/);
  t.match(run.stderr, `${dom.name} runs on ${shared}`);
  t.match(run.stderr, /same host/i, "libvirt's own refusal is shown");

  const live = await hv.liveXml(dom);
  for (const [i, d] of dom.disks.entries()) {
    const ext = d.path.includes('.') ? d.path.slice(d.path.lastIndexOf('.')) : '';
    const moved = `${shared}/${dom.name}-vd${'ab'[i]}${ext}`;
    t.match(live, `<source file='${moved}'`, `${moved}: the guest runs on it`);
    t.equal(await hv.compareImages(d.path, moved, [d.format, d.format]), 'identical', `${moved}: same data, format ${d.format} kept`);
  }
  t.match(live, /<driver name='qemu' type='qcow2'[^>]*>\s*<source file='[^']*-vda/, 'vda still qcow2');
  t.match(live, /<driver name='qemu' type='raw'[^>]*>\s*<source file='[^']*-vdb/, 'vdb still raw');
  const jobs = await jobsOf(client, dom);
  t.equal(new Set(jobs.map((j) => j.groupId)).size, 1, 'one group');
  t.same(
    jobs.map((j) => j.state),
    ['pivoted', 'pivoted'],
    'both pivoted',
  );

  const again = await start([dom.name, shared, 'qemu:///system'], operatorEnv(agent, join(dom.dir, 'again'))).done;
  t.match(again.stderr, /nothing to move/, 'a second run moves nothing');
});

t.test('a job it did not start: refuses, and leaves it running', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 32 },
      { format: 'qcow2', sizeMiB: 64 },
    ],
  });
  await hv.guestWrite(dom, 'vdb', { pattern: 0x11, offset: 0, length: 48 * MiB });
  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vdb',
    destination: { path: `${dom.dir}/someone-else.qcow2` },
    bandwidth: MiB,
    jobId: 'someone-else',
  });
  const shared = join(dom.dir, 'shared');
  mkdirSync(shared);
  const run = await start([dom.name, shared, 'qemu:///system'], operatorEnv(agent, dom.dir)).done;
  t.equal(run.code, 1, 'refused');
  t.match(run.stderr, /copy job someone-else on vdb is copying/);
  t.same(readdirSync(shared), [], 'nothing created');
  t.equal((await client.call('jobInfo', { jobId: job.jobId })).job.state, 'copying', 'the other job is untouched');
  await client.call('abort', { jobId: job.jobId });
});

t.test('interrupted: aborts its own group, never the job another caller started meanwhile', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 64 },
      { format: 'qcow2', sizeMiB: 64 },
    ],
  });
  await hv.guestWrite(dom, 'vda', { pattern: 0x21, offset: 0, length: 48 * MiB });
  await hv.guestWrite(dom, 'vdb', { pattern: 0x22, offset: 0, length: 48 * MiB });
  const shared = join(dom.dir, 'shared');
  mkdirSync(shared);
  // A crawling copy (1 byte/s, or 1 MiB/s in virsh's unit): still copying when interrupted.
  const env = { ...operatorEnv(agent, dom.dir), MOVE_ARGS: '--bandwidth 1' };
  const script = start([dom.name, shared, 'qemu:///system', 'vda'], env);
  t.teardown(() => void script.child.kill('SIGKILL'));
  let mine: Awaited<ReturnType<typeof jobsOf>>[number] | undefined;
  for (let i = 0; i < 600 && !mine; i++) {
    mine = (await jobsOf(client, dom)).find((j) => j.disk === 'vda' && j.groupId?.startsWith('to-shared-'));
    if (!mine) await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(mine, "the script's group copies vda");
  const { job: other } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vdb',
    destination: { path: `${dom.dir}/other.qcow2` },
    bandwidth: MiB,
    jobId: 'other-caller',
  });
  script.child.kill('SIGTERM');
  const run = await script.done;
  t.equal(run.code, 143, 'ends on TERM');
  t.match(run.stderr, /aborting group to-shared-/);
  await untilState(client, mine!.jobId, ['cancelled']);
  t.notMatch(await hv.liveXml(dom), `${shared}/`, 'the guest stays on its sources');
  t.equal((await client.call('jobInfo', { jobId: other.jobId })).job.state, 'copying', "the other caller's copy runs on");
  await client.call('abort', { jobId: other.jobId });
});
