// rpc.discover as a client generator would read it: for every method, a call is built from the
// document alone (by-name params: one content descriptor per key, `required` as declared, each
// value checked against its descriptor's schema), sent to the real agent, and must be accepted
// as well-formed: answered with a result or an agent error, never -32602 or -32601.
import t from 'tap';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { RpcError } from '../../src/client/index.js';
import { serveAgent } from '../../harness/agent.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

interface Descriptor {
  name: string;
  required?: boolean;
  schema: unknown;
}
interface MethodObject {
  name: string;
  paramStructure?: string;
  params: Descriptor[];
}

const none = 'bctest-openrpc-no-such';
const path = '/var/lib/libvirt/images/bctest-openrpc-never.qcow2';
/** One well-formed call per method, in the words a caller would use. */
const CALLS: Record<string, Record<string, unknown>> = {
  blockCopy: {
    domain: none,
    disk: 'vda',
    destination: { path, format: 'qcow2' },
    bandwidth: '18446744073709551615B',
    wait: 'none',
    whenReady: 'none',
  },
  jobInfo: { jobId: 'openrpc-none' },
  pivot: { domain: none, disk: 'vda', timeout: 5 },
  finish: { jobId: 'openrpc-none', timeout: 5 },
  abort: { jobId: 'openrpc-none' },
  setSpeed: { jobId: 'openrpc-none', bandwidth: 1048576 },
  listJobs: { includeEnded: true },
  wait: { jobId: 'openrpc-none', until: 'done', timeout: 1 },
  blockCopyGroup: { domain: none, disks: [{ disk: 'vda', destination: { path } }], maxPause: 5 },
  groupInfo: { groupId: 'openrpc-none' },
  pivotGroup: { groupId: 'openrpc-none', maxPause: 5 },
  finishGroup: { groupId: 'openrpc-none' },
  abortGroup: { groupId: 'openrpc-none' },
  capabilities: {},
  blockCommit: { domain: none, disk: 'vda', top: 'vda[2]', base: path, bandwidth: 1048576, wait: 'none' },
  blockPull: { domain: none, disk: 'vda', base: 'vda[1]', wait: 'done', timeout: 5 },
  snapshotDisks: { domain: none, disks: [{ disk: 'vda', overlay: { path } }], quiesce: 'try' },
  diskInfo: { domain: none, disk: 'vda' },
  backup: { domain: none, target: { dir: '/var/lib/libvirt/images' }, incremental: true, checkpoint: 'openrpc-cp', wait: false },
  checkpoints: { domain: none },
  deleteCheckpoints: { domain: none, keep: 2 },
  subscribe: { jobIds: ['openrpc-none'] },
  unsubscribe: {},
};

t.test('calls generated from rpc.discover are accepted by the agent', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const doc = (await client.call('rpc.discover', {})) as { methods: MethodObject[] };
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema(doc as object, 'https://openrpc.invalid/doc');
  t.same(doc.methods.map((m) => m.name).sort(), Object.keys(CALLS).sort(), 'the test has a call for every method the document lists');

  for (const [i, m] of doc.methods.entries()) {
    const args = CALLS[m.name]!;
    t.equal(m.paramStructure, 'by-name', `${m.name}: by-name params`);
    const names = new Set(m.params.map((d) => d.name));
    t.same(
      Object.keys(args).filter((k) => !names.has(k)),
      [],
      `${m.name}: every argument is a declared content descriptor`,
    );
    t.same(
      m.params.filter((d) => d.required && !(d.name in args)).map((d) => d.name),
      [],
      `${m.name}: every required descriptor is given`,
    );
    // The generated client's own check of each value against its descriptor's schema.
    for (const [j, d] of m.params.entries()) {
      if (!(d.name in args)) continue;
      const validate = ajv.getSchema(`https://openrpc.invalid/doc#/methods/${i}/params/${j}/schema`)!;
      t.ok(validate(args[d.name]), `${m.name}.${d.name}: the value fits the descriptor's schema ${JSON.stringify(validate.errors ?? [])}`);
    }
    // by-name: the params object has one member per descriptor given.
    const params = Object.fromEntries(m.params.filter((d) => d.name in args).map((d) => [d.name, args[d.name]]));
    const answer = await client.call(m.name as never, params as never).then(
      () => 'result',
      (e: unknown) => e,
    );
    if (answer === 'result') t.pass(`${m.name}: answered with a result`);
    else {
      const code = answer instanceof RpcError ? answer.code : NaN;
      t.ok(
        code <= -32000 && code >= -32099,
        `${m.name}: answered with an agent error, not a protocol one (${code} ${(answer as Error).message} ${JSON.stringify((answer as RpcError).data ?? {})})`,
      );
    }
  }
});

t.test('descriptors mirror the params schemas: names, required, and nothing else', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const doc = (await client.call('rpc.discover', {})) as {
    methods: Array<MethodObject & { 'x-params-schema': { $ref: string } }>;
    components: { schemas: Record<string, { properties?: object; required?: string[] }> };
  };
  for (const m of doc.methods) {
    const key = m['x-params-schema'].$ref.split('/').pop()!;
    const schema = doc.components.schemas[key]!;
    t.same(m.params.map((d) => d.name).sort(), Object.keys(schema.properties ?? {}).sort(), `${m.name}: one descriptor per top-level key`);
    t.same(
      m.params
        .filter((d) => d.required)
        .map((d) => d.name)
        .sort(),
      [...(schema.required ?? [])].sort(),
      `${m.name}: required as in the schema`,
    );
  }
  // What the old document made clients send: one descriptor called "params", wrapped.
  const wrapped = await client.call('jobInfo', { params: { jobId: 'x' } } as never).then(
    () => null,
    (e: unknown) => e as RpcError,
  );
  t.equal(wrapped?.code, -32602, 'a {"params": {...}} wrapper is refused (strict named params)');
});
