// The agent killed with SIGKILL during commit and pull jobs, against the real libvirtd, as
// sigkill.test.ts does for copies: an active commit at every point of its start, ready, pivot
// and abort, a whenReady pivot killed from outside while pivoting, and a commit below the top
// and a pull at their start, while copying, under abort and setSpeed, and between their end being
// known and journaled.
// After each kill a new agent starts on the same state directory: the job must be in a true
// state, the caller's retry of the same request must take it to its end, the chain in the live
// XML (virsh) must be what that end means, and every byte the guest wrote (before the kill,
// while no agent ran, after) must be in the image the guest ends on (qemu-img compare).
import t from 'tap';
import type { AgentClient } from '../../src/client/index.js';
import type { BlockCommitParams, BlockPullParams, Job, JobState } from '../../src/generated/api.js';
import { blockJob, serveAgent, stateDir, untilState } from '../../harness/agent.js';
import { killed, report } from '../helpers/faults.js';
import { chain, layered } from '../helpers/chain.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;

type Shape = 'activeCommit' | 'commit' | 'pull';
type End = 'pivot' | 'abort' | 'complete';
interface Case {
  shape: Shape;
  /** BLOCKCOPY_FAULT_KILL_AT, or 'outside:<moment>' for a kill -9 from the test. */
  at: string;
  end: End;
  /** The true states the job may be in right after the restart. */
  after: JobState[];
  whenReady?: 'pivot';
}

const CASES: Case[] = [
  { shape: 'activeCommit', at: 'blockCommit:journaled', end: 'pivot', after: ['failed'] },
  { shape: 'activeCommit', at: 'blockCommit:sent', end: 'pivot', after: ['copying', 'ready'] },
  { shape: 'activeCommit', at: 'outside:copying', end: 'pivot', after: ['copying'] },
  { shape: 'activeCommit', at: 'journaled:ready', end: 'pivot', after: ['ready'] },
  { shape: 'activeCommit', at: 'pivot:journaled', end: 'pivot', after: ['ready'] },
  { shape: 'activeCommit', at: 'pivot:sent', end: 'pivot', after: ['pivoting', 'pivoted'] },
  { shape: 'activeCommit', at: 'decided:pivoted', end: 'pivot', after: ['pivoted'] },
  { shape: 'activeCommit', at: 'abort:journaled', end: 'abort', after: ['cancelling', 'cancelled'] },
  { shape: 'activeCommit', at: 'abort:sent', end: 'abort', after: ['cancelling', 'cancelled'] },
  { shape: 'activeCommit', at: 'outside:pivoting', end: 'pivot', after: ['ready', 'pivoting', 'pivoted'], whenReady: 'pivot' },
  { shape: 'commit', at: 'blockCommit:journaled', end: 'complete', after: ['failed'] },
  { shape: 'commit', at: 'blockCommit:sent', end: 'complete', after: ['copying', 'completed'] },
  { shape: 'commit', at: 'outside:copying', end: 'complete', after: ['copying'] },
  { shape: 'commit', at: 'decided:completed', end: 'complete', after: ['completed'] },
  { shape: 'pull', at: 'blockPull:journaled', end: 'complete', after: ['failed'] },
  { shape: 'pull', at: 'blockPull:sent', end: 'complete', after: ['copying', 'completed'] },
  { shape: 'pull', at: 'outside:copying', end: 'complete', after: ['copying'] },
  { shape: 'pull', at: 'decided:completed', end: 'complete', after: ['completed'] },
  // Requests to a running commit or pull: abort (the chain stays) and setSpeed (unthrottled).
  { shape: 'commit', at: 'abort:sent', end: 'abort', after: ['cancelling', 'cancelled'] },
  { shape: 'pull', at: 'abort:journaled', end: 'abort', after: ['cancelling', 'cancelled'] },
  { shape: 'pull', at: 'setSpeed:sent', end: 'complete', after: ['copying', 'completed'] },
];

const GOAL: Record<End, JobState> = { pivot: 'pivoted', abort: 'cancelled', complete: 'completed' };

for (const c of CASES) {
  t.test(`SIGKILL in ${c.shape} at ${c.at} → ${GOAL[c.end]}`, async (t) => {
    const dir = stateDir(t);
    // files: active layer first. activeCommit: [overlay, base]; commit: [top, mid, base] with
    // mid committed into base; pull: [top, mid, base] pulled whole into top.
    const { dom, ref, files } = await layered(t, c.shape === 'activeCommit' ? 1 : 2);
    const base = files[files.length - 1]!;
    const request = c.at.startsWith('setSpeed:') || (c.end === 'abort' && c.shape !== 'activeCommit');
    const slow = c.at === 'outside:copying' || request;
    const bandwidth = slow ? { bandwidth: 1 * MiB } : c.at === 'journaled:ready' ? { bandwidth: 8 * MiB } : {};
    const commit: BlockCommitParams = {
      domain: dom.name,
      disk: 'vda',
      ...(c.shape === 'commit' ? { top: files[1]!, base } : {}),
      ...(c.whenReady ? { whenReady: c.whenReady } : {}),
    };
    const pull: BlockPullParams = { domain: dom.name, disk: 'vda' };
    const start = (client: AgentClient, extra: { bandwidth?: number; wait?: 'done' } = {}) =>
      c.shape === 'pull' ? client.call('blockPull', { ...pull, ...extra }) : client.call('blockCommit', { ...commit, ...extra });
    const startOp = c.shape === 'pull' ? 'blockPull' : 'blockCommit';

    const inside = !c.at.startsWith('outside:');
    const first = await serveAgent(t, { dir, ...(inside ? { env: { BLOCKCOPY_FAULT_KILL_AT: c.at } } : {}) });
    const client = await first.connect();
    if (c.at === 'outside:pivoting') {
      await client.call('subscribe', {});
      client.on('job.changed', (j: Job) => {
        if (j.state === 'pivoting') first.process.kill('SIGKILL');
      });
    }
    const started = await start(client, bandwidth).then(
      (r) => r.job,
      () => undefined,
    );
    if (c.at.startsWith(`${startOp}:`)) {
      t.equal(started, undefined, `${startOp} did not answer: the agent died in it`);
    } else if (started) {
      await ref.write(dom, 'vda', { pattern: 0x22, offset: 8 * MiB, length: 4 * MiB });
      if (request) {
        // The agent dies under the request (the job still copying at 1 MiB/s).
        const call =
          c.end === 'abort'
            ? client.call('abort', { jobId: started.jobId })
            : client.call('setSpeed', { jobId: started.jobId, bandwidth: 0 });
        await call.catch(() => {});
      } else if (slow) {
        let running = started;
        while (running.state === 'copying' && Number(running.progress.cur) === 0) {
          await new Promise((r) => setTimeout(r, 100));
          running = blockJob((await client.call('jobInfo', { jobId: started.jobId })).job);
        }
        t.equal(running.state, 'copying', `killed while copying (${running.progress.cur} of ${running.progress.end} bytes)`);
        first.process.kill('SIGKILL');
      } else if (c.end === 'pivot' || c.end === 'abort') {
        await untilState(client, started.jobId, ['ready', 'pivoting', 'pivoted']).catch(() => {});
        if (!c.whenReady && first.process.exitCode === null && first.process.signalCode === null)
          await client.call(c.end, { jobId: started.jobId }).catch(() => {}); // the agent dies under it
      }
    } else {
      t.ok(c.at.startsWith('decided:'), 'only a job that ends at once may take the agent down before the answer');
    }
    t.equal(await killed(first), 'SIGKILL', `the agent died by SIGKILL at ${c.at}`);

    // Written while no agent runs: must survive whatever happens next.
    await ref.write(dom, 'vda', { pattern: 0x33, offset: 16 * MiB, length: 2 * MiB });

    const second = await serveAgent(t, { dir });
    const client2 = await second.connect();
    const { jobs } = await client2.call('listJobs', { domain: dom.name });
    t.equal(jobs.length, 1, 'the restarted agent knows the one job of the domain');
    let job = blockJob(jobs[0]!);
    t.equal(job.kind, c.shape === 'activeCommit' ? 'activeCommit' : c.shape, `a ${job.kind} job`);
    t.ok(c.after.includes(job.state), `after the restart the job is ${job.state} (true states here: ${c.after.join(', ')})`);
    if (job.state === 'failed') {
      t.match(job, { error: { message: /never started/ } }, 'a job the agent died before starting is reported as never started');
      // virsh -q prints nothing (or "No current block job") when there is none.
      const info = await hv.virsh('blockjob', dom.name, 'vda', '--info');
      t.equal(info.replace(/No current block job.*/, '').trim(), '', 'and libvirt indeed runs no job');
      t.same(await chain(dom), files, 'the chain is untouched');
    }
    await ref.write(dom, 'vda', { pattern: 0x44, offset: 20 * MiB, length: 1 * MiB });
    if (job.state === 'copying' && c.end !== 'abort') await client2.call('setSpeed', { jobId: job.jobId, bandwidth: 0 });
    if (c.end === 'complete' || job.state === 'failed') {
      // The caller's retry of the same request (a failed start is started again by it).
      const r = await start(client2, c.end === 'complete' ? { wait: 'done' } : {});
      job = r.job;
    }
    if (c.whenReady) {
      job = blockJob((await client2.call('wait', { jobId: job.jobId, until: 'done', timeout: 60 })).job);
    } else if (c.end !== 'complete') {
      if (c.end === 'pivot') await untilState(client2, job.jobId, ['ready', 'pivoted']);
      job = blockJob((await client2.call(c.end, { jobId: job.jobId })).job);
    }
    t.equal(job.state, GOAL[c.end], `the retried request ends the job ${GOAL[c.end]}`);

    // What that end means for the chain: pivoted → the base alone; cancelled → unchanged;
    // a commit below the top → mid gone; a whole pull → the active layer alone.
    const want = c.end === 'pivot' ? [base] : c.end === 'abort' ? files : c.shape === 'commit' ? [files[0]!, base] : [files[0]!];
    t.same(await chain(dom), want, `the live chain: ${want.join(' → ')}`);
    t.notMatch(await hv.liveXml(dom), /<mirror /, 'no job left running in libvirt');
    // A guest write flushes QEMU's cached metadata of the active layer before qemu-img reads it.
    await ref.write(dom, 'vda', { pattern: 0x55, offset: 60 * MiB, length: 1 * MiB });
    const same = await ref.compare(want[0]!, 'qcow2');
    t.equal(same, 'identical', `qemu-img compare: ${want[0]} (the guest's image) holds every write`);
    report(t, {
      fault: 'agent SIGKILL',
      at: `${c.shape} ${c.at}`,
      recovered: job.state === GOAL[c.end],
      mismatches: same === 'identical' ? 0 : 1,
    });
  });
}
