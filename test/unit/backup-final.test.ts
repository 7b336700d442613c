// When a backup target is final: the lock table read by inode (held-open.ts) against a real lock
// holder (util-linux `flock`, a process that keeps the file locked until it is told to exit), and
// describeFile, once told libvirt detached the file, waiting for any holder to close it before it
// reads the file; settling when not told.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, appendFileSync, readFileSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inodeKey, isLocked, lockedInodes } from '../../src/jobs/kinds/backup/held-open.js';
import { describeFile } from '../../src/jobs/kinds/backup/manifest.js';

const dir = mkdtempSync(join(tmpdir(), 'bc-final-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Holds a lock on `path` until release() (the holder reads its stdin to the end, then exits). */
async function holdLock(path: string) {
  const child = spawn('flock', ['--shared', path, 'cat'], { stdio: ['pipe', 'ignore', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  for (let i = 0; i < 500 && (await isLocked(path)) !== true; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(await isLocked(path), true, 'the holder has it locked');
  return {
    release: async () => {
      child.stdin.end();
      await exited;
    },
  };
}

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

t.test('the lock table is matched by inode, not by name', async (t) => {
  const a = join(dir, 'a.img');
  writeFileSync(a, 'x');
  const key = await inodeKey(a);
  t.match(key, /^[0-9a-f]{2,}:[0-9a-f]{2,}:\d+$/, 'MAJ:MIN:INO as /proc/locks prints it');
  t.equal(await isLocked(a), false, 'nobody holds it');
  const holder = await holdLock(a);
  t.ok((await lockedInodes())!.has(key!), 'its inode is in the table');
  // Another name of the same inode is the same file; a different file of that name later is not.
  const b = join(dir, 'b.img');
  linkSync(a, b);
  t.equal(await isLocked(b), true, 'a hard link to it: locked too');
  await holder.release();
  t.equal(await isLocked(a), false, 'released: unlocked');
  t.equal(await isLocked(join(dir, 'missing')), null, 'no such file: cannot tell');
});

t.test('detached: described only once no lock holder is left, with what it wrote last', async (t) => {
  const f = join(dir, 'target.img');
  writeFileSync(f, Buffer.alloc(1 << 20, 1));
  const holder = await holdLock(f);
  let done = false;
  const described = describeFile(f, 'raw', { detached: true }).then((d) => {
    done = true;
    return d;
  });
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(done, 'not described while the file is held open');
  // The holder's last write, right before its close (as QEMU's metadata flush at detach).
  appendFileSync(f, Buffer.alloc(4096, 2));
  await holder.release();
  const d = await described;
  t.equal(d.final, 'closed', 'known final by its close');
  t.equal(d.sha256, sha(f), 'the checksum is of the file as closed');
  t.equal(d.virtualSize, (1 << 20) + 4096);
});

t.test('not known detached: described once it stayed unchanged (the settle)', async (t) => {
  const f = join(dir, 'quiet.img');
  writeFileSync(f, Buffer.alloc(8192, 3));
  const d = await describeFile(f, 'raw', { detached: false });
  t.equal(d.final, 'settled');
  t.equal(d.sha256, sha(f));
  const e = await describeFile(f, 'raw', { detached: true });
  t.equal(e.final, 'closed', 'detached and unlocked: final at once');
  t.equal(e.sha256, d.sha256);
  const n = await describeFile(f, 'raw', { detached: true, checksum: 'none' });
  t.same([n.sha256, n.virtualSize, n.final], [null, 8192, 'closed'], 'checksum none: sizes only, no read-back');
});
