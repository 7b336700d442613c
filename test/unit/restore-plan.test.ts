// The restore's pure planner (src/restore/plan.ts) and the manifest schema: which files rebuild
// a disk, in which order, and every manifest it must refuse (the real restores are in
// test/integration/restore.test.ts).
import t, { type Test } from 'tap';
import type { BackupManifest } from '../../src/generated/api.js';
import { SchemaSet } from '../../src/schemas.js';
import { planRestore, plainName, RestoreError, MAX_CHAIN, type Backup } from '../../src/restore/plan.js';
import { stackJson } from '../../src/restore/run.js';

const SIZE = 1 << 30;
const sha = (c: string) => c.repeat(64);
let n = 0;
function entry(
  kind: 'full' | 'incremental',
  checkpoint: string | null,
  since: string | null,
  disks = ['vda'],
  over: Partial<Backup> = {},
): Backup {
  n++;
  const at = new Date(Date.UTC(2026, 11, 7, 13, n)).toISOString();
  return {
    id: `job-${checkpoint ?? n}`,
    kind,
    checkpoint,
    since,
    startedAt: at,
    completedAt: at,
    disks: Object.fromEntries(
      disks.map((d) => [
        d,
        {
          file: `vm1-${d}-${checkpoint ?? n}.${kind === 'full' ? 'full' : 'inc'}.qcow2`,
          format: 'qcow2',
          virtualSize: SIZE,
          size: 1,
          sha256: sha('a'),
        },
      ]),
    ),
    ...over,
  } as Backup;
}
const manifest = (...backups: Backup[]): BackupManifest => ({ version: 1, domain: 'vm1', backups });
const chainOf = (m: BackupManifest, opts: { disk?: string; upto?: string } = {}) =>
  planRestore(m, { disk: opts.disk ?? 'vda', ...(opts.upto ? { upto: opts.upto } : {}) }).chain.map((l) => l.id);
function refused(t: Test, f: () => unknown, reason: string, msg: RegExp, what: string): void {
  try {
    f();
    t.fail(`${what}: not refused`);
  } catch (e) {
    t.ok(e instanceof RestoreError, `${what}: a RestoreError`);
    t.equal((e as RestoreError).reason, reason, `${what}: ${reason}`);
    t.match((e as Error).message, msg, `${what}: the message says why`);
  }
}

// A full, two incrementals, a second full, one incremental after it.
const main = () =>
  manifest(
    entry('full', 'c1', null),
    entry('incremental', 'c2', 'c1'),
    entry('incremental', 'c3', 'c2'),
    entry('full', 'c4', null),
    entry('incremental', 'c5', 'c4'),
  );

t.test('order: the full first, then each incremental as it applies', async (t) => {
  const m = main();
  t.same(chainOf(m), ['job-c4', 'job-c5'], 'the latest backup by default: its own full, not the older one');
  t.same(chainOf(m, { upto: 'job-c3' }), ['job-c1', 'job-c2', 'job-c3'], 'upto by id');
  t.same(chainOf(m, { upto: 'c2' }), ['job-c1', 'job-c2'], 'upto by checkpoint');
  t.same(chainOf(m, { upto: 'c1' }), ['job-c1'], 'a full alone');
  t.same(chainOf(m, { upto: 'c4' }), ['job-c4'], 'the second full alone');
  const p = planRestore(m, { disk: 'vda', upto: 'c3' });
  t.equal(p.upto, 'job-c3');
  t.equal(p.virtualSize, SIZE);
  t.equal(p.outputFormat, 'qcow2', "the full's format by default");
  t.equal(planRestore(m, { disk: 'vda', format: 'raw' }).outputFormat, 'raw');
});

t.test('a differential (two incrementals since the same checkpoint) skips the sibling', async (t) => {
  const m = manifest(entry('full', 'd1', null), entry('incremental', 'd2', 'd1'), entry('incremental', 'd3', 'd1'));
  t.same(chainOf(m), ['job-d1', 'job-d3']);
});

t.test('disks: each its own chain; a backup of other disks is skipped by default, a gap when needed', async (t) => {
  const m = manifest(
    entry('full', 'e1', null, ['vda', 'vdb']),
    entry('incremental', 'e2', 'e1', ['vda', 'vdb']),
    entry('full', 'e3', null, ['vda']),
  );
  t.same(chainOf(m, { disk: 'vdb' }), ['job-e1', 'job-e2'], 'the latest backup holding vdb');
  refused(t, () => chainOf(m, { disk: 'vdb', upto: 'e3' }), 'noSuchDisk', /holds no file for disk vdb/, 'upto a backup without the disk');
  refused(
    t,
    () => chainOf(m, { disk: 'vdc' }),
    'noSuchDisk',
    /no backup in the manifest holds disk vdc \(disks: vda, vdb\)/,
    'an unknown disk',
  );
  const gap = manifest(entry('full', 'g1', null, ['vda']), entry('incremental', 'g2', 'g1', ['vda', 'vdb']));
  refused(
    t,
    () => chainOf(gap, { disk: 'vdb' }),
    'chainGap',
    /checkpoint 'g1'.*holds no file for disk vdb/,
    'the since-backup lacks the disk',
  );
});

t.test('gaps: a since no earlier backup created', async (t) => {
  const m = manifest(entry('full', 'h1', null), entry('incremental', 'h3', 'h2'));
  refused(t, () => chainOf(m), 'chainGap', /relative to checkpoint 'h2', which no backup in the manifest created/, 'a missing entry');
  refused(t, () => chainOf(m, { upto: 'h3' }), 'chainGap', /h2/, 'also by upto');
  t.same(chainOf(m, { upto: 'h1' }), ['job-h1'], 'what lies before the gap still restores');
  const later = manifest(entry('full', 'k1', null), entry('incremental', 'k2', 'k3'), entry('incremental', 'k3', 'k1'));
  refused(t, () => chainOf(later, { upto: 'k2' }), 'chainGap', /comes after it/, 'a since naming a later backup');
  const a = entry('full', 'l1', null);
  const b = entry('incremental', 'l2', 'l1', ['vda'], { startedAt: '2020-01-01T00:00:00Z' });
  refused(t, () => chainOf(manifest(a, b)), 'chainGap', /started before/, 'times out of order');
  const long = [entry('full', 'x0', null)];
  for (let i = 1; i <= MAX_CHAIN; i++) long.push(entry('incremental', `x${i}`, `x${i - 1}`));
  refused(t, () => chainOf(manifest(...long)), 'chainGap', /longer than/, 'a chain beyond the bound');
});

t.test('upto: unknown or ambiguous names refused', async (t) => {
  refused(
    t,
    () => chainOf(main(), { upto: 'nope' }),
    'unknownBackup',
    /no backup has the id or checkpoint 'nope' \(latest: .*job-c5 \(c5\)/,
    'unknown',
  );
  const m = manifest(entry('full', 'm1', null, ['vda'], { id: 'm2' }), entry('incremental', 'm2', 'm1', ['vda'], { id: 'other' }));
  refused(
    t,
    () => chainOf(m, { upto: 'm2' }),
    'ambiguousBackup',
    /id of one backup and the checkpoint of another/,
    'id of one, checkpoint of another',
  );
});

t.test('bad paths: only plain names in the manifest directory', async (t) => {
  for (const file of ['../vm1.qcow2', '/etc/shadow', 'a/b', '..', '.', '', 'x\0y', 'a\x1b[2Jb', 'é'.repeat(200)]) {
    const e = entry('full', 'p1', null);
    e.disks.vda!.file = file;
    refused(t, () => chainOf(manifest(e)), 'unsafePath', /not a plain name/, JSON.stringify(file.slice(0, 20)));
  }
  t.ok(plainName('vm1-vda-c1.full.qcow2') && plainName('..x') && plainName('a..b'), 'dots inside a name are fine');
  const schema = new SchemaSet().validator('backup-manifest.schema.json');
  for (const file of ['../x', '/x', 'a/b', '..', '.', 'a\x1b]0;x\x07']) {
    const e = entry('full', 'q1', null);
    e.disks.vda!.file = file;
    t.notOk(schema(manifest(e)), `the schema refuses ${JSON.stringify(file)} too`);
  }
});

t.test('sizes and formats that do not match are refused', async (t) => {
  const m = main();
  m.backups[2]!.disks.vda!.virtualSize = SIZE * 2;
  refused(t, () => chainOf(m, { upto: 'c3' }), 'sizeMismatch', /resized/, 'an incremental of another size');
  t.same(chainOf(m, { upto: 'c2' }), ['job-c1', 'job-c2'], 'before it still restores');
  const raw = main();
  raw.backups[1]!.disks.vda!.format = 'raw';
  refused(t, () => chainOf(raw), 'formatMismatch', /an incremental must be qcow2/, 'a raw incremental');
  const rawFull = main();
  rawFull.backups[0]!.disks.vda!.format = 'raw';
  t.equal(planRestore(rawFull, { disk: 'vda', upto: 'c3' }).outputFormat, 'raw', 'a raw full is fine, and the default output format');
});

t.test('the manifest as a whole: duplicates and kinds', async (t) => {
  const dupId = main();
  dupId.backups[3]!.id = dupId.backups[0]!.id;
  refused(t, () => chainOf(dupId), 'manifestInvalid', /backup id 'job-c1' twice/, 'duplicate id');
  const dupCp = main();
  dupCp.backups[3]!.checkpoint = 'c1';
  refused(t, () => chainOf(dupCp), 'manifestInvalid', /checkpoint 'c1' twice/, 'duplicate checkpoint');
  const dupFile = main();
  dupFile.backups[4]!.disks.vda!.file = dupFile.backups[0]!.disks.vda!.file;
  refused(t, () => chainOf(dupFile), 'manifestInvalid', /listed twice/, 'one file for two backups');
  const fullSince = main();
  fullSince.backups[3]!.since = 'c2';
  refused(t, () => chainOf(fullSince), 'manifestInvalid', /is full but names since/, 'a full with since');
  const incNoSince = main();
  incNoSince.backups[1]!.since = null;
  refused(t, () => chainOf(incNoSince), 'manifestInvalid', /names no since/, 'an incremental without since');
});

t.test('the schema takes the contract example and refuses what is not it', async (t) => {
  const v = new SchemaSet().validator('backup-manifest.schema.json');
  const m = main();
  t.ok(v(m), JSON.stringify(v.errors));
  t.ok(v({ ...m, uuid: '7a2c…', failed: [{ id: 'x', reason: 'cancelled', files: ['a'] }] }), 'failed entries');
  t.notOk(v({ ...m, failed: [{ id: 'x', reason: 'cancelled', files: ['../a'] }] }), "a failed entry's file is a plain name too");
  t.notOk(v({ ...m, failed: [{ id: 'x', reason: 'cancelled', other: 1 }] }), 'a failed entry with an unknown key');
  t.notOk(v({ ...m, version: 2 }), 'another version');
  t.notOk(v({ ...m, domain: 'vm\x1b[31m' }), 'a control character (a terminal escape) in a printed string');
  const esc = main();
  esc.backups[0]!.id = 'job\r1';
  t.notOk(v(esc), 'in an id too');
  t.notOk(v({ ...m, extra: 1 }), 'an unknown key');
  const bad = main();
  (bad.backups[1] as { since: string | null }).since = null;
  t.notOk(v(bad), 'an incremental without since');
  const badSha = main();
  badSha.backups[0]!.disks.vda!.sha256 = 'xyz';
  t.notOk(v(badSha), 'a sha256 that is not 64 hex digits');
});

t.test('the stack qemu-img reads: top first, each backing the layer below, all read-only', async (t) => {
  const j = stackJson([
    { format: 'raw', filename: '/dev/fd/3' },
    { format: 'qcow2', filename: '/dev/fd/4' },
  ]);
  t.ok(j.startsWith('json:'));
  t.same(JSON.parse(j.slice(5)), {
    driver: 'qcow2',
    'read-only': true,
    file: { driver: 'file', filename: '/dev/fd/4', 'read-only': true },
    backing: { driver: 'raw', 'read-only': true, file: { driver: 'file', filename: '/dev/fd/3', 'read-only': true } },
  });
  t.same(
    JSON.parse(stackJson([{ format: 'qcow2', filename: '/dev/fd/3' }]).slice(5)).backing,
    null,
    "a qcow2 full's header backing is never opened",
  );
});
