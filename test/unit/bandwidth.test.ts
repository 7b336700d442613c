// src/bandwidth.ts, the one bandwidth parser: the forms it accepts (virsh's units, any letter
// case, fractions, "/s"), the ones it refuses and why; the API's rule (an integer is bytes/s, a
// string must name its unit: "1048576" is refused, not guessed) through every method's schema
// that takes a bandwidth, and the CLI's (a bare number is MiB/s, --bytes makes it bytes/s).
import t from 'tap';
import { BandwidthError, bandwidthParam, MAX_BANDWIDTH, parseBandwidth } from '../../src/bandwidth.js';
import { bandwidthArg, bandwidthOption, UsageError, type Values } from '../../src/cli/args.js';
import { SchemaSet } from '../../src/schemas.js';

const KiB = 1024n;
const MiB = KiB * KiB;
const GiB = MiB * KiB;

t.test('accepted forms, in bytes/s', async (t) => {
  const cases: Array<[string | number, 'B' | 'MiB' | 'none', bigint]> = [
    [0, 'B', 0n],
    [100, 'B', 100n],
    [100, 'MiB', 100n * MiB],
    ['100', 'MiB', 100n * MiB],
    ['100', 'B', 100n],
    ['0', 'MiB', 0n],
    ['0M', 'none', 0n],
    ['100M', 'none', 100n * MiB],
    ['100m', 'none', 100n * MiB],
    ['100MiB', 'none', 100n * MiB],
    ['100mib', 'none', 100n * MiB],
    ['100MB', 'none', 100_000_000n],
    ['100mb', 'none', 100_000_000n],
    ['100Mb', 'none', 100_000_000n], // b is a byte, never a bit (virsh)
    ['512K', 'none', 512n * KiB],
    ['512KiB', 'none', 512n * KiB],
    ['2kB', 'none', 2000n],
    ['1G', 'none', GiB],
    ['1.5G', 'none', (3n * GiB) / 2n],
    ['1.5g', 'MiB', (3n * GiB) / 2n], // a unit beats the bare unit
    ['10MiB', 'B', 10n * MiB],
    ['10 MiB/s', 'none', 10n * MiB],
    ['10M/s', 'none', 10n * MiB],
    ['  10M  ', 'none', 10n * MiB],
    ['1048576B', 'none', MiB],
    ['7 bytes', 'none', 7n],
    ['1byte', 'none', 1n],
    ['1T', 'none', 1n << 40n],
    ['1P', 'none', 1n << 50n],
    ['15E', 'none', 15n << 60n],
    ['1EB', 'none', 10n ** 18n],
    ['0.5K', 'none', 512n],
    ['1.0000001K', 'none', 1024n], // rounded down to whole bytes/s
    ['18446744073709551615B', 'none', MAX_BANDWIDTH],
    ['18446744073709551615', 'B', MAX_BANDWIDTH],
  ];
  for (const [value, bare, want] of cases) t.equal(parseBandwidth(value, bare), want, `${JSON.stringify(value)} (bare ${bare})`);
});

t.test('refused forms, each with its reason', async (t) => {
  const cases: Array<[string | number, 'B' | 'MiB' | 'none', RegExp]> = [
    ['100', 'none', /has no unit: a string must name one/],
    ['', 'none', /is not a number with a unit/],
    ['', 'MiB', /is not a number with an optional unit/],
    ['fast', 'MiB', /is not a number/],
    ['M', 'none', /is not a number/],
    ['1e3', 'MiB', /unknown unit 'e3'|is not a number/],
    ['0x10', 'B', /unknown unit|is not a number/],
    ['100X', 'none', /unknown unit 'X'/],
    ['100Mbit', 'none', /unknown unit 'Mbit'/],
    ['100KiBB', 'none', /unknown unit/],
    ['1.5', 'none', /has no unit/],
    ['1.', 'MiB', /is not a number/],
    ['.5M', 'none', /is not a number/],
    ['1,5M', 'none', /is not a number/],
    ['-1M', 'none', /is negative/],
    ['-1', 'MiB', /is negative/],
    [-1, 'B', /is negative/],
    [Number.NaN, 'B', /must be a number/],
    [Number.POSITIVE_INFINITY, 'B', /must be a number/],
    ['0.1B', 'none', /below 1 byte\/s \(0 means unlimited\)/],
    ['0.5', 'B', /below 1 byte\/s/],
    ['18446744073709551616B', 'none', /above 2\^64-1/],
    ['16E', 'none', /above 2\^64-1/],
    ['17592186044416', 'MiB', /above 2\^64-1/], // 2^44 MiB/s = 2^64 bytes/s
    ['1'.repeat(65) + 'B', 'none', /is not a number/],
    ['1 0M', 'none', /is not a number/],
    ['10M/h', 'none', /is not a number/],
  ];
  for (const [value, bare, why] of cases) {
    t.throws(() => parseBandwidth(value, bare), { constructor: BandwidthError, message: why }, `${JSON.stringify(value)} (bare ${bare})`);
  }
});

t.test('the API: an integer is bytes/s, a string needs a unit and becomes bytes/s', async (t) => {
  const schemas = new SchemaSet();
  const methods: Array<[string, (bw: unknown) => Record<string, unknown>, (p: Record<string, unknown>) => unknown]> = [
    ['setSpeed', (bw) => ({ jobId: 'j', bandwidth: bw }), (p) => p.bandwidth],
    ['blockCopy', (bw) => ({ domain: 'd', disk: 'vda', destination: { path: '/x' }, bandwidth: bw }), (p) => p.bandwidth],
    ['blockCommit', (bw) => ({ domain: 'd', disk: 'vda', bandwidth: bw }), (p) => p.bandwidth],
    ['blockPull', (bw) => ({ domain: 'd', disk: 'vda', bandwidth: bw }), (p) => p.bandwidth],
    [
      'blockCopyGroup',
      (bw) => ({ domain: 'd', disks: [{ disk: 'vda', destination: { path: '/x' }, bandwidth: bw }] }),
      (p) => (p.disks as Array<Record<string, unknown>>)[0]!.bandwidth,
    ],
  ];
  for (const [method, params, bandwidthOf] of methods) {
    const v = schemas.validator(`methods/${method}.params.json`);
    for (const [given, want] of [
      [0, 0],
      [1048576, 1048576],
      ['100M', 100 * 1048576],
      ['1.5g', 1.5 * 1024 ** 3],
      ['0M', 0],
      ['18446744073709551615B', '18446744073709551615'],
    ] as const) {
      const p = params(given);
      t.ok(v(p), `${method} accepts ${JSON.stringify(given)} ${JSON.stringify(v.errors)}`);
      t.equal(bandwidthOf(p), want, `${method}: ${JSON.stringify(given)} is ${want} bytes/s`);
    }
    for (const [given, why] of [
      ['100', /has no unit/],
      ['18446744073709551615', /has no unit/],
      ['fast', /is not a number with a unit/],
      ['100X', /unknown unit/],
      ['-1M', /negative/],
      ['16E', /above 2\^64-1/],
      [-1, /must be >= 0/],
      [1.5, /must be integer/],
      [true, /must be integer/],
    ] as const) {
      t.notOk(v(params(given)), `${method} refuses ${JSON.stringify(given)}`);
      t.match(v.errors!.map((e) => e.message).join('; '), why, `${method}: ${JSON.stringify(given)} says why`);
    }
  }
});

t.test('the CLI: a bare number is MiB/s, --bytes makes it bytes/s, a unit says it', async (t) => {
  const v = (o: Partial<Values>) => o as Values;
  t.equal(bandwidthArg('100', v({})), 100 * 1048576, '--bandwidth 100 is 100 MiB/s as in virsh');
  t.equal(bandwidthArg('100', v({ bytes: true })), 100, '--bytes: bytes/s');
  t.equal(bandwidthArg('512K', v({ bytes: true })), 512 * 1024, 'a unit wins over --bytes');
  t.equal(bandwidthArg('1G', v({})), 1024 ** 3);
  t.equal(bandwidthArg('0', v({})), 0, '0 is unlimited');
  t.equal(bandwidthArg('17592186044415', v({})), '18446744073708503040B', 'above 2^53-1: sent as a string with its unit');
  t.same(bandwidthOption(v({ bandwidth: '10M' })), { bandwidth: 10 * 1048576 });
  t.same(bandwidthOption(v({})), {});
  t.throws(() => bandwidthOption(v({ bytes: true })), { constructor: UsageError, message: /--bytes applies to --bandwidth/ });
  t.throws(() => bandwidthArg('fast', v({})), { constructor: UsageError, message: /--bandwidth: bandwidth 'fast' is not a number/ });
  t.throws(() => bandwidthArg('-5', v({})), { constructor: UsageError, message: /negative/ });
  t.throws(() => bandwidthArg('100Q', v({}), 'set-speed'), { constructor: UsageError, message: /^set-speed: .*unknown unit 'Q'/ });
  t.throws(() => bandwidthArg('17592186044416', v({})), { constructor: UsageError, message: /above 2\^64-1/ });
  t.equal(bandwidthParam(2n ** 53n - 1n), 2 ** 53 - 1, 'the largest safe integer is a number');
  t.equal(bandwidthParam(2n ** 53n), `${2n ** 53n}B`, 'above: a string with its unit');
});
