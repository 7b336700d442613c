// Error names end to end, against the real agent and libvirtd: every name the agent answers is
// one of its table (src/errors.ts), also one read back from a journal another version wrote,
// and a domain libvirt does not know is notFound with libvirt's own code and message.
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { RpcError } from '../../src/client/index.js';
import { ERRORS } from '../../src/errors.js';
import { serveAgent, stateDir } from '../../harness/agent.js';
import { sampleJob } from '../helpers/fake-service.js';

t.test('a job record with a name this agent lacks is answered as libvirtError, its name kept in the message', async (t) => {
  const dir = stateDir(t);
  const now = new Date().toISOString();
  const job = sampleJob({
    jobId: `from-elsewhere-${randomUUID()}`,
    domain: { name: 'bctest-long-gone', uuid: randomUUID() },
    state: 'failed',
    error: { name: 'fromANewerAgent' as keyof typeof ERRORS, message: 'it ended' },
    createdAt: now,
    updatedAt: now,
    endedAt: now,
  });
  writeFileSync(join(dir, `job-${job.jobId}.json`), JSON.stringify({ job, destinationXml: '' }), { mode: 0o600 });
  const agent = await serveAgent(t, { dir });
  const client = await agent.connect();
  const { job: got } = await client.call('jobInfo', { jobId: job.jobId });
  t.same(got.error, { name: 'libvirtError', message: "it ended (recorded as 'fromANewerAgent', a name this agent does not know)" });
  t.ok(Object.hasOwn(ERRORS, got.error!.name), 'a name of the table');
});

t.test('a domain libvirt does not know: notFound, with libvirt’s code and message', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const name = `bctest-no-such-${randomUUID().slice(0, 8)}`;
  const e = await client
    .call('blockCopy', { domain: name, disk: 'vda', destination: { path: '/var/tmp/blockcopy-test/none.raw', format: 'raw' } })
    .then(
      () => undefined,
      (x: unknown) => x,
    );
  t.ok(e instanceof RpcError, 'refused');
  const err = e as RpcError;
  t.equal(err.errorName, 'notFound');
  t.equal(err.retryable, false);
  t.equal(err.message, `no domain '${name}'`);
  t.match(err.data, { libvirt: { code: 42, message: new RegExp(name) } }, "libvirt's VIR_ERR_NO_DOMAIN and its message");
});
