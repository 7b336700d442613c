// The job layer's pure pieces: libvirt XML reading (on XML captured from libvirt 9),
// destination XML, the state table, rate sampling, destination checks, the journal.
import t from 'tap';
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync, readdirSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findDisk, parseDisks } from '../../src/jobs/disk-xml.js';
import { destinationFromXml, destinationToXml } from '../../src/jobs/destination-xml.js';
import { canTransition, isTerminal } from '../../src/jobs/state-machine.js';
import { RateSampler } from '../../src/jobs/sampler.js';
import { makeDestinationCheck } from '../../src/jobs/destination-check.js';
import { Journal } from '../../src/jobs/journal.js';
import { fromByteCount, toByteCount } from '../../src/jobs/numbers.js';
import { AgentError } from '../../src/errors.js';
import { sampleJob } from '../helpers/fake-service.js';

const fixture = readFileSync(fileURLToPath(new URL('../../../test/fixtures/domain-mirror.xml', import.meta.url)), 'utf8');

t.test('disk XML from libvirt', async (t) => {
  const disks = parseDisks(fixture);
  t.same(disks.map((d) => [d.target, d.device]), [['vda', 'disk'], ['vdb', 'disk'], ['hdc', 'cdrom']]);
  const vda = findDisk(fixture, 'vda')!;
  t.match(vda, { type: 'file', sourcePath: '/var/tmp/bcfx/top.qcow2', format: 'qcow2', backingPaths: ['/var/tmp/bcfx/base.qcow2'] });
  t.match(vda.mirror, { job: 'copy', ready: null, path: '/var/tmp/bcfx/copy.qcow2', format: 'qcow2' }, 'phase-1 mirror');
  t.same(findDisk(fixture, 'vdb')!.mirror, null);
  t.equal(findDisk(fixture, 'hdc')!.sourcePath, null, 'an empty cdrom has no source');
  const ready = fixture.replace("job='copy'>", "job='copy' ready='yes'>");
  t.equal(findDisk(ready, 'vda')!.mirror!.ready, 'yes');
  t.equal(findDisk(fixture, 'vdz'), undefined);
  const escaped = `<domain><devices><disk type='file' device='disk'><source file='/a/it&apos;s &amp; x.img'/><target dev='vda'/></disk></devices></domain>`;
  t.equal(findDisk(escaped, 'vda')!.sourcePath, "/a/it's & x.img", 'entities decoded');
});

t.test('destination XML both ways', async (t) => {
  t.equal(destinationToXml({ path: "/x/it's<.qcow2", format: 'qcow2' }), `<disk type='file'><source file='/x/it&apos;s&lt;.qcow2'/><driver type='qcow2'/></disk>`);
  t.equal(destinationToXml({ path: '/dev/sdz', type: 'block' }), `<disk type='block'><source dev='/dev/sdz'/></disk>`);
  t.same(destinationFromXml(`<disk type='file'><source file='/a.qcow2'/><driver type='qcow2'/></disk>`), { path: '/a.qcow2', type: 'file', format: 'qcow2' });
  t.match(destinationFromXml(`<domain/>`), { error: /single <disk>/ });
  t.match(destinationFromXml(`<disk type='network'><source protocol='nbd'/></disk>`), { error: /not supported/ });
  t.match(destinationFromXml(`<disk type='file'><driver type='vmdk'/><source file='/a'/></disk>`), { error: /format/ });
});

t.test('state table', async (t) => {
  t.ok(canTransition('copying', 'ready'));
  t.ok(canTransition('ready', 'pivoting'));
  t.ok(canTransition('pivoting', 'ready'), 'a refused pivot returns to ready');
  t.notOk(canTransition('copying', 'pivoted'), 'never pivoted without pivoting');
  t.notOk(canTransition('pivoted', 'ready'), 'terminal states stay');
  for (const s of ['pivoted', 'finished', 'cancelled', 'failed'] as const) t.ok(isTerminal(s));
});

t.test('rate and ETA from samples', async (t) => {
  const s = new RateSampler(5000);
  t.equal(s.rate(), null);
  s.add(0, 0);
  s.add(1000, 10_000_000);
  t.equal(s.rate(), 10_000_000);
  t.equal(s.eta(30_000_000), 2);
  s.add(2000, 5); // went backwards: a new phase
  t.equal(s.rate(), null, 'restarts after cur goes back');
});

t.test('64-bit counts', async (t) => {
  t.equal(toByteCount(5n), 5);
  t.equal(toByteCount(2n ** 60n), '1152921504606846976', 'above 2^53 as a decimal string');
  t.equal(fromByteCount('1152921504606846976'), 2n ** 60n);
});

t.test('destination checks', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'bc-dest-'));
  const allowed = join(root, 'allowed');
  mkdirSync(allowed);
  writeFileSync(join(allowed, 'exists.img'), '');
  symlinkSync('/etc', join(root, 'etc-link'));
  symlinkSync('/etc/hostname', join(allowed, 'link.img'));
  const check = makeDestinationCheck({ allowedRoots: [allowed], allowedDevices: [] });
  const disk = { target: 'vda', device: 'disk', type: 'file', sourcePath: join(allowed, 'src.img'), format: 'qcow2', mirror: null, backingPaths: [join(allowed, 'base.img')] };
  const ctx = { reuseExternal: false, disk, domainDisks: new Set([join(allowed, 'other-vm.img')]) };
  const reason = async (path: string, extra: Partial<typeof ctx> = {}, format?: 'raw' | 'qcow2', type?: 'file' | 'block') => {
    try {
      await check({ path, ...(format ? { format } : {}), ...(type ? { type } : {}) }, { ...ctx, ...extra });
      return 'accepted';
    } catch (e) {
      t.ok(e instanceof AgentError && e.errorName === 'destinationRejected', `${path}: destinationRejected`);
      return (e as AgentError).data.reason as string;
    }
  };
  t.equal(await reason(join(allowed, 'new.img')), 'accepted');
  t.match(await reason(`${allowed}/../outside.img`), /normalized/);
  t.match(await reason(`${allowed}//double.img`), /normalized/);
  t.match(await reason(join(root, 'outside.img')), /not under an allowed root/);
  t.match(await reason(join(root, 'etc-link', 'x.img')), /not under an allowed root/, 'a symlinked parent resolves outside');
  t.match(await reason(join(allowed, 'link.img'), { reuseExternal: true }, 'raw'), /symbolic link/);
  t.match(await reason(join(allowed, 'exists.img')), /already exists/);
  t.equal(await reason(join(allowed, 'exists.img'), { reuseExternal: true }, 'raw'), 'accepted');
  t.match(await reason(join(allowed, 'exists.img'), { reuseExternal: true }), /explicit format/);
  t.match(await reason(join(allowed, 'missing.img'), { reuseExternal: true }, 'raw'), /does not exist/);
  t.match(await reason(join(allowed, 'src.img')), /own source/);
  t.match(await reason(join(allowed, 'base.img')), /backing file/);
  t.match(await reason(join(allowed, 'other-vm.img')), /defined domain/);
  t.match(await reason('/dev/sda', {}, undefined, 'block'), /not in allowedDevices/);
  t.match(await reason(join(allowed, 'nodir', 'x.img')), /parent directory/);
});

t.test('journal writes whole records atomically and reads them back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bc-journal-'));
  const j = new Journal(dir);
  await j.open();
  await j.save({ job: sampleJob({ jobId: 'a' }), destinationXml: '<disk/>' });
  await j.save({ job: sampleJob({ jobId: 'a', state: 'ready' }), destinationXml: '<disk/>' });
  writeFileSync(join(dir, 'job-broken.json'), '{"job":');
  writeFileSync(join(dir, 'job-b.json.123.tmp'), 'partial');
  const bad: string[] = [];
  const recs = await j.load((f) => bad.push(f));
  t.same(recs.map((r) => [r.job.jobId, r.job.state]), [['a', 'ready']], 'the latest record');
  t.same(bad, ['job-broken.json'], 'a torn file is reported, not fatal');
  t.notOk(readdirSync(dir).some((f) => f.endsWith('.tmp')), 'leftover temp files are removed');
});
