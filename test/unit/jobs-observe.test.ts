// The one observation path (src/jobs/observe.ts) shared by the poll and recovery: the state
// libvirt's <mirror ready=…> implies, what each moment does with it (and that the two differ
// only where POLICY says), whenReady after a restart, deadlines and a start's lost answer.
// Fake libvirt: logic only; the real restarts are in test/integration and test/serial.
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockCopyParams, JobState } from '../../src/generated/api.js';
import type { JobRecord } from '../../src/jobs/journal.js';
import { JobManager } from '../../src/jobs/manager.js';
import { POLICY } from '../../src/jobs/observe.js';
import { stateFromMirror } from '../../src/jobs/kinds/copy/state.js';
import { REQUEST_OF } from '../../src/jobs/state-machine.js';
import { LibvirtError, LibvirtTimeout } from '../../src/libvirt/index.js';
import { silentLogger } from '../../src/log.js';
import { FakeConnection, ownRoot, type FakeDomain } from './fake-connection.js';

type Ready = null | 'yes' | 'pivot' | 'abort';
const READY: Ready[] = [null, 'yes', 'pivot', 'abort'];
const LIVE: JobState[] = ['copying', 'ready', 'pivoting', 'finishing', 'cancelling'];
/** The mirror phase libvirt shows for a job in each state when nothing was lost. */
const CONSISTENT: Record<string, Ready> = { copying: null, ready: 'yes', pivoting: 'pivot', finishing: 'abort', cancelling: 'abort' };

const until = async (cond: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface World {
  root: string;
  stateDir: string;
  conn: FakeConnection;
  dom: FakeDomain;
  jobId: string;
  manager: (c?: FakeConnection) => JobManager;
  record: () => JobRecord;
  patch: (f: (r: JobRecord) => void) => void;
}

/** A copy started by one agent that then stopped; the record and libvirt's view are the test's to shape. */
async function world(t: Test, params: Partial<BlockCopyParams> = {}): Promise<World> {
  const root = mkdtempSync(join(tmpdir(), 'bc-observe-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const stateDir = join(root, 'state');
  const conn = new FakeConnection(stateDir);
  const dom = conn.addDomain({ name: 'vm1' });
  const manager = (c = conn) => {
    const m = new JobManager({ connection: c, stateDir, log: silentLogger, pollIntervalMs: 50, checkDestination: ownRoot(root) });
    t.teardown(() => m.stop());
    return m;
  };
  const first = manager();
  await first.start();
  const { job } = await first.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(root, 'copy.qcow2') }, ...params });
  await first.stop();
  const file = join(stateDir, `job-${job.jobId}.json`);
  const record = () => JSON.parse(readFileSync(file, 'utf8')) as JobRecord;
  const patch = (f: (r: JobRecord) => void) => {
    const r = record();
    f(r);
    writeFileSync(file, JSON.stringify(r));
  };
  return { root, stateDir, conn, dom, jobId: job.jobId, manager, record, patch };
}

/** The journal says `state` (with the request it implies in flight); libvirt shows `ready`. */
function shape(w: World, state: JobState, ready: Ready): void {
  w.patch((r) => {
    r.job.state = state;
    if (state !== 'copying') r.job.readyAt = '2020-01-01T00:00:00.000Z';
    const op = REQUEST_OF[state];
    if (op) r.intent = { op, at: '2020-01-01T00:00:01.000Z' };
  });
  const d = w.conn.disk(w.dom);
  d.mirror!.ready = ready;
  if (ready) d.job!.cur = d.job!.end = 100n;
}

t.test('stateFromMirror: libvirt decides, the journal only says what was asked', async (t) => {
  const want: Record<string, Record<string, JobState>> = {
    copying: { none: 'copying', yes: 'ready', pivot: 'pivoting', abort: 'cancelling' },
    ready: { none: 'copying', yes: 'ready', pivot: 'pivoting', abort: 'cancelling' },
    pivoting: { none: 'copying', yes: 'ready', pivot: 'pivoting', abort: 'cancelling' },
    finishing: { none: 'copying', yes: 'ready', pivot: 'pivoting', abort: 'finishing' },
    cancelling: { none: 'cancelling', yes: 'cancelling', pivot: 'pivoting', abort: 'cancelling' },
  };
  for (const s of LIVE)
    for (const m of READY) t.equal(stateFromMirror(s, m), want[s]![m ?? 'none'], `${s} + <mirror ready='${m ?? 'no'}'>`);
  t.equal(stateFromMirror('copying', 'no'), 'copying', "ready='no' (older libvirt) is copying");
});

t.test('the policy: start-up and reconnect are one recovery; the poll differs only in named entries', async (t) => {
  t.equal(POLICY['start-up'], POLICY.reconnect, 'one recovery policy (only wording names the moment)');
  t.same([POLICY.poll.follow, POLICY.reconnect.follow], ['ready', 'all'], 'the poll follows a missed READY only');
});

// Each journaled state against each mirror phase, once found by a reconcile at start-up and
// once by the poll of a running agent. Recovery follows libvirt wherever the state table
// allows; the poll follows only a missed READY, since its own requests change the state before
// libvirt shows them. Every other cell must be the same.
const RECONCILED: Record<string, Record<string, JobState>> = {
  copying: { none: 'copying', yes: 'ready', pivot: 'copying', abort: 'cancelling' },
  ready: { none: 'ready', yes: 'ready', pivot: 'pivoting', abort: 'cancelling' },
  pivoting: { none: 'copying', yes: 'ready', pivot: 'pivoting', abort: 'pivoting' },
  finishing: { none: 'copying', yes: 'ready', pivot: 'finishing', abort: 'finishing' },
  cancelling: { none: 'cancelling', yes: 'cancelling', pivot: 'cancelling', abort: 'cancelling' },
};

for (const s of LIVE) {
  t.test(`journaled ${s}: reconcile and poll against every <mirror ready>`, async (t) => {
    for (const m of READY) {
      const cell = `${s} + ready='${m ?? 'no'}'`;
      await t.test(`${cell}: reconcile at start-up`, async (t) => {
        const w = await world(t);
        shape(w, s, m);
        w.conn.endDelayMs = 2000; // a re-sent abort stays visible as cancelling while the test reads
        const sent = w.conn.sideEffects().length;
        const agent = w.manager();
        await agent.start();
        const job = (await agent.jobInfo({ jobId: w.jobId })).job;
        t.equal(job.state, RECONCILED[s]![m ?? 'none'], 'the state libvirt shows, as far as the state table allows');
        if (job.state !== s)
          t.match(job.evidence, new RegExp(`reconciled at start-up from the live XML \\(mirror ready='${m ?? 'no'}'`), 'with evidence');
        if (job.state === 'ready' && s !== 'copying') t.equal(job.readyAt, '2020-01-01T00:00:00.000Z', 'readyAt keeps the first time');
        const resent = w.conn
          .sideEffects()
          .slice(sent)
          .filter((c) => c.method === 'blockJobAbort');
        t.equal(
          resent.length,
          s === 'cancelling' && m !== 'abort' && m !== 'pivot' ? 1 : 0,
          'an abort libvirt does not show is sent again, nothing else is',
        );
      });
      await t.test(`${cell}: the poll`, async (t) => {
        const w = await world(t);
        shape(w, s, CONSISTENT[s]!);
        const agent = w.manager();
        await agent.start();
        t.equal((await agent.jobInfo({ jobId: w.jobId })).job.state, s, 'libvirt agrees with the journal at start-up');
        const sent = w.conn.sideEffects().length;
        w.conn.disk(w.dom).mirror!.ready = m; // changed without an event
        await sleep(300); // six poll intervals
        const state = (await agent.jobInfo({ jobId: w.jobId })).job.state;
        const reconciled = RECONCILED[s]![m ?? 'none'];
        if (reconciled === s || (s === 'copying' && m === 'yes')) t.equal(state, reconciled, 'the same state as the reconcile');
        else t.equal(state, s, 'left to the request under way or the end event (POLICY.poll.follow)');
        t.equal(w.conn.sideEffects().length, sent, 'the poll sends nothing');
      });
    }
  });
}

for (const how of ['pivot', 'finish'] as const) {
  const busy = how === 'pivot' ? 'pivoting' : 'finishing';
  const goal = how === 'pivot' ? 'pivoted' : 'finished';
  t.test(`whenReady ${how}: a job that becomes ready at start-up is completed as on the live path`, async (t) => {
    const w = await world(t, { whenReady: how });
    w.conn.makeReady(w.dom, 'vda', { event: false });
    const agent = w.manager();
    await agent.start();
    const job = (await agent.wait({ jobId: w.jobId, until: 'done', timeout: 3 })).job;
    t.match(job, { state: goal, outcome: 'observed' });
    t.ok(job.readyAt, 'readyAt recorded');
  });

  t.test(`whenReady ${how}: a ${how} the journal has but libvirt never got is sent again after a restart`, async (t) => {
    const w = await world(t, { whenReady: how });
    w.conn.makeReady(w.dom, 'vda', { event: false });
    shape(w, busy, 'yes');
    const agent = w.manager();
    await agent.start();
    const job = (await agent.wait({ jobId: w.jobId, until: 'done', timeout: 3 })).job;
    t.match(job, { state: goal, readyAt: '2020-01-01T00:00:00.000Z' });
    t.equal(w.conn.sideEffects().filter((c) => c.method === 'blockJobAbort').length, 1, `one ${how} sent`);
  });

  t.test(`whenReady ${how}: a job that becomes ready while the connection is down is completed after the reconnect`, async (t) => {
    const w = await world(t, { whenReady: how });
    const agent = w.manager();
    await agent.start();
    agent.connectionLost('test');
    w.conn.makeReady(w.dom, 'vda', { event: false });
    const next = new FakeConnection(w.stateDir);
    next.domains = w.conn.domains;
    await agent.reconnect(next);
    const job = (await agent.wait({ jobId: w.jobId, until: 'done', timeout: 3 })).job;
    t.equal(job.state, goal);
    t.equal(next.sideEffects().filter((c) => c.method === 'blockJobAbort').length, 1, `the ${how} went over the new connection`);
  });
}

t.test('the deadline is armed at start-up even when the job cannot be read then', async (t) => {
  const w = await world(t, { timeout: 1 });
  w.conn.failNext.set('getBlockJobInfo', new LibvirtError(1, 10, 'internal error: something transient'));
  const agent = w.manager();
  await agent.start();
  t.equal((await agent.jobInfo({ jobId: w.jobId })).job.state, 'copying', 'not decided at start-up');
  const job = (await agent.wait({ jobId: w.jobId, until: 'done', timeout: 4 })).job;
  t.match(job, { state: 'cancelled', error: { name: 'timeout' } }, 'the journaled deadline cancelled it');
});

t.test(
  "a start whose answer was lost: once the copy is seen running the intent is resolved, never read as 'never started' later",
  async (t) => {
    const w = await world(t);
    w.patch((r) => {
      r.intent = { op: 'blockCopy', at: '2020-01-01T00:00:00.000Z' };
    });
    const second = w.manager();
    await second.start();
    t.equal((await second.jobInfo({ jobId: w.jobId })).job.state, 'copying');
    await until(() => w.record().intent === undefined);
    await second.stop();
    // While no agent runs, an operator pivots the copy with virsh.
    w.conn.makeReady(w.dom, 'vda', { event: false });
    w.conn.sendEndEvents = false;
    w.conn.endDelayMs = 0;
    await w.conn.blockJobAbort(w.dom.uuid, 'vda', { pivot: true });
    const third = w.manager();
    await third.start();
    const job = (await third.jobInfo({ jobId: w.jobId })).job;
    t.match(job, { state: 'pivoted', outcome: 'inferred', evidence: /ended while the agent was not running/ });
    t.notMatch(job.evidence, /last request/, 'no request pending in the record');
  },
);

t.test(
  "a journaled blockCopy intent with the disk found on the destination is a copy that happened, not one 'never started'",
  async (t) => {
    const w = await world(t);
    w.patch((r) => {
      r.intent = { op: 'blockCopy', at: '2020-01-01T00:00:00.000Z' };
    });
    w.conn.makeReady(w.dom, 'vda', { event: false });
    w.conn.sendEndEvents = false;
    w.conn.endDelayMs = 0;
    await w.conn.blockJobAbort(w.dom.uuid, 'vda', { pivot: true });
    const agent = w.manager();
    await agent.start();
    t.match((await agent.jobInfo({ jobId: w.jobId })).job, { state: 'pivoted', outcome: 'inferred', evidence: /last request: blockCopy/ });
  },
);

t.test("with no copy and the disk on its source, a journaled blockCopy is still 'never started'", async (t) => {
  const w = await world(t);
  w.patch((r) => {
    r.intent = { op: 'blockCopy', at: '2020-01-01T00:00:00.000Z' };
  });
  w.conn.disk(w.dom).mirror = null;
  w.conn.disk(w.dom).job = null;
  const agent = w.manager();
  await agent.start();
  t.match((await agent.jobInfo({ jobId: w.jobId })).job, {
    state: 'failed',
    error: { name: 'libvirtError', message: /never started \(the agent stopped while starting it\)/ },
  });
});

t.test("a live XML libvirtd did not give is no evidence: the copy is not declared 'never started' on it", async (t) => {
  const w = await world(t);
  w.patch((r) => {
    r.intent = { op: 'blockCopy', at: '2020-01-01T00:00:00.000Z' };
  });
  w.conn.disk(w.dom).mirror = null;
  w.conn.disk(w.dom).job = null;
  w.conn.failNext.set('getXml', new LibvirtTimeout('libvirtd did not answer getXml within 10000 ms; it may still take effect'));
  const agent = w.manager();
  await agent.start();
  t.equal((await agent.jobInfo({ jobId: w.jobId })).job.state, 'copying', 'not concluded while the XML could not be read');
  const end = Date.now() + 3000;
  let job = (await agent.jobInfo({ jobId: w.jobId })).job;
  while (job.state !== 'failed' && Date.now() < end) {
    await sleep(20);
    job = (await agent.jobInfo({ jobId: w.jobId })).job;
  }
  t.match(job, { state: 'failed', error: { message: /never started/ } }, 'the next look, with the XML read, concludes it');
});
