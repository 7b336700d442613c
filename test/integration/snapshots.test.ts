// snapshotDisks against the real agent over its real transport (WebSocket) and the real
// libvirtd: one moment, only the listed disks, overlays under the destination policy, quiesce
// as asked, journaled before the call and settled after a crash. virsh, qemu-img and qemu-io
// are the independent witnesses.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AgentClient, RpcError } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent, stateDir } from '../../harness/agent.js';
import { fingerprint } from '../helpers/fingerprint.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** The files of the disk's chain in the live XML, top first. */
const chain = hv.liveChain;

async function backingOf(path: string): Promise<string | null> {
  const out = await run('qemu-img', ['info', '-U', '--output=json', path]);
  return (JSON.parse(out.stdout) as { 'backing-filename'?: string })['backing-filename'] ?? null;
}

/** The agent error name the call fails with (undefined: it succeeded). */
async function errorOf(p: Promise<unknown>): Promise<RpcError | undefined> {
  return p.then(
    () => undefined,
    (e: unknown) => {
      if (e instanceof RpcError) return e;
      throw e;
    },
  );
}

/** The audit file's entries. */
const auditEntries = (file: string) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { method: string; outcome: string; requestId: string; error?: { message: string } });

const ops = (dir: string) => readdirSync(dir).filter((f) => /^op-.*\.json$/.test(f));

async function agentFor(t: Test, root: string, extra: Record<string, unknown> = {}) {
  const dir = stateDir(t);
  const auditFile = join(dir, 'audit.log');
  const agent = await serveAgent(t, {
    dir,
    config: { allowedRoots: [root], audit: { file: auditFile }, ...extra },
    tokens: [{ name: 'viewer', token: 'viewer-token-0123456789abcdef', readOnly: true }],
  });
  return { agent, client: await agent.connect(), dir, auditFile };
}

t.test('one disk of two, while the guest writes: only that disk gets an overlay', async (t) => {
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 64 },
      { format: 'qcow2', sizeMiB: 16 },
    ],
  });
  const [vda, vdb] = [dom.disks[0]!, dom.disks[1]!];
  const { client, dir, auditFile } = await agentFor(t, hv.TEST_ROOT);
  await hv.guestWrite(dom, 'vda', { pattern: 0x11, offset: 0, length: 4 * MiB });
  const vdbXmlBefore = await chain(dom, 'vdb');

  // The guest keeps writing (1 MiB blocks through QEMU's block layer) while the snapshot is taken.
  let writing = true;
  const written: number[] = [];
  const writer = (async () => {
    for (let i = 0; writing && i < 40; i++) {
      await hv.guestWrite(dom, 'vda', { pattern: 0x40 + i, offset: (8 + i) * MiB, length: MiB });
      written.push(i);
    }
  })();
  const overlay = join(dom.dir, 'vda-snap.qcow2');
  const res = await client.call('snapshotDisks', { domain: dom.name, disks: [{ disk: 'vda', overlay: { path: overlay } }] });
  writing = false;
  await writer;
  t.same(
    res,
    {
      domain: { name: dom.name, uuid: dom.uuid },
      quiesced: false,
      disks: [{ disk: 'vda', overlay: { path: overlay, format: 'qcow2' }, backing: vda.path }],
    },
    'the answer names the overlay and its backing',
  );
  t.same(await chain(dom, 'vda'), [overlay, vda.path], 'live XML: vda runs on the overlay, backed by its former image');
  t.same(await chain(dom, 'vdb'), vdbXmlBefore, 'vdb is untouched');
  t.equal(await backingOf(overlay), vda.path, 'qemu-img: the overlay is backed by the former image');
  t.equal(await backingOf(vdb.path), null, 'vdb has no overlay');
  t.notOk(existsSync(join(dom.dir, 'disk1.qcow2.snap')), 'no stray file');
  t.notMatch(await hv.virsh('snapshot-list', dom.name, '--name'), /\S/, 'no libvirt snapshot metadata');
  t.ok(written.length > 0, `the guest wrote ${written.length} blocks meanwhile`);

  // Every write the guest made, before, during and after, reads back through the chain.
  await hv.guestWrite(dom, 'vda', { pattern: 0x99, offset: 60 * MiB, length: MiB });
  t.ok(await hv.readPattern(overlay, 'qcow2', { pattern: 0x11, offset: 0, length: 4 * MiB }), 'the write from before');
  for (const i of written) {
    if (!(await hv.readPattern(overlay, 'qcow2', { pattern: 0x40 + i, offset: (8 + i) * MiB, length: MiB }))) t.fail(`write ${i} lost`);
  }
  t.ok(await hv.readPattern(overlay, 'qcow2', { pattern: 0x99, offset: 60 * MiB, length: MiB }), 'the write from after');
  t.notOk(
    await hv.readPattern(vda.path, 'qcow2', { pattern: 0x99, offset: 60 * MiB, length: MiB }),
    'the former image holds no write from after',
  );
  t.same(ops(dir), [], 'no operation record left');
  const audit = auditEntries(auditFile).filter((e) => e.method === 'snapshotDisks');
  t.same(
    audit.map((e) => e.outcome),
    ['accepted', 'ok'],
    'audited before and after',
  );
});

t.test('overlays the policy refuses change nothing', async (t) => {
  const root = hv.scratchDir('snap-root-');
  const outside = hv.scratchDir('snap-outside-');
  t.teardown(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const other = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  writeFileSync(join(root, 'exists.qcow2'), 'an existing file');
  symlinkSync(outside, join(root, 'link'));
  linkSync(other.disks[0]!.path, join(root, 'other-disk.qcow2'));
  mkdirSync(join(root, 'sub'));
  const { client, dir } = await agentFor(t, root);
  const watched = [root, outside, dom.dir, other.dir];
  const before = fingerprint(watched);
  const listing = () => watched.map((d) => readdirSync(d).sort().join(','));
  const listed = listing();
  const vda = await chain(dom, 'vda');

  const attempts: Array<[string, string, string]> = [
    ['outside the allowed roots', join(outside, 'o.qcow2'), 'destinationRejected'],
    ["in the domain's own directory, outside the roots", join(dom.dir, 'o.qcow2'), 'destinationRejected'],
    ['an existing file', join(root, 'exists.qcow2'), 'destinationRejected'],
    ['below a symlinked parent', join(root, 'link', 'o.qcow2'), 'destinationRejected'],
    ["another domain's disk", other.disks[0]!.path, 'destinationRejected'],
    ["a hard link to another domain's disk", join(root, 'other-disk.qcow2'), 'destinationRejected'],
    ["the disk's own image", dom.disks[0]!.path, 'destinationRejected'],
    ['a path with ..', `${root}/sub/../o.qcow2`, 'destinationRejected'],
  ];
  for (const [what, path, name] of attempts) {
    const e = await errorOf(client.call('snapshotDisks', { domain: dom.name, disks: [{ disk: 'vda', overlay: { path } }] }));
    t.equal(e?.errorName, name, `${what}: ${name} (${e?.message})`);
  }
  const raw = await errorOf(
    client.call('snapshotDisks', {
      domain: dom.name,
      disks: [{ disk: 'vda', overlay: { path: join(root, 'r.raw'), format: 'raw' as 'qcow2' } }],
    }),
  );
  t.equal(raw?.code, -32602, 'a raw overlay: invalid params');
  const twice = await errorOf(
    client.call('snapshotDisks', {
      domain: dom.name,
      disks: [
        { disk: 'vda', overlay: { path: join(root, 'a.qcow2') } },
        { disk: 'vda', overlay: { path: join(root, 'b.qcow2') } },
      ],
    }),
  );
  t.equal(twice?.errorName, 'destinationRejected', 'a disk listed twice');
  const noDisk = await errorOf(
    client.call('snapshotDisks', { domain: dom.name, disks: [{ disk: 'vdz', overlay: { path: join(root, 'z.qcow2') } }] }),
  );
  t.equal(noDisk?.errorName, 'notFound', 'a disk the domain does not have');

  t.same(await chain(dom, 'vda'), vda, 'the live XML is unchanged');
  t.same(listing(), listed, 'no file was created anywhere');
  t.same(fingerprint(watched), before, 'no file changed');
  t.same(ops(dir), [], 'no operation record left');
});

t.test('a read-only principal is refused', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const { agent } = await agentFor(t, hv.TEST_ROOT);
  const viewer = await AgentClient.connect(agent.url, { headers: { authorization: 'Bearer viewer-token-0123456789abcdef' } });
  t.teardown(() => viewer.close());
  const e = await errorOf(
    viewer.call('snapshotDisks', { domain: dom.name, disks: [{ disk: 'vda', overlay: { path: join(dom.dir, 'v.qcow2') } }] }),
  );
  t.equal(e?.errorName, 'unauthorized', 'unauthorized');
  t.notOk(existsSync(join(dom.dir, 'v.qcow2')), 'no overlay');
});

t.test('a disk in a block job is refused (jobExists)', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16, backing: true }] });
  const { client } = await agentFor(t, hv.TEST_ROOT);
  await hv.virsh('blockpull', dom.name, 'vda', '--bandwidth', '1');
  const e = await errorOf(
    client.call('snapshotDisks', { domain: dom.name, disks: [{ disk: 'vda', overlay: { path: join(dom.dir, 'j.qcow2') } }] }),
  );
  t.equal(e?.errorName, 'jobExists', `jobExists (${e?.message})`);
  t.notOk(existsSync(join(dom.dir, 'j.qcow2')), 'no overlay');
  await hv.virsh('blockjob', dom.name, 'vda', '--abort');
});

t.test('quiesce: required without a guest agent fails and changes nothing; try takes it unquiesced', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }], guestAgentChannel: true });
  const bare = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const { client, dir } = await agentFor(t, hv.TEST_ROOT);
  for (const d of [dom, bare]) {
    const before = await chain(d, 'vda');
    const overlay = join(d.dir, 'q.qcow2');
    const e = await errorOf(
      client.call('snapshotDisks', { domain: d.name, disks: [{ disk: 'vda', overlay: { path: overlay } }], quiesce: 'required' }),
    );
    const what = d === dom ? 'a channel but no agent in the guest' : 'no guest agent channel';
    t.equal(e?.errorName, 'quiesceFailed', `${what}: quiesceFailed (${e?.message})`);
    t.type(e?.data?.libvirt, 'object', `${what}: libvirt's error is carried`);
    t.same(await chain(d, 'vda'), before, `${what}: the live XML is unchanged`);
    t.notOk(existsSync(overlay), `${what}: no overlay file`);

    const res = await client.call('snapshotDisks', {
      domain: d.name,
      disks: [{ disk: 'vda', overlay: { path: overlay } }],
      quiesce: 'try',
    });
    t.equal(res.quiesced, false, `${what}: try answers quiesced=false`);
    t.same(await chain(d, 'vda'), [overlay, d.disks[0]!.path], `${what}: try took the snapshot`);
  }
  t.same(ops(dir), [], 'no operation record left');
});

t.test('a record left by a crash is settled from the live XML at start-up', async (t) => {
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 16 },
      { format: 'qcow2', sizeMiB: 16 },
    ],
  });
  // vda: the snapshot happened (taken outside, as the crashed agent's call would have); vdb: it did not.
  const overlay = join(dom.dir, 'crash.qcow2');
  await hv.virsh(
    'snapshot-create-as',
    dom.name,
    '--disk-only',
    '--no-metadata',
    '--atomic',
    '--diskspec',
    `vda,snapshot=external,file=${overlay}`,
    '--diskspec',
    'vdb,snapshot=no',
  );
  const dir = stateDir(t);
  const uuid = dom.uuid;
  const rec = (opId: string, disk: string, ov: string, source: string) =>
    writeFileSync(
      join(dir, `op-${opId}.json`),
      JSON.stringify({
        opId,
        kind: 'snapshot',
        domain: { name: dom.name, uuid },
        disks: [{ disk, overlay: ov, source }],
        at: new Date().toISOString(),
        principal: 'test-admin',
      }),
      { mode: 0o600 },
    );
  rec('happened-1', 'vda', overlay, dom.disks[0]!.path);
  rec('not-taken-2', 'vdb', join(dom.dir, 'never.qcow2'), dom.disks[1]!.path);
  const auditFile = join(dir, 'audit.log');
  await serveAgent(t, { dir, config: { audit: { file: auditFile } } });
  t.same(ops(dir), [], 'both records settled and removed');
  const audit = auditEntries(auditFile);
  t.match(
    audit.find((e) => e.requestId === 'recover-happened-1'),
    { method: 'snapshotDisks', outcome: 'ok' },
    'audited: the snapshot was taken',
  );
  t.match(
    audit.find((e) => e.requestId === 'recover-not-taken-2'),
    { method: 'snapshotDisks', outcome: 'error', error: { message: /not taken/ } },
    'audited: the snapshot was not taken',
  );
});

t.test('SIGKILL right before and right after the libvirt call: the next start settles the record', async (t) => {
  for (const [point, happened] of [
    ['snapshot:journaled', false],
    ['snapshot:sent', true],
  ] as const) {
    const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
    const vda = dom.disks[0]!.path;
    const dir = stateDir(t);
    const auditFile = join(dir, 'audit.log');
    const first = await serveAgent(t, { dir, config: { audit: { file: auditFile } }, env: { BLOCKCOPY_FAULT_KILL_AT: point } });
    const client = await first.connect();
    const overlay = join(dom.dir, 'killed.qcow2');
    const call = client.call('snapshotDisks', { domain: dom.name, disks: [{ disk: 'vda', overlay: { path: overlay } }] });
    await call.then(
      () => t.fail(`${point}: answered`),
      () => t.pass(`${point}: the call got no answer`),
    );
    t.equal(await first.stop(), null, `${point}: the agent was killed`);
    t.equal(ops(dir).length, 1, `${point}: the record was durable before the call`);
    t.same(await chain(dom, 'vda'), happened ? [overlay, vda] : [vda], `${point}: the live XML ${happened ? 'has' : 'has no'} overlay`);

    await serveAgent(t, { dir, config: { audit: { file: auditFile } } });
    t.same(ops(dir), [], `${point}: the restarted agent settled and removed the record`);
    const settled = auditEntries(auditFile).find((e) => e.requestId.startsWith('recover-'));
    t.equal(settled?.outcome, happened ? 'ok' : 'error', `${point}: audited as ${happened ? 'taken' : 'not taken'}`);
  }
});

t.test('a persistent domain: libvirt moves its definition onto the overlay too', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }], persistent: true });
  const { client } = await agentFor(t, hv.TEST_ROOT);
  const overlay = join(dom.dir, 'persistent.qcow2');
  await client.call('snapshotDisks', { domain: dom.uuid, disks: [{ disk: 'vda', overlay: { path: overlay } }] });
  t.same(await chain(dom, 'vda'), [overlay, dom.disks[0]!.path], 'live XML: on the overlay');
  t.match(
    await hv.virsh('dumpxml', '--inactive', dom.name),
    new RegExp(`<source file='${overlay}'`),
    'persistent definition: on the overlay',
  );
});
