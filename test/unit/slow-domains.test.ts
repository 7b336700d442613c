// SlowDomains' rules on their own: what marks a domain slow, what clears it, and that the
// tracked connection behaves like the one it wraps. The behaviour against a real stopped QEMU
// is test/integration/isolation.test.ts.
import t from 'tap';
import { SlowDomains } from '../../src/jobs/slow-domains.js';
import { LibvirtBusy, LibvirtError, LibvirtTimeout, VirErrorCode, type Connection } from '../../src/libvirt/index.js';

const settle = (p: Promise<unknown>) =>
  p.then(
    () => {},
    () => {},
  );

t.test('marks and clears by how calls on the domain settle', async (t) => {
  const slow = new SlowDomains();
  const open = () => false;
  await settle(slow.track('a', Promise.reject(new LibvirtTimeout('hung')), open));
  t.ok(slow.isSlow('a'), 'a timeout marks the domain');
  t.notOk(slow.isSlow('b'), 'only that domain');
  await settle(slow.track('a', Promise.resolve(1), open));
  t.notOk(slow.isSlow('a'), 'an answer clears it');
  await settle(slow.track('a', Promise.reject(new LibvirtBusy('queued', true)), open));
  t.ok(slow.isSlow('a'), 'withdrawn from its queue behind a stuck call: slow');
  await settle(slow.track('a', Promise.reject(new LibvirtError(VirErrorCode.NO_DOMAIN, 10, 'gone')), open));
  t.notOk(slow.isSlow('a'), 'a libvirt error is an answer: cleared');
  await settle(slow.track('c', Promise.reject(new LibvirtBusy('too many calls')), open));
  t.notOk(slow.isSlow('c'), 'the connection-wide cap says nothing about the domain');
  await settle(slow.track('d', Promise.reject(new LibvirtTimeout('hung')), () => true));
  t.notOk(slow.isSlow('d'), 'nothing is marked on a closed connection (libvirtd, not the domain)');
  await settle(slow.track('a', Promise.reject(new LibvirtTimeout('hung')), open));
  slow.reset();
  t.notOk(slow.isSlow('a'), 'reset forgets every mark');
});

t.test('the tracked connection: same results, same synchronous errors, other members pass through', async (t) => {
  const calls: string[] = [];
  const conn = {
    uri: 'fake:///',
    get closed() {
      return false;
    },
    getXml(domain: string) {
      if (typeof domain !== 'string') throw new TypeError('domain must be a string');
      calls.push(`getXml ${domain}`);
      return domain === 'hung' ? Promise.reject(new LibvirtTimeout('hung')) : Promise.resolve('<domain/>');
    },
    listDomains() {
      calls.push('listDomains');
      return Promise.resolve([]);
    },
  } as unknown as Connection;
  const slow = new SlowDomains();
  const c = slow.watch(conn);
  t.equal(await c.getXml('a'), '<domain/>', 'results pass through');
  await t.rejects(c.getXml('hung'), LibvirtTimeout, 'errors pass through');
  t.ok(slow.isSlow('hung'), 'and are tracked');
  t.throws(() => c.getXml(1 as unknown as string), TypeError, 'a bad argument still throws at once');
  t.same(await c.listDomains(), [], 'calls naming no domain pass through');
  t.equal(c.uri, 'fake:///', 'properties pass through');
  t.same(calls, ['getXml a', 'getXml hung', 'listDomains']);
});

t.test("every call naming a domain is tracked, the chain kinds' and the guest's too", async (t) => {
  const hung = () => Promise.reject(new LibvirtTimeout('hung'));
  const conn = {
    uri: 'fake:///',
    closed: false,
    blockCommit: hung,
    blockPull: hung,
    snapshotCreateXml: hung,
    getState: hung,
    listDomains: hung,
  } as unknown as Connection;
  const slow = new SlowDomains();
  const tracked = slow.watch(conn);
  for (const [method, dom] of [
    ['blockCommit', 'c'],
    ['blockPull', 'p'],
    ['snapshotCreateXml', 's'],
    ['getState', 'g'],
  ] as const) {
    await settle((tracked[method] as (d: string) => Promise<unknown>)(dom));
    t.ok(slow.isSlow(dom), `a hung ${method} marks its domain slow`);
  }
  await settle(tracked.listDomains());
  t.notOk(slow.isSlow('undefined'), 'a call naming no domain marks none');
});
