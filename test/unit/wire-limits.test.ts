// Per-connection flow control (src/transport/flow.ts) on a fake socket, and the audit trail:
// bounded iterative redaction, and mutating calls refused when their record cannot be written.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openAudit, redact } from '../../src/audit.js';
import { SchemaSet } from '../../src/schemas.js';
import { createLogger, silentLogger } from '../../src/log.js';
import type { AuditEntry } from '../../src/generated/api.js';
import { RpcServer } from '../../src/rpc/server.js';
import { Session } from '../../src/rpc/session.js';
import { Flow } from '../../src/transport/flow.js';
import { frameText } from '../../src/protocol/index.js';
import { FakeService, asGroups, asService, sampleJob } from '../helpers/fake-service.js';

const tick = () => new Promise((r) => setImmediate(r));

function fakeIo() {
  const io = {
    bufferedBytes: 0,
    paused: false,
    closedWith: null as string | null,
    written: [] as string[],
    write(frame: string, _done: () => void) {
      io.written.push(frame);
      io.bufferedBytes += frame.length;
    },
    buffered: () => io.bufferedBytes,
    pause() {
      io.paused = true;
    },
    resume() {
      io.paused = false;
    },
    close(reason: string) {
      io.closedWith = reason;
    },
  };
  return io;
}

t.test('flow: a peer that does not read stops being read, then is closed', async (t) => {
  const io = fakeIo();
  let handled = 0;
  const flow = new Flow(
    io,
    { maxBufferedBytes: 1000, slowReaderMs: 200, maxPendingCalls: 10, maxPendingBytes: 1 << 20 },
    async () => {
      handled++;
      return 'x'.repeat(400);
    },
    () => false,
  );
  for (let i = 0; i < 50; i++) flow.receive('frame');
  for (let i = 0; i < 20; i++) await tick();
  t.equal(handled, 3, 'frames start only while the unread output is under the bound (400 + 400 + 400 ≥ 1000)');
  t.ok(io.paused, 'reading is paused');
  t.equal(io.closedWith, null, 'not closed yet');
  await new Promise((r) => setTimeout(r, 300));
  t.match(io.closedWith, /unread for 200 ms/, 'closed once the output stayed above the bound');
  flow.receive('more');
  for (let i = 0; i < 5; i++) await tick();
  t.equal(handled, 3, 'nothing is handled after the close');
});

t.test('flow: output read in time resumes reading; pending calls bound what starts', async (t) => {
  const io = fakeIo();
  let pending = 0;
  const started: string[] = [];
  const release: Array<() => void> = [];
  const flow = new Flow(
    io,
    { maxBufferedBytes: 1000, slowReaderMs: 10_000, maxPendingCalls: 2, maxPendingBytes: 1 << 20 },
    (f) => {
      started.push(f);
      pending++;
      return new Promise((r) =>
        release.push(() => {
          pending--;
          r(null);
        }),
      );
    },
    () => pending >= 2,
  );
  for (const f of ['a', 'b', 'c', 'd']) flow.receive(f);
  for (let i = 0; i < 10; i++) await tick();
  t.same(started, ['a', 'b'], 'two calls at most');
  t.notOk(io.paused, 'reading goes on meanwhile (a frame paused half-read would be pinned): c and d wait in the queue');
  release.shift()!();
  for (let i = 0; i < 10; i++) await tick();
  t.same(started, ['a', 'b', 'c'], 'one more once one finished');
  while (release.length) {
    release.shift()!();
    for (let i = 0; i < 10; i++) await tick();
  }
  await flow.drained();
  t.same(started, ['a', 'b', 'c', 'd']);
  t.notOk(io.paused, 'reading again');
  flow.dispose();
});

t.test('flow: while the pending budget is full, frames past the queue bound start at once (refused), none is held', async (t) => {
  const io = fakeIo();
  const started: string[] = [];
  const flow = new Flow(
    io,
    { maxBufferedBytes: 1000, slowReaderMs: 10_000, maxPendingCalls: 1, maxPendingBytes: 1 << 20 },
    async (f) => {
      started.push(f.slice(0, 5));
      return null;
    },
    () => true, // full: every call is refused by the server
  );
  const small = 'small';
  const big = 'big'.padEnd(900 * 1024, ' ');
  flow.receive(small);
  for (let i = 0; i < 5; i++) await tick();
  t.same(started, [], 'a small frame waits in the queue for the budget');
  flow.receive(big);
  t.same(started, ['small', 'big  '], 'past the queue bound, frames are started at once, oldest first, instead of being held');
  flow.receive(small);
  for (let i = 0; i < 5; i++) await tick();
  t.same(started, ['small', 'big  '], 'a small frame waits again');
  t.notOk(io.paused, 'reading goes on');
  flow.dispose();
});

t.test('flow: output far above the bound closes at once', async (t) => {
  const io = fakeIo();
  const flow = new Flow(
    io,
    { maxBufferedBytes: 100, slowReaderMs: 60_000, maxPendingCalls: 10, maxPendingBytes: 1 << 20 },
    async () => null,
    () => false,
  );
  flow.send('n'.repeat(1700));
  t.match(io.closedWith, /more than 1600 bytes/);
  flow.dispose();
});

t.test('redaction is bounded and iterative', async (t) => {
  let deep: unknown = 'bottom';
  for (let i = 0; i < 200_000; i++) deep = { a: deep };
  const out = JSON.stringify(redact({ params: deep }));
  t.ok(out.length < 200, `200,000 levels become a short record (${out.length} bytes)`);
  t.match(out, /\[too deep\]/);
  const wide = redact({ ...Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`k${i}`, i])), apiKey: 'k' }) as Record<
    string,
    unknown
  >;
  t.ok(Object.keys(wide).length <= 202, 'at most the key budget (plus a summary)');
  t.match(wide['…'], /more omitted/);
  t.match(redact({ s: 'x'.repeat(5000) }), { s: /^x{1024}…\[3976 more\]$/ }, 'long strings cut');
  t.same(
    redact({ token: 's', nested: [{ password: 'p', ok: 1 }] }),
    { token: '[redacted]', nested: [{ password: '[redacted]', ok: 1 }] },
    'secrets redacted at any depth',
  );
});

function server(audit: (e: AuditEntry) => void, log = silentLogger) {
  const svc = new FakeService();
  const rpc = new RpcServer({ service: asService(svc), groups: asGroups(svc), log, version: 'test', audit });
  const session = new Session({ name: 'admin', readOnly: false }, 'peer', () => {});
  return { svc, send: async (o: unknown) => JSON.parse(frameText((await rpc.handle(JSON.stringify(o), session))!)) };
}

t.test('a mutating call with deeply nested params is refused and audited', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'audit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sink = openAudit(join(dir, 'audit.log'), silentLogger);
  const svc = new FakeService();
  const rpc = new RpcServer({ service: asService(svc), groups: asGroups(svc), log: silentLogger, version: 'test', audit: sink.write });
  // Built as text: JSON.stringify would overflow the stack on this itself.
  const depth = 100_000;
  const params = `{"jobId":"j1","x":${'['.repeat(depth)}${']'.repeat(depth)}}`;
  const sent = (await rpc.handle(
    `{"jsonrpc":"2.0","method":"abort","id":1,"params":${params}}`,
    new Session({ name: 'admin', readOnly: false }, 'peer', () => {}),
  ))!;
  t.match(JSON.parse(frameText(sent)), { id: 1, error: { code: -32602 } }, 'refused as invalid params');
  sink.close();
  const lines = readFileSync(join(dir, 'audit.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.match(
    lines,
    [{ method: 'abort', outcome: 'error', error: { code: -32602 }, params: { jobId: 'j1' } }],
    'and audited, with bounded params',
  );
  const valid = new SchemaSet().validator('audit-entry.schema.json');
  for (const l of lines) t.ok(valid(l), `the entry matches schemas/audit-entry.schema.json ${JSON.stringify(valid.errors)}`);
  t.equal(svc.calls.length, 0);
});

t.test('a mutating call whose audit record cannot be written is refused before it acts', async (t) => {
  const logged: string[] = [];
  const log = createLogger({ write: (l) => logged.push(l) });
  const { send, svc } = server(() => {
    throw new Error('EIO: disk gone');
  }, log);
  const r = await send({ jsonrpc: '2.0', method: 'abort', params: { jobId: 'j1' }, id: 3 });
  t.match(r, { id: 3, error: { code: -32019, data: { name: 'auditFailed', retryable: true } } }, 'refused with auditFailed');
  t.equal(svc.calls.length, 0, 'the service was never called');
  t.ok(
    logged.some((l) => /audit write failed: call refused/.test(l) && /EIO: disk gone/.test(l)),
    'the failure is logged',
  );
  t.match(await send({ jsonrpc: '2.0', method: 'jobInfo', params: { jobId: 'j1' }, id: 4 }), { id: 4, result: {} }, 'reads go on');
});

t.test('pending budget: a batch larger than the room runs as its own calls end; other frames get tooManyPending', async (t) => {
  const svc = new FakeService();
  const holds: Array<() => void> = [];
  svc.wait = (() => new Promise((r) => holds.push(() => r({ job: sampleJob({ state: 'ready' }) })))) as never;
  const rpc = new RpcServer({ service: asService(svc), groups: asGroups(svc), log: silentLogger, version: 'test' });
  const session = new Session({ name: 'admin', readOnly: false }, 'peer', () => {}, null, { maxPendingCalls: 2, maxPendingBytes: 1 << 20 });
  const send = async (o: unknown) => JSON.parse(frameText((await rpc.handle(JSON.stringify(o), session))!));
  const call = (id: number, method = 'jobInfo') => ({
    jsonrpc: '2.0',
    id,
    method,
    params: method === 'wait' ? { jobId: 'j1', until: 'done' } : { jobId: 'j1' },
  });
  const batch = await send(Array.from({ length: 5 }, (_, i) => call(i)));
  t.equal(batch.filter((a: { result?: unknown }) => a.result).length, 5, 'a batch of 5 with room for 2: every call answered');
  const held = rpc.handle(JSON.stringify(call(10, 'wait')), session);
  const held2 = rpc.handle(JSON.stringify(call(11, 'wait')), session);
  await tick();
  t.same([session.pending.calls, session.pending.full], [2, true], 'two waits hold the budget');
  t.match(
    await send(call(12)),
    { id: 12, error: { code: -32021, data: { name: 'tooManyPending', retryable: true, maxPendingCalls: 2 } } },
    'a call of another frame is refused',
  );
  t.match(await send({ jsonrpc: '2.0', id: 'x'.repeat(257), method: 'jobInfo', params: {} }), {
    id: null,
    error: { code: -32600, data: { maxIdBytes: 256 } },
  });
  holds.forEach((h) => h());
  await Promise.all([held, held2]);
  t.same([session.pending.calls, session.pending.bytes], [0, 0], 'released once they answer');
});
