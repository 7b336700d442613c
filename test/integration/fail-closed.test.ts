// Policy checks that depend on libvirt fail closed: when libvirtd cannot answer, the caller gets
// a named, retryable error, never a pass nor a definitive "no such thing". A PRIVATE libvirtd
// (test driver behind a real daemon, test/helpers/private-libvirtd.ts) is SIGSTOPped past the
// libvirt call bound; the shared system libvirtd is never touched.
import t from 'tap';
import { RpcError } from '../../src/client/index.js';
import { serveAgent } from '../../harness/agent.js';
import { startPrivateLibvirtd } from '../helpers/private-libvirtd.js';

const RETRYABLE = ['libvirtTimeout', 'unavailable', 'libvirtBusy', 'recovering'];

t.test('a group start on a domain libvirtd cannot look up is a retryable error, not notFound', async (t) => {
  const d = await startPrivateLibvirtd();
  t.teardown(() => d.close());
  const agent = await serveAgent(t, { config: { uri: d.uri } });
  const client = await agent.connect();
  const call = () =>
    client
      .call('blockCopyGroup', {
        domain: 'test',
        disks: [{ disk: 'vda', destination: { path: '/var/tmp/blockcopy-test/none.raw', format: 'raw' } }],
      })
      .then(
        () => 'ok',
        (e: unknown) => (e instanceof RpcError ? { name: e.errorName, retryable: e.retryable } : e),
      );
  d.stop();
  let answer: unknown;
  try {
    answer = await call();
  } finally {
    d.cont();
  }
  t.comment(`answer while libvirtd was stopped: ${JSON.stringify(answer)}`);
  t.ok(
    typeof answer === 'object' && answer !== null && RETRYABLE.includes((answer as { name: string }).name),
    'a named retryable error while libvirtd does not answer',
  );
  t.match(answer, { retryable: true }, 'and it says it is retryable');
  t.equal(agent.process.exitCode, null, 'the agent is alive');
});
