// One bandwidth grammar for the CLI (virsh: a bare number is MiB/s) and the API (a bare number
// is bytes/s, as it always was; a unit says what it means), and the schema normalising a string
// with a unit to bytes/s before any handler or the journal sees it.
import t from 'tap';
import { BandwidthError, MAX_BANDWIDTH, parseBandwidth } from '../../src/bandwidth.js';
import { SchemaSet } from '../../src/schemas.js';

const KiB = 1024n;
const MiB = 1024n * KiB;
const GiB = 1024n * MiB;

t.test('accepted forms', async (t) => {
  const cases: Array<[string | number, 'B' | 'MiB', bigint]> = [
    ['100', 'MiB', 100n * MiB], // virsh --bandwidth 100
    ['100', 'B', 100n], // virsh --bandwidth 100 --bytes, and the API's bare number
    [100, 'B', 100n],
    ['0', 'MiB', 0n],
    ['100M', 'B', 100n * MiB],
    ['100m', 'B', 100n * MiB],
    ['100MiB', 'B', 100n * MiB],
    ['100mib/s', 'B', 100n * MiB],
    ['100MB', 'B', 100_000_000n],
    ['1G', 'MiB', GiB],
    ['1.5G', 'B', (3n * GiB) / 2n],
    ['512K', 'B', 512n * KiB],
    ['512 KiB', 'B', 512n * KiB],
    ['4096B', 'MiB', 4096n],
    ['4096 bytes', 'MiB', 4096n],
  ];
  for (const [input, bare, want] of cases) {
    t.equal(parseBandwidth(input, bare), want, `${JSON.stringify(input)} (bare ${bare}) = ${want} bytes/s`);
  }
  t.equal(parseBandwidth('15E', 'B'), 15n * 1024n ** 6n, '15 EiB/s fits in 64 bits');
  t.equal(parseBandwidth(String(MAX_BANDWIDTH), 'B'), MAX_BANDWIDTH, '2^64-1 bytes/s');
});

t.test('refused forms say what is wrong', async (t) => {
  const bad: Array<[string | number, 'B' | 'MiB', RegExp]> = [
    ['fast', 'MiB', /not a number/],
    ['-1', 'MiB', /not a number/],
    [-1, 'B', /0 or more/],
    ['1e3', 'B', /not a number/],
    ['100X', 'B', /unknown unit/],
    ['100 MiB/h', 'B', /not a number/],
    ['0.5B', 'B', /below 1 byte/],
    ['0.1', 'B', /below 1 byte/],
    [String(MAX_BANDWIDTH + 1n), 'B', /above 2\^64-1/],
    ['16E', 'B', /above 2\^64-1/],
    ['', 'MiB', /not a number/],
  ];
  for (const [input, bare, msg] of bad) {
    let err: unknown;
    try {
      parseBandwidth(input, bare);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof BandwidthError, `${JSON.stringify(input)} refused`);
    t.match((err as Error | undefined)?.message, msg, `${JSON.stringify(input)}: ${(err as Error | undefined)?.message}`);
  }
});

t.test('the API: a string with a unit becomes bytes/s at validation; junk is refused', async (t) => {
  const schemas = new SchemaSet();
  const copy = schemas.validator('methods/blockCopy.params.json');
  const base = { domain: 'd', disk: 'vda', destination: { path: '/var/lib/x.qcow2' } };
  for (const [given, want] of [
    [1048576, 1048576],
    ['1048576', '1048576'],
    ['100M', 100 * 1024 * 1024],
    ['1g', 1024 ** 3],
    ['20E', null],
  ] as const) {
    const params: Record<string, unknown> = { ...base, bandwidth: given };
    const ok = copy(params);
    if (want === null) {
      t.notOk(ok, `${given} refused`);
      continue;
    }
    t.ok(ok, `${given} accepted ${JSON.stringify(copy.errors ?? [])}`);
    t.equal(params.bandwidth, want, `${given} → ${want} bytes/s`);
  }
  for (const junk of ['fast', '100 M B', '1e9', -5, 1.5, ''])
    t.notOk(copy({ ...base, bandwidth: junk }), `${JSON.stringify(junk)} refused`);
  const speed = schemas.validator('methods/setSpeed.params.json');
  const p: Record<string, unknown> = { jobId: 'j1', bandwidth: '512K' };
  t.ok(speed(p), 'setSpeed takes a unit');
  t.equal(p.bandwidth, 512 * 1024, 'setSpeed 512K → bytes/s');
  const group = schemas.validator('methods/blockCopyGroup.params.json');
  const g: Record<string, unknown> = { domain: 'd', disks: [{ ...base, bandwidth: '2M' }] };
  delete (g.disks as Array<Record<string, unknown>>)[0]!.domain;
  group(g);
  const d0 = (g.disks as Array<Record<string, unknown>>)[0]!;
  if (group.errors?.length) t.comment(JSON.stringify(group.errors));
  t.equal(d0.bandwidth, 2 * 1024 * 1024, 'a group disk normalises too');
});
