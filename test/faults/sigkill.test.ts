// The agent killed with SIGKILL at fourteen points of a copy/pivot/finish/abort cycle, against
// the real libvirtd. Eleven points are inside the agent (BLOCKCOPY_FAULT_KILL_AT: between a journal
// write and the libvirt call it guards, between libvirt's answer and the journal, between an end
// being known and being journaled); three are kills from outside (phase 1, ready, and during an
// automatic pivot). After each kill a new agent starts on the same state directory: the job must
// be in its true state, the caller's retry of the same request (what Ansible or a script does
// after a dropped connection) must take it to its intended end, and every byte the guest wrote,
// before the kill, while the agent was down and after, must be on the disk the guest ends on.
import t from 'tap';
import type { AgentClient } from '../../src/client/index.js';
import type { Job, JobState } from '../../src/generated/api.js';
import { blockJob, serveAgent, stateDir, untilState } from '../../harness/agent.js';
import { killed, Reference, report } from '../helpers/faults.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;
const SIZE_MIB = 64;

type End = 'pivot' | 'finish' | 'abort';
interface Case {
  /** BLOCKCOPY_FAULT_KILL_AT, or 'outside:<moment>' for a kill -9 from the test. */
  at: string;
  /** What the caller asks for, and so the end the job must reach. */
  end: End;
  /** The true states the job may be in right after the restart. */
  after: JobState[];
  /** whenReady instead of an explicit call. */
  whenReady?: 'pivot';
}

const CASES: Case[] = [
  { at: 'blockCopy:journaled', end: 'pivot', after: ['failed'] },
  { at: 'blockCopy:sent', end: 'pivot', after: ['copying', 'ready'] },
  { at: 'outside:copying', end: 'pivot', after: ['copying'] },
  { at: 'journaled:ready', end: 'pivot', after: ['ready'] },
  { at: 'outside:ready', end: 'finish', after: ['ready'] },
  { at: 'pivot:journaled', end: 'pivot', after: ['ready'] },
  { at: 'pivot:sent', end: 'pivot', after: ['pivoting', 'pivoted'] },
  { at: 'decided:pivoted', end: 'pivot', after: ['pivoted'] },
  { at: 'finish:journaled', end: 'finish', after: ['ready'] },
  { at: 'finish:sent', end: 'finish', after: ['finishing', 'finished'] },
  { at: 'decided:finished', end: 'finish', after: ['finished'] },
  { at: 'abort:journaled', end: 'abort', after: ['cancelling', 'cancelled'] },
  { at: 'abort:sent', end: 'abort', after: ['cancelling', 'cancelled'] },
  { at: 'outside:pivoting', end: 'pivot', after: ['ready', 'pivoting', 'pivoted'], whenReady: 'pivot' },
];

const GOAL: Record<End, JobState> = { pivot: 'pivoted', finish: 'finished', abort: 'cancelled' };

async function firstJob(client: AgentClient, dom: hv.TestDomain): Promise<Job> {
  const { jobs } = await client.call('listJobs', { domain: dom.name });
  if (jobs.length === 0) throw new Error('the restarted agent knows no job of the domain');
  return blockJob(jobs[0]!);
}

for (const c of CASES) {
  t.test(`SIGKILL at ${c.at} → ${GOAL[c.end]}`, async (t) => {
    const dir = stateDir(t);
    const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: SIZE_MIB }] });
    const src = dom.disks[0]!.path;
    const dest = `${dom.dir}/copy.qcow2`;
    const ref = Reference.create(dom, SIZE_MIB);
    await ref.write(dom, 'vda', { pattern: 0x11, offset: 0, length: 24 * MiB });

    const inside = !c.at.startsWith('outside:');
    const first = await serveAgent(t, { dir, ...(inside ? { env: { BLOCKCOPY_FAULT_KILL_AT: c.at } } : {}) });
    const client = await first.connect();
    if (c.at === 'outside:pivoting') {
      // The automatic pivot: killed from outside the moment the agent announces it.
      await client.call('subscribe', {});
      client.on('job.changed', (j: Job) => {
        if (j.state === 'pivoting') first.process.kill('SIGKILL');
      });
    }
    const slow = c.at === 'outside:copying';
    const copy = client.call('blockCopy', {
      domain: dom.name,
      disk: 'vda',
      destination: { path: dest, format: 'qcow2' },
      // journaled:ready: phase 1 must outlast the answer, or the agent dies (at ready) before answering.
      ...(slow ? { bandwidth: 2 * MiB } : c.at === 'journaled:ready' ? { bandwidth: 16 * MiB } : {}),
      ...(c.whenReady ? { whenReady: c.whenReady } : {}),
    });
    if (c.at.startsWith('blockCopy:')) {
      await copy.then(
        () => t.fail('blockCopy answered although the agent was to die in it'),
        () => {},
      );
    } else {
      const { job } = await copy;
      await ref.write(dom, 'vda', { pattern: 0x22, offset: 8 * MiB, length: 4 * MiB });
      if (c.at === 'outside:copying') {
        let running = job;
        while (running.state === 'copying' && Number(running.progress.cur) === 0) {
          await new Promise((r) => setTimeout(r, 100));
          running = blockJob((await client.call('jobInfo', { jobId: job.jobId })).job);
        }
        t.equal(running.state, 'copying', `killed in phase 1 (${running.progress.cur} of ${running.progress.end} bytes copied)`);
        first.process.kill('SIGKILL');
      } else if (c.at === 'outside:pivoting') {
        await killed(first);
      } else {
        await untilState(client, job.jobId, ['ready', 'pivoting', 'pivoted']).catch(() => {});
        if (c.at === 'outside:ready') first.process.kill('SIGKILL');
        else if (first.process.exitCode === null && first.process.signalCode === null)
          await client.call(c.end, { jobId: job.jobId }).catch(() => {}); // the agent dies under it
      }
    }
    t.equal(await killed(first), 'SIGKILL', `the agent died by SIGKILL at ${c.at}`);

    // A finish that took effect before the kill froze the copy here.
    const atKill = ref.snapshot();
    // Written while no agent runs: must survive whatever happens next.
    await ref.write(dom, 'vda', { pattern: 0x33, offset: 16 * MiB, length: 2 * MiB });

    const second = await serveAgent(t, { dir });
    const client2 = await second.connect();
    let job = await firstJob(client2, dom);
    const endedBeforeRestart = job.state === 'finishing' || job.state === 'finished';
    t.ok(c.after.includes(job.state), `after the restart the job is ${job.state} (true states here: ${c.after.join(', ')})`);
    if (job.state === 'failed') {
      t.match(job, { error: { message: /never started/ } }, 'a copy the agent died before starting is reported as never started');
      t.notMatch(await hv.liveXml(dom), /<mirror /, 'and libvirt indeed runs no copy');
      // The caller's retry starts it.
      job = (await client2.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest, format: 'qcow2' } })).job;
    }
    await ref.write(dom, 'vda', { pattern: 0x44, offset: 20 * MiB, length: 1 * MiB });
    if (c.whenReady) {
      job = blockJob((await client2.call('wait', { jobId: job.jobId, until: 'done', timeout: 60 })).job);
    } else {
      if (job.state === 'copying') await client2.call('setSpeed', { jobId: job.jobId, bandwidth: 0 });
      if (c.end !== 'abort') await untilState(client2, job.jobId, ['ready', GOAL[c.end]]);
      job = blockJob((await client2.call(c.end, { jobId: job.jobId })).job);
    }
    t.equal(job.state, GOAL[c.end], `the retried request ends the job ${GOAL[c.end]}`);

    const xml = await hv.liveXml(dom);
    t.notMatch(xml, /<mirror /, 'no copy left running');
    let mismatches = 0;
    const check = async (image: string, what: string, against = ref) => {
      const same = await against.compare(image, 'qcow2');
      if (same !== 'identical') mismatches++;
      t.equal(same, 'identical', `qemu-img compare: ${what} holds what the guest wrote`);
    };
    if (c.end === 'pivot') {
      t.match(xml, `<source file='${dest}'`, 'the guest runs on the copy');
      await check(dest, 'the copy the guest now runs on');
    } else {
      t.match(xml, `<source file='${src}'`, 'the guest runs on its source');
      await check(src, 'the source');
      if (c.end === 'finish') {
        await check(
          dest,
          endedBeforeRestart ? 'the finished copy (finished before the kill)' : 'the finished copy',
          endedBeforeRestart ? atKill : ref,
        );
      }
    }
    report(t, { fault: 'agent SIGKILL', at: c.at, recovered: job.state === GOAL[c.end], mismatches });
  });
}
