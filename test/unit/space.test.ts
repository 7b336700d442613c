// The pre-flight figure (src/jobs/space.ts) as docs/jobs.md states it, and the per-filesystem
// sum. The real checks against libvirtd and a small tmpfs: test/integration/preflight-space.
import t from 'tap';
import { AgentError } from '../../src/errors.js';
import { assertRoom, copyFigure, MIN_MARGIN_BYTES, type SpaceNeed } from '../../src/jobs/space.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** A figure plus its margin: 1%, at least 16 MiB. */
const plus1 = (b: number) => b + Math.max(16 * MiB, Math.ceil(b / 100));

t.test('the figure: raw the virtual size, qcow2 what is allocated plus metadata, then the margin', async (t) => {
  const sizes = { capacity: 10 * GiB, top: 1 * GiB, chain: 3 * GiB };
  const meta = (10 * GiB) / 8192 + (10 * GiB) / 32768 + MiB;
  t.equal(copyFigure(sizes, 'raw', false), plus1(10 * GiB), 'raw: the capacity');
  t.equal(copyFigure(sizes, 'qcow2', false), plus1(3 * GiB + meta), 'qcow2 full: the whole chain');
  t.equal(copyFigure(sizes, 'qcow2', true), plus1(1 * GiB + meta), 'qcow2 shallow: the top');
  const overlapping = { capacity: 1 * GiB, top: 1 * GiB, chain: 2 * GiB };
  const m1 = GiB / 8192 + GiB / 32768 + MiB;
  t.equal(copyFigure(overlapping, 'qcow2', false), plus1(GiB + m1), 'never more data than the virtual size');
  t.equal(copyFigure({ capacity: 16 * MiB, top: 0, chain: 0 }, 'raw', false), 16 * MiB + MIN_MARGIN_BYTES, 'the margin is at least 16 MiB');
});

const need = (disk: string, key: string, needed: number, available: number): SpaceNeed => ({
  disk,
  path: `/p/${disk}`,
  needed,
  held: 0,
  store: { key, path: `/p`, filesystem: '/p', available, device: false },
});

t.test('needs are summed per filesystem; each filesystem on its own', async (t) => {
  t.doesNotThrow(() => assertRoom([need('vda', 'fs:1', 60, 100), need('vdb', 'fs:2', 60, 100), null]), 'two filesystems, each fits');
  t.doesNotThrow(() => assertRoom([need('vda', 'fs:1', 100, 100)]), 'exactly the room available fits');
  const e = t.throws(() => assertRoom([need('vda', 'fs:1', 60, 100), need('vdb', 'fs:1', 60, 100)])) as AgentError;
  t.equal(e.errorName, 'insufficientSpace');
  t.match(e.data, { needed: 120, available: 100, path: '/p', filesystem: '/p', disks: [{ disk: 'vda' }, { disk: 'vdb' }] });
});

t.test('running copies count only on the filesystems this call writes to', async (t) => {
  const running = { ...need('vdz', 'fs:2', 500, 100), jobId: 'j-other' };
  t.doesNotThrow(() => assertRoom([need('vda', 'fs:1', 60, 100)], [running]), "a running copy elsewhere is not this call's concern");
  const e = t.throws(() => assertRoom([need('vda', 'fs:2', 60, 100)], [running])) as AgentError;
  t.match(
    e.data,
    { needed: 560, disks: [{ disk: 'vda' }, { disk: 'vdz', jobId: 'j-other' }] },
    'on the same filesystem it is counted, by its job',
  );
});
