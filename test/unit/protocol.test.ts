// The protocol module (src/protocol/): lossless ids, message classification, the line reader;
// and the RPC server's limits that rest on it (batch size, rate per call, batch answer bound,
// the cached rpc.discover), on a fake job service.
import t from 'tap';
import { LineReader, answerOwed, classify, frameText, parseFrame, serialize } from '../../src/protocol/index.js';
import { RpcServer } from '../../src/rpc/server.js';
import { Session } from '../../src/rpc/session.js';
import { TokenBucket } from '../../src/transport/rate-limit.js';
import { silentLogger } from '../../src/log.js';
import { FakeService, asGroups, asService } from '../helpers/fake-service.js';

const BIG = '123456789012345678901234567890';

function setup(opts: { maxBatch?: number; maxResponseBytes?: number; budget?: { take(): boolean } } = {}) {
  const svc = new FakeService();
  const rpc = new RpcServer({ service: asService(svc), groups: asGroups(svc), log: silentLogger, version: 'test', ...opts });
  const session = new Session({ name: 'admin', readOnly: false }, 'test', () => {}, opts.budget ?? null);
  rpc.attach(session);
  return {
    svc,
    rpc,
    session,
    send: async (frame: string) => {
      const f = await rpc.handle(frame, session);
      return f === null ? null : frameText(f);
    },
  };
}

t.test('ids beyond 2^53 come back exactly as sent', async (t) => {
  const { send } = setup();
  const single = await send(`{"jsonrpc":"2.0","method":"capabilities","params":{},"id":${BIG}}`);
  t.match(single, new RegExp(`^\\{"jsonrpc":"2.0","id":${BIG},"result":`), 'a single request');
  const batch = await send(
    `[{"jsonrpc":"2.0","method":"capabilities","id":${BIG}1}, {"id": -1.5e300, "jsonrpc":"2.0","method":"nope"}, {"jsonrpc":"2.0","method":"capabilities","id":7}]`,
  );
  t.match(batch, new RegExp(`"id":${BIG}1,"result"`), 'in a batch');
  t.match(batch, /"id":-1\.5e300,"error":\{"code":-32601/, 'an exponent form is echoed as written');
  t.match(batch, /"id":7,"result"/, 'plain ids as usual');
  const invalid = await send(`{"jsonrpc":"2.0","method":1,"id":${BIG}}`);
  t.equal(invalid, `{"jsonrpc":"2.0","id":${BIG},"error":{"code":-32600,"message":"Invalid Request"}}`, 'also on an Invalid Request');
  const tricky = await send(`{"params":{"id":1,"s":"\\"id\\":2 }"},"jsonrpc":"2.0","id" : ${BIG} ,"method":"jobInfo"}`);
  t.match(tricky, new RegExp(`"id":${BIG},`), 'an id inside params or a string does not confuse the scanner');
});

t.test('parseFrame and classify', async (t) => {
  t.same(parseFrame('{'), { ok: false });
  const p = parseFrame(`[{"id":${BIG},"a":[{"id":1}]},{"id":2}]`);
  t.ok(p.ok && p.batch && p.rawIds[0] === BIG && p.rawIds[1] === undefined, 'raw text only where a number cannot hold it');
  t.equal(classify({ jsonrpc: '2.0', method: 'x', id: 1 }), 'request');
  t.equal(classify({ jsonrpc: '2.0', method: 'x' }), 'notification');
  t.equal(classify({ jsonrpc: '2.0', method: 'x', params: 'no' }), 'invalid', 'params must be structured');
  t.equal(classify({ method: 'x' }), 'invalid', 'no jsonrpc member');
  t.equal(classify({ jsonrpc: '2.0', id: null, error: { code: 1, message: 'm' } }), 'response');
  t.equal(classify({ jsonrpc: '2.0', method: 'x', id: {} }), 'invalid', 'object id');
  t.notOk(answerOwed([{ jsonrpc: '2.0', method: 'x' }], false), 'a notification is not answered');
  t.ok(answerOwed([{ jsonrpc: '2.0', method: 'x', params: 1 }], false), 'an invalid message without id is answered');
  t.ok(answerOwed(null, false), 'junk is answered');
  t.ok(answerOwed([], true), 'an empty batch is answered');
  t.equal(serialize({ jsonrpc: '2.0', id: 1, result: { a: 1 } }), '{"jsonrpc":"2.0","id":1,"result":{"a":1}}');
});

t.test('LineReader: chunks, UTF-8 split inside a character, oversize, CRLF, last line', async (t) => {
  const lines: string[] = [];
  let over = 0;
  const r = new LineReader({ maxLine: 10, onLine: (l) => lines.push(l), onOversize: () => over++ });
  const euro = Buffer.from('€', 'utf8');
  r.push(Buffer.concat([Buffer.from('ab'), euro.subarray(0, 1)]));
  r.push(Buffer.concat([euro.subarray(1), Buffer.from('c\r\n\n  \nx')]));
  r.push('0123456789ABCDEF');
  r.push('tail-of-long\nok\n');
  r.push('last');
  r.end();
  t.same(lines, ['ab€c', 'ok', 'last'], 'lines intact; blank lines skipped; the long line dropped whole');
  t.equal(over, 1, 'one oversize report for the long line');
});

t.test('a batch larger than maxBatch is refused whole with a clear error', async (t) => {
  const { send, svc } = setup({ maxBatch: 5 });
  const batch = JSON.stringify(
    Array.from({ length: 6 }, (_, i) => ({ jsonrpc: '2.0', method: 'jobInfo', params: { jobId: 'j1' }, id: i })),
  );
  t.match(JSON.parse((await send(batch))!), {
    id: null,
    error: { code: -32600, message: /batch of 6 messages exceeds the limit of 5/, data: { maxBatch: 5 } },
  });
  t.equal(svc.calls.length, 0, 'no call of it ran');
  const ok = JSON.parse((await send(JSON.stringify(JSON.parse(batch).slice(0, 5))))!);
  t.equal(ok.length, 5, 'a batch at the limit is served');
});

t.test('the rate limit counts calls, not frames', async (t) => {
  const bucket = new TokenBucket(1, 5, () => 0); // a frozen clock: 5 tokens, never more
  const { send, svc } = setup({ budget: bucket });
  const batch = JSON.stringify(
    Array.from({ length: 10 }, (_, i) => ({ jsonrpc: '2.0', method: 'jobInfo', params: { jobId: 'j1' }, id: i })),
  );
  const answers = JSON.parse((await send(batch))!) as Array<{ id: number; error?: { data: { name: string } } }>;
  t.equal(answers.filter((a) => a.error?.data.name === 'rateLimited').length, 5, 'half of a 10-call batch is refused with burst 5');
  t.equal(svc.calls.length, 5, 'five calls ran');
  t.match(
    JSON.parse((await send(JSON.stringify({ jsonrpc: '2.0', method: 'rpc.discover', id: 'x' })))!),
    { id: 'x', error: { data: { name: 'rateLimited', retryable: true } } },
    'single frames too',
  );
});

t.test('rpc.discover is one cached serialization; a batch of them is bounded', async (t) => {
  const { send } = setup({ maxResponseBytes: 200_000 });
  const a = await send('{"jsonrpc":"2.0","method":"rpc.discover","id":1}');
  const b = await send('{"jsonrpc":"2.0","method":"rpc.discover","id":1}');
  t.equal(a, b, 'the same text each time');
  t.ok(a!.length > 20_000, `the document is sizeable (${a!.length} bytes)`);
  const many = JSON.stringify([
    { jsonrpc: '2.0', method: 'abort', params: { jobId: 'j1' }, id: 'mutating' },
    ...Array.from({ length: 20 }, (_, i) => ({ jsonrpc: '2.0', method: 'rpc.discover', id: i })),
  ]);
  const out = await send(many);
  t.ok(out!.length <= 200_000 + 1000, `the batch answer stays near the bound (${out!.length} bytes)`);
  const answers = JSON.parse(out!) as Array<{ id: unknown; result?: unknown; error?: { data?: { name: string } } }>;
  t.equal(answers.length, 21, 'every call is answered');
  t.match(answers[0], { id: 'mutating', result: { changed: true } }, 'a mutating answer is never dropped');
  t.ok(
    answers.some((x) => x.error?.data?.name === 'responseTooLarge'),
    'answers past the bound say responseTooLarge',
  );
  t.ok(
    answers.some((x) => x.result),
    'answers within the bound are kept',
  );
});

t.test('loopback is decided on addresses, once', async (t) => {
  const { isLoopbackAddress, resolvesToLoopbackOnly } = await import('../../src/net/addresses.js');
  for (const a of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '[::1]'])
    t.ok(isLoopbackAddress(a), `${a} is loopback`);
  for (const a of ['0.0.0.0', '::', '10.0.0.1', '::ffff:10.0.0.1', '128.0.0.1', 'localhost', '127.example.com', undefined])
    t.notOk(isLoopbackAddress(a), `${a} is not`);
  t.same(
    await resolvesToLoopbackOnly('localhost', async () => [
      { address: '127.0.0.1', family: 4 },
      { address: '::1', family: 6 },
    ]),
    { loopback: true, addresses: ['127.0.0.1', '::1'] },
  );
  t.same(
    await resolvesToLoopbackOnly('sneaky', async () => [
      { address: '127.0.0.1', family: 4 },
      { address: '0.0.0.0', family: 4 },
    ]),
    { loopback: false, addresses: ['127.0.0.1', '0.0.0.0'] },
    'one wildcard address among loopback ones is enough to refuse',
  );
  t.same((await resolvesToLoopbackOnly('localhost')).loopback, true, 'the real resolver on localhost');
});

t.test('a batch of junk and calls is answered element by element (found by the fuzz test)', async (t) => {
  const { send } = setup({ maxResponseBytes: 1000 });
  const out = JSON.parse(
    (await send('[null, 1, {"jsonrpc":"2.0","method":"rpc.discover","id":1}, [], {"jsonrpc":"2.0","method":"listJobs"}]'))!,
  );
  t.equal(out.length, 4, 'four answers, none for the notification');
  t.match(out, [
    { id: null, error: { code: -32600 } },
    { id: null, error: { code: -32600 } },
    { id: 1, error: { data: { name: 'responseTooLarge' } } },
    { id: null, error: { code: -32600 } },
  ]);
});
