// The offline restore verb (`blockcopy-agent restore`) on backups made exactly as QEMU's push-mode
// backup job makes them: a full image of the disk, then incrementals that are fresh qcow2 images
// holding only the 64 KiB clusters the guest dirtied since the previous checkpoint (each such
// cluster whole, as the disk held it at the backup's start; a zeroed one as a zero cluster).
// The expected image at each backup is a plain copy of the disk taken at that moment: qemu-img
// compare against it is the proof. Also the refusals (checksum, symbolic link, '../', an
// existing output, a full with a backing file) and that no backup file ever changes.
import t, { type Test } from 'tap';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { CLI } from '../../harness/agent.js';

const run = promisify(execFile);
const CLUSTER = 64 * 1024;
const MiB = 1024 * 1024;

interface Run {
  code: number | null;
  stderr: string;
  lines: Array<Record<string, unknown>>;
}

/** The verb as an operator runs it, with no agent and no libvirt reachable. */
function restore(args: string[], opts: { path?: string; started?: (pid: number) => void } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'restore', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        BLOCKCOPY_SOCKET: '/nonexistent/agent.sock',
        LIBVIRT_DEFAULT_URI: 'test:///nonexistent',
        ...(opts.path ? { PATH: opts.path } : {}),
      },
    });
    opts.started?.(child.pid!);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('exit', (code) =>
      resolve({
        code,
        stderr,
        lines: stdout
          .split('\n')
          .filter((l) => l)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      }),
    );
  });
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

interface Write {
  offset: number;
  length: number;
  /** A byte value, or 0 for zeroes. */
  pattern: number;
}

/** A disk (raw, so its bytes can be read) the "guest" writes to, and its backups as QEMU makes them. */
class Disk {
  readonly path: string;
  private dirty = new Set<number>();
  constructor(
    readonly dir: string,
    readonly size: number,
  ) {
    this.path = join(dir, 'live-disk.raw');
  }
  async init(): Promise<void> {
    writeFileSync(this.path, Buffer.alloc(0));
    await run('truncate', ['-s', String(this.size), this.path]);
  }
  write(w: Write): void {
    const fd = openSync(this.path, 'r+');
    writeSync(fd, Buffer.alloc(w.length, w.pattern), 0, w.length, w.offset);
    closeSync(fd);
    for (let c = Math.floor(w.offset / CLUSTER); c * CLUSTER < w.offset + w.length; c++) this.dirty.add(c);
  }
  /** The expected image: the disk as it is now. */
  snapshot(path: string): void {
    copyFileSync(this.path, path);
  }
  /** A full backup: the whole disk (qcow2 or raw); resets the dirty map (a new checkpoint). */
  async full(path: string, format: 'qcow2' | 'raw'): Promise<void> {
    await run('qemu-img', ['convert', '-O', format, '-f', 'raw', this.path, path]);
    this.dirty.clear();
  }
  /**
   * An incremental as push-mode backup writes it: a new qcow2 (no backing, or libvirt's own
   * reference to the disk when `headerBacking`), each dirty cluster copied whole; an all-zero
   * cluster written as zeroes. Returns the clusters written.
   */
  async incremental(path: string, opts: { headerBacking?: string } = {}): Promise<number[]> {
    const create = ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER}`];
    if (opts.headerBacking) create.push('-u', '-b', opts.headerBacking, '-F', 'raw');
    await run('qemu-img', [...create, path, String(this.size)]);
    const bytes = readFileSync(this.path);
    const cmds: string[] = [];
    const clusters = [...this.dirty].sort((a, b) => a - b);
    for (const c of clusters) {
      const chunk = bytes.subarray(c * CLUSTER, (c + 1) * CLUSTER);
      if (chunk.every((b) => b === 0)) cmds.push(`write -z ${c * CLUSTER} ${CLUSTER}`);
      else {
        const src = join(this.dir, `cluster-${c}.bin`);
        writeFileSync(src, chunk);
        cmds.push(`write -s ${src} ${c * CLUSTER} ${CLUSTER}`);
      }
    }
    // Opened without its backing (libvirt's reference is to the live disk, not to be read).
    const image = JSON.stringify({ driver: 'qcow2', file: { driver: 'file', filename: path }, backing: null });
    if (cmds.length) await run('qemu-io', [...cmds.flatMap((c) => ['-c', c]), `json:${image}`]);
    for (const f of readdirSync(this.dir)) if (f.startsWith('cluster-')) rmSync(join(this.dir, f));
    this.dirty.clear();
    return clusters;
  }
}

interface Entry {
  id: string;
  kind: 'full' | 'incremental';
  checkpoint: string;
  since: string | null;
  file: string;
  format: 'qcow2' | 'raw';
}

function writeManifest(dir: string, size: number, entries: Entry[], disk = 'vda'): string {
  const path = join(dir, 'vm1.backups.json');
  const backups = entries.map((e, i) => {
    const at = new Date(Date.UTC(2026, 11, 7, 13, i)).toISOString();
    const file = join(dir, e.file);
    const st = statSync(file);
    return {
      id: e.id,
      kind: e.kind,
      checkpoint: e.checkpoint,
      since: e.since,
      startedAt: at,
      completedAt: at,
      disks: { [disk]: { file: e.file, format: e.format, virtualSize: size, size: st.blocks * 512, sha256: sha256(file) } },
    };
  });
  writeFileSync(path, JSON.stringify({ version: 1, domain: 'vm1', uuid: '00000000-0000-0000-0000-000000000001', backups }, null, 2));
  return path;
}

/** Every backup file's digest and mtime: the witness that nothing was modified. */
function fingerprint(dir: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(dir)
      .filter((f) => /\.(full|inc)\./.test(f))
      .map((f) => [f, `${sha256(join(dir, f))} ${statSync(join(dir, f)).mtimeMs}`]),
  );
}

function scratch(t: Test, prefix: string): string {
  const d = hv.scratchDir(prefix);
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** No temporary output left in the output's directory. */
const leftovers = (dir: string) => readdirSync(dir).filter((f) => f.includes('.restore-'));

/**
 * A full and two incrementals of a 32 MiB disk, with the expected image at each backup:
 * writes inside clusters, across a cluster boundary, zeroing data the full holds, rewriting
 * what the first incremental holds. The second incremental's header names the live disk as its
 * backing, as libvirt writes it; the live disk is written again afterwards, so a restore that
 * followed that name would differ.
 */
async function backupSet(t: Test, fullFormat: 'qcow2' | 'raw' = 'qcow2') {
  const dir = scratch(t, 'restore-bk-');
  const size = 32 * MiB;
  const disk = new Disk(dir, size);
  await disk.init();
  disk.write({ offset: 0, length: 3 * MiB, pattern: 0x11 });
  disk.write({ offset: 20 * MiB, length: 1 * MiB, pattern: 0x12 });
  const full = `vm1-vda-c1.full.${fullFormat}`;
  await disk.full(join(dir, full), fullFormat);
  disk.snapshot(join(dir, 'expected-0.raw'));
  disk.write({ offset: 4096, length: 8192, pattern: 0x21 }); // inside one cluster of the full's data
  disk.write({ offset: CLUSTER * 40 - 512, length: 1024, pattern: 0x22 }); // across a cluster boundary
  disk.write({ offset: 1 * MiB, length: 2 * CLUSTER, pattern: 0 }); // zeroes over the full's data
  disk.write({ offset: 30 * MiB, length: 100, pattern: 0x23 }); // where the full has nothing
  const inc1 = await disk.incremental(join(dir, 'vm1-vda-c2.inc.qcow2'));
  disk.snapshot(join(dir, 'expected-1.raw'));
  disk.write({ offset: 4096 + 1024, length: 2048, pattern: 0x31 }); // over the first incremental's cluster
  disk.write({ offset: 20 * MiB + 5, length: 10, pattern: 0x32 });
  disk.write({ offset: 1 * MiB + 100, length: 10, pattern: 0x33 }); // into a zeroed cluster
  const inc2 = await disk.incremental(join(dir, 'vm1-vda-c3.inc.qcow2'), { headerBacking: disk.path });
  disk.snapshot(join(dir, 'expected-2.raw'));
  disk.write({ offset: 8 * MiB, length: 1 * MiB, pattern: 0x44 }); // after the last backup
  const manifest = writeManifest(dir, size, [
    { id: 'job-1', kind: 'full', checkpoint: 'c1', since: null, file: full, format: fullFormat },
    { id: 'job-2', kind: 'incremental', checkpoint: 'c2', since: 'c1', file: 'vm1-vda-c2.inc.qcow2', format: 'qcow2' },
    { id: 'job-3', kind: 'incremental', checkpoint: 'c3', since: 'c2', file: 'vm1-vda-c3.inc.qcow2', format: 'qcow2' },
  ]);
  return { dir, manifest, size, disk, inc1, inc2 };
}

/** The clusters a qcow2 image itself holds (data or zero clusters), as qemu-img map says. */
async function allocated(path: string): Promise<number[]> {
  const image = JSON.stringify({ driver: 'qcow2', file: { driver: 'file', filename: path }, backing: null });
  const { stdout } = await run('qemu-img', ['map', '--output=json', `json:${image}`]);
  const out: number[] = [];
  for (const m of JSON.parse(stdout) as Array<{ start: number; length: number; depth: number; present: boolean }>)
    if (m.depth === 0 && m.present) for (let c = m.start / CLUSTER; c < (m.start + m.length) / CLUSTER; c++) out.push(c);
  return out;
}

t.test('full + 2 incrementals restored to each point, qcow2 and raw, equal the disk then', async (t) => {
  const set = await backupSet(t);
  const before = fingerprint(set.dir);
  const info = await run('qemu-img', ['info', '--output=json', '-U', join(set.dir, 'vm1-vda-c2.inc.qcow2')]);
  t.notOk((JSON.parse(info.stdout) as { 'backing-filename'?: string })['backing-filename'], 'the first incremental has no backing file');
  t.same(await allocated(join(set.dir, 'vm1-vda-c2.inc.qcow2')), set.inc1, 'the first incremental holds exactly its dirty clusters');
  t.same(await allocated(join(set.dir, 'vm1-vda-c3.inc.qcow2')), set.inc2, 'the second too');

  const out = scratch(t, 'restore-out-');
  const cases: Array<[string[], string, string]> = [
    [['--upto', 'job-1'], 'expected-0.raw', 'the full alone, by id'],
    [['--upto', 'c2'], 'expected-1.raw', 'up to the first incremental, by checkpoint'],
    [[], 'expected-2.raw', 'the latest by default'],
    [['--upto', 'job-3', '--format', 'raw'], 'expected-2.raw', 'raw output'],
  ];
  for (const [i, [extra, expected, what]] of cases.entries()) {
    const target = join(out, `restored-${i}.img`);
    const r = await restore([set.manifest, '--disk', 'vda', '--output', target, ...extra]);
    t.equal(r.code, 0, `${what}: exit 0 ${r.stderr}`);
    t.equal(await hv.compareImages(target, join(set.dir, expected)), 'identical', `${what}: qemu-img compare`);
    const restored = r.lines.find((l) => l.event === 'restored') as { output: { path: string; format: string } } | undefined;
    t.equal(restored?.output.path, target, `${what}: says where`);
    t.equal(restored?.output.format, extra.includes('raw') ? 'raw' : 'qcow2', `${what}: the format`);
    t.equal(statSync(target).mode & 0o777, 0o600, `${what}: readable by root only`);
  }
  const latest = await restore([set.manifest, '--disk', 'vda', '--output', join(out, 'again.qcow2')]);
  const plan = latest.lines.find((l) => l.event === 'plan') as { chain: Array<{ id: string }> };
  t.same(
    plan.chain.map((l) => l.id),
    ['job-1', 'job-2', 'job-3'],
    'the chain used is printed',
  );
  t.equal(latest.lines.filter((l) => l.event === 'verified').length, 3, 'each file verified and said so');
  t.match(
    latest.lines.find((l) => l.event === 'ignoredBacking'),
    { id: 'job-3', backing: set.disk.path },
    "libvirt's header backing reported, not followed",
  );
  t.notOk(
    await hv.compareImages(join(out, 'again.qcow2'), set.disk.path).then((s) => s === 'identical'),
    'the disk as it is now differs (written after)',
  );
  t.same(leftovers(out), [], 'no temporary file left');
  t.same(fingerprint(set.dir), before, 'every backup file byte-identical, mtime unchanged');
});

t.test('a raw full with incrementals', async (t) => {
  const set = await backupSet(t, 'raw');
  const out = scratch(t, 'restore-out-');
  const r = await restore([set.manifest, '--disk', 'vda', '--output', join(out, 'vda.raw')]);
  t.equal(r.code, 0, r.stderr);
  t.equal(await hv.compareImages(join(out, 'vda.raw'), join(set.dir, 'expected-2.raw')), 'identical');
  t.match(
    r.lines.find((l) => l.event === 'restored'),
    { output: { format: 'raw' } },
    "the full's format by default",
  );
});

t.test('refusals: nothing written, nothing left, backups unchanged', async (t) => {
  const out = scratch(t, 'restore-out-');
  const refused = async (t: Test, args: string[], error: string, msg: RegExp, what: string) => {
    const target = join(out, `${what.replace(/\W+/g, '-')}.qcow2`);
    const r = await restore([...args.map((a) => (a === 'OUT' ? target : a))]);
    t.equal(r.code, 1, `${what}: exit 1`);
    const e = JSON.parse(r.stderr.trim().split('\n').at(-1)!) as { error: string; message: string };
    t.equal(e.error, error, `${what}: ${error}`);
    t.match(e.message, msg, `${what}: ${e.message}`);
    t.same(leftovers(out), [], `${what}: no temporary file`);
    return target;
  };

  await t.test('sha256 mismatch', async (t) => {
    const set = await backupSet(t);
    const inc = join(set.dir, 'vm1-vda-c2.inc.qcow2');
    const fd = openSync(inc, 'r+');
    writeSync(fd, Buffer.from([0x5a]), 0, 1, statSync(inc).size - 1);
    closeSync(fd);
    const before = fingerprint(set.dir);
    const target = await refused(
      t,
      [set.manifest, '--disk', 'vda', '--output', 'OUT'],
      'checksumMismatch',
      /job-2.*vm1-vda-c2\.inc\.qcow2.*sha256/,
      'sha mismatch',
    );
    t.throws(() => statSync(target), 'no output');
    const v = await restore([set.manifest, '--verify-only']);
    t.equal(v.code, 1, '--verify-only finds it too');
    const ok = await restore([set.manifest, '--verify-only', '--upto', 'c1', '--json']);
    t.equal(ok.code, 0, '--verify-only up to the full passes');
    t.same(fingerprint(set.dir), before, 'unchanged');
  });

  await t.test('a symbolic link in place of a backup file', async (t) => {
    const set = await backupSet(t);
    const elsewhere = scratch(t, 'restore-else-');
    const inc = join(set.dir, 'vm1-vda-c2.inc.qcow2');
    renameSync(inc, join(elsewhere, 'real.qcow2'));
    symlinkSync(join(elsewhere, 'real.qcow2'), inc);
    await refused(t, [set.manifest, '--disk', 'vda', '--output', 'OUT'], 'unsafePath', /symbolic link/, 'symlink');
    await refused(t, [set.manifest, '--verify-only'], 'unsafePath', /symbolic link/, 'symlink verify-only');
  });

  await t.test("a file named '../…' (the same bytes, the right sha256)", async (t) => {
    const set = await backupSet(t);
    const parent = join(set.dir, 'sub');
    mkdirSync(parent);
    const m = JSON.parse(readFileSync(set.manifest, 'utf8')) as { backups: Array<{ disks: { vda: { file: string } } }> };
    m.backups[1]!.disks.vda.file = '../' + 'vm1-vda-c2.inc.qcow2';
    writeFileSync(join(parent, 'vm1.backups.json'), JSON.stringify(m));
    await refused(
      t,
      [join(parent, 'vm1.backups.json'), '--disk', 'vda', '--output', 'OUT'],
      'manifestInvalid',
      /file must match pattern/,
      'dotdot',
    );
  });

  await t.test('an existing output is never overwritten', async (t) => {
    const set = await backupSet(t);
    const target = join(out, 'exists.qcow2');
    writeFileSync(target, 'keep me');
    const r = await restore([set.manifest, '--disk', 'vda', '--output', target]);
    t.equal(r.code, 1);
    t.match(r.stderr, /"error":"outputExists"/);
    t.equal(readFileSync(target, 'utf8'), 'keep me', 'left as it was');
    symlinkSync('/nonexistent/target', join(out, 'dangling'));
    const d = await restore([set.manifest, '--disk', 'vda', '--output', join(out, 'dangling')]);
    t.match(d.stderr, /"error":"outputExists"/, 'a dangling symbolic link too');
    t.same(leftovers(out), []);
  });

  await t.test('a full whose header names a backing file; a declared format that is not the file', async (t) => {
    const set = await backupSet(t);
    const full = join(set.dir, 'vm1-vda-c1.full.qcow2');
    await run('qemu-img', ['rebase', '-u', '-b', join(set.dir, 'expected-0.raw'), '-F', 'raw', full]);
    writeManifest(set.dir, set.size, [
      { id: 'job-1', kind: 'full', checkpoint: 'c1', since: null, file: 'vm1-vda-c1.full.qcow2', format: 'qcow2' },
    ]);
    await refused(
      t,
      [set.manifest, '--disk', 'vda', '--output', 'OUT'],
      'imageRejected',
      /full backup's header names a backing file/,
      'full with backing',
    );
    writeManifest(set.dir, set.size, [
      { id: 'job-1', kind: 'full', checkpoint: 'c1', since: null, file: 'expected-0.raw', format: 'qcow2' },
    ]);
    await refused(
      t,
      [set.manifest, '--disk', 'vda', '--output', 'OUT'],
      'formatMismatch',
      /manifest says qcow2, the file is not an image/,
      'raw said qcow2',
    );
  });

  await t.test('Ctrl-C while qemu-img writes: exit 130, no output, no temporary', async (t) => {
    const set = await backupSet(t);
    const before = fingerprint(set.dir);
    // qemu-img as found first on PATH: the real one, then a mark, then a wait (as a slow disk would).
    const bin = scratch(t, 'restore-bin-');
    const mark = join(bin, 'converted');
    writeFileSync(join(bin, 'qemu-img'), `#!/bin/sh\n/usr/bin/qemu-img "$@" || exit $?\ntouch ${mark}\nexec sleep 60\n`, { mode: 0o755 });
    const target = join(out, 'interrupted.qcow2');
    let pid = 0;
    const done = restore([set.manifest, '--disk', 'vda', '--output', target], {
      path: `${bin}:${process.env.PATH}`,
      started: (p) => (pid = p),
    });
    for (let i = 0; i < 600 && !existsSync(mark); i++) await new Promise((r) => setTimeout(r, 100));
    t.ok(existsSync(mark), 'qemu-img wrote the temporary output');
    t.equal(leftovers(out).length, 1, 'the temporary exists meanwhile');
    process.kill(pid, 'SIGINT');
    const r = await done;
    t.equal(r.code, 130, 'exit 130');
    t.match(r.stderr, /interrupted/);
    t.notOk(existsSync(target), 'no output');
    t.same(leftovers(out), [], 'the temporary removed');
    t.same(fingerprint(set.dir), before, 'backups unchanged');
  });

  await t.test('usage errors exit 2 and read nothing', async (t) => {
    for (const args of [
      [],
      ['m.json'],
      ['m.json', '--disk', 'vda'],
      ['m.json', '--disk', 'vda', '--output', 'x', '--format', 'vmdk'],
      ['m.json', '--verify-only', '--output', 'x'],
    ]) {
      const r = await restore(args);
      t.equal(r.code, 2, args.join(' ') || '(nothing)');
    }
    const esc = await restore(['m.json', '--x\x1b[2J', '--verify-only']);
    t.equal(esc.code, 2);
    t.ok(
      esc.stderr.includes('\\x1b[2J') && !esc.stderr.includes('\x1b'),
      'a control character is shown escaped, never sent to the terminal',
    );
    const r = await restore(['/nonexistent/vm1.backups.json', '--verify-only', '--json']);
    t.equal(r.code, 1);
    t.match(r.stderr, /"error":"manifestInvalid"/);
  });
});
