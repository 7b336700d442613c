// The job manager as a library against the real libvirtd and QEMU: throwaway running domains
// with file disks and guest writes (harness/hypervisor.ts), checked with independent tools
// (virsh dumpxml, qemu-img compare -U, qemu-io). What the agent-level tests do not reach:
// restart and reconcile with a copy running, adoption of a virsh copy, copies that end outside
// the agent, the persistent definition after a pivot, and libvirt 9's real error answers.
import t, { type Test } from 'tap';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from '../../src/generated/api.js';
import { isNotReady } from '../../src/jobs/libvirt-errors.js';
import { JobManager } from '../../src/jobs/manager.js';
import { openConnection, type Connection } from '../../src/libvirt/index.js';
import { silentLogger } from '../../src/log.js';
import * as hv from '../../harness/hypervisor.js';
import { testDestinationCheck } from '../../harness/agent.js';
import { rejects } from '../helpers/rejects.js';

const MiB = 1024 * 1024;

interface Agentish {
  jobs: JobManager;
  conn: Connection;
  stateDir: string;
  changes: Job[];
  states(jobId: string): string[];
  /** Stops the manager (copies keep running) and closes its connection; also done at teardown. */
  stop(): Promise<void>;
}

/** A state directory removed at the end of the test. */
function stateDirFor(t: Test): string {
  const dir = hv.scratchDir('jobs-state-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'state');
}

async function manager(t: Test, stateDir = stateDirFor(t)): Promise<Agentish> {
  const conn = await openConnection('qemu:///system');
  const jobs = new JobManager({
    connection: conn,
    stateDir,
    log: silentLogger,
    pollIntervalMs: 500,
    agentVersion: 'test',
    checkDestination: testDestinationCheck(),
  });
  const changes: Job[] = [];
  jobs.on('job.changed', (j: Job) => changes.push(j));
  await jobs.start();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await jobs.stop();
    await conn.close();
  };
  t.teardown(stop);
  return {
    jobs,
    conn,
    stateDir,
    changes,
    stop,
    states: (id) =>
      changes
        .filter((c) => c.jobId === id)
        .map((c) => c.state)
        .filter((s, i, a) => a[i - 1] !== s),
  };
}

// Other test files run in parallel on the same libvirtd, and a manager adopts every copy it
// finds: everything below looks only at its own domains' jobs.
const journal = (dir: string, uuid: string) =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as { job: Job })
    .filter((r) => r.job.domain.uuid === uuid);
const of = (changes: Job[], uuid: string) => changes.filter((c) => c.domain.uuid === uuid);

t.test('validation against real libvirt: nothing is created on a rejected call', async (t) => {
  const a = await manager(t);
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 16 },
      { format: 'raw', sizeMiB: 1, device: 'cdrom' },
    ],
  });
  const dest = join(dom.dir, 'never.qcow2');
  await rejects(
    t,
    a.jobs.blockCopy({ domain: `${dom.name}-nope`, disk: 'vda', destination: { path: dest } }),
    'notFound',
    'unknown domain',
  );
  await rejects(t, a.jobs.blockCopy({ domain: dom.name, disk: 'vdz', destination: { path: dest } }), 'notFound', 'unknown disk');
  await rejects(t, a.jobs.blockCopy({ domain: dom.name, disk: 'hdc', destination: { path: dest } }), 'unsupported', 'a cdrom');
  await rejects(
    t,
    a.jobs.blockCopy({ domain: dom.name, disk: 'vda', destination: { path: dom.disks[0]!.path } }),
    'destinationRejected',
    'the source itself',
  );
  await hv.virsh('destroy', dom.name);
  await rejects(
    t,
    a.jobs.blockCopy({ domain: dom.uuid, disk: 'vda', destination: { path: dest } }),
    'notFound',
    'a transient domain once destroyed is gone',
  );
  t.notOk(existsSync(dest), 'no destination file');
  t.same(journal(a.stateDir, dom.uuid), [], 'no journal record');
  t.same(of(a.changes, dom.uuid), [], 'no notification');
});

t.test('copy → ready → pivot on a persistent domain, with guest writes during the copy', async (t) => {
  const a = await manager(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 96 }], persistent: true });
  await hv.guestWrite(dom, 'vda', { pattern: 0x41, offset: 0, length: 32 * MiB });
  const dest = join(dom.dir, 'pivot.qcow2');
  const { job, changed } = await a.jobs.blockCopy({
    domain: dom.name,
    disk: 'vda',
    destination: { path: dest, format: 'qcow2' },
    bandwidth: 32 * MiB,
    jobId: 'it-pivot',
  });
  t.same(
    [changed, job.state, job.options?.transientJob],
    [true, 'copying', true],
    'started; transient job by default on a persistent domain',
  );
  t.match(
    journal(a.stateDir, dom.uuid),
    [{ job: { jobId: 'it-pivot' }, destinationXml: `<disk type='file'><source file='${dest}'/><driver type='qcow2'/></disk>` }],
    'journaled',
  );
  await hv.guestWrite(dom, 'vda', { pattern: 0x42, offset: 48 * MiB, length: 8 * MiB });
  const ready = (await a.jobs.wait({ jobId: job.jobId, until: 'ready', timeout: 60 })).job;
  t.equal(ready.state, 'ready');
  t.match(await hv.liveXml(dom), /<mirror [^>]*ready='yes'/, "virsh agrees: <mirror ready='yes'>");
  await hv.guestWrite(dom, 'vda', { pattern: 0x43, offset: 64 * MiB, length: 4 * MiB });

  const t0 = Date.now();
  const p = await a.jobs.pivot({ jobId: job.jobId });
  const pivotMs = Date.now() - t0;
  t.same([p.changed, p.job.state, p.job.outcome], [true, 'pivoted', 'observed']);
  t.comment(`pivot request → verified pivoted: ${pivotMs} ms (journal fsync included)`);
  const xml = await hv.liveXml(dom);
  t.match(xml, `<source file='${dest}'`, 'virsh dumpxml: the guest runs on the destination');
  t.notMatch(xml, /<mirror/, 'no mirror left');
  t.same(
    p.job.persistent,
    { defined: true, source: dest, matchesLive: true },
    'the persistent definition follows the pivot (libvirt 9, transient job)',
  );
  t.match(await hv.virsh('dumpxml', '--inactive', dom.name), `<source file='${dest}'`, 'virsh dumpxml --inactive agrees');
  for (const w of [
    { pattern: 0x41, offset: 0, length: 32 * MiB },
    { pattern: 0x42, offset: 48 * MiB, length: 8 * MiB },
    { pattern: 0x43, offset: 64 * MiB, length: 4 * MiB },
  ]) {
    t.ok(
      await hv.readPattern(dest, 'qcow2', w),
      `guest data 0x${w.pattern.toString(16)} (written ${w.pattern === 0x41 ? 'before' : w.pattern === 0x42 ? 'during phase 1' : 'while ready'}) is on the copy`,
    );
  }
  t.same((await a.jobs.pivot({ domain: dom.name, disk: 'vda' })).changed, false, 'pivot again: changed=false');
  t.same(a.states(job.jobId), ['copying', 'ready', 'pivoting', 'pivoted'], 'job.changed on every state, in order');
  t.match(journal(a.stateDir, dom.uuid), [{ job: { state: 'pivoted' } }], 'the journal ends pivoted');
});

t.test('copy → ready → finish: qemu-img compare after guest writes during the copy', async (t) => {
  const a = await manager(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 96 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x51, offset: 0, length: 32 * MiB });
  const dest = join(dom.dir, 'finish.raw');
  const { job } = await a.jobs.blockCopy({
    domain: dom.name,
    disk: 'vda',
    destination: { path: dest, format: 'raw' },
    bandwidth: 16 * MiB,
  });
  await hv.guestWrite(dom, 'vda', { pattern: 0x52, offset: 40 * MiB, length: 8 * MiB });
  await a.jobs.wait({ jobId: job.jobId, until: 'ready', timeout: 60 });
  await hv.guestWrite(dom, 'vda', { pattern: 0x53, offset: 80 * MiB, length: 4 * MiB });
  const f = await a.jobs.finish({ jobId: job.jobId });
  t.same([f.changed, f.job.state, f.job.outcome], [true, 'finished', 'observed']);
  const xml = await hv.liveXml(dom);
  t.match(xml, `<source file='${dom.disks[0]!.path}'`, 'the guest stays on its source');
  t.notMatch(xml, /<mirror/);
  t.equal(await hv.compareImages(dom.disks[0]!.path, dest), 'identical', 'qemu-img compare -U: the copy equals the source');
  t.ok(await hv.readPattern(dest, 'raw', { pattern: 0x52, offset: 40 * MiB, length: 8 * MiB }), 'writes during phase 1 are in it');
  t.ok(await hv.readPattern(dest, 'raw', { pattern: 0x53, offset: 80 * MiB, length: 4 * MiB }), 'writes while ready are in it');
  t.equal((await a.jobs.finish({ jobId: job.jobId })).changed, false, 'finish again: changed=false');
});

t.test('abort in phase 1, and pivot before ready', async (t) => {
  const a = await manager(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 128 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x61, offset: 0, length: 96 * MiB });
  const dest = join(dom.dir, 'abort.qcow2');
  const { job } = await a.jobs.blockCopy({ domain: dom.name, disk: 'vda', destination: { path: dest }, bandwidth: MiB });
  const e = await rejects(t, a.jobs.pivot({ jobId: job.jobId, timeout: 1 }), 'notReady', 'pivot in phase 1 after its 1 s deadline');
  t.equal(e?.retryable, true, 'retryable');
  t.equal((await a.jobs.jobInfo({ jobId: job.jobId })).job.state, 'copying', 'the copy goes on');
  // libvirt's own answer to a pivot before ready, which the manager retries on.
  const raw = await a.conn.blockJobAbort(dom.uuid, 'vda', { async: true, pivot: true }).then(
    () => null,
    (x: unknown) => x,
  );
  t.ok(isNotReady(raw), `libvirt 9 says: ${(raw as Error).message}`);
  const ab = await a.jobs.abort({ domain: dom.name, disk: 'vda' });
  t.same([ab.changed, ab.job.state, ab.job.outcome], [true, 'cancelled', 'observed']);
  const xml = await hv.liveXml(dom);
  t.match(xml, `<source file='${dom.disks[0]!.path}'`, 'the guest stays on its source');
  t.notMatch(xml, /<mirror/, 'no mirror left');
  t.equal((await a.jobs.abort({ jobId: job.jobId })).changed, false, 'abort again: changed=false');
  await rejects(t, a.jobs.abort({ domain: dom.name, disk: 'vdb' }), 'noJob', 'abort on a disk without a job');
});

t.test('idempotency against libvirt: concurrent and repeated calls start one copy', async (t) => {
  const a = await manager(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x71, offset: 0, length: 48 * MiB });
  const dest = join(dom.dir, 'idem.qcow2');
  const p = { domain: dom.name, disk: 'vda', destination: { path: dest }, bandwidth: 4 * MiB };
  const rs = await Promise.all([a.jobs.blockCopy(p), a.jobs.blockCopy(p), a.jobs.blockCopy({ ...p, domain: dom.uuid })]);
  t.same(rs.map((r) => r.changed).sort(), [false, false, true], 'one new job, two answers changed=false');
  t.equal(new Set(rs.map((r) => r.job.jobId)).size, 1, 'the same job');
  await rejects(t, a.jobs.blockCopy({ ...p, destination: { path: join(dom.dir, 'other.qcow2') } }), 'jobExists', 'a different destination');
  t.notOk(existsSync(join(dom.dir, 'other.qcow2')), 'not created');
  await a.jobs.abort({ jobId: rs[0]!.job.jobId });
});

t.test('the domain is destroyed mid-copy → failed with the reason', async (t) => {
  const a = await manager(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x72, offset: 0, length: 48 * MiB });
  const { job } = await a.jobs.blockCopy({
    domain: dom.name,
    disk: 'vda',
    destination: { path: join(dom.dir, 'dies.qcow2') },
    bandwidth: MiB,
  });
  await hv.virsh('destroy', dom.name);
  const end = (await a.jobs.wait({ jobId: job.jobId, until: 'done', timeout: 10 })).job;
  t.match(end, { state: 'failed', error: { name: 'invalidState', message: /stopped/ }, evidence: /lifecycle event stopped/ });
});

t.test('restart: the copy keeps running, the next manager reconciles and pivots it', async (t) => {
  const stateDir = stateDirFor(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x73, offset: 0, length: 24 * MiB });
  const dest = join(dom.dir, 'restart.qcow2');
  const first = await manager(t, stateDir);
  const { job } = await first.jobs.blockCopy({
    domain: dom.name,
    disk: 'vda',
    destination: { path: dest },
    bandwidth: 8 * MiB,
    whenReady: 'pivot',
  });
  await first.stop();
  t.match(await hv.liveXml(dom), /<mirror /, 'stop() left the copy running in QEMU');
  const second = await manager(t, stateDir);
  const found = (await second.jobs.jobInfo({ jobId: job.jobId })).job;
  t.match(found, { jobId: job.jobId, owner: 'agent', whenReady: 'pivot' }, 'the journaled job, same id');
  t.ok(['copying', 'ready', 'pivoting', 'pivoted'].includes(found.state), `reconciled as ${found.state}`);
  const end = (await second.jobs.wait({ jobId: job.jobId, until: 'done', timeout: 60 })).job;
  t.match(end, { state: 'pivoted', outcome: 'observed' }, 'whenReady: pivot carried out by the new manager');
  t.match(await hv.liveXml(dom), `<source file='${dest}'`);
});

t.test('a copy started with virsh is adopted; one ended outside the agent is inferred', async (t) => {
  const stateDir = stateDirFor(t);
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 32 },
      { format: 'qcow2', sizeMiB: 32 },
    ],
  });
  const destA = join(dom.dir, 'virsh-a.qcow2');
  await hv.virsh('blockcopy', dom.name, 'vda', destA, '--wait', '--format', 'qcow2', '--transient-job');
  const a = await manager(t, stateDir);
  const [adopted] = (await a.jobs.listJobs({ domain: dom.name })).jobs;
  t.match(adopted, {
    owner: 'adopted',
    state: 'ready',
    disk: 'vda',
    destination: { path: destA, format: 'qcow2', type: 'file' },
    source: { path: dom.disks[0]!.path },
  });
  // virsh pivots it while the agent watches: the event comes, but the agent did not ask.
  await hv.virsh('blockjob', dom.name, 'vda', '--pivot');
  const endA = (await a.jobs.wait({ jobId: adopted!.jobId, until: 'done', timeout: 15 })).job;
  t.match(endA, {
    state: 'pivoted',
    outcome: 'inferred',
    evidence: /without a request from this agent.*source .*virsh-a\.qcow2 and no <mirror>/,
  });

  // A copy through the agent, cancelled with virsh while the agent is stopped.
  const { job } = await a.jobs.blockCopy({ domain: dom.name, disk: 'vdb', destination: { path: join(dom.dir, 'b.qcow2') } });
  await a.jobs.wait({ jobId: job.jobId, until: 'ready', timeout: 30 });
  await a.stop();
  await hv.virsh('blockjob', dom.name, 'vdb', '--abort');
  const b = await manager(t, stateDir);
  const endB = (await b.jobs.jobInfo({ jobId: job.jobId })).job;
  t.match(
    endB,
    { state: 'cancelled', outcome: 'inferred', evidence: /ended while the agent was not running.*source .*disk1\.qcow2 and no <mirror>/ },
    'back on its source: reported cancelled (inferred), never claimed finished',
  );
});
