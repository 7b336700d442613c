// The convergence estimator (src/jobs/convergence.ts) on synthetic (time, cur, end) samples:
// converging, diverging, stalled and noisy copies, the first seconds, a new limit, the public
// object per job state and the advice. The real agent and a writing guest: test/integration/convergence.test.ts.
import t from 'tap';
import type { Job } from '../../src/generated/api.js';
import { ConvergenceTracker, convergenceOf, type Trend } from '../../src/jobs/convergence.js';
import { convergenceNote } from '../../src/cli/output.js';

const MiB = 1024 * 1024;

function job(extra: Partial<Job> = {}, cur = 0, end = 0, bandwidth = 0): Job {
  return {
    jobId: 'j',
    kind: 'copy',
    domain: { name: 'vm1', uuid: '00000000-0000-0000-0000-000000000001' },
    disk: 'vda',
    source: { path: '/a', format: 'qcow2' },
    destination: { path: '/b', format: 'qcow2', type: 'file' },
    state: 'copying',
    progress: { cur, end, percent: null, rate: null, eta: null },
    bandwidth,
    options: { shallow: false, reuseExternal: false, transientJob: true, synchronousWrites: false },
    whenReady: 'none',
    owner: 'agent',
    createdAt: '2026-01-01T00:00:00Z',
    updatedAt: '2026-01-01T00:00:00Z',
    ...extra,
  } as Job;
}

/** Feeds one sample a second from a model of the copy: copy and guest rates in bytes/s. */
function run(opts: {
  seconds: number;
  copy: number;
  dirty: number;
  size: number;
  bandwidth?: number;
  noise?: (i: number) => { dt: number; dc: number; dd?: number };
}) {
  const tr = new ConvergenceTracker();
  const trends: Trend[] = [];
  let cur = 0;
  let end = opts.size;
  for (let i = 0; i <= opts.seconds; i++) {
    const n = opts.noise?.(i) ?? { dt: 0, dc: 0 };
    const t = i * 1000 + n.dt;
    if (i > 0) {
      cur += opts.copy + n.dc;
      end += opts.dirty + (n.dd ?? 0);
    }
    const remaining = Math.max(0, end - cur);
    if (remaining === 0) end = cur;
    tr.add(t, cur, end, opts.bandwidth ?? 0);
    trends.push(tr.trend);
  }
  return { tr, trends, cur, end, j: job({}, cur, end, opts.bandwidth ?? 0) };
}

t.test('no verdict before the samples span 3 s', async (t) => {
  const { trends } = run({ seconds: 2, copy: 10 * MiB, dirty: 0, size: 1000 * MiB });
  t.same(trends, ['unknown', 'unknown', 'unknown']);
});

t.test('a copy with no guest writes converges, with an ETA from the bytes left', async (t) => {
  const { tr, trends, j } = run({ seconds: 10, copy: 10 * MiB, dirty: 0, size: 1000 * MiB });
  t.equal(trends[3], 'converging', 'a verdict after 3 s');
  const c = convergenceOf(j, tr, false)!;
  t.equal(c.state, 'converging');
  t.equal(c.copyRateBytesPerSecond, 10 * MiB);
  t.equal(c.dirtyRateBytesPerSecond, 0);
  t.equal(c.remainingBytes, 900 * MiB);
  t.equal(c.etaSeconds, 90);
  t.equal(c.bandwidthBytesPerSecond, null);
  t.equal(c.advice, null);
});

t.test('a guest writing slower than the copy: converging, the dirty rate estimated, a longer ETA', async (t) => {
  const { tr, j } = run({ seconds: 10, copy: 10 * MiB, dirty: 4 * MiB, size: 1000 * MiB });
  const c = convergenceOf(j, tr, false)!;
  t.equal(c.state, 'converging');
  t.equal(c.dirtyRateBytesPerSecond, 4 * MiB);
  t.equal(c.etaSeconds, Math.round((1000 * MiB - 60 * MiB) / (6 * MiB)));
});

t.test('a guest writing as fast as the bandwidth limit: notConverging within 4 s, with advice', async (t) => {
  const { tr, trends, j } = run({ seconds: 10, copy: 1 * MiB, dirty: 1 * MiB, size: 64 * MiB, bandwidth: 1 * MiB });
  t.equal(trends.indexOf('notConverging'), 3, 'the first verdict, at 3 s');
  t.notOk(trends.includes('converging'), 'never converging');
  const c = convergenceOf(j, tr, false)!;
  t.equal(c.state, 'notConverging');
  t.equal(c.etaSeconds, null);
  t.equal(c.bandwidthBytesPerSecond, 1 * MiB);
  t.equal(c.dirtyRateBytesPerSecond, 1 * MiB);
  t.match(c.advice, /raise the bandwidth well above 1\.0 MiB\/s/);
  t.match(c.advice, /synchronousWrites/);
  const sync = convergenceOf({ ...j, options: { ...j.options!, synchronousWrites: true } }, tr, false)!;
  t.notMatch(sync.advice, /synchronousWrites/, 'no synchronousWrites advice for a copy that has it');
  const commit = convergenceOf({ ...j, kind: 'commit', options: undefined }, tr, false)!;
  t.notMatch(commit.advice, /synchronousWrites/, 'nor for a commit');
});

t.test('a guest writing faster than an unlimited copy: advice without a bandwidth', async (t) => {
  const { tr, j } = run({ seconds: 10, copy: 50 * MiB, dirty: 60 * MiB, size: 64 * MiB });
  const c = convergenceOf(j, tr, false)!;
  t.equal(c.state, 'notConverging');
  t.match(c.advice, /no bandwidth limit: copy with synchronousWrites/);
});

t.test('a stalled copy says so', async (t) => {
  const { tr, trends, j } = run({ seconds: 6, copy: 0, dirty: 0, size: 64 * MiB });
  t.equal(trends[6], 'stalled');
  const c = convergenceOf(j, tr, false)!;
  t.equal(c.state, 'stalled');
  t.equal(c.etaSeconds, null);
  t.match(c.advice, /nothing was copied over the last 6 s/);
});

t.test('noisy samples: a normal copy never flaps, a diverging one never turns converging', async (t) => {
  let seed = 7;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  // Late or early polls (±400 ms) and a cursor that moves in lumps (0 to 2x the rate per second).
  const lumpy = (rate: number) => () => ({ dt: Math.round((rnd() - 0.5) * 800), dc: Math.round((rnd() * 2 - 1) * rate) });
  const normal = run({ seconds: 300, copy: 8 * MiB, dirty: 2 * MiB, size: 4000 * MiB, noise: lumpy(8 * MiB) });
  t.same([...new Set(normal.trends.slice(4))], ['converging'], 'converging at every sample after 4 s');
  // A hot disk: what the limited copy copies in a lump the guest dirties again; the bytes left
  // stay around one level, give or take half a second of copying at each sample.
  let e = 0;
  const hot = () => {
    const n = lumpy(MiB)();
    const next = Math.round((rnd() - 0.5) * MiB);
    const dd = n.dc + next - e;
    e = next;
    return { ...n, dd };
  };
  const diverging = run({ seconds: 300, copy: 1 * MiB, dirty: 1 * MiB, size: 64 * MiB, bandwidth: MiB, noise: hot });
  t.same([...new Set(diverging.trends.slice(4))], ['notConverging'], 'notConverging at every sample after 4 s');
});

t.test('a new bandwidth limit or a cursor going back starts the window over', async (t) => {
  const tr = new ConvergenceTracker();
  for (let i = 0; i <= 5; i++) tr.add(i * 1000, i * MiB, 64 * MiB + i * MiB, MiB);
  t.equal(tr.trend, 'notConverging');
  tr.add(6000, 7 * MiB, 70 * MiB, 0);
  t.equal(tr.trend, 'unknown', 'unlimited now: the old samples say nothing');
  for (let i = 7; i <= 10; i++) tr.add(i * 1000, (i - 6) * 100 * MiB, 70 * MiB + i * MiB, 0);
  t.equal(tr.trend, 'converging');
  tr.add(11_000, 0, 70 * MiB, 0);
  t.equal(tr.trend, 'unknown', 'cur went back: a new phase');
});

t.test('the public object follows the job state', async (t) => {
  const { tr } = run({ seconds: 10, copy: 1 * MiB, dirty: 1 * MiB, size: 64 * MiB, bandwidth: MiB });
  const ready = convergenceOf(job({ state: 'ready' }, 100, 100, MiB), tr, false)!;
  t.match(ready, { state: 'ready', etaSeconds: 0, remainingBytes: 0, advice: null });
  t.equal(convergenceOf(job({ state: 'pivoting' }), tr, false)!.state, 'unknown', 'switching: no verdict');
  t.equal(convergenceOf(job({ state: 'pivoted' }), tr, true), undefined, 'terminal: absent');
  const fresh = convergenceOf(job({}, 0, 1), new ConvergenceTracker(), false)!;
  t.same(fresh, {
    state: 'unknown',
    copyRateBytesPerSecond: null,
    dirtyRateBytesPerSecond: null,
    remainingBytes: 0,
    etaSeconds: null,
    bandwidthBytesPerSecond: null,
    advice: null,
  });
});

t.test("the CLI's progress line: the verdict while copying", async (t) => {
  const diverging = run({ seconds: 10, copy: 1 * MiB, dirty: 1 * MiB, size: 64 * MiB, bandwidth: MiB });
  const j = { ...diverging.j, convergence: convergenceOf(diverging.j, diverging.tr, false) };
  t.equal(convergenceNote(j), ', NOT converging, guest writes 1.0 MiB/s');
  const slow = run({ seconds: 10, copy: 10 * MiB, dirty: 4 * MiB, size: 1000 * MiB });
  t.match(
    convergenceNote({ ...slow.j, convergence: convergenceOf(slow.j, slow.tr, false) }),
    /^, converging \(ready in ~\d+s, guest writes 4\.0 MiB\/s\)$/,
  );
  t.equal(convergenceNote({ ...j, state: 'ready' }), '', 'nothing once ready');
  t.equal(convergenceNote(job()), '', 'nothing without an estimate');
});

t.test('under a limit, a pause QEMU takes to keep the average is not a stall', async (t) => {
  const tr = new ConvergenceTracker();
  tr.add(0, 0, 64 * MiB, MiB);
  for (let i = 1; i <= 40; i++) tr.add(i * 1000, 16 * MiB, 64 * MiB, MiB);
  t.equal(tr.trend, 'stalled', 'the samples alone look stalled');
  const at = (s: number, bufSize?: number) => {
    const x = new ConvergenceTracker();
    x.add(0, 0, 64 * MiB, MiB);
    for (let i = 1; i <= s; i++) x.add(i * 1000, 16 * MiB, 64 * MiB, MiB);
    const j = job(
      { options: { shallow: false, reuseExternal: false, transientJob: true, synchronousWrites: false, ...(bufSize ? { bufSize } : {}) } },
      16 * MiB,
      64 * MiB,
      MiB,
    );
    return convergenceOf(j, x, false)!.state;
  };
  t.equal(at(10), 'unknown', '10 s still at 1 MiB/s after a 16 MiB burst: the limit at work');
  t.equal(at(40), 'stalled', 'past twice the default buffer at the limit: stalled');
  t.equal(at(10, 1 * MiB), 'stalled', 'with a 1 MiB buffer, 10 s still is a stall');
});
