// JSON-RPC 2.0 framing and error mapping, per the spec, on a fake job service.
import t from 'tap';
import { frameText } from '../../src/protocol/index.js';
import { RpcServer } from '../../src/rpc/server.js';
import { Session } from '../../src/rpc/session.js';
import { silentLogger } from '../../src/log.js';
import { AgentError } from '../../src/errors.js';
import { FakeService, asGroups, asService, sampleJob } from '../helpers/fake-service.js';

function setup(readOnly = false) {
  const svc = new FakeService();
  const audit: unknown[] = [];
  const rpc = new RpcServer({
    service: asService(svc),
    groups: asGroups(svc),
    log: silentLogger,
    version: 'test',
    validateResults: true,
    audit: (e) => audit.push(e),
  });
  const sent: string[] = [];
  const session = new Session({ name: readOnly ? 'viewer' : 'admin', readOnly }, 'test', (f) => sent.push(f));
  rpc.attach(session);
  const send = async (frame: string) => {
    const r = await rpc.handle(frame, session);
    return r === null ? null : JSON.parse(frameText(r));
  };
  return { svc, rpc, session, sent, send, audit };
}

const NOTIFY = Symbol('notification');
const req = (method: string, params?: unknown, id: unknown = 1) =>
  JSON.stringify({ jsonrpc: '2.0', method, ...(params !== undefined ? { params } : {}), ...(id !== NOTIFY ? { id } : {}) });

t.test('malformed frames', async (t) => {
  const { send } = setup();
  t.match(await send('{'), { id: null, error: { code: -32700 } }, 'invalid JSON: parse error, id null');
  t.match(await send(''), { id: null, error: { code: -32700 } }, 'empty frame: parse error');
  t.match(await send('\u0000\uFFFF'), { id: null, error: { code: -32700 } }, 'binary junk: parse error');
  for (const frame of ['null', '1', '"x"', 'true', '{}']) {
    t.match(await send(frame), { id: null, error: { code: -32600 } }, `${frame}: invalid request, id null`);
  }
  for (const frame of ['{"jsonrpc":"1.0","method":"jobInfo","id":1}', '{"jsonrpc":"2.0","id":1}', '{"jsonrpc":"2.0","method":5,"id":1}']) {
    t.match(await send(frame), { id: 1, error: { code: -32600 } }, `${frame}: invalid request, its readable id echoed`);
  }
  t.match(await send('[]'), { id: null, error: { code: -32600 } }, '[]: one invalid request, not an array');
  t.match(await send('{"jsonrpc":"2.0","method":"jobInfo","id":{}}'), { id: null, error: { code: -32600 } }, 'object id: invalid request');
  t.match(
    await send('{"jsonrpc":"2.0","method":"jobInfo","params":5,"id":7}'),
    { id: 7, error: { code: -32600 } },
    'primitive params: invalid request, id kept',
  );
  t.match(await send('[1,2]'), [{ error: { code: -32600 } }, { error: { code: -32600 } }], 'batch of junk: an array of invalid requests');
  const deep = '['.repeat(5000) + ']'.repeat(5000);
  t.ok(await send(deep), 'deep nesting is answered, not a crash');
  const deepParams = `{"jsonrpc":"2.0","method":"jobInfo","params":{"jobId":${'['.repeat(20000)}${']'.repeat(20000)}},"id":3}`;
  t.match(
    await send(deepParams),
    { id: 3, error: { code: -32602, data: { errors: [{ keyword: 'maxDepth' }] } } },
    'deeply nested params: invalid params, not an internal error',
  );
});

t.test('calls, batches, notifications', async (t) => {
  const { send, svc } = setup();
  t.match(await send(req('jobInfo', { jobId: 'j1' }, 'abc')), { jsonrpc: '2.0', id: 'abc', result: { job: { jobId: 'j1' } } });
  t.equal(await send(req('jobInfo', { jobId: 'j1' }, NOTIFY)), null, 'a notification gets no answer');
  t.equal(svc.calls.length, 2, 'but it still runs');
  const batch = await send(`[${req('jobInfo', { jobId: 'j1' }, 1)},${req('nope', {}, 2)},${req('jobInfo', { jobId: 'j1' }, NOTIFY)},5]`);
  t.equal(batch.length, 3, 'one answer per request with an id, plus the invalid one');
  t.match(batch, [
    { id: 1, result: {} },
    { id: 2, error: { code: -32601 } },
    { id: null, error: { code: -32600 } },
  ]);
  t.same(
    await send(`[${req('jobInfo', { jobId: 'j1' }, 9)}]`),
    [{ jsonrpc: '2.0', id: 9, result: { job: sampleJob() } }],
    'a batch of one is answered with an array of one',
  );
  t.equal(await send(`[${req('jobInfo', { jobId: 'j1' }, NOTIFY)}]`), null, 'a batch of notifications gets no answer');
  t.match(await send(req('nope')), { id: 1, error: { code: -32601, message: 'Method not found' } });
});

t.test('params are validated before any handler runs', async (t) => {
  const { send, svc } = setup();
  const r = await send(req('blockCopy', { domain: 'vm1', disk: 'vda' }));
  t.match(r, { error: { code: -32602, message: 'Invalid params', data: { errors: Array } } });
  t.match(await send(req('jobInfo', ['j1'])), { error: { code: -32602 } }, 'positional params are refused');
  t.match(await send(req('jobInfo')), { error: { code: -32602 } }, 'missing params where a reference is needed');
  t.equal(svc.calls.length, 0, 'no handler ran');
});

t.test('errors: agent errors carry name and retryable; others never leak', async (t) => {
  const { send, svc } = setup();
  svc.failWith = new AgentError('notReady', 'not ready yet', { reason: 'x' });
  t.match(await send(req('pivot', { jobId: 'j1' })), {
    error: { code: -32003, message: 'not ready yet', data: { name: 'notReady', retryable: true, reason: 'x' } },
  });
  svc.failWith = new Error('secret internal detail /etc/shadow');
  const r = await send(req('jobInfo', { jobId: 'j1' }));
  t.same(r.error, { code: -32603, message: 'Internal error' }, 'internal errors become -32603 with nothing else');
});

t.test('results are checked against their schema when asked', async (t) => {
  const { send, svc } = setup();
  svc.jobInfo = async () => ({ job: { ...sampleJob(), state: 'bogus' } }) as never;
  t.match(await send(req('jobInfo', { jobId: 'j1' })), { error: { code: -32603 } });
});

t.test('read-only principals may not mutate; mutating calls are audited', async (t) => {
  const { send, svc, audit } = setup(true);
  t.match(await send(req('blockCopy', { domain: 'vm1', disk: 'vda', destination: { path: '/x' } })), {
    error: { code: -32008, data: { name: 'unauthorized' } },
  });
  t.match(await send(req('jobInfo', { jobId: 'j1' })), { result: {} }, 'reading is fine');
  t.equal(svc.calls.length, 1, 'blockCopy never reached the service');
  t.match(audit, [{ principal: 'viewer', method: 'blockCopy', outcome: 'error', error: { code: -32008, name: 'unauthorized' } }]);
});

t.test('notifications go only to subscribed sessions, filtered', async (t) => {
  const { svc, rpc, sent, send } = setup();
  svc.emit('job.changed', sampleJob());
  t.equal(sent.length, 0, 'nothing before subscribe');
  await send(req('subscribe', { jobIds: ['j2'] }));
  svc.emit('job.changed', sampleJob());
  svc.emit('job.changed', sampleJob({ jobId: 'j2' }));
  t.equal(sent.length, 1, 'only the subscribed job');
  t.match(JSON.parse(sent[0]!), { jsonrpc: '2.0', method: 'job.changed', params: { job: { jobId: 'j2' } } });
  await send(req('unsubscribe', {}));
  svc.emit('job.changed', sampleJob({ jobId: 'j2' }));
  t.equal(sent.length, 1, 'nothing after unsubscribe');
  rpc.close();
});

t.test('rpc.discover serves an OpenRPC document built from the schemas', async (t) => {
  const { send } = setup();
  const { result } = await send(req('rpc.discover'));
  t.equal(result.openrpc, '1.2.6');
  t.same(result.methods.map((m: { name: string }) => m.name).sort(), [
    'abort',
    'abortGroup',
    'backup',
    'blockCommit',
    'blockCopy',
    'blockCopyGroup',
    'blockPull',
    'capabilities',
    'checkpoints',
    'deleteCheckpoints',
    'diskInfo',
    'finish',
    'finishGroup',
    'groupInfo',
    'jobInfo',
    'listJobs',
    'pivot',
    'pivotGroup',
    'setSpeed',
    'snapshotDisks',
    'subscribe',
    'unsubscribe',
    'wait',
  ]);
  const refs = JSON.stringify(result).match(/"\$ref":"([^"]+)"/g) ?? [];
  for (const r of refs) {
    // A local JSON pointer, possibly into a component (methods_blockCopy.params/properties/disk): walk it.
    const pointer = (/"#\/(.+)"$/.exec(r)?.[1] ?? '').split('/');
    const target = pointer.reduce((node: any, part) => node?.[part], result); // eslint-disable-line @typescript-eslint/no-explicit-any
    t.ok(target && typeof target === 'object', `${r} resolves inside the document`);
  }
  t.ok(
    refs.some((r) => r.includes('#/components/errors/rateLimited')),
    'methods list the agent errors',
  );
});
