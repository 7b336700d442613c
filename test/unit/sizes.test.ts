// The size a guest sees of an image (sizes.ts, behind the raw-device size diagnosis): a qcow2's
// from its header, read by the one header parser (through the link a domain may name it by, and
// never blocking on a FIFO), a raw file's from stat; unknown is null, never a guess.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { virtualBytes } from '../../src/jobs/sizes.js';
import { qcow2 } from './qcow2-header.js';

const dir = mkdtempSync(join(tmpdir(), 'bc-sizes-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('qcow2: the header says; raw: the file length; otherwise null', async (t) => {
  const img = join(dir, 'disk.qcow2');
  writeFileSync(img, qcow2());
  t.equal(await virtualBytes(img, 'qcow2'), 32 << 20, "the header's virtual size");
  const link = join(dir, 'by-link.qcow2');
  symlinkSync(img, link);
  t.equal(await virtualBytes(link, 'qcow2'), 32 << 20, 'through the name a domain may use (a link)');
  const raw = join(dir, 'disk.raw');
  writeFileSync(raw, Buffer.alloc(12345));
  t.equal(await virtualBytes(raw, 'raw'), 12345, 'raw: its length');
  t.equal(await virtualBytes(raw, 'qcow2'), null, 'labelled qcow2 without its header: unknown');
  t.equal(await virtualBytes(join(dir, 'missing'), 'qcow2'), null, 'missing: unknown');
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  t.equal(await virtualBytes(fifo, 'qcow2'), null, 'a FIFO labelled qcow2: unknown, and no hang');
});
