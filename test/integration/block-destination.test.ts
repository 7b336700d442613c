// A raw block-device destination whose size differs from the disk's: refused before anything
// starts, with the two sizes, instead of failing mid-copy as "an I/O error". Loop devices over
// files (losetup) stand in for the devices; the test detaches them.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { RpcError } from '../../src/client/index.js';
import { serveAgent } from '../../harness/agent.js';
import * as hv from '../../harness/hypervisor.js';

const MiB = 1024 * 1024;

/** A loop device over a new sparse file of `sizeMiB`, detached at teardown. */
function loopDevice(t: Test, dir: string, sizeMiB: number): string {
  const file = join(dir, `loop-${sizeMiB}.img`);
  const fd = openSync(file, 'w');
  try {
    ftruncateSync(fd, sizeMiB * MiB);
  } finally {
    closeSync(fd);
  }
  const dev = execFileSync('losetup', ['--find', '--show', file], { encoding: 'utf8' }).trim();
  t.teardown(() => {
    try {
      execFileSync('losetup', ['-d', dev]);
    } catch {
      /* already detached */
    }
  });
  return dev;
}

t.test('a raw block device of another size than the disk is refused before the copy, with both sizes', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x5e, offset: 0, length: 2 * MiB });
  const wrong = loopDevice(t, dom.dir, 24);
  const right = loopDevice(t, dom.dir, 16);
  const tiny = loopDevice(t, dom.dir, 4);
  const agent = await serveAgent(t, { config: { allowedDevices: [wrong, right, tiny] } });
  const c = await agent.connect();

  const e = await c.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: wrong, type: 'block', format: 'raw' } }).then(
    () => undefined,
    (x: unknown) => x,
  );
  t.ok(e instanceof RpcError && e.errorName === 'destinationRejected', `refused: ${(e as Error)?.message}`);
  t.match(
    (e as RpcError).data?.reason,
    new RegExp(`${wrong} holds ${24 * MiB} bytes but the disk is ${16 * MiB} bytes`),
    'the reason names both sizes',
  );
  t.match((e as RpcError).data, { path: wrong, destinationBytes: 24 * MiB, sourceBytes: 16 * MiB }, 'data holds both sizes');
  t.notMatch(await hv.liveXml(dom), /<mirror/, 'virsh: nothing started');
  t.same((await c.call('listJobs', { domain: dom.name })).jobs, [], 'no job');

  // qcow2 onto a device: the device's size is its room; 4 MiB cannot hold the copy's figure.
  const q = await c.call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: tiny, type: 'block', format: 'qcow2' } }).then(
    () => undefined,
    (x: unknown) => x,
  );
  t.ok(q instanceof RpcError && q.errorName === 'insufficientSpace', `qcow2 on a small device refused: ${(q as Error)?.message}`);
  t.match((q as RpcError).data, { path: tiny, filesystem: tiny, available: 4 * MiB }, 'with the device and its size');
  t.ok(((q as RpcError).data?.needed as number) > 4 * MiB, 'and what the copy needs');
  t.notMatch(await hv.liveXml(dom), /<mirror/, 'virsh: nothing started');

  const ok = await c.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: right, type: 'block', format: 'raw' },
    whenReady: 'finish',
    wait: 'done',
  });
  t.equal(ok.job.state, 'finished', 'a device of the same size copies');
  t.ok(await hv.readPattern(right, 'raw', { pattern: 0x5e, offset: 0, length: 2 * MiB }), "qemu-io: the device holds the guest's data");
});
