// Destination security against the real agent and libvirtd (issue 13, classes 1–4): a token
// holder's every trick to make QEMU write outside the allowed root, or onto another domain's
// disk, is refused, audited, and provably changes nothing (sha256 of every file outside the
// allowed places and of every domain's disks, before and after; no new files anywhere).
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { AgentClient, RpcError } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent, stateDir } from '../../harness/agent.js';
import { fingerprint } from '../helpers/fingerprint.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });

t.test('destination attacks are refused and change nothing', async (t) => {
  const root = hv.scratchDir('dsec-root-');
  const outside = hv.scratchDir('dsec-outside-');
  const mounts: string[] = [];
  t.teardown(async () => {
    for (const m of mounts.reverse()) await run('umount', [m]).catch(() => {});
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });
  writeFileSync(join(outside, 'precious.bin'), 'must never change');

  const victim = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32, backing: true }] });
  const other = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }], persistent: true });
  const offline = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }], persistent: true });
  await hv.virsh('destroy', offline.name); // defined, not running: only its inactive XML names the disk
  await hv.guestWrite(victim, 'vda', { pattern: 0x5a, offset: 0, length: 8 * MiB });

  // The attacker's props, as someone with root on the host might have left them lying around.
  const mk = (p: string, mode: number, uid = 0) => {
    mkdirSync(p);
    chmodSync(p, mode);
    chownSync(p, uid, 0);
    return p;
  };
  mk(join(root, 'sub'), 0o755);
  mk(join(root, 'group-writable'), 0o775);
  mk(join(root, 'world-sticky'), 0o1777);
  mk(join(root, 'nobody-owns'), 0o755, 65534);
  mk(join(root, 'swapped'), 0o755);
  symlinkSync(other.dir, join(root, 'other-vm-dir'));
  symlinkSync('/etc', join(root, 'etc'));
  symlinkSync(join(outside, 'precious.bin'), join(root, 'precious-link.raw'));
  linkSync(other.disks[0]!.path, join(root, 'hardlink-other.raw'));
  linkSync(offline.disks[0]!.path, join(root, 'hardlink-offline.raw'));
  linkSync(victim.disks[0]!.backingPath!, join(root, 'hardlink-backing.qcow2'));
  linkSync(join(outside, 'precious.bin'), join(root, 'hardlink-precious.raw'));
  writeFileSync(join(root, 'bind-target.raw'), '');
  await run('mount', ['--bind', other.disks[0]!.path, join(root, 'bind-target.raw')]);
  mounts.push(join(root, 'bind-target.raw'));
  await run('mkfifo', [join(root, 'fifo.raw')]);

  const dir = stateDir(t);
  const auditFile = join(dir, 'audit.log');
  const agent = await serveAgent(t, { dir, config: { allowedRoots: [root], audit: { file: auditFile } } });
  const client: AgentClient = await agent.connect();

  // Everything that must not change: files outside, every domain's disks and backing files,
  // and the props inside the root. /etc is fingerprinted by the files an attempt names.
  const watched = [outside, other.dir, offline.dir, victim.dir, root, '/etc/hostname', '/etc/passwd'];
  const before = fingerprint(watched);
  const listing = (d: string) => readdirSync(d).sort();
  const rootBefore = listing(root);

  // Swap a directory for a symlink after it was created as a trustworthy one.
  rmSync(join(root, 'swapped'), { recursive: true });
  symlinkSync(outside, join(root, 'swapped'));

  const file = (p: string) => `<disk type='file'><source file='${p}'/><driver type='qcow2'/></disk>`;
  const O = outside;
  const R = root;
  const SAME = /is the same (file|device) as/;
  const attempts: Array<[string, string, Record<string, unknown>, RegExp?]> = [
    // class 1: what libvirt receives is what the agent checked
    [
      '1',
      'a comment shows an allowed source, the real one is outside',
      { destinationXml: `<disk type='file'><!-- <source file='${R}/ok.qcow2'/> --><source file='${O}/c1.qcow2'/></disk>` },
    ],
    [
      '1',
      'the allowed source hidden in a comment after the real one',
      { destinationXml: `<disk type='file'><source file='${O}/c2.qcow2'/><!--<source file='${R}/ok.qcow2'/>--></disk>` },
    ],
    ['1', "whitespace around '='", { destinationXml: `<disk type='file'><source file = '${O}/ws.qcow2' /></disk>` }],
    ['1', 'tab and newline between attributes', { destinationXml: `<disk\ttype='file'><source\nfile='${O}/nl.qcow2'/></disk>` }],
    ['1', 'double quotes holding a single quote', { destinationXml: `<disk type="file"><source file="${O}/q'.qcow2"/></disk>` }],
    [
      '1',
      'file= and dev= on one source',
      { destinationXml: `<disk type='file'><source dev='${R}/ok.qcow2' file='${O}/both.qcow2'/></disk>` },
    ],
    [
      '1',
      'a DOCTYPE entity expanding to a path outside',
      { destinationXml: `<!DOCTYPE disk [<!ENTITY p "${O}/ent.qcow2">]><disk type='file'><source file='&p;'/></disk>` },
    ],
    [
      '1',
      'character references spelling a path outside',
      {
        destinationXml: `<disk type='file'><source file='${O.split('')
          .map((c) => `&#${c.charCodeAt(0)};`)
          .join('')}/cr.qcow2'/></disk>`,
      },
    ],
    [
      '1',
      'a CDATA section with another source',
      { destinationXml: `<disk type='file'><![CDATA[<source file='${R}/ok.qcow2'/>]]><source file='${O}/cd.qcow2'/></disk>` },
    ],
    [
      '1',
      "type='network' (no allowlist)",
      { destinationXml: `<disk type='network'><source protocol='nbd' name='x'><host name='127.0.0.1' port='10809'/></source></disk>` },
    ],
    ['1', 'network structured form (no allowlist)', { destination: { type: 'network', path: 'nbd://127.0.0.1:10809/x', format: 'raw' } }],
    [
      '1',
      'an extra <backingStore> naming /etc/passwd',
      {
        destinationXml: `<disk type='file'><source file='${R}/bs.qcow2'/><backingStore type='file'><format type='raw'/><source file='/etc/passwd'/></backingStore></disk>`,
      },
    ],
    [
      '1',
      'an extra <seclabel> relabelling the image',
      { destinationXml: `<disk type='file'><source file='${R}/sl.qcow2'><seclabel model='dac' relabel='no'/></source></disk>` },
    ],
    [
      '1',
      'two <source> elements',
      { destinationXml: `<disk type='file'><source file='${R}/ok.qcow2'/><source file='${O}/two.qcow2'/></disk>` },
    ],
    [
      '1',
      'a namespaced attribute',
      { destinationXml: `<disk type='file' xmlns:x='urn:x'><source x:file='${O}/ns.qcow2' file='${R}/ok.qcow2'/></disk>` },
    ],
    ['1', 'two root elements', { destinationXml: `${file(`${R}/ok.qcow2`)}${file(`${O}/second.qcow2`)}` }],
    ['1', 'a processing instruction', { destinationXml: `<?xml-stylesheet href='x'?>${file(`${R}/ok.qcow2`)}` }],
    ['1', 'type=block for a file path', { destinationXml: `<disk type='block'><source dev='${O}/precious.bin'/></disk>` }],
    // class 2: identity, not spelling
    [
      '2',
      "a hard link to another running domain's disk (reuseExternal)",
      { destination: { path: `${R}/hardlink-other.raw`, format: 'raw' }, reuseExternal: true },
      SAME,
    ],
    [
      '2',
      "a hard link to a defined, shut-off domain's disk",
      { destination: { path: `${R}/hardlink-offline.raw`, format: 'raw' }, reuseExternal: true },
      SAME,
    ],
    [
      '2',
      'a hard link to the backing file of the disk',
      { destination: { path: `${R}/hardlink-backing.qcow2`, format: 'qcow2' }, reuseExternal: true },
      SAME,
    ],
    [
      '2',
      "a bind mount of another domain's disk inside the root",
      { destination: { path: `${R}/bind-target.raw`, format: 'raw' }, reuseExternal: true },
      SAME,
    ],
    [
      '2',
      'a hard link to a file outside the root',
      { destination: { path: `${R}/hardlink-precious.raw`, format: 'raw' }, reuseExternal: true },
      /has 2 hard links/,
    ],
    [
      '2',
      "a symlinked parent to another domain's directory (reuseExternal)",
      { destination: { path: `${R}/other-vm-dir/disk0.raw`, format: 'raw' }, reuseExternal: true },
    ],
    ['2', "a symlinked parent to another domain's directory (new file)", { destination: { path: `${R}/other-vm-dir/new.qcow2` } }],
    ['2', "another domain's disk by its own path", { destination: { path: other.disks[0]!.path, format: 'raw' }, reuseExternal: true }],
    [
      '2',
      "another domain's disk spelled with '..'",
      { destination: { path: `${R}/../${other.dir.split('/').pop()}/disk0.raw`, format: 'raw' }, reuseExternal: true },
    ],
    [
      '2',
      "another domain's disk spelled with '//'",
      { destination: { path: other.disks[0]!.path.replace('/disk0', '//disk0'), format: 'raw' }, reuseExternal: true },
    ],
    // class 3: check-then-use
    ['3', 'a directory swapped for a symlink to outside', { destination: { path: `${R}/swapped/sw.qcow2` } }],
    ['3', 'a symlinked parent to /etc', { destination: { path: `${R}/etc/evil.qcow2` } }],
    ['3', 'a group-writable directory below the root', { destination: { path: `${R}/group-writable/gw.qcow2` } }],
    ['3', 'a sticky world-writable directory below the root', { destination: { path: `${R}/world-sticky/ws.qcow2` } }],
    ['3', 'a directory owned by nobody below the root', { destination: { path: `${R}/nobody-owns/no.qcow2` } }],
    [
      '3',
      'the final component is a symlink (reuseExternal)',
      { destination: { path: `${R}/precious-link.raw`, format: 'raw' }, reuseExternal: true },
    ],
    ['3', 'the final component is a FIFO (reuseExternal)', { destination: { path: `${R}/fifo.raw`, format: 'raw' }, reuseExternal: true }],
    ['3', 'the root itself', { destination: { path: R } }],
    ['3', 'a path outside every root', { destination: { path: `${O}/plain.qcow2` } }],
    ['3', 'a control character in the path', { destination: { path: `${R}/a\nb.qcow2` } }],
    // class 4: block devices stay opt-in
    ['4', 'a block device not in allowedDevices', { destination: { path: '/dev/loop0', type: 'block' } }],
  ];
  const rows: string[] = [];
  for (const [cls, tried, extra, why] of attempts) {
    const err = await client.call('blockCopy', { domain: victim.name, disk: 'vda', bandwidth: MiB, ...extra } as never).then(
      () => null,
      (x) => x as RpcError,
    );
    const reason = String(err?.data?.reason ?? err?.message ?? 'ACCEPTED');
    rows.push(`[${cls}] ${tried.padEnd(64)} → ${err?.errorName ?? 'accepted'}: ${reason}`);
    t.equal(err?.errorName, err && err.code === -32602 ? undefined : 'destinationRejected', `[${cls}] ${tried}: ${reason}`);
    if (err?.code === -32602) t.fail(`[${cls}] ${tried}: refused by the schema, not the policy`);
    if (why) t.match(reason, why, `[${cls}] ${tried}: refused for the right reason`);
  }
  // A group names its destinations through the same parser and policy.
  for (const disk of [
    { disk: 'vda', destinationXml: `<disk type='file'><!-- --><source file='${O}/g.qcow2'/></disk>` },
    { disk: 'vda', destination: { path: `${R}/hardlink-other.raw`, format: 'raw' }, reuseExternal: true },
  ]) {
    const err = await client.call('blockCopyGroup', { domain: victim.name, disks: [disk] } as never).then(
      () => null,
      (x) => x as RpcError,
    );
    rows.push(
      `[g] ${`blockCopyGroup ${JSON.stringify(disk).slice(0, 50)}`.padEnd(64)} → ${err?.errorName}: ${String(err?.data?.reason ?? err?.message)}`,
    );
    t.equal(err?.errorName, 'destinationRejected', `blockCopyGroup: ${String(err?.data?.reason ?? err?.message)}`);
  }
  t.comment(`\n  destination attacks\n  ${rows.join('\n  ')}`);

  t.notMatch(await hv.liveXml(victim), /<mirror/, 'no copy started');
  // Put the swapped directory's symlink back out of the way before comparing.
  rmSync(join(root, 'swapped'));
  mkdirSync(join(root, 'swapped'), { mode: 0o755 });
  const after = fingerprint(watched);
  t.same([...after.entries()].sort(), [...before.entries()].sort(), 'sha256 of every watched file unchanged, none added or removed');
  t.same(listing(root), rootBefore, 'nothing created in the root');
  t.same(listing(outside), ['.owner-pid', 'precious.bin'], 'nothing created outside');
  t.notOk(existsSync('/etc/evil.qcow2'), 'nothing created in /etc');

  const audit = readFileSync(auditFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.equal(
    audit.filter((a) => a.method === 'blockCopy' && a.error?.name === 'destinationRejected').length,
    attempts.length,
    'every refusal is audited',
  );
  t.equal(audit.filter((a) => a.method === 'blockCopyGroup' && a.error?.name === 'destinationRejected').length, 2, 'group refusals too');

  await t.test("the accepted shape still works, and libvirt gets the agent's own XML", async (t) => {
    const dest = `${root}/sub/good.qcow2`;
    const caller = `<disk type = "file" >\n  <driver name="qemu" type="qcow2"/>\n  <source file = "${dest}" />\n</disk>`;
    const { job } = await client.call('blockCopy', { domain: victim.name, disk: 'vda', destinationXml: caller, bandwidth: MiB });
    t.equal(job.destination.path, dest);
    const journal = JSON.parse(
      readFileSync(
        join(
          agent.stateDir,
          readdirSync(agent.stateDir).find((f) => f.includes(job.jobId))!,
        ),
        'utf8',
      ),
    );
    t.equal(
      journal.destinationXml,
      `<disk type='file'><source file='${dest}'/><driver type='qcow2'/></disk>`,
      "what libvirt was given is the serialization, not the caller's text",
    );
    t.match(
      await hv.liveXml(victim),
      new RegExp(`<mirror type='file' [^>]*>\\s*<format type='qcow2'/>\\s*<source file='${dest}'`),
      'libvirt mirrors to the checked path',
    );
    await client.call('abort', { jobId: job.jobId });
    rmSync(dest, { force: true });
  });
});

t.test('network destinations: refused unless listed; listed, a real copy to qemu-nbd', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x3c, offset: 0, length: 16 * MiB });
  const export_ = join(dom.dir, 'nbd-export.raw');
  await hv.createImage(export_, 'raw', 16);
  const port = await freePort();
  const nbd = spawn('qemu-nbd', ['-f', 'raw', '--persistent', '-b', '127.0.0.1', '-p', String(port), '-x', 'bc-export', export_], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const nbdExited = new Promise((r) => nbd.once('exit', r));
  t.teardown(async () => {
    if (nbd.exitCode === null) nbd.kill('SIGTERM');
    await nbdExited;
  });
  for (
    let i = 0;
    i < 50 &&
    !(await run('qemu-img', ['info', `nbd://127.0.0.1:${port}/bc-export`]).then(
      () => true,
      () => false,
    ));
    i++
  )
    await new Promise((r) => setTimeout(r, 100));

  const root = hv.scratchDir('dsec-net-');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const agent = await serveAgent(t, {
    config: { allowedRoots: [root], allowedNetworkDestinations: [{ protocol: 'nbd', host: '127.0.0.1', port, namePattern: 'bc-[a-z]+' }] },
  });
  const client = await agent.connect();
  const url = `nbd://127.0.0.1:${port}/bc-export`;
  const refused: Array<[string, Record<string, unknown>]> = [
    ['another port', { destination: { type: 'network', path: `nbd://127.0.0.1:${port + 1}/bc-export`, format: 'raw' } }],
    ['a name the pattern does not match', { destination: { type: 'network', path: `nbd://127.0.0.1:${port}/other`, format: 'raw' } }],
    [
      'localhost instead of 127.0.0.1',
      {
        destinationXml: `<disk type='network'><source protocol='nbd' name='bc-export'><host name='localhost' port='${port}'/></source></disk>`,
      },
    ],
    [
      'rbd on the listed host and port',
      {
        destinationXml: `<disk type='network'><source protocol='rbd' name='bc-export'><host name='127.0.0.1' port='${port}'/></source></disk>`,
      },
    ],
    [
      'a unix socket transport',
      {
        destinationXml: `<disk type='network'><source protocol='nbd' name='bc-export'><host transport='unix' socket='/run/x.sock'/></source></disk>`,
      },
    ],
    [
      'two hosts',
      {
        destinationXml: `<disk type='network'><source protocol='nbd' name='bc-export'><host name='127.0.0.1' port='${port}'/><host name='10.0.0.1' port='${port}'/></source></disk>`,
      },
    ],
  ];
  for (const [tried, extra] of refused) {
    const err = await client.call('blockCopy', { domain: dom.name, disk: 'vda', reuseExternal: true, ...extra } as never).then(
      () => null,
      (x) => x as RpcError,
    );
    t.equal(err?.errorName, 'destinationRejected', `${tried}: ${err?.data?.reason ?? err?.message}`);
  }
  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    reuseExternal: true,
    wait: 'done',
    whenReady: 'finish',
    timeout: 120,
    destinationXml: `<disk type='network'><driver name='qemu' type='raw'/><source protocol='nbd' name='bc-export'><host name='127.0.0.1' port='${port}'/></source></disk>`,
  });
  t.equal(job.state, 'finished', 'the copy to the listed NBD export finished');
  t.same(job.destination, { path: url, format: 'raw', type: 'network' });
  t.equal(
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', dom.disks[0]!.path, url]).then(
      (r) => r.stdout.trim(),
      (e) => String(e.stdout || e.message),
    ),
    'Images are identical.',
    'qemu-img compare over nbd://: the export holds the disk',
  );
  nbd.kill('SIGTERM');
  await nbdExited;
  t.equal(
    await hv.compareImages(dom.disks[0]!.path, export_, ['raw', 'raw']),
    'identical',
    'and so does its backing file once qemu-nbd stopped',
  );
});

t.test("block devices: only listed ones, never one that holds a domain's images", async (t) => {
  const base = hv.scratchDir('dsec-blk-');
  const loops: string[] = [];
  const mnt = join(base, 'mnt');
  mkdirSync(mnt, { mode: 0o755 });
  t.teardown(async () => {
    await run('umount', [mnt]).catch(() => {});
    for (const l of loops) await run('losetup', ['-d', l]).catch(() => {});
    rmSync(base, { recursive: true, force: true });
  });
  const loop = async (name: string, mib: number) => {
    await hv.createImage(join(base, name), 'raw', mib);
    const dev = (await run('losetup', ['--find', '--show', join(base, name)])).stdout.trim();
    loops.push(dev);
    return dev;
  };
  const fsDev = await loop('fs.img', 64);
  const rawDev = await loop('raw.img', 16);
  await run('mkfs.ext4', ['-q', fsDev]);
  await run('mount', [fsDev, mnt]);
  chmodSync(mnt, 0o755);

  const a = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  const b = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  await hv.guestWrite(b, 'vda', { pattern: 0x77, offset: 0, length: 16 * MiB });
  const agent = await serveAgent(t, { config: { allowedRoots: [mnt], allowedDevices: [fsDev, rawDev] } });
  const client = await agent.connect();
  // a's copy now lives on the file system fsDev holds.
  const { job: running } = await client.call('blockCopy', {
    domain: a.name,
    disk: 'vda',
    destination: { path: `${mnt}/a-copy.raw`, format: 'raw' },
    bandwidth: MiB,
  });
  const fsBefore = fingerprint([join(base, 'fs.img')]);
  const err = await client
    .call('blockCopy', { domain: b.name, disk: 'vda', destination: { path: fsDev, type: 'block', format: 'raw' } })
    .then(
      () => null,
      (x) => x as RpcError,
    );
  t.equal(err?.errorName, 'destinationRejected', `a listed device holding a mirror's file system: ${err?.data?.reason}`);
  t.match(String(err?.data?.reason), /holds the file system of .*a-copy\.raw/);
  t.same(fingerprint([join(base, 'fs.img')]), fsBefore, 'its contents unchanged');
  const notListed = await client.call('blockCopy', { domain: b.name, disk: 'vda', destination: { path: '/dev/null', type: 'block' } }).then(
    () => null,
    (x) => x as RpcError,
  );
  t.equal(notListed?.errorName, 'destinationRejected', `a character device: ${notListed?.data?.reason}`);
  const { job } = await client.call('blockCopy', {
    domain: b.name,
    disk: 'vda',
    destination: { path: rawDev, type: 'block', format: 'raw' },
    wait: 'done',
    whenReady: 'finish',
    timeout: 120,
  });
  t.equal(job.state, 'finished', 'a listed, unused device works');
  t.equal(await hv.compareImages(b.disks[0]!.path, rawDev, ['raw', 'raw']), 'identical', 'qemu-img compare: the device holds the disk');
  await client.call('abort', { jobId: running.jobId });
  await client.call('wait', { jobId: running.jobId, until: 'done', timeout: 60 });
});

t.test('the agent refuses to start on an untrustworthy root, and says why', async (t) => {
  const base = hv.scratchDir('dsec-start-');
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const good = join(base, 'good');
  mkdirSync(good, { mode: 0o755 });
  const gw = join(base, 'group-writable');
  mkdirSync(gw);
  chmodSync(gw, 0o775);
  mkdirSync(join(gw, 'inner'), { mode: 0o755 });
  symlinkSync(good, join(base, 'link'));
  const notRoot = join(base, 'nobody');
  mkdirSync(notRoot, { mode: 0o755 });
  chownSync(notRoot, 65534, 65534);
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['a root that is a symlink', { allowedRoots: [join(base, 'link')] }, /is a symbolic link/],
    ['a group-writable root', { allowedRoots: [gw] }, /writable by group or others/],
    ['a root below a group-writable directory', { allowedRoots: [join(gw, 'inner')] }, /ancestor .* writable by group or others/],
    ['a root owned by nobody', { allowedRoots: [notRoot] }, /owned by uid 65534/],
    ['a root that does not exist', { allowedRoots: [join(base, 'missing')] }, /does not exist/],
    ['the refusal names the missing sticky bit', { allowedRoots: [join(gw, 'inner')] }, /not sticky/],
    ['an unknown trusted owner', { allowedRoots: [good], trustedDirectoryOwners: ['no-such-user-xyz'] }, /not a user/],
  ];
  for (const [tried, config, want] of cases) {
    const dir = stateDir(t);
    writeFileSync(join(dir, 'c.json'), JSON.stringify(config));
    const child = spawn(process.execPath, [CLI, 'serve', '--no-listen', '--state-dir', dir, '--config', join(dir, 'c.json')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    t.equal(code, 1, `${tried}: refuses to start`);
    t.match(err, want, `${tried}: ${err.trim().split('\n').pop()}`);
  }
});

t.test('secure defaults', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const call = async (config: Record<string, unknown>, dest: string) => {
    const agent = await serveAgent(t, { config });
    const client = await agent.connect();
    const err = await client.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest }, bandwidth: MiB }).then(
      () => null,
      (x) => x as RpcError,
    );
    await agent.stop();
    return String(err?.errorName) + ': ' + String(err?.data?.reason ?? err?.message);
  };
  // The helper allows TEST_ROOT; a config without allowedRoots gets the built-in default.
  const noRoots = await call({ allowedRoots: undefined }, `${dom.dir}/d.qcow2`);
  t.match(noRoots, /destinationRejected: .*not under an allowed root \(\/var\/lib\/libvirt\/images\)/, `default roots: ${noRoots}`);
  const empty = await call({ allowedRoots: [] }, `${dom.dir}/d.qcow2`);
  t.match(empty, /not under an allowed root \(none configured\)/, `empty roots mean none: ${empty}`);
  // allowAnyDestination: warned about at start, and still no untrustworthy directory (/var/tmp is 1777).
  const dir = stateDir(t);
  writeFileSync(join(dir, 'c.json'), JSON.stringify({ allowAnyDestination: true }));
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--no-listen', '--state-dir', dir, '--config', join(dir, 'c.json'), '--log-level', 'warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  child.stderr.on('data', (d) => {
    out += d;
  });
  for (let i = 0; i < 100 && !out.includes('allowAnyDestination'); i++) await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  t.match(out, /"level":"warn"[^\n]*allowAnyDestination/, 'allowAnyDestination is logged as a warning');
  const anywhere = await call({ allowAnyDestination: true }, `${dom.dir}/d.qcow2`);
  t.match(anywhere, /'\/var\/tmp' is writable by group or others/, `anywhere still needs trustworthy directories: ${anywhere}`);
  t.notOk(existsSync(`${dom.dir}/d.qcow2`), 'nothing written');
});
