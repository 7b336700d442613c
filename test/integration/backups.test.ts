// backup against the real agent (WebSocket) and the real libvirtd, a 2-disk running domain
// written through the QEMU monitor: a full backup with a checkpoint and two incrementals, each
// started at a known moment (the domain paused while a reference copy is taken), with other
// writes made while each runs. The restore of full + incrementals by the offline `restore` verb,
// from the manifest alone, equals the disks at each backup's start and holds none of the writes
// made during it; no overlay is left in the chain, the checkpoints (and QEMU's bitmaps) are
// exactly those recorded, the manifest's checksums are the files'.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient, RpcError } from '../../src/client/index.js';
import type { AnyJob, BackupJob } from '../../src/generated/api.js';
import { isBackupJob } from '../../src/job-types.js';
import * as hv from '../../harness/hypervisor.js';
import { backupJob, CLI, serveAgent, stateDir } from '../../harness/agent.js';
import { brakeBackup, referenceCopy, startCaughtRunning } from '../helpers/backup.js';

const MiB = 1024 * 1024;
const run = promisify(execFile);

async function errorOf(p: Promise<unknown>): Promise<RpcError | undefined> {
  return p.then(
    () => undefined,
    (e: unknown) => {
      if (e instanceof RpcError) return e;
      throw e;
    },
  );
}

const VIEWER = 'viewer-token-0123456789abcdef';

async function agentFor(t: Test) {
  const dir = stateDir(t);
  const agent = await serveAgent(t, {
    dir,
    config: { audit: { file: join(dir, 'audit.log') } },
    tokens: [{ name: 'viewer', token: VIEWER, readOnly: true }],
  });
  return { agent, client: await agent.connect(), dir };
}

const waitEnd = async (client: AgentClient, jobId: string, timeout = 300): Promise<BackupJob> =>
  backupJob((await client.call('wait', { jobId, until: 'done', timeout })).job);
const infoOf = async (client: AgentClient, jobId: string): Promise<BackupJob> => backupJob((await client.call('jobInfo', { jobId })).job);

/** Pauses the guest, takes a reference copy of each disk, starts the backup, resumes. */
async function backupAtMoment(
  client: AgentClient,
  dom: hv.TestDomain,
  refs: Record<string, string>,
  params: Omit<Parameters<AgentClient['call']>[1] & object, never>,
): Promise<BackupJob> {
  await hv.virsh('suspend', dom.name);
  try {
    for (const d of dom.disks) await referenceCopy(d.path, d.format, refs[d.target]!);
    return (await client.call('backup', params as never)).job;
  } finally {
    await hv.virsh('resume', dom.name);
  }
}

t.test('full + two incrementals of a 2-disk domain restore to each start moment', async (t) => {
  const { client } = await agentFor(t);
  // job.changed notifications, as frames: the one stream of every kind carries the backups.
  const notes: BackupJob[] = [];
  client.on('frame', (text: string) => {
    const n = JSON.parse(text) as { method?: string; params?: { job?: AnyJob } };
    if (n.method === 'job.changed' && n.params?.job && isBackupJob(n.params.job)) notes.push(n.params.job);
  });
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 64 },
      { format: 'qcow2', sizeMiB: 32 },
    ],
  });
  await client.call('subscribe', { domain: dom.name });
  const target = hv.scratchDir('backup-', t);
  const scratch = hv.scratchDir('restore-', t);
  const chainsBefore = await Promise.all(dom.disks.map((d) => hv.liveChain(dom, d.target)));
  const w = (disk: string, pattern: number, offset: number, length: number) => hv.guestWrite(dom, disk, { pattern, offset, length });

  // Before the full: pattern A.
  await w('vda', 0x11, 0, 4 * MiB);
  await w('vdb', 0x12, 2 * MiB, 2 * MiB);
  const refs = (n: number) => Object.fromEntries(dom.disks.map((d) => [d.target, join(scratch, `ref${n}-${d.target}.raw`)]));
  const ref0 = refs(0);
  const full = await backupAtMoment(client, dom, ref0, { domain: dom.name, target: { dir: target }, checkpoint: true });
  t.match(full, { kind: 'backup', state: 'running', mode: 'full', since: null }, 'a full backup, running');
  t.match(full.checkpoint, /^bc-\d{8}T\d{6}\.\d{3}Z$/, 'a generated checkpoint name');
  // While it runs: pattern B over part of A and elsewhere.
  await w('vda', 0xb1, 0, MiB);
  await w('vdb', 0xb2, 20 * MiB, MiB);
  const fullDone = await waitEnd(client, full.jobId);
  t.equal(fullDone.state, 'completed', 'the full backup completed');
  t.ok(
    await hv.readPattern(fullDone.disks[0]!.file, 'qcow2', { pattern: 0x11, offset: 0, length: MiB }),
    'it holds A where B was written during it',
  );

  // Incremental 1: pattern C before, D during.
  await w('vda', 0x33, 8 * MiB, 2 * MiB);
  await w('vdb', 0x34, 4 * MiB, MiB);
  const ref1 = refs(1);
  const inc1 = await backupAtMoment(client, dom, ref1, { domain: dom.name, target: { dir: target }, incremental: true, checkpoint: true });
  t.match(inc1, { mode: 'incremental', since: full.checkpoint }, 'incremental since the full backup checkpoint');
  await w('vda', 0xd1, 8 * MiB, MiB);
  const inc1Done = await waitEnd(client, inc1.jobId);
  t.equal(inc1Done.state, 'completed', 'incremental 1 completed');

  // Incremental 2: pattern E before, F during.
  await w('vda', 0x55, 30 * MiB, MiB);
  await w('vdb', 0x56, 0, MiB);
  const ref2 = refs(2);
  const inc2 = await backupAtMoment(client, dom, ref2, { domain: dom.name, target: { dir: target }, incremental: true, checkpoint: true });
  await w('vdb', 0xf2, 0, MiB);
  const inc2Done = await waitEnd(client, inc2.jobId);
  t.equal(inc2Done.state, 'completed', 'incremental 2 completed');
  t.ok(
    inc1Done.disks.every((d) => d.format === 'qcow2'),
    'incrementals are qcow2',
  );

  const done = [fullDone, inc1Done, inc2Done];
  for (const b of done)
    t.same(
      notes.filter((x) => x.jobId === b.jobId && x.state !== 'running').map((x) => x.state),
      ['completed'],
      `job.changed told ${b.mode} ${b.jobId}'s end once`,
    );
  t.ok(
    notes.some((x) => x.jobId === full.jobId && x.state === 'running'),
    'and its start',
  );
  // The product's offline restore verb (no agent), from the manifest alone, up to each backup.
  for (const [k, ref] of [ref0, ref1, ref2].entries()) {
    for (const d of dom.disks) {
      const out = join(scratch, `restored${k}-${d.target}.raw`);
      await run(process.execPath, [
        CLI,
        'restore',
        fullDone.manifest!,
        '--disk',
        d.target,
        '--output',
        out,
        '--upto',
        done[k]!.jobId,
        '--format',
        'raw',
      ]);
      t.equal(
        await hv.compareImages(out, ref[d.target]!, ['raw', 'raw']),
        'identical',
        `restore up to backup ${k}, ${d.target}: the disk at its start`,
      );
    }
  }

  t.same(await Promise.all(dom.disks.map((d) => hv.liveChain(dom, d.target))), chainsBefore, 'no overlay: the chains are unchanged');
  const cps = (await client.call('checkpoints', { domain: dom.name })).checkpoints;
  t.same(
    cps.map((c) => c.name),
    done.map((b) => b.checkpoint),
    'the checkpoints are exactly those recorded',
  );
  t.same(cps[1]!.parent, cps[0]!.name, 'each checkpoint the child of the one before');
  // QEMU's own view: the dirty bitmaps on each disk's image are exactly the recorded checkpoints
  // (none left from a backup's own bookkeeping).
  const nodes = JSON.parse(
    await hv.virsh('qemu-monitor-command', dom.name, JSON.stringify({ execute: 'query-named-block-nodes', arguments: { flat: true } })),
  ) as { return: Array<{ file: string; drv: string; 'dirty-bitmaps'?: Array<{ name: string }> }> };
  for (const d of dom.disks) {
    const bitmaps = nodes.return
      .filter((n) => n.file === d.path && n.drv === 'qcow2')
      .flatMap((n) => (n['dirty-bitmaps'] ?? []).map((bm) => bm.name))
      .sort();
    t.same(bitmaps, done.map((b) => b.checkpoint).sort(), `${d.target}: QEMU's bitmaps are exactly the recorded checkpoints`);
  }

  const manifestFile = fullDone.manifest!;
  t.equal(manifestFile, join(target, `${dom.name}.backups.json`), 'the manifest beside the files');
  const m = JSON.parse(readFileSync(manifestFile, 'utf8')) as {
    version: number;
    uuid: string;
    backups: Array<{
      id: string;
      kind: string;
      checkpoint: string;
      since: string | null;
      disks: Record<string, { file: string; sha256: string; format: string }>;
    }>;
  };
  t.match(m, { version: 1, domain: dom.name, uuid: dom.uuid }, 'manifest header');
  t.same(
    m.backups.map((b) => [b.id, b.kind, b.checkpoint, b.since]),
    [
      [full.jobId, 'full', full.checkpoint, null],
      [inc1.jobId, 'incremental', inc1.checkpoint, full.checkpoint],
      [inc2.jobId, 'incremental', inc2.checkpoint, inc1.checkpoint],
    ],
    'three entries, linked checkpoint to checkpoint',
  );
  for (const b of m.backups)
    for (const [disk, f] of Object.entries(b.disks)) {
      const sum = createHash('sha256')
        .update(readFileSync(join(target, f.file)))
        .digest('hex');
      t.equal(f.sha256, sum, `${b.kind} ${disk}: sha256 is the file's`);
    }
});

t.test('checksum none: completed without the read-back; the manifest says null; restore says not verified', async (t) => {
  const { client } = await agentFor(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x42, offset: 0, length: 8 * MiB });
  const scratch = hv.scratchDir('restore-', t);
  const ref = { vda: join(scratch, 'ref-vda.raw') };
  const target = hv.scratchDir('backup-', t);
  const started = await backupAtMoment(client, dom, ref, { domain: dom.name, target: { dir: target }, checksum: 'none' });
  t.equal(started.checksum, 'none', 'the job says what it will record');
  await hv.guestWrite(dom, 'vda', { pattern: 0x43, offset: 4 * MiB, length: 8 * MiB });
  const done = await waitEnd(client, started.jobId);
  t.equal(done.state, 'completed');
  t.equal(done.disks[0]!.sha256, undefined, 'no checksum in the job');
  t.ok(done.disks[0]!.size! > 0 && done.disks[0]!.virtualSize === 32 * MiB, 'sizes still read');
  const m = JSON.parse(readFileSync(done.manifest!, 'utf8')) as { backups: Array<{ disks: Record<string, { sha256: unknown }> }> };
  t.equal(m.backups[0]!.disks.vda!.sha256, null, 'the manifest records sha256 null');
  const out = join(scratch, 'restored.raw');
  const { stdout } = await run(process.execPath, [CLI, 'restore', done.manifest!, '--disk', 'vda', '--output', out, '--format', 'raw']);
  // Not a terminal: one JSON document per line.
  const events = stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { event: string; layer?: { verified: boolean; sha256: string | null } });
  t.same(
    events.filter((e) => e.layer).map((e) => [e.event, e.layer!.verified, e.layer!.sha256]),
    [['unverified', false, null]],
    'restore says the file was not verified',
  );
  t.equal(await hv.compareImages(out, ref.vda, ['raw', 'raw']), 'identical', "and restores the disk at the backup's start");
});

t.test('a second backup while one runs is refused by name; abort cancels and names the partial files', async (t) => {
  const { client } = await agentFor(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 1536 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x77, offset: 0, length: 1024 * MiB });
  // A directory of its own per try: a try that completed before the brake leaves a manifest.
  let target = '';
  const caught = await startCaughtRunning(
    dom,
    async (i) => {
      target = hv.scratchDir('backup-', t);
      return (await client.call('backup', { domain: dom.name, target: { dir: target }, checkpoint: `keep${i}` })).job;
    },
    (started) => waitEnd(client, started.jobId),
  );
  t.ok(caught, 'the backup is slowed down inside QEMU');
  if (!caught) return;
  const b = caught;
  const second = await errorOf(client.call('backup', { domain: dom.name, target: { dir: target } }));
  t.equal(second?.data?.name, 'backupRunning', 'a second backup of the domain: backupRunning');
  t.equal((second?.data as { jobId?: string } | undefined)?.jobId, b.jobId, 'naming the running one');
  const cps = await errorOf(client.call('deleteCheckpoints', { domain: dom.name, keep: 0 }));
  t.equal(cps?.data?.name, 'backupRunning', 'checkpoints are not deleted while a backup runs');
  const again = await client.call('backup', { domain: dom.name, target: { dir: target }, jobId: b.jobId });
  t.equal(again.changed, false, 'the same jobId: the existing backup, changed false');
  const listed = (await client.call('listJobs', { kind: ['backup'], domain: dom.name })).jobs;
  t.same(
    listed.map((j) => [j.jobId, j.kind, j.state]),
    [[b.jobId, 'backup', 'running']],
    'listJobs lists it (kind backup)',
  );
  t.same((await client.call('listJobs', { kind: ['copy'], domain: dom.name })).jobs, [], 'and not among the copies');
  const pivot = await errorOf(client.call('pivot', { jobId: b.jobId }));
  t.equal(pivot?.data?.name, 'unsupported', 'pivot of a backup: unsupported, by name');
  const copyWithItsId = await errorOf(
    client.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: join(target, 'copy.qcow2') }, jobId: b.jobId }),
  );
  t.equal(copyWithItsId?.data?.name, 'jobExists', "a copy with the backup's jobId: jobExists (one id space)");
  const aborted = backupJob((await client.call('abort', { jobId: b.jobId })).job);
  t.equal(aborted.state, 'cancelled', 'abort: cancelled');
  // libvirt removes the target files it created when a backup fails or is cancelled: what is
  // left is named, and nothing else is there.
  t.same(
    aborted.partialFiles,
    b.disks.map((d) => d.file).filter((f) => existsSync(f)),
    'partialFiles names exactly the files left',
  );
  t.equal(aborted.manifest, null, 'no manifest entry');
  t.notOk(existsSync(join(target, `${dom.name}.backups.json`)), 'no manifest written');
  // timeout: a backup still running then is aborted by the agent.
  const timed = await startCaughtRunning(
    dom,
    async (i) => (await client.call('backup', { domain: dom.name, target: { dir: target }, timeout: 3, checkpoint: `t${i}` })).job,
    (started) => waitEnd(client, started.jobId),
  );
  t.ok(timed, 'a backup with a timeout, slowed down inside QEMU');
  t.match(timed && (await waitEnd(client, timed.jobId)), { state: 'cancelled' }, 'timeout: the agent aborted it, cancelled');
  const none = await errorOf(client.call('abort', { jobId: 'nope' }));
  t.equal(none?.data?.name, 'noJob', 'abort of an unknown job: noJob');
});

t.test('destination policy: outside the allowed roots, an existing name; read-only principal; audit', async (t) => {
  const { agent, client, dir } = await agentFor(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const viewer = await AgentClient.connect(agent.url, { headers: { authorization: `Bearer ${VIEWER}` } });
  t.teardown(() => viewer.close());
  const ro = await errorOf(viewer.call('backup', { domain: dom.name, target: { dir: hv.scratchDir('b-', t) } }));
  t.equal(ro?.data?.name, 'unauthorized', 'a read-only principal cannot start a backup');
  t.same((await viewer.call('checkpoints', { domain: dom.name })).checkpoints, [], 'but may list checkpoints');
  const outside = await errorOf(client.call('backup', { domain: dom.name, target: { dir: '/etc' } }));
  t.equal(outside?.data?.name, 'destinationRejected', 'a directory outside the roots');
  const noCp = await errorOf(client.call('backup', { domain: dom.name, target: { dir: hv.scratchDir('b-', t) }, incremental: true }));
  t.equal(noCp?.data?.name, 'notFound', 'incremental without any checkpoint: notFound');
  const target = hv.scratchDir('backup-', t);
  const first = await client.call('backup', { domain: dom.name, target: { dir: target }, checkpoint: 'same', wait: true });
  t.equal(first.job.state, 'completed', 'a first backup');
  const clash = await errorOf(client.call('backup', { domain: dom.name, target: { dir: target }, checkpoint: 'same' }));
  t.equal(clash?.data?.name, 'destinationRejected', 'a file of the same name exists: refused, never overwritten');
  const ret = await client.call('deleteCheckpoints', { domain: dom.name, keep: 0 });
  t.same(ret, { deleted: ['same'], kept: [] }, 'retention keep 0 deletes it');
  const audited = readFileSync(join(dir, 'audit.log'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { method: string; outcome: string });
  t.ok(
    audited.some((a) => a.method === 'backup' && a.outcome === 'ok'),
    'the backup is in the audit log',
  );
  t.ok(
    audited.some((a) => a.method === 'backup' && a.outcome !== 'ok'),
    'so are the refused ones',
  );
});

t.test('SIGKILL mid-backup: adopted while running; ended while the agent was down: concluded from the kept stats', async (t) => {
  const dir = stateDir(t);
  const first = await serveAgent(t, { dir });
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 1536 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x5a, offset: 0, length: 1024 * MiB });
  const target = hv.scratchDir('backup-', t);
  const c1 = await first.connect();
  const b = await startCaughtRunning(
    dom,
    async () => (await c1.call('backup', { domain: dom.name, target: { dir: target }, checkpoint: true })).job,
    (started) => waitEnd(c1, started.jobId),
  );
  t.ok(b, 'the backup is slowed down inside QEMU');
  if (!b) return;
  await first.stop('SIGKILL');

  const second = await serveAgent(t, { dir });
  const c2 = await second.connect();
  // Still running (adopted), unless the chunk QEMU let through the brake was its last.
  const after = await infoOf(c2, b.jobId);
  t.ok(['running', 'completed'].includes(after.state), `after the restart: ${after.state} (adopted, or verified complete)`);
  await second.stop('SIGKILL');

  // While no agent runs, the backup ends; another reader looks at the stats, keeping them.
  await brakeBackup(dom, 0);
  for (let i = 0; i < 600 && /Job type:\s+(Unbounded|Bounded)/.test(await hv.virsh('domjobinfo', dom.name)); i++)
    await new Promise((r) => setTimeout(r, 500));
  t.match(await hv.virsh('domjobinfo', dom.name, '--completed', '--keep-completed'), /Completed/, 'libvirt keeps the completed stats');

  const third = await serveAgent(t, { dir });
  const c3 = await third.connect();
  const got = await waitEnd(c3, b.jobId, 120);
  t.equal(got.state, 'completed', 'concluded completed from the kept stats');
  t.ok(got.manifest && existsSync(got.manifest), 'the manifest was written');
  t.ok(await hv.readPattern(got.disks[0]!.file, 'qcow2', { pattern: 0x5a, offset: 0, length: 1024 * MiB }), 'the file holds the data');
});

t.test('a backup that ended while the agent was down with no stats left is reported failed, files named', async (t) => {
  const dir = stateDir(t);
  const first = await serveAgent(t, { dir });
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 1536 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x6b, offset: 0, length: 1024 * MiB });
  const target = hv.scratchDir('backup-', t);
  const c1 = await first.connect();
  const b = await startCaughtRunning(
    dom,
    async () => (await c1.call('backup', { domain: dom.name, target: { dir: target } })).job,
    (started) => waitEnd(c1, started.jobId),
  );
  t.ok(b, 'the backup is slowed down inside QEMU');
  if (!b) return;
  await first.stop('SIGKILL');
  // Someone else aborts it and reads the completed stats without keeping them: no evidence left.
  await hv.virsh('domjobabort', dom.name);
  for (let i = 0; i < 600 && /Job type:\s+(Unbounded|Bounded)/.test(await hv.virsh('domjobinfo', dom.name)); i++)
    await new Promise((r) => setTimeout(r, 500));
  await hv.virsh('domjobinfo', dom.name, '--completed');

  const second = await serveAgent(t, { dir });
  const got = await waitEnd(await second.connect(), b.jobId, 120);
  t.not(got.state, 'completed', 'never reported complete');
  t.match(got, { state: 'failed', error: { name: 'libvirtError' } }, 'failed, with the error');
  t.match(got.error?.evidence, /completed-job stats/, 'with the evidence');
  t.same(
    got.partialFiles,
    b.disks.map((d) => d.file).filter((f) => existsSync(f)),
    'the files it left are named',
  );
  t.equal(got.manifest, null, 'not in a manifest');
});

t.test('a backup started with virsh backup-begin is adopted: a second is refused naming it; its end verified, no manifest', async (t) => {
  const { client } = await agentFor(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 1536 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x3c, offset: 0, length: 1024 * MiB });
  const target = hv.scratchDir('backup-', t);
  // The brake comes after virsh returns: on a loaded host the backup may end first (QEMU can
  // still list it while it concludes), so it is tried again until libvirt shows it running.
  let file = '';
  for (let i = 0; i < 5 && !file; i++) {
    const f = join(target, `by-virsh-${i}.qcow2`);
    const xml = join(target, `backup-${i}.xml`);
    writeFileSync(
      xml,
      `<domainbackup mode='push'><disks><disk name='vda' backup='yes' type='file'><target file='${f}'/><driver type='qcow2'/></disk></disks></domainbackup>`,
    );
    await hv.virsh('backup-begin', dom.name, xml);
    if ((await brakeBackup(dom, 1024)) > 0 && /Job type:\s+(Unbounded|Bounded)/.test(await hv.virsh('domjobinfo', dom.name))) file = f;
    else
      for (let w = 0; w < 600 && /Job type:\s+(Unbounded|Bounded)/.test(await hv.virsh('domjobinfo', dom.name)); w++)
        await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(file, 'the backup is slowed down inside QEMU, and libvirt shows it running');
  const refused = await errorOf(client.call('backup', { domain: dom.name, target: { dir: target } }));
  t.equal(refused?.data?.name, 'backupRunning', 'a backup of the domain: backupRunning');
  const jobId = (refused?.data as { jobId?: string } | undefined)?.jobId;
  t.ok(jobId, 'naming the adopted one');
  const adopted = await infoOf(client, jobId!);
  t.match(
    adopted,
    { state: 'running', owner: 'adopted', mode: 'full', checksum: 'sha256', disks: [{ disk: 'vda', file }] },
    "adopted, with its file (hashed at its end as the agent's own are)",
  );
  await brakeBackup(dom, 0);
  const ended = await waitEnd(client, jobId!);
  t.match(ended, { state: 'completed', manifest: null }, 'verified completed; no manifest for a backup started elsewhere');
  t.ok(ended.disks[0]!.sha256, 'its file described');
});

t.test('quiesce: required without a guest agent that freezes starts nothing; try goes on and says why', async (t) => {
  const { client } = await agentFor(t);
  const target = hv.scratchDir('backup-', t);
  // No channel at all, and a channel no agent answers on (libvirt: "not connected").
  for (const channel of [false, true]) {
    const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }], guestAgentChannel: channel });
    const what = channel ? 'a guest-agent channel nobody answers on' : 'no guest-agent channel';
    const refused = await errorOf(
      client.call('backup', { domain: dom.name, target: { dir: target }, quiesce: 'required', checkpoint: true }),
    );
    t.equal(refused?.data?.name, 'quiesceFailed', `${what}, required: quiesceFailed (${refused?.message})`);
    t.same((await client.call('listJobs', { kind: ['backup'], domain: dom.name })).jobs, [], '… no backup job is left');
    t.same((await client.call('checkpoints', { domain: dom.name })).checkpoints, [], '… no checkpoint');
    t.notMatch(await hv.virsh('domjobinfo', dom.name), /Job type:\s+(Unbounded|Bounded)/, '… libvirt runs no job');
    t.equal((await hv.virsh('domstate', dom.name)).trim(), 'running', '… the guest runs');
    const tried = backupJob((await client.call('backup', { domain: dom.name, target: { dir: target }, quiesce: 'try', wait: true })).job);
    t.match(tried, { state: 'completed', quiesced: false }, `${what}, try: completed unquiesced`);
    t.match(tried.quiesceNote, channel ? /agent/i : /no QEMU guest agent channel/, `and says why: ${tried.quiesceNote}`);
  }
});
