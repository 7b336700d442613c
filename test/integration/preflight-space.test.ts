// Pre-flight space checks against the real libvirtd: a destination on a small tmpfs is refused
// before anything starts, with the figures (insufficientSpace: needed, available, the
// filesystem), and nothing is created; a group whose disks fit one by one but not together is
// refused the same way, and so is a copy that would overcommit it beside a running one; a reused
// destination counts what it already holds; a copy with room still runs. The tmpfs is mounted before QEMU starts (QEMU runs in its own mount namespace,
// which does not see mounts made later) and unmounted at teardown.
import t, { type Test } from 'tap';
import { readdirSync, statfsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, relative } from 'node:path';
import { RpcError } from '../../src/client/index.js';
import { serveAgent, type ServedAgent } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;
/** The stated margin (docs/jobs.md, src/jobs/space.ts): 1% of the figure, at least 16 MiB. */
const MARGIN = 16 * MiB;

function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

/** What of the agent's state directory is not the audit log (journal, groups, operations). */
const stateFiles = (agent: ServedAgent) => files(agent.stateDir).filter((f) => !/audit/.test(f));

async function refusal(p: Promise<unknown>): Promise<RpcError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  if (!(e instanceof RpcError)) throw new Error(`expected a refusal, got ${JSON.stringify(e)}`);
  return e;
}

async function nothingStarted(t: Test, agent: ServedAgent, dom: hv.TestDomain, small: string, before: string[]) {
  const c = await agent.connect();
  t.same(readdirSync(small), [], 'no file was created on the destination filesystem');
  t.notMatch(await hv.liveXml(dom), /<mirror/, 'virsh: no copy started');
  t.same((await c.call('listJobs', { domain: dom.name })).jobs, [], 'no job');
  t.same(stateFiles(agent), before, 'no journal record (only the audit log changed)');
}

t.test('a destination on a filesystem without room is refused with the figures, creating nothing', async (t) => {
  const small = hv.smallFilesystem(t, 8);
  const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  const agent = await serveAgent(t);
  const c = await agent.connect();
  const before = stateFiles(agent);

  const e = await refusal(
    c.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: `${small}/copy.raw`, format: 'raw' } }),
  );
  t.equal(e.errorName, 'insufficientSpace', `refused: ${e.message}`);
  t.equal(e.code, -32024, 'its code');
  t.equal(e.data?.retryable, true, 'retryable: room may be made');
  t.equal(e.data?.needed, 16 * MiB + MARGIN, 'raw: the virtual size plus the margin');
  const fsNow = statfsSync(small);
  const avail = fsNow.bavail * fsNow.bsize;
  t.equal(e.data?.available, avail, 'available: statfs bavail × bsize of the directory');
  t.equal(e.data?.path, small, 'the directory checked');
  t.equal(e.data?.filesystem, small, 'the filesystem (its mount point)');
  t.match(e.data?.disks, [{ disk: 'vda', path: `${small}/copy.raw`, needed: 16 * MiB + MARGIN }], 'the copy counted');
  t.match(
    e.message,
    new RegExp(`needs up to ${16 * MiB + MARGIN} bytes but ${small} .* has ${avail} bytes available`),
    'the message names the figures',
  );

  // qcow2: the source's allocation (2 MiB written), not its virtual size, plus metadata and margin.
  await hv.guestWrite(dom, 'vda', { pattern: 0x3c, offset: 0, length: 2 * MiB });
  const q = await refusal(
    c.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: `${small}/copy.qcow2`, format: 'qcow2' } }),
  );
  t.equal(q.errorName, 'insufficientSpace', `qcow2 refused too: ${q.message}`);
  t.ok((q.data?.needed as number) < 16 * MiB + MARGIN, `qcow2 needs less than the raw figure (${q.data?.needed})`);
  t.ok((q.data?.needed as number) > 2 * MiB + MARGIN, 'but at least the allocated data and the margin');
  await nothingStarted(t, agent, dom, small, before);
});

t.test('a group whose disks fit one by one but not together is refused, creating nothing', async (t) => {
  const small = hv.smallFilesystem(t, 48);
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'raw', sizeMiB: 16 },
      { format: 'raw', sizeMiB: 16 },
    ],
  });
  const agent = await serveAgent(t);
  const c = await agent.connect();
  const before = stateFiles(agent);
  const each = 16 * MiB + MARGIN;

  const e = await refusal(
    c.call('blockCopyGroup', {
      domain: dom.name,
      disks: [
        { disk: 'vda', destination: { path: `${small}/a.raw`, format: 'raw' } },
        { disk: 'vdb', destination: { path: `${small}/b.raw`, format: 'raw' } },
      ],
    }),
  );
  t.equal(e.errorName, 'insufficientSpace', `refused: ${e.message}`);
  t.equal(e.data?.needed, 2 * each, 'needed: both copies together');
  t.ok((e.data?.available as number) >= each, `each alone would fit (${e.data?.available} available, ${each} each)`);
  t.match(e.data?.disks, [
    { disk: 'vda', needed: each },
    { disk: 'vdb', needed: each },
  ]);
  t.match(e.message, /the copies of vda, vdb together need/);
  await nothingStarted(t, agent, dom, small, before);

  // One of them alone has room: it copies onto the same filesystem.
  const one = await c.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${small}/a.raw`, format: 'raw' },
    whenReady: 'finish',
    wait: 'done',
  });
  t.equal(one.job.state, 'finished', 'a copy with room runs');
});

t.test('a copy with room runs; a reused destination counts what it already holds', async (t) => {
  // 40 MiB: a new raw copy of the 16 MiB disk needs 32 MiB; with a 16 MiB file already
  // allocated there only 24 MiB are left, enough because the reused file holds its share.
  const small = hv.smallFilesystem(t, 40);
  const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x4d, offset: 4 * MiB, length: 2 * MiB });
  const agent = await serveAgent(t);
  const c = await agent.connect();

  const fresh = await c.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${small}/new.raw`, format: 'raw' },
    whenReady: 'finish',
    wait: 'done',
  });
  t.equal(fresh.job.state, 'finished', 'a new destination with room copies');
  t.ok(await hv.readPattern(`${small}/new.raw`, 'raw', { pattern: 0x4d, offset: 4 * MiB, length: 2 * MiB }), 'qemu-io: the data is there');

  // Now make the file fully allocated: it is reused, the 24 MiB free would not hold a new copy.
  execFileSync('fallocate', ['-l', `${16 * MiB}`, `${small}/new.raw`]);
  const refused = await refusal(
    c.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: `${small}/other.raw`, format: 'raw' } }),
  );
  t.equal(refused.errorName, 'insufficientSpace', `a second new copy has no room: ${refused.message}`);
  const reused = await c.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${small}/new.raw`, format: 'raw' },
    reuseExternal: true,
    whenReady: 'finish',
    wait: 'done',
    jobId: 'reuse-1',
  });
  t.equal(reused.job.state, 'finished', 'the reused, already allocated file copies: it needs only what it lacks');
});

t.test('a running copy keeps its share: a second copy that would overcommit the filesystem is refused', async (t) => {
  const small = hv.smallFilesystem(t, 48);
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'raw', sizeMiB: 16 },
      { format: 'raw', sizeMiB: 16 },
    ],
  });
  // Data to copy, so that the slow copy stays in phase 1 for a while.
  await hv.guestWrite(dom, 'vda', { pattern: 0x5a, offset: 0, length: 8 * MiB });
  const agent = await serveAgent(t);
  const c = await agent.connect();
  const each = 16 * MiB + MARGIN;

  const first = await c.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${small}/a.raw`, format: 'raw' },
    bandwidth: 512 * 1024,
  });
  t.equal(first.job.state, 'copying', 'the first copy runs (slowly)');
  const e = await refusal(c.call('blockCopy', { domain: dom.name, disk: 'vdb', destination: { path: `${small}/b.raw`, format: 'raw' } }));
  t.equal(e.errorName, 'insufficientSpace', `the second is refused: ${e.message}`);
  t.match(
    e.data?.disks,
    [
      { disk: 'vdb', needed: each },
      { disk: 'vda', jobId: first.job.jobId },
    ],
    'the running copy is counted, by its job',
  );
  t.ok((e.data?.available as number) >= each, `the second alone would fit (${e.data?.available} available)`);
  t.notOk(readdirSync(small).includes('b.raw'), 'nothing created for the refused copy');

  await c.call('abort', { jobId: first.job.jobId });
  const ended = await c.call('wait', { jobId: first.job.jobId, until: 'done', timeout: 60 });
  t.equal(ended.job.state, 'cancelled', 'the first copy cancelled');
  const second = await c.call('blockCopy', {
    domain: dom.name,
    disk: 'vdb',
    destination: { path: `${small}/b.raw`, format: 'raw' },
    whenReady: 'finish',
    wait: 'done',
  });
  t.equal(second.job.state, 'finished', 'once the first ended, its share is free again');
});
