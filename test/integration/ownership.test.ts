// Ownership against the real agent and libvirtd: the agent acts only on copies it can prove are
// its own. Copies swapped behind its back (while it was down or while it runs), promises that
// must survive a crash (the deadline), a state directory that fills up, and jobId as an exact
// idempotency key. virsh and qemu-img are the witnesses.
import t, { type Test } from 'tap';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { RpcError, type AgentClient } from '../../src/client/index.js';
import type { Job } from '../../src/generated/api.js';
import { blockJob, serveAgent, stateDir, untilState, type ServedAgent } from '../../harness/agent.js';
import { report } from '../helpers/faults.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;

async function failure(p: Promise<unknown>): Promise<RpcError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  if (!(e instanceof RpcError)) throw new Error(`expected an RPC error, got ${e === undefined ? 'a result' : String(e)}`);
  return e;
}

async function exited(agent: ServedAgent): Promise<void> {
  const p = agent.process;
  if (p.exitCode !== null || p.signalCode !== null) return;
  await new Promise((r) => p.once('exit', r));
}

/** The disk's <mirror> destination in the live XML, or null. */
async function mirrorPath(dom: hv.TestDomain): Promise<string | null> {
  const xml = await hv.liveXml(dom);
  const m = /<mirror\b[\s\S]*?<source (?:file|dev)='([^']+)'/.exec(xml);
  return m ? m[1]! : null;
}

async function jobsOf(client: AgentClient, dom: hv.TestDomain): Promise<Job[]> {
  return (await client.call('listJobs', { domain: dom.name })).jobs.map(blockJob);
}

/** A domain whose vda holds data, so that a 1 MiB/s copy stays in phase 1 for a while. */
async function busyDomain(t: Test): Promise<hv.TestDomain> {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x3c, offset: 0, length: 48 * MiB });
  return dom;
}

t.test('a copy swapped while the agent was down: the old job ends, the other copy is adopted and never touched', async (t) => {
  const dir = stateDir(t);
  const dom = await busyDomain(t);
  const mine = join(dom.dir, 'agent.qcow2');
  const theirs = join(dom.dir, 'operator.qcow2');
  const first = await serveAgent(t, { dir });
  const c1 = await first.connect();
  const started = Date.now();
  // The deadline (12 s) falls while the operator's copy runs: it must not cancel that copy.
  await c1.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: mine },
    bandwidth: MiB,
    timeout: 12,
    whenReady: 'pivot',
    jobId: 'own-swap',
  });
  first.process.kill('SIGKILL');
  await exited(first);
  await hv.virsh('blockjob', dom.name, 'vda', '--abort');
  await hv.virsh('blockcopy', dom.name, 'vda', theirs, '--bandwidth', '1');
  t.equal(await mirrorPath(dom), theirs, "virsh: the operator's copy runs");

  const second = await serveAgent(t, { dir });
  const c2 = await second.connect();
  const old = blockJob((await c2.call('jobInfo', { jobId: 'own-swap' })).job);
  t.match(old, { state: 'cancelled', outcome: 'inferred' }, `the old job ended (${old.state})`);
  t.match(old.evidence, new RegExp(`goes to ${theirs}, not to this job's destination ${mine}`), `with the evidence: ${old.evidence}`);
  const adopted = (await jobsOf(c2, dom)).find((j) => j.jobId !== 'own-swap');
  t.match(adopted, { owner: 'adopted', state: 'copying', destination: { path: theirs } }, "the operator's copy is a new, adopted job");

  const pivot = await failure(c2.call('pivot', { jobId: 'own-swap' }));
  t.equal(pivot.errorName, 'invalidState', `pivot of the old job is refused: ${pivot.message}`);
  // Past the old job's deadline: the operator's copy is still running.
  await new Promise((r) => setTimeout(r, Math.max(0, started + 16_000 - Date.now())));
  t.equal(await mirrorPath(dom), theirs, "virsh, after the old deadline: the operator's copy still runs");
  t.match(await hv.liveXml(dom), `<source file='${dom.disks[0]!.path}'`, 'the guest is still on its source');
  t.equal((await c2.call('jobInfo', { jobId: adopted!.jobId })).job.state, 'copying', 'and the adopted job says so');
  report(t, {
    fault: 'copy swapped behind the agent',
    at: 'agent down: virsh abort + blockcopy elsewhere',
    recovered: old.state === 'cancelled' && (await mirrorPath(dom)) === theirs,
    mismatches: null,
  });
});

t.test('a copy swapped while the agent runs: no pivot, abort or deadline reaches the other copy', async (t) => {
  const dom = await busyDomain(t);
  const mine = join(dom.dir, 'agent.qcow2');
  const theirs = join(dom.dir, 'operator.qcow2');
  const agent = await serveAgent(t);
  const c = await agent.connect();
  const { job } = await c.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: mine }, bandwidth: MiB, timeout: 8 });
  // The operator aborts the agent's copy and starts one elsewhere, faster than the poll.
  await hv.virsh('blockjob', dom.name, 'vda', '--abort');
  await hv.virsh('blockcopy', dom.name, 'vda', theirs, '--bandwidth', '1');
  const abort = await c.call('abort', { jobId: job.jobId }).then(
    (r) => r,
    (e: unknown) => e,
  );
  t.ok(
    abort instanceof RpcError ? abort.errorName === 'invalidState' : (abort as { changed: boolean }).changed === false,
    `abort of the old job sends nothing: ${abort instanceof RpcError ? abort.message : JSON.stringify(abort)}`,
  );
  t.equal(await mirrorPath(dom), theirs, "virsh: the operator's copy still runs after the agent's abort");
  const old = await untilState(c, job.jobId, ['cancelled', 'failed', 'pivoted'], 10_000);
  t.match(old, { state: 'cancelled', outcome: 'inferred' }, 'the old job ended as inferred');
  await new Promise((r) => setTimeout(r, 10_000)); // past the old job's 8 s deadline
  t.equal(await mirrorPath(dom), theirs, "virsh: the old job's deadline did not cancel the operator's copy");
  const adopted = (await jobsOf(c, dom)).find((j) => j.jobId !== job.jobId);
  t.match(adopted, { owner: 'adopted', destination: { path: theirs } }, 'which is an adopted job');
});

t.test('a copy started by virsh while the agent runs is a job from its first moment', async (t) => {
  const dom = await busyDomain(t);
  const theirs = join(dom.dir, 'operator.qcow2');
  const agent = await serveAgent(t);
  const c = await agent.connect();
  t.same(await jobsOf(c, dom), [], 'no job yet');
  await hv.virsh('blockcopy', dom.name, 'vda', theirs, '--bandwidth', '1');
  const listed = await jobsOf(c, dom);
  t.match(listed, [{ owner: 'adopted', state: 'copying', destination: { path: theirs } }], 'listJobs shows it while it is in phase 1');
  const info = (await c.call('jobInfo', { domain: dom.name, disk: 'vda' })).job;
  t.equal(info.jobId, listed[0]?.jobId, 'jobInfo by domain and disk finds it');
  const sped = (await c.call('setSpeed', { domain: dom.name, disk: 'vda', bandwidth: 2 * MiB })).job;
  t.equal(sped.bandwidth, 2 * MiB, 'setSpeed acts on it');
  t.match(await hv.virsh('blockjob', dom.name, 'vda', '--info', '--bytes'), /2097152/, 'virsh: the new bandwidth');
  const aborted = await c.call('abort', { domain: dom.name, disk: 'vda' });
  t.match(aborted, { changed: true, job: { state: 'cancelled' } }, 'abort through the agent ends it');
  t.equal(await mirrorPath(dom), null, 'virsh: no copy left');
});

t.test('the deadline of blockCopy --timeout survives a crash right after libvirt started the copy', async (t) => {
  const dir = stateDir(t);
  const dom = await busyDomain(t);
  const first = await serveAgent(t, { dir, env: { BLOCKCOPY_FAULT_KILL_AT: 'blockCopy:sent' } });
  const c1 = await first.connect();
  const started = Date.now();
  await c1
    .call('blockCopy', {
      domain: dom.name,
      disk: 'vda',
      destination: { path: join(dom.dir, 'copy.qcow2') },
      bandwidth: MiB,
      timeout: 6,
      jobId: 'own-deadline',
    })
    .catch(() => {});
  await exited(first);
  t.ok(await mirrorPath(dom), 'virsh: the copy runs while the agent is down');
  const second = await serveAgent(t, { dir });
  const c2 = await second.connect();
  const end = await untilState(c2, 'own-deadline', ['cancelled', 'failed', 'ready', 'pivoted', 'finished'], 30_000);
  t.match(end, { state: 'cancelled', error: { name: 'timeout' } }, `cancelled at its deadline after the restart (${end.state})`);
  t.ok(Date.now() - started < 25_000, 'within the deadline plus the restart');
  t.equal(await mirrorPath(dom), null, 'virsh: no copy left');
  report(t, {
    fault: 'SIGKILL right after blockCopy',
    at: 'blockCopy:sent, with timeout',
    recovered: end.state === 'cancelled',
    mismatches: null,
  });
});

t.test('a full state directory: mutations refused as stateUnavailable, reads served, a restart serves on', async (t) => {
  const dir = join(hv.smallFilesystem(t, 1), 'state');
  mkdirSync(dir);
  const dom = await busyDomain(t);
  const theirs = join(dom.dir, 'operator.qcow2');
  const first = await serveAgent(t, { dir });
  const c1 = await first.connect();
  const filler = join(dir, 'filler');
  // Down to the last byte: big chunks, then smaller ones. The agent, like any agent on this
  // shared host, adopts and drops other tests' copies meanwhile, and a journal write that
  // failed frees its pages: the directory is topped up again right before each refused call.
  const fill = () => {
    const fd = openSync(filler, 'a');
    try {
      for (const size of [64 * 1024, 4096, 1]) {
        try {
          for (;;) writeSync(fd, Buffer.alloc(size, 1));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
        }
      }
    } finally {
      closeSync(fd);
    }
  };
  fill();
  const refused = await failure(c1.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: join(dom.dir, 'x.qcow2') } }));
  t.match(
    { code: refused.code, data: refused.data },
    { code: -32017, data: { name: 'stateUnavailable', retryable: true, errno: 'ENOSPC' } },
    `blockCopy refused by name: ${refused.message}`,
  );
  t.equal(await mirrorPath(dom), null, 'virsh: nothing was started');
  t.same(await jobsOf(c1, dom), [], 'reads are served');

  // A copy started outside, the agent killed, a restart on the still full directory.
  await hv.virsh('blockcopy', dom.name, 'vda', theirs, '--bandwidth', '1');
  first.process.kill('SIGKILL');
  await exited(first);
  const second = await serveAgent(t, { dir });
  const c2 = await second.connect();
  t.match(await jobsOf(c2, dom), [{ owner: 'adopted', destination: { path: theirs } }], 'the restarted agent serves and knows the copy');
  fill();
  const abort = await failure(c2.call('abort', { domain: dom.name, disk: 'vda' }));
  t.equal(abort.errorName, 'stateUnavailable', 'abort refused while full');
  t.equal(await mirrorPath(dom), theirs, 'virsh: the copy was not touched');

  rmSync(filler);
  const ok = await c2.call('abort', { domain: dom.name, disk: 'vda' });
  t.equal(ok.job.state, 'cancelled', 'once there is room again, the same call works');
  t.equal(second.process.exitCode, null, 'the agent never exited');
  report(t, {
    fault: 'state directory full (ENOSPC)',
    at: '1 MiB tmpfs: calls and a restart',
    recovered: ok.job.state === 'cancelled',
    mismatches: null,
  });
});

t.test('jobId is an exact idempotency key: a new jobId to an earlier destination starts a new copy', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  const dest = join(dom.dir, 'copy.qcow2');
  const agent = await serveAgent(t);
  const c = await agent.connect();
  await hv.guestWrite(dom, 'vda', { pattern: 0x21, offset: 0, length: 4 * MiB });
  const a = await c.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: dest, format: 'qcow2' },
    whenReady: 'finish',
    wait: 'done',
    jobId: 'own-a',
  });
  t.match(a, { changed: true, job: { jobId: 'own-a', state: 'finished' } });
  await hv.guestWrite(dom, 'vda', { pattern: 0x22, offset: 8 * MiB, length: 4 * MiB });
  const b = await c.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: dest, format: 'qcow2' },
    reuseExternal: true,
    whenReady: 'finish',
    wait: 'done',
    jobId: 'own-b',
  });
  t.match(b, { changed: true, job: { jobId: 'own-b', state: 'finished' } }, 'a new job, not the earlier one');
  t.ok(
    await hv.readPattern(dest, 'qcow2', { pattern: 0x22, offset: 8 * MiB, length: 4 * MiB }),
    'qemu-io: the copy holds the write made after the first one',
  );
  const again = await c.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: dest, format: 'qcow2' },
    reuseExternal: true,
    whenReady: 'finish',
    jobId: 'own-b',
  });
  t.match(again, { changed: false, job: { jobId: 'own-b' } }, 'the same jobId again: that job, unchanged');
});
