// The one table from libvirt's failures to the agent's error names (src/jobs/libvirt-errors.ts):
// libvirtd's silence keeps its retryable names whatever the call and whatever a caller's
// override, only libvirt's "no such domain" is notFound, and libvirt's code, domain and message
// always travel in data.libvirt.
import t from 'tap';
import { AgentError } from '../../src/errors.js';
import { LibvirtBusy, LibvirtError, LibvirtTimeout, VirErrorCode } from '../../src/libvirt/index.js';
import { lookupError, toAgentError } from '../../src/jobs/libvirt-errors.js';

const timeout = () => new LibvirtTimeout('libvirtd did not answer lookupDomain within 10000 ms');
const busy = () => new LibvirtBusy('too many calls wait for libvirtd');
const dropped = () => new LibvirtError(VirErrorCode.RPC, 7, 'End of file while reading data: Input/output error');
const noDomain = () => new LibvirtError(VirErrorCode.NO_DOMAIN, 10, "Domain not found: no domain with matching name 'vm1'");
const refused = () =>
  new LibvirtError(VirErrorCode.OPERATION_DENIED, 6, 'operation forbidden: read only access prevents virDomainBlockCopy');

const mapped = (e: unknown) => {
  if (!(e instanceof AgentError)) throw new Error(`not an AgentError: ${String(e)}`);
  return { name: e.errorName, retryable: e.retryable, libvirt: e.data.libvirt, message: e.message };
};

t.test('each libvirt failure has one name, with libvirt data', async (t) => {
  const cases: Array<[LibvirtError, string, boolean]> = [
    [timeout(), 'libvirtTimeout', true],
    [busy(), 'libvirtBusy', true],
    [dropped(), 'unavailable', true],
    [noDomain(), 'notFound', false],
    [refused(), 'libvirtError', false],
  ];
  for (const [e, name, retryable] of cases) {
    t.match(
      mapped(toAgentError(e, 'cannot do it')),
      { name, retryable, libvirt: { code: e.code, domain: e.domain, message: e.libvirtMessage }, message: `cannot do it: ${e.message}` },
      `${e.constructor.name} ${e.code}: ${name}`,
    );
  }
});

t.test("a caller's name for refusals never renames libvirtd's silence", async (t) => {
  const as = { refused: 'inventoryIncomplete', other: 'inventoryIncomplete' } as const;
  t.equal(mapped(toAgentError(timeout(), 'x', as)).name, 'libvirtTimeout');
  t.equal(mapped(toAgentError(busy(), 'x', as)).name, 'libvirtBusy');
  t.equal(mapped(toAgentError(dropped(), 'x', as)).name, 'unavailable');
  t.match(mapped(toAgentError(refused(), 'x', as)), { name: 'inventoryIncomplete', libvirt: { code: VirErrorCode.OPERATION_DENIED } });
  t.match(mapped(toAgentError(new Error('bad XML'), 'x', as)), { name: 'inventoryIncomplete', message: 'x: bad XML' });
  const own = new AgentError('stateUnavailable', 'disk full');
  t.equal(toAgentError(own, 'x', as), own, 'an AgentError passes through');
  const plain = new Error('a defect');
  t.equal(toAgentError(plain, 'x'), plain, 'without `other`, a failure that is not libvirt’s passes through');
});

t.test('a failed domain lookup is notFound only for libvirt’s "no such domain"', async (t) => {
  t.match(mapped(lookupError(noDomain(), 'vm1')), {
    name: 'notFound',
    message: "no domain 'vm1'",
    libvirt: { code: VirErrorCode.NO_DOMAIN },
  });
  for (const [e, name] of [
    [timeout(), 'libvirtTimeout'],
    [busy(), 'libvirtBusy'],
    [dropped(), 'unavailable'],
    [refused(), 'libvirtError'],
  ] as const)
    t.match(
      mapped(lookupError(e, 'vm1')),
      { name, libvirt: { code: e.code, message: e.libvirtMessage } },
      `${e.constructor.name}: ${name}`,
    );
});
