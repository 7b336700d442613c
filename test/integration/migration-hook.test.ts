// examples/migration-hook.sh, run as an operator would, against the real agent and libvirtd.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { CLI, stateDir, TEST_AGENT_ENV } from '../../harness/agent.js';

const run = promisify(execFile);
const hook = fileURLToPath(new URL('../../../examples/migration-hook.sh', import.meta.url));
const MiB = 1024 * 1024;

t.test('to-shared moves the disks and pivots; pre-migrate leaves no copy job', async (t) => {
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 32 },
      { format: 'qcow2', sizeMiB: 128 },
    ],
  });
  await hv.guestWrite(dom, 'vdb', { pattern: 0xa9, offset: 0, length: 96 * MiB });
  // `blockcopy-agent` as installed: a wrapper on PATH around this checkout's CLI.
  const bin = join(dom.dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'blockcopy-agent'), `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@" --state-dir ${stateDir(t)}\n`, {
    mode: 0o755,
  });
  const env = { ...process.env, ...TEST_AGENT_ENV, PATH: `${bin}:${process.env.PATH}` };
  const shared = join(dom.dir, 'shared');
  mkdirSync(shared);

  const moved = await run('bash', [hook, 'to-shared', dom.name, shared, 'vda'], { env });
  t.match(moved.stdout, /ready to migrate/);
  t.match(await hv.liveXml(dom), `<source file='${shared}/${dom.name}-vda.qcow2'`, 'vda now runs on shared storage');

  // A slow copy left running on vdb, as a forgotten job would be.
  await run('bash', ['-c', `blockcopy-agent copy ${dom.name} vdb ${dom.dir}/forgotten.qcow2 --bandwidth 1M --json`], { env });
  t.match(await hv.liveXml(dom), /<mirror/, 'a copy job runs');
  const pre = await run('bash', [hook, 'pre-migrate', dom.name], { env });
  t.match(pre.stdout, /aborting copy job .* on .*\/vdb/);
  t.match(pre.stdout, /no copy job: ready to migrate/);
  t.notMatch(await hv.liveXml(dom), /<mirror/, 'virsh: no block job left, libvirt would migrate it');
});
