// The client package for real: scripts/pack-client.sh packs it; it installs into a clean
// directory with `npm install --offline` from an empty cache (nothing can be fetched), no
// compiler (PATH holds node alone, CC and CXX are /bin/false) and no headers (/usr/include is
// hidden by a tmpfs in a private mount namespace: the host is untouched); the install holds no
// .node file; every module of it loads with process.dlopen forbidden; a TypeScript consumer
// type-checks against it; and both its library and its CLI drive a real agent: the CLI copies
// and pivots a running VM's disk, the library sees the job.
import t from 'tap';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const MiB = 1024 * 1024;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, maxBuffer: 64 * MiB }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** npm's own entry (a Node script), so that PATH needs nothing but node. */
const npmCli = (): string =>
  join(dirname(realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim())), 'npm-cli.js');

// Runs in the clean directory: loads every module of the package with native addons forbidden,
// then uses the library against the agent.
const PROBE = `
process.dlopen = (_module, file) => {
  throw new Error('a native addon was loaded: ' + file);
};
const { readdirSync } = await import('node:fs');
const pkg = new URL('./node_modules/blockcopy-agent-client/', import.meta.url);
const modules = readdirSync(new URL('dist/', pkg), { recursive: true }).filter((f) => f.endsWith('.js'));
// client-main.js is the CLI: it runs when loaded (the test runs it as a command instead).
for (const f of modules) if (!f.endsWith('client-main.js')) await import(new URL('dist/' + f, pkg).href);
const { AgentClient, RpcError } = await import('blockcopy-agent-client');
const [url, token, domain] = process.argv.slice(2);
const client = await AgentClient.connect(url, { headers: { authorization: 'Bearer ' + token } });
const caps = await client.call('capabilities', {});
let missing = null;
try {
  await client.call('jobInfo', { jobId: 'no-such-job' });
} catch (e) {
  missing = e instanceof RpcError ? e.errorName : String(e);
}
const jobs = await client.call('listJobs', { domain });
client.close();
console.log(JSON.stringify({ modules: modules.length, agent: caps.agent.name, missing, jobs }));
`;

// Type-checked against the installed package's declarations: the schema's types reach a consumer.
const CONSUMER = `
import { AgentClient, RpcError, isBlockJob, type AnyJob, type ErrorName, type Job } from 'blockcopy-agent-client';
export async function pivoted(client: AgentClient, jobId: string): Promise<boolean> {
  // jobInfo answers a job of any kind: a block job (a copy here) or a backup; narrowed by kind.
  const { job }: { job: AnyJob } = await client.call('jobInfo', { jobId });
  return isBlockJob(job) && job.state === 'pivoted';
}
export const diskOf = (job: Job): string => job.disk;
// @ts-expect-error: a backup has disks, not disk
export const notNarrowed = (job: AnyJob): string => job.disk;
export const isNoJob = (e: unknown): boolean => e instanceof RpcError && e.errorName === ('noJob' satisfies ErrorName);
// @ts-expect-error: not a method of the agent
export const wrong = (client: AgentClient) => client.call('noSuchMethod', {});
`;

t.test('the client package installs without a compiler or headers and drives a real agent', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'client-package-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const pack = await run('bash', [join(REPO, 'scripts/pack-client.sh'), dir]);
  t.equal(pack.code, 0, `pack-client.sh ${pack.stderr.slice(-600)}`);
  const tarball = pack.stdout.trim().split('\n').at(-1)!;
  const listing = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).trim().split('\n');
  t.same(
    listing.filter((f) => /\.node$|binding\.gyp|\/(libvirt|jobs|destination|rpc|transport|metrics)\/|\/agent\.js$/.test(f)),
    [],
    'the tarball holds no addon, no binding.gyp and nothing of the agent',
  );
  const manifest = JSON.parse(execFileSync('tar', ['xzOf', tarball, 'package/package.json'], { encoding: 'utf8' }));
  t.same(Object.keys(manifest.dependencies), ['ws'], 'ws is its only dependency');
  t.notOk(manifest.gypfile || manifest.scripts, 'no gypfile, no install scripts');
  t.equal(manifest.version, JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version, 'the agent version');

  // ws from the repository's own node_modules: the install needs no registry.
  const wsPack = await run(process.execPath, [npmCli(), 'pack', '--silent', '--pack-destination', dir, join(REPO, 'node_modules/ws')]);
  t.equal(wsPack.code, 0, `npm pack ws ${wsPack.stderr}`);
  const wsTarball = join(dir, wsPack.stdout.trim().split('\n').at(-1)!);

  const bin = join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  const proj = join(dir, 'proj');
  mkdirSync(proj);
  writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'probe', private: true, type: 'module' }));
  const env = {
    HOME: dir,
    PATH: bin,
    CC: '/bin/false',
    CXX: '/bin/false',
    npm_config_cache: join(dir, 'cache'),
    npm_config_update_notifier: 'false',
  };
  const install = await run(
    '/usr/bin/unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '/bin/sh',
      '-c',
      '/bin/mount -t tmpfs none /usr/include && exec node "$0" install --offline --no-audit --no-fund "$@"',
      npmCli(),
      wsTarball,
      tarball,
    ],
    { cwd: proj, env },
  );
  t.equal(install.code, 0, `npm install --offline without compiler or headers ${install.stdout}${install.stderr}`);

  const files = readdirSync(join(proj, 'node_modules'), { recursive: true }) as string[];
  t.same(
    files.filter((f) => f.endsWith('.node')),
    [],
    'no .node file in the install',
  );
  t.same(readdirSync(join(proj, 'node_modules')).sort(), ['.bin', '.package-lock.json', 'blockcopy-agent-client', 'ws'], 'two packages');

  writeFileSync(join(proj, 'consumer.ts'), CONSUMER);
  const tsc = await run(
    process.execPath,
    [
      join(REPO, 'node_modules/typescript/bin/tsc'),
      '--noEmit',
      '--strict',
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
      '--target',
      'es2022',
      '--types',
      'node',
      '--typeRoots',
      join(REPO, 'node_modules/@types'),
      'consumer.ts',
    ],
    { cwd: proj },
  );
  t.equal(tsc.code, 0, `a TypeScript consumer type-checks against the package ${tsc.stdout}${tsc.stderr}`);

  const agent = await serveAgent(t);
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x5c, offset: 0, length: 16 * MiB });
  const dest = `${dom.dir}/client-package.qcow2`;
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, agent.token + '\n', { mode: 0o600 });
  const client = join(proj, 'node_modules/.bin/blockcopy-agent-client');
  const remote = ['--url', agent.url, '--token-file', tokenFile, '--json'];

  const version = await run(client, ['--version'], { env: { PATH: bin } });
  t.equal(version.stdout.trim(), manifest.version, 'blockcopy-agent-client --version');
  const copy = await run(client, ['copy', dom.name, 'vda', dest, '--format', 'qcow2', '--wait', '--pivot', ...remote], {
    env: { PATH: bin },
  });
  t.equal(copy.code, 0, `blockcopy-agent-client copy --wait --pivot ${copy.stderr}`);
  const last = JSON.parse(copy.stdout.trim().split('\n').at(-1)!);
  t.match(last, { event: 'pivoted', job: { state: 'pivoted', destination: { path: dest } } }, 'the client CLI pivoted the copy');
  t.equal((await hv.liveChain(dom, 'vda'))[0], dest, 'the guest runs on the destination');
  t.ok(await hv.readPattern(dest, 'qcow2', { pattern: 0x5c, offset: 0, length: 16 * MiB }), 'with the guest data');

  writeFileSync(join(proj, 'probe.mjs'), PROBE);
  const probe = await run(process.execPath, ['probe.mjs', agent.url, agent.token, dom.name], { cwd: proj, env: { PATH: bin } });
  t.equal(probe.code, 0, `the library loads without any addon and calls the agent ${probe.stderr}`);
  const seen = JSON.parse(probe.stdout);
  t.ok(seen.modules > 10, `every module loaded (${seen.modules})`);
  t.equal(seen.agent, 'blockcopy-agent', 'capabilities');
  t.equal(seen.missing, 'noJob', 'an error answer carries its name');
  t.match(seen.jobs, { jobs: [{ jobId: last.job.jobId, state: 'pivoted' }] }, 'listJobs shows the job the CLI ran');

  const jobs = await run(client, ['jobs', dom.name, ...remote], { env: { PATH: bin } });
  t.equal(jobs.code, 0, `blockcopy-agent-client jobs ${jobs.stderr}`);
  t.match(JSON.parse(jobs.stdout), { jobs: [{ jobId: last.job.jobId }] }, 'jobs lists it');
  const none = await run(client, ['jobs', '--state-dir', join(dir, 'no-agent')], { env: { PATH: bin } });
  t.equal(none.code, 3, 'no --url, no local agent: exit 3');
  t.match(none.stderr, /no local agent socket, and blockcopy-agent is not installed here/, 'says why');
});
