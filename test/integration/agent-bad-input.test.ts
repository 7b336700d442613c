// Every method against bad input, through the running agent: each gets its documented error
// and nothing changes on disk or in the domain.
import t, { type Test } from 'tap';
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { RpcError, type MethodName } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent, untilState } from '../../harness/agent.js';

const MiB = 1024 * 1024;

async function expectError(
  t: Pick<Test, 'equal' | 'ok'>,
  p: Promise<unknown>,
  code: number,
  name: string | undefined,
  what: string,
): Promise<RpcError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof RpcError, `${what}: fails`);
  const e = err as RpcError;
  t.equal(e?.code, code, `${what}: code ${code} (${e?.message})`);
  if (name) t.equal(e?.errorName, name, `${what}: ${name}`);
  return e;
}

t.test('bad input', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 128 },
      { format: 'raw', sizeMiB: 16 },
      { format: 'raw', sizeMiB: 1, device: 'cdrom' },
    ],
  });
  await hv.guestWrite(dom, 'vda', { pattern: 0x71, offset: 0, length: 96 * MiB });
  const xmlBefore = await hv.liveXml(dom);
  const dest = (n: string) => `${dom.dir}/${n}`;
  const copy = (extra: Record<string, unknown>) =>
    client.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest('d.qcow2') }, ...extra } as never);

  t.test('params: missing, extra, mistyped (-32602 with ajv errors)', async (t) => {
    const cases: Array<[MethodName, unknown, string]> = [
      ['blockCopy', { domain: dom.name, destination: { path: dest('x') } }, 'missing disk'],
      ['blockCopy', { domain: dom.name, disk: 'vda' }, 'no destination'],
      ['blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, destinationXml: '<disk/>' }, 'both destinations'],
      ['blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, bogus: 1 }, 'extra param'],
      ['blockCopy', { domain: dom.name, disk: 'vda', destination: { path: 'relative/x' } }, 'relative path'],
      ['blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest('x'), format: 'vmdk' } }, 'unknown format'],
      ['blockCopy', { domain: 42, disk: 'vda', destination: { path: dest('x') } }, 'mistyped domain'],
      [
        'blockCopy',
        { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, granularity: 3000 },
        'granularity not a power of two',
      ],
      ['blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, granularity: 256 }, 'granularity below 512'],
      [
        'blockCopy',
        { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, granularity: 134217728 },
        'granularity above 64 MiB',
      ],
      ['blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, bandwidth: -1 }, 'negative bandwidth'],
      ['blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, bandwidth: 'fast' }, 'non-numeric bandwidth'],
      [
        'blockCopy',
        { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, bandwidth: '99999999999999999999999' },
        'bandwidth above 64 bits',
      ],
      ['blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, timeout: 0 }, 'zero timeout'],
      ['blockCopy', { domain: dom.name, disk: 'vda', destination: { path: dest('x') }, whenReady: 'explode' }, 'unknown whenReady'],
      ['jobInfo', {}, 'no job reference'],
      ['jobInfo', { domain: dom.name }, 'domain without disk'],
      ['pivot', { jobId: 'a b' }, 'malformed jobId'],
      ['pivot', { jobId: 'x', timeout: 'soon' }, 'mistyped timeout'],
      ['abort', { jobId: 'x', extra: true }, 'extra param on abort'],
      ['finish', { domain: dom.name, disk: 'VDA!' }, 'malformed disk'],
      ['setSpeed', { jobId: 'x' }, 'setSpeed without bandwidth'],
      ['setSpeed', { jobId: 'x', bandwidth: -5 }, 'setSpeed negative'],
      ['listJobs', { state: ['sleeping'] }, 'unknown state filter'],
      ['wait', { jobId: 'x' }, 'wait without until'],
      ['capabilities', { verbose: true }, 'capabilities takes nothing'],
      ['subscribe', { jobIds: 'x' }, 'subscribe mistyped'],
    ];
    for (const [method, params, what] of cases) {
      const e = await expectError(t, client.call(method, params as never), -32602, undefined, `${method}: ${what}`);
      t.ok(Array.isArray((e.data as { errors?: unknown[] })?.errors), `${method}: ${what}: ajv's errors in data`);
    }
  });

  t.test('unknown domain or disk', async (t) => {
    await expectError(
      t,
      client.call('blockCopy', { domain: 'bctest-no-such', disk: 'vda', destination: { path: dest('x') } }),
      -32000,
      'notFound',
      'unknown domain',
    );
    await expectError(
      t,
      client.call('blockCopy', { domain: dom.name, disk: 'vdz', destination: { path: dest('x') } }),
      -32000,
      'notFound',
      'unknown disk',
    );
    await expectError(
      t,
      client.call('jobInfo', { domain: 'bctest-no-such', disk: 'vda' }),
      -32000,
      'notFound',
      'jobInfo on an unknown domain',
    );
    await expectError(t, client.call('jobInfo', { jobId: 'never-was' }), -32002, 'noJob', 'jobInfo on an unknown job');
    await expectError(t, client.call('wait', { jobId: 'never-was', until: 'done' }), -32002, 'noJob', 'wait on an unknown job');
  });

  t.test('a cdrom is not a copyable disk', async (t) => {
    await expectError(
      t,
      client.call('blockCopy', { domain: dom.name, disk: 'hdc', destination: { path: dest('cd.raw') } }),
      -32010,
      'unsupported',
      'cdrom',
    );
  });

  t.test('destinations that must be refused', async (t) => {
    mkdirSync(dest('sub'), { recursive: true });
    writeFileSync(dest('exists.qcow2'), '');
    symlinkSync('/etc/passwd', dest('link.qcow2'));
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ destination: { path: dom.disks[0]!.path } }, 'the source itself'],
      [{ destination: { path: dom.disks[1]!.path } }, 'another disk of the domain'],
      [{ destination: { path: dest('exists.qcow2') } }, 'an existing file without reuseExternal'],
      [{ destination: { path: dest('exists.qcow2') }, reuseExternal: true }, 'reuseExternal without format'],
      [{ destination: { path: dest('link.qcow2'), format: 'qcow2' }, reuseExternal: true }, 'a symlink (to /etc/passwd)'],
      [{ destination: { path: `${dom.dir}/sub/../x.qcow2` } }, 'a path with ..'],
      [{ destination: { path: dest('no-such-dir/x.qcow2') } }, 'a missing parent directory'],
      [{ destination: { path: '/dev/sda', type: 'block' } }, 'a block device not in allowedDevices'],
      [
        { destinationXml: `<disk type='network'><source protocol='nbd' name='x'/></disk>`, destination: undefined },
        'a network destination',
      ],
    ];
    for (const [extra, what] of cases) {
      await expectError(t, copy(extra), -32005, 'destinationRejected', what);
    }
    t.notOk(existsSync(dest('x.qcow2')) || existsSync(dest('no-such-dir')), 'nothing was created');
  });

  t.test('state errors: pivot/finish before ready, abort with no job, busy disk', async (t) => {
    await expectError(t, client.call('abort', { domain: dom.name, disk: 'vdb' }), -32002, 'noJob', 'abort with no job');
    const { job } = await copy({ destination: { path: dest('busy.qcow2') }, bandwidth: MiB, jobId: 'busy-1' });
    await expectError(t, client.call('pivot', { jobId: job.jobId, timeout: 0.5 }), -32003, 'notReady', 'pivot before ready');
    await expectError(t, client.call('finish', { jobId: job.jobId, timeout: 0.5 }), -32003, 'notReady', 'finish before ready');
    const e = await expectError(
      t,
      copy({ destination: { path: dest('other.qcow2') } }),
      -32001,
      'jobExists',
      'a second copy on a busy disk',
    );
    t.equal(e.data?.job?.jobId, 'busy-1', 'the error names the existing job');
    await expectError(
      t,
      copy({ destination: { path: dest('busy.qcow2') }, jobId: 'busy-1', disk: 'vdb' }),
      -32001,
      'jobExists',
      'a jobId reused for another disk',
    );
    t.notOk(existsSync(dest('other.qcow2')), 'the second destination was not created');
    await client.call('abort', { jobId: job.jobId });
    await expectError(t, client.call('pivot', { jobId: job.jobId }), -32011, 'invalidState', 'pivot after abort');
    await expectError(t, client.call('setSpeed', { jobId: job.jobId, bandwidth: 1 }), -32011, 'invalidState', 'setSpeed after abort');
  });

  t.test('nothing changed in the domain', async (t) => {
    const xml = await hv.liveXml(dom);
    t.notMatch(xml, /<mirror/, 'no mirror');
    const sources = (x: string) => [...x.matchAll(/<source file='([^']+)'/g)].map((m) => m[1]);
    t.same(sources(xml), sources(xmlBefore), 'same disk sources as before');
  });

  t.test('a domain that stops mid-copy', async (t) => {
    const victim = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 128 }] });
    await hv.guestWrite(victim, 'vda', { pattern: 0x72, offset: 0, length: 96 * MiB });
    const { job } = await client.call('blockCopy', {
      domain: victim.name,
      disk: 'vda',
      destination: { path: `${victim.dir}/gone.qcow2` },
      bandwidth: MiB,
    });
    await hv.virsh('destroy', victim.name);
    const ended = await untilState(client, job.jobId, ['failed', 'cancelled']);
    t.equal(ended.state, 'failed', 'the job fails');
    t.match(ended.error, { name: 'invalidState', message: /stopped|gone|no longer running/ }, 'with the reason');
    await expectError(
      t,
      client.call('blockCopy', { domain: victim.name, disk: 'vda', destination: { path: `${victim.dir}/again.qcow2` } }),
      -32000,
      'notFound',
      'copy of a domain that is gone',
    );
  });
});
