// An image's header, read and checked without qemu-img or root: qcow2 headers built byte by
// byte, the names they store resolved as QEMU resolves them, the policy applied to every file
// or endpoint they name (backing, data file), and the re-check right before libvirt is called.
import t, { type Test } from 'tap';
import { chmodSync, linkSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentError } from '../../src/errors.js';
import { parseQcow2, readImageHeader, referenceOf } from '../../src/destination/image-header.js';
import { makeDestinationCheck, type DestinationCheck, type DestinationContext } from '../../src/destination/policy.js';
import type { Destination } from '../../src/generated/api.js';
import { JobManager } from '../../src/jobs/manager.js';
import { silentLogger } from '../../src/log.js';
import { fakeHost } from './fake-connection.js';
import { qcow2, type HeaderSpec } from './qcow2-header.js';

/** destinationRejected's reason, or 'accepted'. */
const refusal = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'accepted',
    (e: unknown) => {
      if (!(e instanceof AgentError) || e.errorName !== 'destinationRejected') throw e;
      return e.data.reason as string;
    },
  );

function scratch(t: Test): string {
  const d = mkdtempSync(join(tmpdir(), 'bc-imghdr-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

t.test('parseQcow2: every field from hand-built headers', async (t) => {
  t.same(parseQcow2(qcow2()), {
    backing: null,
    backingFormat: null,
    dataFile: null,
    needsDataFile: false,
    encrypted: false,
    virtualSize: 32n << 20n,
  });
  t.same(parseQcow2(qcow2({ backing: '/b/base.qcow2', backingFormat: 'qcow2', dataFile: '/d/data.raw' })), {
    backing: '/b/base.qcow2',
    backingFormat: 'qcow2',
    dataFile: '/d/data.raw',
    needsDataFile: true,
    encrypted: false,
    virtualSize: 32n << 20n,
  });
  t.same(parseQcow2(qcow2({ version: 2, backing: '../x', backingFormat: 'raw' })).backing, '../x', 'version 2');
  t.equal(parseQcow2(qcow2({ needsDataFile: true })).needsDataFile, true, 'the incompatible bit alone');
  t.equal(parseQcow2(qcow2({ encrypted: true })).encrypted, true);
  t.throws(() => parseQcow2(qcow2().subarray(0, 80)), /truncated/);
  t.throws(() => parseQcow2(qcow2({ backing: 'a\nb' })), /control character/);
  const far = qcow2({ backing: 'x' });
  far.writeBigUInt64BE(1n << 20n, 8);
  t.throws(() => parseQcow2(far), /beyond/);
  const v4 = qcow2();
  v4.writeUInt32BE(4, 4);
  t.throws(() => parseQcow2(v4), /version 4/);
});

t.test('readImageHeader: detects the format, follows nothing, never blocks', async (t) => {
  const d = scratch(t);
  writeFileSync(join(d, 'a.qcow2'), qcow2({ backing: 'base' }));
  writeFileSync(join(d, 'raw.img'), Buffer.alloc(8192));
  const qed = Buffer.alloc(512);
  qed.writeUInt32LE(0x00444551, 0);
  writeFileSync(join(d, 'a.qed'), qed);
  symlinkSync(join(d, 'a.qcow2'), join(d, 'link.qcow2'));
  execFileSync('mkfifo', [join(d, 'fifo')]);
  const h = await readImageHeader(join(d, 'a.qcow2'));
  t.equal(h.detected, 'qcow2');
  t.equal(h.backing, 'base');
  t.ok(h.stat.isFile());
  t.equal((await readImageHeader(join(d, 'raw.img'))).detected, null, 'raw data: no format');
  t.equal((await readImageHeader(join(d, 'a.qed'))).detected, 'qed');
  await t.rejects(readImageHeader(join(d, 'link.qcow2')), /symbolic link/);
  await t.rejects(readImageHeader(join(d, 'fifo')), /neither a regular file nor a block device/);
});

t.test('referenceOf: what a stored name makes QEMU open', async (t) => {
  t.same(referenceOf('/abs/base.qcow2', '/img/dir/top.qcow2'), { kind: 'file', path: '/abs/base.qcow2' });
  t.same(referenceOf('../x.raw', '/img/dir/top.qcow2'), { kind: 'file', path: '/img/x.raw' }, "relative to the image's directory");
  t.same(referenceOf('file:base', '/img/top.qcow2'), { kind: 'file', path: '/img/base' });
  t.same(referenceOf('./a:b', '/img/top.qcow2'), { kind: 'file', path: '/img/a:b' }, "a ':' after a '/' is not a protocol");
  t.same(referenceOf('nbd://h:1/x', '/img/top.qcow2'), { kind: 'protocol', protocol: 'nbd', name: 'nbd://h:1/x' });
  t.match(referenceOf('json:{"file":{}}', '/img/top.qcow2'), { kind: 'protocol', protocol: 'json' });
});

/** A scratch host: an allowed root, a source disk on a backing file, and the policy's context. */
function host(t: Test) {
  const base = scratch(t);
  chmodSync(base, 0o755);
  const root = join(base, 'root');
  const vm = join(base, 'vm');
  const outside = join(base, 'outside');
  for (const d of [root, vm, outside]) mkdirSync(d, { mode: 0o755 });
  const backing = join(vm, 'base.qcow2');
  const source = join(vm, 'disk.qcow2');
  writeFileSync(backing, qcow2());
  writeFileSync(source, qcow2({ backing, backingFormat: 'qcow2' }));
  writeFileSync(join(vm, 'other-vm.raw'), 'another domain');
  writeFileSync(join(outside, 'secret.raw'), 'secret');
  const check = makeDestinationCheck({
    roots: [root],
    devices: [],
    trustedOwners: new Set([process.getuid!()]),
    network: [{ protocol: 'nbd', host: '127.0.0.1', port: 10809, namePattern: 'ok' }],
  });
  const ctx: DestinationContext = {
    reuseExternal: true,
    shallow: true,
    disk: { target: 'vda', device: 'disk', type: 'file', sourcePath: source, format: 'qcow2', mirror: null, backingPaths: [backing] },
    domainDisks: [join(vm, 'other-vm.raw')],
  };
  const image = (name: string, h: HeaderSpec | Buffer) => {
    writeFileSync(join(root, name), Buffer.isBuffer(h) ? h : qcow2(h));
    return join(root, name);
  };
  const reason = async (path: string, extra: Partial<DestinationContext> = {}, dest: Partial<Destination> = {}) => {
    try {
      await check({ path, format: 'qcow2', ...dest }, { ...ctx, ...extra });
      return 'accepted';
    } catch (e) {
      if (!(e instanceof AgentError) || e.errorName !== 'destinationRejected') throw e;
      return e.data.reason as string;
    }
  };
  return { base, root, vm, outside, backing, source, check, ctx, image, reason };
}

t.test('a reused qcow2: the backing must be the disk’s backing layer, by identity', async (t) => {
  const h = host(t);
  const ok = (p: Promise<string>, what: string) => p.then((r) => t.equal(r, 'accepted', what));
  await ok(h.reason(h.image('same.qcow2', { backing: h.backing, backingFormat: 'qcow2' })), 'the very layer');
  await ok(h.reason(h.image('rel.qcow2', { backing: '../vm/base.qcow2', backingFormat: 'qcow2' })), 'named relatively');
  symlinkSync(h.backing, join(h.root, 'base-link'));
  await ok(h.reason(h.image('sym.qcow2', { backing: 'base-link', backingFormat: 'qcow2' })), 'through one symbolic link');
  symlinkSync(join(h.root, 'base-link'), join(h.root, 'link-link'));
  t.match(await h.reason(h.image('sym2.qcow2', { backing: 'link-link', backingFormat: 'qcow2' })), /through more than one symbolic link/);
  // A layer reached through a directory someone else may change could be swapped after the check.
  mkdirSync(join(h.base, 'open'), { mode: 0o777 });
  chmodSync(join(h.base, 'open'), 0o777);
  symlinkSync(h.backing, join(h.base, 'open', 'base'));
  t.match(
    await h.reason(h.image('open.qcow2', { backing: join(h.base, 'open', 'base'), backingFormat: 'qcow2' })),
    /backing file .* writable by group or others/,
  );
  const refused: Array<[string, HeaderSpec, RegExp, Partial<DestinationContext>?]> = [
    ['a file outside', { backing: join(h.outside, 'secret.raw'), backingFormat: 'qcow2' }, /is not the disk's backing layer/],
    ['a missing file', { backing: join(h.outside, 'none'), backingFormat: 'qcow2' }, /does not exist/],
    ['a relative name leading outside', { backing: '../outside/secret.raw', backingFormat: 'qcow2' }, /is not the disk's backing layer/],
    ['the layer with another format', { backing: h.backing, backingFormat: 'raw' }, /backing format raw is not qcow2/],
    ['the layer with no format recorded', { backing: h.backing }, /backing format \(none\) is not qcow2/],
    ['a device', { backing: '/dev/null', backingFormat: 'qcow2' }, /is not the disk's backing layer/],
    ['json:', { backing: `json:{"file":{"filename":"${h.backing}"}}`, backingFormat: 'qcow2' }, /json: description is not allowed/],
    ['an NBD URL not listed', { backing: 'nbd://127.0.0.1:10809/no', backingFormat: 'qcow2' }, /not listed in allowedNetworkDestinations/],
    ['a listed NBD URL that is not the layer', { backing: 'nbd://127.0.0.1:10809/ok', backingFormat: 'qcow2' }, /is not .*base\.qcow2/],
    ['another protocol', { backing: 'ssh://h/x', backingFormat: 'qcow2' }, /protocol 'ssh' is not allowed/],
    ['the layer, in a full copy', { backing: h.backing, backingFormat: 'qcow2' }, /must have no backing file/, { shallow: false }],
  ];
  for (const [what, spec, why, extra] of refused) {
    t.match(await h.reason(h.image(`r-${what.replace(/\W+/g, '-')}.qcow2`, spec), extra), why, what);
  }
  t.match(
    await h.reason(h.image('nob.qcow2', { backing: h.backing, backingFormat: 'qcow2' }), {
      disk: { ...h.ctx.disk, backingPaths: [] },
    }),
    /must have no backing file/,
    'shallow, but the disk has no backing chain',
  );
});

t.test('a reused qcow2: data file, encryption, format', async (t) => {
  const h = host(t);
  writeFileSync(join(h.root, 'data.raw'), '');
  t.equal(
    await h.reason(h.image('d-ok.qcow2', { dataFile: join(h.root, 'data.raw') })),
    'accepted',
    'a data file of its own under the root',
  );
  writeFileSync(join(h.root, 'linked.raw'), '');
  linkSync(join(h.root, 'linked.raw'), join(h.outside, 'linked.raw'));
  symlinkSync(join(h.outside, 'secret.raw'), join(h.root, 'sym.raw'));
  const refused: Array<[string, HeaderSpec, RegExp]> = [
    [
      'outside the roots',
      { dataFile: join(h.outside, 'secret.raw') },
      /data file '.*secret\.raw' in the header of .*not under an allowed root/,
    ],
    ['relative', { dataFile: 'data.raw' }, /must be absolute/],
    ['a protocol', { dataFile: 'nbd://127.0.0.1:10809/ok' }, /protocol or json: name is not allowed/],
    ['hard-linked', { dataFile: join(h.root, 'linked.raw') }, /has 2 hard links/],
    ['a symbolic link', { dataFile: join(h.root, 'sym.raw') }, /is a symbolic link/],
    ['missing', { dataFile: join(h.root, 'none.raw') }, /does not exist/],
    ['named by the bit only', { needsDataFile: true }, /requires an external data file .* but names none/],
    ['encrypted', { encrypted: true }, /is encrypted/],
  ];
  for (const [what, spec, why] of refused) t.match(await h.reason(h.image(`r-${what.replace(/\W+/g, '-')}.qcow2`, spec)), why, what);
  // Another domain's disk, named by a root that allows its directory: refused by identity.
  const wide = makeDestinationCheck({ roots: [h.root, h.vm], devices: [], trustedOwners: new Set([process.getuid!()]), network: [] });
  t.match(
    await refusal(
      wide({ path: h.image('d-vm.qcow2', { dataFile: join(h.vm, 'other-vm.raw') }), format: 'qcow2' }, { ...h.ctx, shallow: false }),
    ),
    /is the same file as .*other-vm\.raw', a disk/,
  );
  const raw = h.image('raw.img', Buffer.alloc(4096));
  t.match(await h.reason(raw), /declared qcow2 but its header is not a known image format/);
  t.equal(await h.reason(raw, {}, { format: 'raw' }), 'accepted', 'raw declared: QEMU interprets no header');
  t.equal(
    await h.reason(h.image('q-as-raw.img', { backing: join(h.outside, 'secret.raw') }), {}, { format: 'raw' }),
    'accepted',
    'a qcow2 declared raw: its backing name is data to QEMU',
  );
  t.match(
    await h.reason('nbd://127.0.0.1:10809/ok', {}, { type: 'network' }),
    /reusing a qcow2 image on a network destination .* cannot check its header/,
  );
});

t.test('the re-check refuses an image that changed after the check', async (t) => {
  const h = host(t);
  const path = h.image('top.qcow2', { backing: h.backing, backingFormat: 'qcow2' });
  const checked = await h.check({ path, format: 'qcow2' }, h.ctx);
  await checked.recheck!();
  t.pass('unchanged: the re-check passes');
  writeFileSync(path, qcow2({ backing: h.backing, backingFormat: 'qcow2', dataFile: join(h.root, 'late.raw') }));
  writeFileSync(join(h.root, 'late.raw'), '');
  t.match(await refusal(checked.recheck!()), /top\.qcow2' changed after it was checked: its data file was null, is now .*late\.raw/);
  // Replaced by another file with the same header: a different image.
  renameSync(path, `${path}.old`);
  writeFileSync(path, qcow2({ backing: h.backing, backingFormat: 'qcow2', dataFile: join(h.root, 'late.raw') }));
  t.match(await refusal(checked.recheck!()), /changed after it was checked: its identity was file/);
});

t.test('blockCopy: a header changed between the check and libvirt is refused like a libvirt refusal', async (t) => {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-imghdr-start-');
  conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }] });
  const path = join(destDir, 'top.qcow2');
  writeFileSync(path, qcow2());
  const policy = makeDestinationCheck({ roots: [destDir], devices: [], trustedOwners: new Set([process.getuid!()]), network: [] });
  // The change lands right after the check: the window the re-check closes.
  const racing: DestinationCheck = async (dest, ctx) => {
    const c = await policy(dest, ctx);
    writeFileSync(path, qcow2({ backing: '/etc/shadow', backingFormat: 'raw' }));
    return c;
  };
  const jobs = new JobManager({ connection: conn, stateDir, log: silentLogger, pollIntervalMs: 50, checkDestination: racing });
  await jobs.start();
  t.teardown(() => jobs.stop());
  t.match(
    await refusal(jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path, format: 'qcow2' }, reuseExternal: true })),
    /backing file '\/etc\/shadow' in the header of '.*top\.qcow2'/,
    'destinationRejected, naming the field and the file',
  );
  t.same(
    conn.sideEffects().map((c) => c.method),
    [],
    'libvirt was not asked',
  );
  t.same(conn.readJournal(), [], 'the journal intent is gone');
  t.same((await jobs.listJobs({})).jobs, [], 'no job left');
});
