// Byte counts (bandwidth, bufSize) through the running agent: anything that is not an unsigned
// 64-bit value is -32602 naming the field, before anything reaches libvirt; the largest value
// that fits is accepted as well-formed (libvirt may still refuse it: then libvirtError, not -32603).
import t from 'tap';
import { existsSync } from 'node:fs';
import { RpcError } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { blockJob, serveAgent } from '../../harness/agent.js';

const MiB = 1024 * 1024;
const MAX = '18446744073709551615';

/** Values that are not a byte count in 0…2^64−1 as the schema spells it. */
const BAD: Array<[unknown, string]> = [
  ['18446744073709551616', '2^64 as a string'],
  ['99999999999999999999', '20 nines'],
  ['9'.repeat(400), 'a huge digit string'],
  ['-1', 'a negative string'],
  [-1, 'a negative number'],
  [1.5, 'a fraction'],
  ['1.5', 'a fractional string'],
  ['1e3', 'an exponent string'],
  [1e300, 'a number with an exponent'],
  [9007199254740992, '2^53 as a number (exactness lost)'],
  ['01', 'a leading zero'],
  ['00', 'two zeros'],
  ['+1', 'a plus sign'],
  [' 1', 'a leading space'],
  ['0x10', 'hexadecimal'],
  ['', 'an empty string'],
  [null, 'null'],
  [true, 'a boolean'],
];

async function refusal(p: Promise<unknown>): Promise<RpcError | null> {
  return p.then(
    () => null,
    (e: unknown) => (e instanceof RpcError ? e : null),
  );
}

const names = (e: RpcError | null) =>
  ((e?.data as { errors?: Array<{ instancePath: string }> } | undefined)?.errors ?? []).map((x) => x.instancePath);

t.test('out-of-range byte counts', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 64 },
      { format: 'raw', sizeMiB: 16 },
    ],
  });
  await hv.guestWrite(dom, 'vda', { pattern: 0x3c, offset: 0, length: 48 * MiB });
  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${dom.dir}/n.qcow2` },
    bandwidth: MiB,
  });
  t.teardown(() => client.call('abort', { jobId: job.jobId }).catch(() => {}));

  for (const [value, what] of BAD) {
    const calls: Array<[string, string, Promise<unknown>]> = [
      [
        'blockCopy',
        '/bandwidth',
        client.call('blockCopy', { domain: dom.name, disk: 'vdb', destination: { path: `${dom.dir}/x.qcow2` }, bandwidth: value } as never),
      ],
      [
        'blockCopy',
        '/bufSize',
        client.call('blockCopy', { domain: dom.name, disk: 'vdb', destination: { path: `${dom.dir}/x.qcow2` }, bufSize: value } as never),
      ],
      ['setSpeed', '/bandwidth', client.call('setSpeed', { jobId: job.jobId, bandwidth: value } as never)],
    ];
    for (const [method, field, p] of calls) {
      const e = await refusal(p);
      t.equal(e?.code, -32602, `${method} ${field} = ${what}: -32602 (${e?.code} ${e?.message})`);
      t.ok(names(e).includes(field), `${method} ${field} = ${what}: the error names ${field}`);
    }
  }
  const { jobs } = await client.call('listJobs', { domain: dom.name });
  t.same(
    jobs.map((j) => blockJob(j).disk),
    ['vda'],
    'no copy of vdb was started',
  );
  t.equal((await hv.liveXml(dom)).match(/<mirror/g)?.length, 1, "libvirt: one mirror (vda's)");
  const now = blockJob((await client.call('jobInfo', { jobId: job.jobId })).job);
  t.equal(now.bandwidth, MiB, 'the refused setSpeed calls changed nothing');

  // A bandwidth string names its unit (schemas/defs/bandwidth.json): the largest, with its B.
  for (const value of [`${MAX}B`, 2 ** 53 - 1, '9007199254740992B']) {
    const e = await refusal(client.call('setSpeed', { jobId: job.jobId, bandwidth: value }));
    t.ok(
      e === null || (e.code <= -32000 && e.code >= -32099),
      `setSpeed ${value}: accepted or refused by name, never -32602/-32603 (${e?.code} ${e?.message})`,
    );
  }
  t.notOk(existsSync(`${dom.dir}/x.qcow2`), 'no refused blockCopy created a destination');
});
