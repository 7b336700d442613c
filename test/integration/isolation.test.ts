// Per-guest isolation (issue 22): one guest's QEMU stopped (SIGSTOP) in the middle of its copy
// holds the libvirt calls that wait on its monitor, and nothing else. Another guest's copy starts,
// reaches ready and pivots meanwhile, reads answer, and once the first QEMU continues its job
// reconciles. Outcomes only (names of errors, states), never durations: speed is in bench/.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { RpcError, type AgentClient } from '../../src/client/index.js';
import { LibvirtBusy, LibvirtTimeout, openConnection } from '../../src/libvirt/index.js';
import { serveAgent, untilState } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;

/** The error name a call failed with ('ok' when it answered). */
const outcome = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof RpcError ? (e.errorName ?? e.message) : String(e)),
  );

function qemuPid(dom: hv.TestDomain): number {
  const pid = Number(readFileSync(`/run/libvirt/qemu/${dom.name}.pid`, 'utf8').trim());
  if (!(pid > 1) || !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dom.name)) throw new Error(`no QEMU for ${dom.name}`);
  return pid;
}

/** SIGSTOPs the domain's QEMU; the returned function (also a teardown) continues it, once. */
function stopQemu(t: { teardown(fn: () => unknown): void }, dom: hv.TestDomain): () => void {
  const pid = qemuPid(dom);
  let stopped = true;
  const cont = () => {
    if (!stopped) return;
    stopped = false;
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* gone */
    }
  };
  t.teardown(cont);
  process.kill(pid, 'SIGSTOP');
  return cont;
}

t.test('binding: a call hung on one guest times out alone; the wait behind it is busy; other guests answer', async (t) => {
  const a = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const b = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const callTimeoutMs = 3000;
  const conn = await openConnection('qemu:///system', { callTimeoutMs, queueTimeoutMs: 2 * callTimeoutMs });
  t.teardown(() => conn.close());
  const cont = stopQemu(t, a);
  try {
    // suspend waits on A's QEMU monitor: it is sent and hangs; the job query after it (it too
    // needs A's monitor) queues behind it. A's XML, which libvirtd answers without the monitor,
    // has a queue of its own and stays readable (every copy's storage inventory reads it).
    const hung = conn.suspend(a.uuid).catch((e: unknown) => e);
    const behind = conn.getBlockJobInfo(a.uuid, 'vda').catch((e: unknown) => e);
    t.match(await conn.getXml(a.uuid), `<uuid>${a.uuid}</uuid>`, "A's XML answers while its monitor call hangs");
    const answers: string[] = [];
    const until = Date.now() + 3 * callTimeoutMs;
    while (Date.now() < until) {
      const r = await Promise.allSettled([
        conn.lookupDomain(b.uuid),
        conn.getXml(b.uuid),
        conn.getBlockJobInfo(b.uuid, 'vda'),
        conn.listDomains(),
      ]);
      for (const x of r) answers.push(x.status === 'fulfilled' ? 'ok' : `${(x.reason as Error).name}: ${(x.reason as Error).message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const failed = answers.filter((x) => x !== 'ok');
    t.same(failed, [], `B's calls and listDomains all answered while A's QEMU is stopped (${answers.length} calls)`);
    const h = await hung;
    t.ok(h instanceof LibvirtTimeout, `the call sent to A's QEMU timed out: ${String(h)}`);
    const q = await behind;
    t.ok(q instanceof LibvirtBusy && /queue/.test(q.message), `the call queued behind it is busy, not a timeout: ${String(q)}`);
  } finally {
    cont();
  }
  // A continued: the hung suspend completes (libvirt still had it), and A's calls answer again.
  let after: unknown = undefined;
  for (let i = 0; i < 30; i++) {
    after = await conn.resume(a.uuid).then(
      (v) => v,
      (e: unknown) => e,
    );
    if (!(after instanceof Error)) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  t.equal(after, 0, `A answers once its QEMU continues (resumed after the late suspend): ${String(after)}`);
});

t.test("a stopped QEMU holds only its own guest's calls", async (t) => {
  const agent = await serveAgent(t);
  const client: AgentClient = await agent.connect();
  const a = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  const b = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(a, 'vda', { pattern: 0x91, offset: 0, length: 16 * MiB });
  await hv.guestWrite(b, 'vda', { pattern: 0x92, offset: 0, length: 16 * MiB });

  // A copies slowly, so it is mid-copy when its QEMU stops.
  const started = await client.call('blockCopy', {
    domain: a.name,
    disk: 'vda',
    destination: { path: `${a.dir}/vda-moved.qcow2` },
    bandwidth: MiB,
  });
  const jobA = started.job.jobId;
  await untilState(client, jobA, ['copying']);

  const cont = stopQemu(t, a);
  const pid = qemuPid(a);
  try {
    // Calls that wait on A's monitor: the agent's own polling of A, and a speed change asked
    // here (it waits on A's QEMU; whatever it answers, it must not hold B).
    const speedA = outcome(client.call('setSpeed', { jobId: jobA, bandwidth: 2 * MiB }));
    // Past the libvirt call bound (10 s), so A's calls are surely in flight and timing out.
    await new Promise((r) => setTimeout(r, 12_000));

    const startB = await client.call('blockCopy', {
      domain: b.name,
      disk: 'vda',
      destination: { path: `${b.dir}/vda-moved.qcow2` },
    });
    t.pass(`B's copy started while A's QEMU is stopped (${startB.job.state})`);
    const jobB = startB.job.jobId;
    const ready = await client.call('wait', { jobId: jobB, until: 'ready', timeout: 120 });
    t.equal(ready.job.state, 'ready', "B's copy reached ready");

    // Reads answer throughout, for both guests.
    t.equal(await outcome(client.call('listJobs', {})), 'ok', 'listJobs answers');
    t.equal(await outcome(client.call('jobInfo', { jobId: jobA })), 'ok', "jobInfo of A's job answers (from memory)");
    t.equal(await outcome(client.call('jobInfo', { jobId: jobB })), 'ok', "jobInfo of B's job answers");

    const pivot = await client.call('pivot', { jobId: jobB });
    t.equal(pivot.job.state, 'pivoted', 'B pivoted while A is still stopped');
    t.match(await hv.liveXml(b), `<source file='${b.dir}/vda-moved.qcow2'`, 'B runs on its copy');
    t.ok(
      await hv.readPattern(`${b.dir}/vda-moved.qcow2`, 'qcow2', { pattern: 0x92, offset: 0, length: 16 * MiB }),
      "B's data is intact on the copy",
    );
    // A copy started outside the agent on B is found by the host-wide scan (listJobs): the scan
    // passes A by (slow: its calls hang) instead of waiting on it.
    const theirs = `${b.dir}/theirs.qcow2`;
    await hv.virsh('blockcopy', b.name, 'vda', theirs, '--bandwidth', '1');
    let adopted: string | undefined;
    for (let i = 0; i < 60 && !adopted; i++) {
      const { jobs } = await client.call('listJobs', {});
      adopted = jobs.find((j) => j.domain.uuid === b.uuid && j.owner === 'adopted')?.jobId;
      if (!adopted) await new Promise((r) => setTimeout(r, 1000));
    }
    t.ok(adopted, "B's outside copy is listed (adopted) while A's QEMU is still stopped");
    if (adopted) await client.call('abort', { jobId: adopted });
    else await hv.virsh('blockjob', b.name, 'vda', '--abort').catch(() => {});
    t.match(readFileSync(`/proc/${pid}/stat`, 'utf8'), /^\d+ \(.*\) T /, "A's QEMU was stopped all along");
    t.comment(`setSpeed on A while its QEMU was stopped: ${await speedA}`);
  } finally {
    cont();
  }

  // A continues: its job reconciles to a consistent state and finishes normally.
  const a2 = await untilState(client, jobA, ['ready', 'failed', 'cancelled'], 180_000);
  t.equal(a2.state, 'ready', "A's job reached ready once its QEMU continued");
  await client.call('setSpeed', { jobId: jobA, bandwidth: 0 }).catch(() => {});
  const pivotA = await client.call('pivot', { jobId: jobA });
  t.equal(pivotA.job.state, 'pivoted', 'A pivots after it continued');
  t.ok(
    await hv.readPattern(`${a.dir}/vda-moved.qcow2`, 'qcow2', { pattern: 0x91, offset: 0, length: 16 * MiB }),
    "A's data is intact on the copy",
  );
});
