// A jobId belongs to the principal that created it, for that copy only, against the real agent
// with two tokens: the same key from the other principal, or for another destination, is
// jobExists; the creator's identical re-run stays idempotent (changed: false), across a restart.
import t from 'tap';
import { AgentClient, RpcError } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent, untilState } from '../../harness/agent.js';

const OTHER = { name: 'other-team', token: 'o'.repeat(40) };

async function refusal(p: Promise<unknown>): Promise<RpcError | null> {
  return p.then(
    () => null,
    (e: unknown) => (e instanceof RpcError ? e : null),
  );
}

/** A restarted agent answers mutating calls with `recovering` until its reconcile is done. */
async function settled<T>(call: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await call();
    } catch (e) {
      if (!(e instanceof RpcError) || e.errorName !== 'recovering' || i > 100) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

t.test('a jobId is its creator’s, for that copy only', async (t) => {
  const agent = await serveAgent(t, { tokens: [OTHER] });
  const admin = await agent.connect();
  const other = await AgentClient.connect(agent.url, { headers: { authorization: `Bearer ${OTHER.token}` } });
  t.teardown(() => other.close());
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 64 },
      { format: 'raw', sizeMiB: 16 },
    ],
  });
  const a = `${dom.dir}/a.qcow2`;
  const b = `${dom.dir}/b.qcow2`;
  const copy = (c: AgentClient, path: string, disk = 'vda') =>
    c.call('blockCopy', { domain: dom.name, disk, destination: { path }, jobId: 'shared-key' });

  const first = await copy(admin, a);
  t.equal(first.changed, true, 'the creator starts the copy');
  t.teardown(() => admin.call('abort', { jobId: 'shared-key' }).catch(() => {}));

  const byOther = await refusal(copy(other, b));
  t.equal(byOther?.errorName, 'jobExists', 'another principal, another destination: jobExists (was: the first job, changed false)');
  t.notOk(JSON.stringify(byOther?.data ?? {}).includes(OTHER.token), 'the token is not echoed');
  const byOtherSame = await refusal(copy(other, a));
  t.equal(byOtherSame?.errorName, 'jobExists', 'another principal with the very same params: jobExists');
  t.match(byOtherSame?.message, /belongs to another principal/);
  const otherDest = await refusal(copy(admin, b));
  t.equal(otherDest?.errorName, 'jobExists', 'the creator with another destination: jobExists');
  t.match(otherDest?.message, /another destination/);
  const otherDisk = await refusal(copy(admin, b, 'vdb'));
  t.equal(otherDisk?.errorName, 'jobExists', 'the creator on another disk: jobExists (as before)');

  const again = await copy(admin, a);
  t.same([again.changed, again.job.jobId], [false, 'shared-key'], 'the creator’s identical re-run is idempotent');

  // The owner is journaled: a restarted agent still knows whose key it is.
  await untilState(admin, 'shared-key', ['ready']);
  admin.close();
  other.close();
  t.equal(await agent.stop(), 0, 'the agent stops cleanly (the copy goes on in QEMU)');
  const restarted = await serveAgent(t, { dir: agent.stateDir, token: agent.token, tokens: [OTHER] });
  const admin2 = await restarted.connect();
  const other2 = await AgentClient.connect(restarted.url, { headers: { authorization: `Bearer ${OTHER.token}` } });
  t.teardown(() => other2.close());
  t.teardown(() => admin2.call('abort', { jobId: 'shared-key' }).catch(() => {}));
  await untilState(admin2, 'shared-key', ['ready']);
  t.equal((await refusal(settled(() => copy(other2, a))))?.errorName, 'jobExists', 'after a restart, the other principal is still refused');
  t.equal((await settled(() => copy(admin2, a))).changed, false, 'and the creator’s re-run still returns the job');
  await admin2.call('abort', { jobId: 'shared-key' });
});
