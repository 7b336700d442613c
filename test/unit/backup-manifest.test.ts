// The manifest the agent appends to is input, read as restore reads it (src/backup-manifest.ts):
// a missing one starts a new manifest; a symbolic link, a FIFO, a file with other hard links, an
// oversized file, JSON that breaks the schema or another domain's manifest is refused by name,
// and nothing is written.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import {
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
  readdirSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BackupJob } from '../../src/generated/api.js';
import { MAX_MANIFEST_BYTES } from '../../src/backup-manifest.js';
import { appendToManifest, manifestPath } from '../../src/jobs/kinds/backup/manifest.js';

const root = mkdtempSync(join(tmpdir(), 'bc-manifest-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const UUID = '0b6a8f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b';

function backup(dir: string, jobId: string): BackupJob {
  return {
    jobId,
    kind: 'backup',
    domain: { name: 'guest', uuid: UUID },
    state: 'completed',
    mode: 'full',
    since: null,
    checkpoint: 'c1',
    dir,
    disks: [],
    createdAt: '2026-12-07T10:00:00.000Z',
    endedAt: '2026-12-07T10:01:00.000Z',
  } as unknown as BackupJob;
}
const disk = {
  disk: 'vda',
  file: 'guest.vda.c1.qcow2',
  format: 'qcow2' as const,
  virtualSize: 1 << 20,
  size: 4096,
  sha256: 'a'.repeat(64),
};

t.test('a missing manifest is started; the next backup is appended', async (t) => {
  const dir = join(root, 'new');
  mkdirSync(dir);
  const path = await appendToManifest(backup(dir, 'b1'), [disk]);
  t.equal(path, manifestPath(dir, 'guest'));
  await appendToManifest(backup(dir, 'b2'), [{ ...disk, file: 'guest.vda.c2.qcow2' }]);
  const m = JSON.parse(readFileSync(path, 'utf8'));
  t.match(m, { version: 1, domain: 'guest', uuid: UUID });
  t.same(
    m.backups.map((b: { id: string }) => b.id),
    ['b1', 'b2'],
  );
});

/** A manifest path holding `make`'s thing is refused with `message`, and the directory is as it was. */
function refused(name: string, make: (path: string, dir: string) => void, message: RegExp) {
  t.test(name, async (t) => {
    const dir = join(root, name.replace(/\W+/g, '-'));
    mkdirSync(dir);
    const path = manifestPath(dir, 'guest');
    make(path, dir);
    const before = readdirSync(dir).sort();
    // Only regular files are read (a FIFO would block this test as it must not block the agent).
    const content = (p: string) => {
      const st = lstatSync(p);
      return st.isFile() ? readFileSync(p, 'utf8').slice(0, 200) : `${st.mode}:${st.ino}`;
    };
    const was = before.map((f) => content(join(dir, f)));
    await t.rejects(appendToManifest(backup(dir, 'b9'), [disk]), message);
    t.same(readdirSync(dir).sort(), before, 'no file added or removed');
    t.same(
      before.map((f) => content(join(dir, f))),
      was,
      'nothing rewritten',
    );
  });
}

refused(
  'a symbolic link in its place',
  (path, dir) => {
    writeFileSync(join(dir, 'elsewhere.json'), JSON.stringify({ version: 1, domain: 'guest', uuid: UUID, backups: [] }));
    symlinkSync(join(dir, 'elsewhere.json'), path);
  },
  /is a symbolic link; the agent never follows one to its own files/,
);
refused('a FIFO in its place (no hang)', (path) => execFileSync('mkfifo', [path]), /not a regular file/);
refused(
  'a file larger than the bound (not read)',
  (path) => {
    writeFileSync(path, '');
    truncateSync(path, MAX_MANIFEST_BYTES + 1);
  },
  /bytes, more than/,
);
refused(
  'a file with another hard link',
  (path, dir) => {
    writeFileSync(join(dir, 'other.json'), JSON.stringify({ version: 1, domain: 'guest', uuid: UUID, backups: [] }));
    linkSync(join(dir, 'other.json'), path);
  },
  /with 2 hard links/,
);
refused('not JSON', (path) => writeFileSync(path, '{"version": 1,'), /is not JSON/);
refused(
  'JSON that breaks the schema',
  (path) =>
    writeFileSync(
      path,
      JSON.stringify({ version: 1, domain: 'guest', uuid: UUID, backups: [{ id: 'x', disks: { vda: { file: '../etc/passwd' } } }] }),
    ),
  /breaks schemas\/backup-manifest\.schema\.json/,
);
refused(
  "another domain's manifest",
  (path) => writeFileSync(path, JSON.stringify({ version: 1, domain: 'guest', uuid: '11111111-2222-4333-8444-555555555555', backups: [] })),
  /manifest of another domain/,
);
