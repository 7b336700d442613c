// hooks/blockcopy-agent-migrate-guard against the real agent and libvirtd, invoked as libvirt
// invokes a qemu hook (`HOOK DOMAIN migrate begin -`, the domain XML on stdin) and called by
// libvirt itself: an offline migration from the system libvirtd to a second one (a private
// daemon with its own hooks and host UUID, test/helpers/hook-libvirtd.ts) runs the hook there as
// on a real destination. Allow without a job, refuse while the agent's copy runs, allow once it
// ended; a hung agent (SIGSTOPped, or a peer that accepts and never answers) is answered within
// the hook's bound. A live migration cannot be tried: one host, and libvirt refuses a migration
// to the same host.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent, untilState } from '../../harness/agent.js';
import { NODE_FLAGS } from '../../src/cli/node-flags.js';
import { startHookLibvirtd } from '../helpers/hook-libvirtd.js';
import { brakeBackup } from '../helpers/backup.js';

const run = promisify(execFile);
const HOOK = fileURLToPath(new URL('../../../hooks/blockcopy-agent-migrate-guard', import.meta.url));
const MiB = 1024 * 1024;
/** Generous: the hook's own bound plus process start-up on a loaded 2-core machine. */
const BOUND_S = 4;
const HUNG_CAP_MS = (BOUND_S + 30) * 1000;

interface HookRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function runHook(args: string[], xml: string, env: Record<string, string>): Promise<HookRun> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(HOOK, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - started }));
    child.stdin.on('error', () => undefined); // a hook may exit without reading its input
    child.stdin.end(xml);
  });
}

const migrateBegin = (dom: hv.TestDomain) => [dom.name, 'migrate', 'begin', '-'];

/**
 * The hook asked again until it allows the migration: a job's end is journaled in the
 * background, right after it is seen (a busy host may take seconds). The last answer.
 */
async function hookUntilAllowed(dom: hv.TestDomain, xml: string, env: Record<string, string>): Promise<HookRun> {
  const deadline = Date.now() + 60_000;
  let r = await runHook(migrateBegin(dom), xml, env);
  while (r.code !== 0 && Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 250));
    r = await runHook(migrateBegin(dom), xml, env);
  }
  return r;
}

t.test('decided from the journal of this host: allow, refuse while copying, allow after', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x5a, offset: 0, length: 48 * MiB });
  const other = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  const xml = await hv.virsh('dumpxml', dom.name);
  const env = { BLOCKCOPY_HOOK_STATE_DIR: agent.stateDir, BLOCKCOPY_HOOK_TIMEOUT: String(BOUND_S), BLOCKCOPY_HOOK_NODE: process.execPath };

  const idle = await runHook(migrateBegin(dom), xml, env);
  t.same([idle.code, idle.stdout], [0, ''], 'no job: allowed, the XML left unchanged (empty stdout)');

  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${dom.dir}/guard.qcow2`, format: 'qcow2' },
    bandwidth: MiB,
    jobId: 'guard-copy',
  });
  const busy = await runHook(migrateBegin(dom), xml, env);
  t.equal(busy.code, 1, 'a copy runs: refused');
  t.equal(busy.stdout, '', 'nothing on stdout (libvirt would read it as the XML)');
  t.match(busy.stderr, /job guard-copy on vda is copying/);
  t.match(busy.stderr, /refusing to migrate/);

  const xmlOther = await hv.virsh('dumpxml', other.name);
  t.equal((await runHook(migrateBegin(other), xmlOther, env)).code, 0, 'another domain: allowed');
  for (const op of [
    ['prepare', 'begin'],
    ['started', 'begin'],
    ['release', 'end'],
  ]) {
    t.equal((await runHook([dom.name, op[0]!, op[1]!, '-'], xml, env)).code, 0, `${op.join(' ')}: not the hook's business`);
  }

  // A hung agent changes nothing: the journal is read, not the agent.
  agent.process.kill('SIGSTOP');
  try {
    const hung = await runHook(migrateBegin(dom), xml, env);
    t.equal(hung.code, 1, 'agent stopped (SIGSTOP): still refused, from its journal');
    t.ok(hung.ms < HUNG_CAP_MS, `answered while the agent is stopped (${hung.ms} ms)`);
  } finally {
    agent.process.kill('SIGCONT');
  }

  await client.call('abort', { jobId: job.jobId });
  await untilState(client, job.jobId, ['cancelled']);
  // The end is journaled in the background, in order: the hook sees it shortly after.
  const after = await hookUntilAllowed(dom, xml, env);
  t.same([after.code, after.stderr], [0, ''], 'the copy ended: allowed');
});

t.test("a backup of the domain refuses it, and so does a freeze the agent's record says it made", async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 1536 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x5b, offset: 0, length: 1024 * MiB });
  const xml = await hv.virsh('dumpxml', dom.name);
  const env = { BLOCKCOPY_HOOK_STATE_DIR: agent.stateDir, BLOCKCOPY_HOOK_TIMEOUT: String(BOUND_S), BLOCKCOPY_HOOK_NODE: process.execPath };
  const target = hv.scratchDir('backup-', t);
  // Caught running (braked in QEMU); on a loaded host it may end before the brake: tried again.
  let running: string | undefined;
  for (let i = 0; i < 5 && !running; i++) {
    const { job } = await client.call('backup', { domain: dom.name, target: { dir: target }, jobId: `guard-backup-${i}` });
    if ((await brakeBackup(dom, 1024)) > 0 && (await client.call('jobInfo', { jobId: job.jobId })).job.state === 'running')
      running = job.jobId;
    else await client.call('wait', { jobId: job.jobId, until: 'done', timeout: 300 });
  }
  t.ok(running, 'a backup runs');
  const busy = await runHook(migrateBegin(dom), xml, env);
  t.equal(busy.code, 1, 'a backup runs: refused');
  t.match(busy.stderr, new RegExp(`backup job ${running} on vda is running`));
  await client.call('abort', { jobId: running! });
  const after = await hookUntilAllowed(dom, xml, env);
  t.same([after.code, after.stderr], [0, ''], 'the backup ended: allowed');

  // A crash between the agent's freeze and its thaw leaves frozenAt in the record: the guest's
  // filesystems may be frozen by the agent until it starts again and thaws them.
  const dir = hv.scratchDir('guard-state-', t);
  const rec = {
    job: { jobId: 'frozen-1', kind: 'backup', domain: { name: dom.name, uuid: dom.uuid }, state: 'failed', disks: [{ disk: 'vda' }] },
    frozenAt: '2026-12-07T10:00:00.000Z',
  };
  writeFileSync(join(dir, 'backup-frozen-1.json'), JSON.stringify(rec));
  const frozen = await runHook(migrateBegin(dom), xml, { ...env, BLOCKCOPY_HOOK_STATE_DIR: dir });
  t.equal(frozen.code, 1, 'frozen by the agent: refused');
  t.match(frozen.stderr, /backup frozen-1 froze the guest filesystems/);
});

t.test('asked of the source host’s agent (peers), fail closed or open when it hangs', async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x3c, offset: 0, length: 48 * MiB });
  const xml = await hv.virsh('dumpxml', dom.name);
  const tokenFile = join(dom.dir, 'hook.token');
  writeFileSync(tokenFile, agent.token, { mode: 0o600 });
  const cli = join(dom.dir, 'blockcopy-agent');
  writeFileSync(cli, `#!/bin/sh\nexec ${process.execPath} ${NODE_FLAGS.join(' ')} ${CLI} "$@"\n`, { mode: 0o755 });
  const env = {
    BLOCKCOPY_HOOK_STATE_DIR: join(dom.dir, 'no-agent-here'), // the destination host runs no job of it
    BLOCKCOPY_HOOK_PEERS: agent.url,
    BLOCKCOPY_HOOK_PEER_ARGS: `--token-file ${tokenFile}`,
    BLOCKCOPY_HOOK_CLI: cli,
    BLOCKCOPY_HOOK_NODE: process.execPath,
    BLOCKCOPY_HOOK_TIMEOUT: String(BOUND_S),
  };

  const idle = await runHook(migrateBegin(dom), xml, env);
  t.same([idle.code, idle.stderr], [0, ''], 'the peer has no job on it: allowed');

  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${dom.dir}/peer.raw`, format: 'raw' },
    bandwidth: MiB,
    jobId: 'peer-copy',
  });
  const busy = await runHook(migrateBegin(dom), xml, env);
  t.equal(busy.code, 1, 'the peer copies it: refused');
  t.match(busy.stderr, new RegExp(`blockcopy-agent at ${agent.url}: copy job peer-copy on vda is copying`));

  agent.process.kill('SIGSTOP');
  try {
    const closed = await runHook(migrateBegin(dom), xml, env);
    t.equal(closed.code, 1, 'the peer hangs: refused (fail closed, the default)');
    t.match(closed.stderr, `no answer within ${BOUND_S}s`);
    t.ok(closed.ms < HUNG_CAP_MS, `within the bound (${closed.ms} ms)`);
    const open = await runHook(migrateBegin(dom), xml, { ...env, BLOCKCOPY_HOOK_ON_ERROR: 'allow' });
    t.equal(open.code, 0, 'BLOCKCOPY_HOOK_ON_ERROR=allow: allowed (fail open)');
    t.match(open.stderr, /allowing the migration/);
    t.ok(open.ms < HUNG_CAP_MS, `within the bound (${open.ms} ms)`);
  } finally {
    agent.process.kill('SIGCONT');
  }

  await client.call('abort', { jobId: job.jobId });
  await untilState(client, job.jobId, ['cancelled']);
  t.equal((await runHook(migrateBegin(dom), xml, env)).code, 0, 'the copy ended: allowed');
});

t.test('a peer that accepts and never answers: bounded, per ON_ERROR', async (t) => {
  const sockets = new Set<Socket>();
  const silent = createServer((s) => sockets.add(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  const port = (silent.address() as { port: number }).port;
  const dom = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 16 }] });
  const xml = await hv.virsh('dumpxml', dom.name);
  const cli = join(dom.dir, 'blockcopy-agent');
  writeFileSync(cli, `#!/bin/sh\nexec ${process.execPath} ${NODE_FLAGS.join(' ')} ${CLI} "$@"\n`, { mode: 0o755 });
  const env = {
    BLOCKCOPY_HOOK_STATE_DIR: join(dom.dir, 'no-agent-here'),
    BLOCKCOPY_HOOK_PEERS: `ws://127.0.0.1:${port}`,
    BLOCKCOPY_HOOK_CLI: cli,
    BLOCKCOPY_HOOK_NODE: process.execPath,
    BLOCKCOPY_HOOK_TIMEOUT: String(BOUND_S),
  };
  const closed = await runHook(migrateBegin(dom), xml, env);
  t.equal(closed.code, 1, 'refused (fail closed)');
  t.match(closed.stderr, /no answer within|did not answer/);
  t.ok(closed.ms < HUNG_CAP_MS, `within the bound (${closed.ms} ms)`);
  const open = await runHook(migrateBegin(dom), xml, { ...env, BLOCKCOPY_HOOK_ON_ERROR: 'allow' });
  t.equal(open.code, 0, 'allowed (fail open)');
});

t.test("through libvirt's own hook call: an offline migration to a second libvirtd", async (t) => {
  const agent = await serveAgent(t);
  const client = await agent.connect();
  const dom = await hv.createDomain(t, { persistent: true, disks: [{ format: 'qcow2', sizeMiB: 64 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x6b, offset: 0, length: 48 * MiB });
  // Installed as an operator would, with the settings a config file would give (libvirt passes
  // a hook only LC_ALL, PATH and HOME); it runs as the daemon's user, so its files are readable.
  const hookd = await startHookLibvirtd(
    'blockcopy-agent',
    (dir) =>
      `#!/bin/sh\n` +
      `export BLOCKCOPY_HOOK_STATE_DIR=${dir}/no-agent-here BLOCKCOPY_HOOK_PEERS=${agent.url}\n` +
      `export BLOCKCOPY_HOOK_PEER_ARGS="--token-file ${dir}/token" BLOCKCOPY_HOOK_CLI=${dir}/blockcopy-agent\n` +
      `export BLOCKCOPY_HOOK_NODE=${process.execPath} BLOCKCOPY_HOOK_TIMEOUT=${BOUND_S}\n` +
      `exec ${HOOK} "$@"\n`,
  );
  t.teardown(() => hookd.close());
  writeFileSync(join(hookd.dir, 'token'), agent.token, { mode: 0o644 });
  writeFileSync(join(hookd.dir, 'blockcopy-agent'), `#!/bin/sh\nexec ${process.execPath} ${NODE_FLAGS.join(' ')} ${CLI} "$@"\n`, {
    mode: 0o755,
  });
  const migrate = () =>
    run('virsh', ['-c', 'qemu:///system', 'migrate', '--offline', '--persistent', dom.name, hookd.uri]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
  const definedThere = async () => (await run('virsh', ['-c', hookd.uri, 'list', '--all', '--name'])).stdout.includes(dom.name);
  const undefineThere = () => run('virsh', ['-c', hookd.uri, 'undefine', dom.name]);

  const idle = await migrate();
  t.same(idle, { code: 0, stderr: '' }, 'no job: libvirt ran the hook and migrated (the definition)');
  t.ok(await definedThere(), 'the domain is defined on the second libvirtd');
  await undefineThere();

  const { job } = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${dom.dir}/libvirt-hook.qcow2`, format: 'qcow2' },
    bandwidth: MiB,
    jobId: 'via-libvirt',
  });
  const busy = await migrate();
  t.equal(busy.code, 1, 'a copy runs: the migration is refused');
  t.match(busy.stderr, /Hook script execution failed/, 'by the hook, says libvirt');
  t.match(busy.stderr, /copy job via-libvirt on vda is copying/, "with the hook's reason");
  t.notOk(await definedThere(), 'nothing defined on the second libvirtd');

  agent.process.kill('SIGSTOP');
  try {
    const hung = await migrate();
    t.equal(hung.code, 1, 'the agent hangs: refused (fail closed) ...');
    t.match(hung.stderr, `no answer within ${BOUND_S}s`, '... within the bound: libvirtd did not hang');
    t.ok(await run('virsh', ['-c', hookd.uri, 'list', '--all']), 'the second libvirtd answers');
  } finally {
    agent.process.kill('SIGCONT');
  }

  await client.call('abort', { jobId: job.jobId });
  await untilState(client, job.jobId, ['cancelled']);
  t.same(await migrate(), { code: 0, stderr: '' }, 'the copy ended: migrated');
  await undefineThere();
});
