// A domain name resolves to the domain that has it now (registry.resolveDomain), on the fake
// connection (proof of logic only; test/integration/domain-names.test.ts runs the real agent and
// libvirtd): a domain destroyed and re-created under its name has a new UUID, and lookups by
// name answer the new one's jobs; the old one's are found by jobId or UUID.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import type { ErrorName } from '../../src/errors.js';
import { LibvirtError, LibvirtTimeout, VirErrorCode } from '../../src/libvirt/index.js';
import { fakeHost } from './fake-connection.js';
import { startJobs } from './jobs-fixture.js';
import { rejects } from '../helpers/rejects.js';

const NEW_UUID = '00000000-0000-4000-8000-0000000000b2';

/** A copy on vm1, then (agent stopped) vm1 destroyed and re-created with a new UUID and a virsh copy on it. */
async function recreated(t: Test) {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-names-');
  const old = conn.addDomain({ name: 'vm1' });
  const first = await startJobs(t, conn, stateDir, destDir);
  const { job } = await first.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(destDir, 'a.qcow2') } });
  await first.stop();
  conn.stopDomain(old);
  conn.domains = conn.domains.filter((d) => d !== old);
  const live = conn.addDomain({ name: 'vm1', uuid: NEW_UUID });
  conn.startOutside(live, 'vda', '/elsewhere/b.qcow2');
  return { conn, stateDir, destDir, old, live, oldJob: job };
}

t.test('a name answers the live domain of that name, not an earlier one', async (t) => {
  const w = await recreated(t);
  const jobs = await startJobs(t, w.conn, w.stateDir, w.destDir);
  const { job } = await jobs.jobInfo({ domain: 'vm1', disk: 'vda' });
  t.match(
    job,
    { domain: { uuid: NEW_UUID }, owner: 'adopted', destination: { path: '/elsewhere/b.qcow2' } },
    'jobInfo by name: the live copy',
  );
  t.same(
    (await jobs.listJobs({ domain: 'vm1', includeEnded: true })).jobs.map((j) => j.domain.uuid),
    [NEW_UUID],
    'listJobs by name: the live domain only',
  );
  t.match((await jobs.jobInfo({ domain: w.old.uuid, disk: 'vda' })).job, { jobId: w.oldJob.jobId }, 'the old job by its domain UUID');
  t.match((await jobs.jobInfo({ jobId: w.oldJob.jobId })).job, { domain: { uuid: w.old.uuid } }, 'and by its jobId');
});

t.test('when libvirtd cannot answer, the journal answers a name only if it knows one domain so', async (t) => {
  const w = await recreated(t);
  const jobs = await startJobs(t, w.conn, w.stateDir, w.destDir);
  await jobs.jobInfo({ domain: 'vm1', disk: 'vda' }); // the live copy is adopted: two domains named vm1 in the journal
  w.conn.freeze({ timeoutMs: 50 });
  t.teardown(() => w.conn.thaw());
  await rejects(t, jobs.jobInfo({ domain: 'vm1', disk: 'vda' }), 'libvirtTimeout', 'ambiguous: a named retryable error');
  t.match((await jobs.jobInfo({ domain: NEW_UUID, disk: 'vda' })).job, { owner: 'adopted' }, 'by UUID it still answers');
});

t.test('an ambiguous name: the failed lookup keeps its own name and libvirt data', async (t) => {
  const w = await recreated(t);
  const jobs = await startJobs(t, w.conn, w.stateDir, w.destDir);
  await jobs.jobInfo({ domain: 'vm1', disk: 'vda' }); // the live copy is adopted: two domains named vm1 in the journal
  const cases: Array<[LibvirtError, ErrorName]> = [
    [new LibvirtTimeout('libvirtd did not answer lookupDomain within 10000 ms'), 'libvirtTimeout'],
    [new LibvirtError(VirErrorCode.RPC, 7, 'End of file while reading data: Input/output error'), 'unavailable'],
    [new LibvirtError(VirErrorCode.OPERATION_DENIED, 6, 'access denied'), 'libvirtError'],
  ];
  for (const [err, name] of cases) {
    w.conn.failNext.set('lookupDomain', err);
    const e = await rejects(t, jobs.jobInfo({ domain: 'vm1', disk: 'vda' }), name, `lookup failing with ${err.message}`);
    t.match(e?.data, { libvirt: { code: err.code, domain: err.domain, message: err.libvirtMessage } }, 'with libvirt’s code and message');
    t.match(e?.message, /name the domain by UUID/, 'and says how to name it');
  }
});

t.test('a name libvirt no longer knows answers from the journal when one domain had it', async (t) => {
  const { stateDir, destDir, conn } = fakeHost(t, 'bc-names-');
  const dom = conn.addDomain({ name: 'vm1' });
  const jobs = await startJobs(t, conn, stateDir, destDir);
  const { job } = await jobs.blockCopy({ domain: 'vm1', disk: 'vda', destination: { path: join(destDir, 'a.qcow2') } });
  conn.stopDomain(dom);
  conn.domains = [];
  t.match((await jobs.jobInfo({ domain: 'vm1', disk: 'vda' })).job, { jobId: job.jobId }, 'the gone domain’s job');
  conn.failNext.set('lookupDomain', new LibvirtTimeout('libvirtd did not answer lookupDomain within 10000 ms'));
  await rejects(
    t,
    jobs.abort({ domain: 'vm1', disk: 'vda' }).then(() => undefined),
    'libvirtTimeout',
    'a mutating call does not act on a guess',
  );
});
