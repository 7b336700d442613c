// The one helper that opens the agent's own files, and the state lock around an injected
// flock (the real one, native, is tested against the real agent in test/faults/state-lock).
import t, { type Test } from 'tap';
import {
  chmodSync,
  closeSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkOwnDirectory, openOwnFile, openOwnFileHandle } from '../../src/own-files.js';
import { acquireStateLock } from '../../src/state-lock.js';

function scratch(t: Test): string {
  const d = mkdtempSync(join(tmpdir(), 'bc-own-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

t.test('openOwnFile: never through a link, never a file that is not the agent’s own', async (t) => {
  const d = scratch(t);
  const target = join(d, 'target');
  writeFileSync(target, 'KEEP');
  symlinkSync(target, join(d, 'sym'));
  linkSync(target, join(d, 'hard'));
  for (const use of ['new', 'append', 'lock', 'read'] as const) {
    t.throws(() => openOwnFile(join(d, 'sym'), use), /symbolic link|already exists/, `${use}: a symbolic link is refused`);
    t.throws(() => openOwnFile(join(d, 'hard'), use), /2 hard links|already exists/, `${use}: a file with two links is refused`);
    await t.rejects(
      openOwnFileHandle(join(d, 'sym'), use),
      /symbolic link|already exists/,
      `${use} (FileHandle): a symbolic link is refused`,
    );
  }
  t.equal(readFileSync(target, 'utf8'), 'KEEP', 'the target is untouched');
  closeSync(openOwnFile(join(d, 'fresh'), 'new'));
  t.throws(() => openOwnFile(join(d, 'fresh'), 'new'), { code: 'EEXIST' }, 'new: a file already there is refused');
  writeFileSync(join(d, 'open-lock'), '');
  chmodSync(join(d, 'open-lock'), 0o644);
  closeSync(openOwnFile(join(d, 'open-lock'), 'lock'));
  t.equal(statSync(join(d, 'open-lock')).mode & 0o777, 0o600, 'lock: made 0600 (it holds the relay token)');
});

t.test('checkOwnDirectory: created 0700 when missing, refused (never changed) when open to others', async (t) => {
  const d = scratch(t);
  chmodSync(d, 0o755);
  await checkOwnDirectory(join(d, 'a', 'b'), 'state directory', { create: true });
  t.equal(statSync(join(d, 'a', 'b')).mode & 0o777, 0o700, 'created 0700');
  t.equal(statSync(join(d, 'a')).mode & 0o777, 0o700, 'and the directory above it it made');
  mkdirSync(join(d, 'gw'));
  chmodSync(join(d, 'gw'), 0o775);
  await t.rejects(
    checkOwnDirectory(join(d, 'gw'), 'state directory'),
    /the state directory '.*gw' is not trustworthy: .*writable by group or others/,
  );
  t.equal(statSync(join(d, 'gw')).mode & 0o777, 0o775, 'unchanged');
  mkdirSync(join(d, 'open'));
  chmodSync(join(d, 'open'), 0o755);
  await t.rejects(checkOwnDirectory(join(d, 'open'), 'socket directory', { private: true }), /open to group or others/);
  symlinkSync(join(d, 'a'), join(d, 'link'));
  await t.rejects(checkOwnDirectory(join(d, 'link', 'c'), 'audit directory', { create: true }), /symbolic link/);
  t.throws(() => statSync(join(d, 'a', 'c')), { code: 'ENOENT' }, 'nothing created through the link');
});

t.test('the state lock: ownership is the flock, the file only tells who holds it', async (t) => {
  const d = join(scratch(t), 's');
  let held = false;
  const flock = () => (held ? false : (held = true));
  const first = await acquireStateLock(d, flock);
  t.ok(first.acquired, 'the first takes it');
  if (!first.acquired) return;
  first.update({ pid: process.pid, listen: { host: '127.0.0.1', port: 1 }, relayToken: 'x' });
  t.equal(statSync(join(d, 'agent.lock')).mode & 0o777, 0o600, 'the lock file is 0600');
  first.release();
  t.same(JSON.parse(readFileSync(join(d, 'agent.lock'), 'utf8')), {}, 'released: emptied of the token, not removed');
});

t.test('the state lock held elsewhere: the holder the file names, or none once the wait is over', async (t) => {
  const d = join(scratch(t), 's');
  const mine = await acquireStateLock(d, () => true);
  if (!mine.acquired) return t.fail('the first takes it');
  mine.update({ pid: process.ppid, listen: null, socket: '/run/x.sock' });
  const busy = await acquireStateLock(d, () => false, 100);
  t.match(busy, { acquired: false, holder: { pid: process.ppid, socket: '/run/x.sock' } }, 'a live holder is named');
  mine.release();
  t.same(await acquireStateLock(d, () => false, 100), { acquired: false, holder: null }, 'an unnamed holder: busy, holder unknown');
});
