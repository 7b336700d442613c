// The destination parser, serializer and policy, without libvirt or root: every trick a caller
// might try in destinationXml, and the directory, identity and network rules on a scratch tree.
import t from 'tap';
import { chmodSync, linkSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync, type Stats } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentError } from '../../src/errors.js';
import { destinationFromXml, toDiskXml } from '../../src/destination/xml.js';
import { loadDestinationPolicy, makeDestinationCheck, type DestinationPolicy } from '../../src/destination/policy.js';
import { checkRoot } from '../../src/destination/dirs.js';
import { clash, identitiesOf } from '../../src/destination/identity.js';
import type { Destination } from '../../src/generated/api.js';
import { JobManager } from '../../src/jobs/manager.js';
import { silentLogger } from '../../src/log.js';
import { FakeConnection } from './fake-connection.js';

const reasonOf = (f: () => unknown): string => {
  try {
    return `accepted ${JSON.stringify(f())}`;
  } catch (e) {
    if (!(e instanceof AgentError) || e.errorName !== 'destinationRejected') throw e;
    return e.data.reason as string;
  }
};

t.test('destinationXml: the whitelisted shape is accepted', async (t) => {
  t.same(destinationFromXml(`<disk type='file'><source file='/a.qcow2'/><driver type='qcow2'/></disk>`), {
    type: 'file',
    path: '/a.qcow2',
    format: 'qcow2',
  });
  t.same(destinationFromXml(`<disk type="block">\n  <driver name="qemu" type="raw"/>\n  <source dev="/dev/sdz"/>\n</disk>`), {
    type: 'block',
    path: '/dev/sdz',
    format: 'raw',
  });
  t.same(
    destinationFromXml(`<disk type='file'><source file='/a &amp; b&#47;c'/></disk>`),
    { type: 'file', path: '/a & b/c' },
    'predefined and character references decode like libvirt would',
  );
  t.same(
    destinationFromXml(`<disk type='network'><source protocol='nbd' name='exp'><host name='127.0.0.1' port='10809'/></source></disk>`),
    { type: 'network', path: 'nbd://127.0.0.1:10809/exp' },
  );
});

t.test('destinationXml: everything else is refused, naming what', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['a comment hiding a second source', `<disk type='file'><!-- <source file='/etc/x'/> --><source file='/ok'/></disk>`, /comment/],
    ['a comment inside the tag region', `<disk type='file'><source file='/ok'/><!--x--></disk>`, /comment/],
    ['a comment before the root', `<!--x--><disk type='file'><source file='/ok'/></disk>`, /comment outside/],
    ['a processing instruction', `<?xml version="1.0"?><disk type='file'><source file='/ok'/></disk>`, /processing instruction/],
    ['a PI inside', `<disk type='file'><?evil x?><source file='/ok'/></disk>`, /processing instruction/],
    [
      'a DOCTYPE with an entity',
      `<!DOCTYPE disk [<!ENTITY p "/etc/shadow">]><disk type='file'><source file='&p;'/></disk>`,
      /DOCTYPE|well-formed/,
    ],
    ['an undeclared entity', `<disk type='file'><source file='&p;'/></disk>`, /well-formed/],
    ['CDATA', `<disk type='file'><![CDATA[<source file='/etc/x'/>]]><source file='/ok'/></disk>`, /CDATA/],
    ['type network (bad host)', `<disk type='network'><source protocol='nbd' name='x'><host name='a/b' port='1'/></source></disk>`, /host/],
    ['type volume', `<disk type='volume'><source pool='p' volume='v'/></disk>`, /disk type 'volume'/],
    ['no type', `<disk><source file='/ok'/></disk>`, /disk type '\(none\)'/],
    ['an extra element', `<disk type='file'><source file='/ok'/><backingStore/></disk>`, /element <backingStore>/],
    ['an extra attribute on source', `<disk type='file'><source file='/ok' dev='/dev/sda'/></disk>`, /attribute 'dev'/],
    ['an extra attribute on disk', `<disk type='file' device='disk'><source file='/ok'/></disk>`, /attribute 'device'/],
    ['a second source', `<disk type='file'><source file='/ok'/><source file='/etc/x'/></disk>`, /more than one <source>/],
    ['a duplicate attribute', `<disk type='file'><source file='/ok' file='/etc/x'/></disk>`, /well-formed/],
    ['a namespace declaration', `<disk xmlns='urn:x' type='file'><source file='/ok'/></disk>`, /namespace/],
    ['a prefixed element', `<disk type='file' xmlns:a='urn:a'><a:source file='/ok'/></disk>`, /namespace/],
    ['a prefixed attribute', `<disk type='file'><source xmlns:a='urn:a' a:file='/etc/x' file='/ok'/></disk>`, /namespace/],
    [
      'two roots',
      `<disk type='file'><source file='/ok'/></disk><disk type='file'><source file='/etc/x'/></disk>`,
      /well-formed|exactly one/,
    ],
    ['another root element', `<domain/>`, /not <disk>/],
    ['text content', `<disk type='file'>x<source file='/ok'/></disk>`, /text content/],
    ['a child in source', `<disk type='file'><source file='/ok'><seclabel/></source></disk>`, /must be empty/],
    [
      'a driver with other attributes',
      `<disk type='file'><source file='/ok'/><driver type='raw' cache='none'/></disk>`,
      /attribute 'cache'/,
    ],
    ['driver name other than qemu', `<disk type='file'><source file='/ok'/><driver name='tap' type='raw'/></disk>`, /driver name/],
    ['format vmdk', `<disk type='file'><source file='/ok'/><driver type='vmdk'/></disk>`, /format 'vmdk'/],
    ['a control character (&#10;) in the path', `<disk type='file'><source file='/ok&#10;x'/></disk>`, /control character/],
    ['not XML', `<disk type='file'><source file='/ok'>`, /well-formed/],
    ['empty', ``, /well-formed/],
    ['a source without file=', `<disk type='file'><source dev='/dev/sda'/></disk>`, /attribute 'dev'/],
    [
      'unix socket NBD',
      `<disk type='network'><source protocol='nbd' name='x'><host transport='unix' socket='/run/x'/></source></disk>`,
      /attribute 'transport'/,
    ],
    [
      'http protocol',
      `<disk type='network'><source protocol='http' name='x'><host name='h' port='80'/></source></disk>`,
      /protocol 'http'/,
    ],
  ];
  for (const [what, xml, want] of cases) {
    const r = reasonOf(() => destinationFromXml(xml));
    t.match(r, want, `${what}: ${r}`);
  }
  // Whitespace around '=' and other quoting parse to the same fields as the plain spelling:
  // the refusal does not depend on how the attribute is written.
  for (const xml of [
    `<disk type = "file" ><source  file = '/etc/x' /></disk>`,
    `<disk type='file'><source file="/etc/x"></source></disk>`,
    `<disk\ttype='file'\n><source\nfile='/etc/x'/></disk>`,
  ]) {
    t.same(destinationFromXml(xml), { type: 'file', path: '/etc/x' }, `parsed like the plain form: ${JSON.stringify(xml)}`);
  }
});

t.test('toDiskXml: the agent serializes, and what it serializes reads back the same', async (t) => {
  t.equal(
    toDiskXml({ path: '/x/it\'s<&".qcow2', format: 'qcow2' }),
    `<disk type='file'><source file='/x/it&apos;s&lt;&amp;&quot;.qcow2'/><driver type='qcow2'/></disk>`,
  );
  t.equal(toDiskXml({ path: '/dev/sdz', type: 'block' }), `<disk type='block'><source dev='/dev/sdz'/></disk>`);
  t.equal(
    toDiskXml({ path: 'nbd://127.0.0.1:10809/e x', type: 'network', format: 'raw' }),
    `<disk type='network'><source protocol='nbd' name='e x'><host name='127.0.0.1' port='10809'/></source><driver type='raw'/></disk>`,
  );
  for (const d of [{ path: "/a'/><source file='/etc/x" }, { path: '/a]]><!--' }] as Destination[]) {
    t.same(destinationFromXml(toDiskXml(d)), { type: 'file', path: d.path }, `round trip of ${d.path}`);
  }
});

t.test('policy: directories, identity, network', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'bc-policy-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  chmodSync(base, 0o755);
  const me = new Set([process.getuid!()]);
  const root = join(base, 'root');
  mkdirSync(root, { mode: 0o755 });
  chmodSync(root, 0o755);
  mkdirSync(join(root, 'sub'), { mode: 0o755 });
  mkdirSync(join(root, 'gw'));
  chmodSync(join(root, 'gw'), 0o775);
  mkdirSync(join(root, 'ow'));
  chmodSync(join(root, 'ow'), 0o1777);
  mkdirSync(join(base, 'outside'), { mode: 0o755 });
  symlinkSync(join(base, 'outside'), join(root, 'link-dir'));
  writeFileSync(join(root, 'exists.img'), 'x');
  writeFileSync(join(base, 'outside', 'other-vm.img'), 'disk of another domain');
  linkSync(join(base, 'outside', 'other-vm.img'), join(root, 'hardlink.img'));
  symlinkSync('/etc/hostname', join(root, 'link.img'));

  const policy: DestinationPolicy = {
    roots: [root],
    devices: [],
    trustedOwners: me,
    network: [{ protocol: 'nbd', host: '127.0.0.1', port: 10809, namePattern: 'vm-[a-z]+' }],
  };
  const check = makeDestinationCheck(policy);
  const disk = {
    target: 'vda',
    device: 'disk',
    type: 'file',
    sourcePath: join(root, 'src.img'),
    format: 'qcow2',
    mirror: null,
    backingPaths: [join(root, 'base.img')],
  };
  const ctx = {
    reuseExternal: false,
    disk,
    domainDisks: [join(base, 'outside', 'other-vm.img'), join(root, 'defined-not-created.img'), 'nbd://127.0.0.1:10809/vm-used'],
  };
  const reason = async (dest: Destination, extra: Partial<typeof ctx> = {}) => {
    try {
      const c = await check(dest, { ...ctx, ...extra });
      return `accepted ${c.destination.path} ${c.xml}`;
    } catch (e) {
      if (!(e instanceof AgentError) || e.errorName !== 'destinationRejected') throw e;
      return e.data.reason as string;
    }
  };
  t.match(await reason({ path: join(root, 'new.img') }), /^accepted .*<source file=/);
  t.match(await reason({ path: join(root, 'sub', 'new.img') }), /^accepted/);
  t.match(await reason({ path: `${root}/sub/../new.img` }), /normalized/);
  t.match(await reason({ path: `${root}//new.img` }), /normalized/);
  t.match(await reason({ path: 'relative.img' }), /absolute/);
  t.match(await reason({ path: root }), /not under an allowed root/, 'the root itself');
  t.match(await reason({ path: join(base, 'outside', 'x.img') }), /not under an allowed root/);
  t.match(await reason({ path: join(root, 'link-dir', 'x.img') }), /symbolic link/, 'a symlinked parent is refused, not followed');
  t.match(await reason({ path: join(root, 'gw', 'x.img') }), /writable by group or others/);
  t.match(
    await reason({ path: join(root, 'ow', 'x.img') }),
    /writable by group or others/,
    'a sticky 1777 dir below a root is refused too',
  );
  t.match(await reason({ path: join(root, 'nodir', 'x.img') }), /does not exist/);
  t.match(await reason({ path: join(root, 'link.img'), format: 'raw' }, { reuseExternal: true }), /symbolic link/);
  t.match(await reason({ path: join(root, 'sub'), format: 'raw' }, { reuseExternal: true }), /not a regular file/);
  t.match(await reason({ path: join(root, 'exists.img') }), /already exists/);
  t.match(await reason({ path: join(root, 'exists.img'), format: 'raw' }, { reuseExternal: true }), /^accepted/);
  t.match(await reason({ path: join(root, 'exists.img') }, { reuseExternal: true }), /explicit format/);
  t.match(await reason({ path: join(root, 'missing.img'), format: 'raw' }, { reuseExternal: true }), /does not exist/);
  t.match(
    await reason({ path: join(root, 'hardlink.img'), format: 'raw' }, { reuseExternal: true }),
    /same file as .*other-vm|hard links/,
    "a hard link to another domain's disk",
  );
  t.match(
    await reason({ path: join(root, 'defined-not-created.img') }),
    /same file as/,
    'the path a defined domain names, not yet created',
  );
  t.match(await reason({ path: '/dev/null', type: 'block' }), /not a block device/);
  t.match(
    await reason({ path: 'nbd://127.0.0.1:10809/vm-a', type: 'network' }),
    /^accepted nbd:\/\/127\.0\.0\.1:10809\/vm-a <disk type='network'>/,
  );
  t.match(await reason({ path: 'nbd://127.0.0.1:10809/other', type: 'network' }), /not listed in allowedNetworkDestinations/);
  t.match(await reason({ path: 'nbd://127.0.0.1:10810/vm-a', type: 'network' }), /not listed/);
  t.match(await reason({ path: 'nbd://localhost:10809/vm-a', type: 'network' }), /not listed/, 'hosts compare as written, never resolved');
  t.match(await reason({ path: 'nbd://127.0.0.1:10809/vm-used', type: 'network' }), /a disk of a domain/);
  t.match(await reason({ path: 'rbd://127.0.0.1:10809/vm-a', type: 'network' }), /not listed/);
  // A different policy without network rules refuses every network destination.
  const none = makeDestinationCheck({ ...policy, network: [] });
  t.match(await none({ path: 'nbd://127.0.0.1:10809/vm-a', type: 'network' }, ctx).catch((e: AgentError) => e.data.reason), /not listed/);
});

// Its fixtures need root-owned ancestors (a root's ancestors must be root's), which only root can
// make; as another user (npm run test:unit) it is skipped, and the integration suite, run as root
// by npm test, checks the same refusals against the real agent.
t.test(
  'start-up: roots are checked',
  { skip: process.getuid!() !== 0 ? 'needs root to own its fixture directories' : false },
  async (t) => {
    const base = mkdtempSync(join(tmpdir(), 'bc-roots-'));
    t.teardown(() => rmSync(base, { recursive: true, force: true }));
    chmodSync(base, 0o755);
    const me = new Set([process.getuid!()]);
    mkdirSync(join(base, 'ok'), { mode: 0o755 });
    mkdirSync(join(base, 'gw'));
    chmodSync(join(base, 'gw'), 0o775);
    mkdirSync(join(base, 'gw', 'inner'), { mode: 0o755 });
    symlinkSync(join(base, 'ok'), join(base, 'link'));
    const why = (root: string) =>
      checkRoot(root, me).then(
        () => 'ok',
        (e: Error) => e.message,
      );
    t.equal(await why(join(base, 'ok')), 'ok');
    t.match(await why(join(base, 'link')), /symbolic link/, 'a root that is a symlink');
    t.match(await why(join(base, 'gw')), /writable by group or others/);
    t.match(await why(join(base, 'gw', 'inner')), /writable by group or others/, 'a group-writable ancestor');
    t.match(await why(join(base, 'missing')), /does not exist/);
    t.match(await why(`${base}/ok/`), /normalized/);
    t.match(
      await loadDestinationPolicy(
        { allowedRoots: [join(base, 'link')], trustedDirectoryOwners: [String(process.getuid!())] },
        () => {},
      ).catch((e: Error) => e.message),
      /allowed root .* is not trustworthy: .*symbolic link/,
    );
  },
);

t.test('start-up: the defaults are safe', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'bc-defaults-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const warnings: string[] = [];
  const warn = (m: string) => warnings.push(m);
  const any = await loadDestinationPolicy({ allowAnyDestination: true }, warn);
  t.same(any.roots, ['/'], 'anywhere only when asked');
  t.match(warnings, [/allowAnyDestination/], 'and then with a warning');
  const empty = await loadDestinationPolicy({ allowedRoots: [] }, warn);
  t.same(empty.roots, [], 'an empty list means no file destinations, not anywhere');
  t.match(
    await makeDestinationCheck(empty)(
      { path: join(base, 'ok', 'x.img') },
      {
        reuseExternal: false,
        disk: { target: 'vda', device: 'disk', type: 'file', sourcePath: '/s', format: null, mirror: null, backingPaths: [] },
        domainDisks: [],
      },
    ).catch((e: AgentError) => e.data.reason),
    /not under an allowed root \(none configured\)/,
  );
  t.match(
    await loadDestinationPolicy({ trustedDirectoryOwners: ['no-such-user-here'] }, warn).catch((e: Error) => e.message),
    /not a user/,
  );
});

t.test("identity: a block device that holds a domain image's file system is that image", async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'bc-ids-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  writeFileSync(join(base, 'disk.img'), 'x');
  const ids = await identitiesOf([join(base, 'disk.img'), join(base, 'missing.img'), 'nbd://h:1/x']);
  const fsDev = statSync(join(base, 'disk.img')).dev;
  const device = (rdev: number) => ({ isBlockDevice: () => true, isFile: () => false, rdev }) as unknown as Stats;
  t.equal(clash(ids, '/dev/whatever', device(fsDev)), join(base, 'disk.img'), 'the device under the image');
  t.equal(clash(ids, '/dev/whatever', device(fsDev + 1)), undefined, 'another device');
  t.equal(clash(ids, join(base, 'missing.img'), null), join(base, 'missing.img'), 'a named image not yet created');
  t.ok(ids.urls.has('nbd://h:1/x'), 'network sources are kept as URLs');
});

t.test('a queued copy is checked again when its slot comes', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'bc-queue-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const stateDir = join(base, 'state');
  const dest = join(base, 'dest');
  mkdirSync(dest, { mode: 0o755 });
  const conn = new FakeConnection(stateDir);
  conn.addDomain({ name: 'vm1', disks: [{ target: 'vda' }, { target: 'vdb' }] });
  const jobs = new JobManager({
    connection: conn,
    stateDir,
    log: silentLogger,
    pollIntervalMs: 50,
    maxConcurrentCopies: 1,
    checkDestination: makeDestinationCheck({ roots: [dest], devices: [], trustedOwners: new Set([process.getuid!()]), network: [] }),
  });
  await jobs.start();
  t.teardown(() => jobs.stop());
  const first = await jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(dest, 'a.qcow2') } });
  const queued = jobs.blockCopy({ domain: 'vm1', disk: 'vdb', destination: { path: join(dest, 'b.qcow2') }, queue: true }).then(
    () => null,
    (e: AgentError) => e,
  );
  await new Promise((r) => setTimeout(r, 100));
  writeFileSync(join(dest, 'b.qcow2'), 'put there while the copy waited');
  await jobs.abort({ jobId: first.job.jobId });
  const err = await queued;
  t.equal(err?.errorName, 'destinationRejected', `refused when its turn came: ${err?.data.reason}`);
  t.match(String(err?.data.reason), /already exists/);
  t.equal(conn.sideEffects().filter((c) => c.method === 'blockCopy').length, 1, 'libvirt was asked for the first copy only');
});
