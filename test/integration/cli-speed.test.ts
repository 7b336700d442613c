// The CLI as a virsh user types it: --bandwidth in MiB/s (a suffix names the unit, --bytes makes
// a bare number bytes/s), the set-speed verb, and a client certificate (--cert/--key) to an agent
// that requires one. virsh blockjob --info --bytes is the witness of what libvirt was told.
import t from 'tap';
import { spawn } from 'node:child_process';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent } from '../../harness/agent.js';
import { makePki } from '../helpers/pki.js';

const MiB = 1024 * 1024;

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** libvirt's bandwidth limit of the disk's block job, in bytes/s. */
async function libvirtLimit(dom: hv.TestDomain, disk: string): Promise<number> {
  const out = await hv.virsh('blockjob', dom.name, disk, '--info', '--bytes');
  const m = /Bandwidth limit:\s*(\d+)/.exec(out);
  return m ? Number(m[1]) : NaN;
}

t.test('--bandwidth as virsh, set-speed, and mTLS from the command line', async (t) => {
  const pki = await makePki(t);
  const agent = await serveAgent(t, { config: { tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requireClientCert: true } } });
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 256 }] });
  await hv.guestWrite(dom, 'vda', { pattern: 0x5a, offset: 0, length: 200 * MiB });
  const conn = ['--url', agent.url, '--ca', pki.ca, '--cert', pki.client.cert, '--key', pki.client.key, '--json'];

  const started = await cli(['copy', dom.name, 'vda', `${dom.dir}/slow.qcow2`, '--bandwidth', '1', ...conn]);
  t.equal(started.code, 0, `copy --bandwidth 1 over mTLS: exit 0 ${started.stderr}`);
  const job = (JSON.parse(started.stdout.trim().split('\n').at(-1)!) as { job: { jobId: string; bandwidth: number } }).job;
  t.equal(job.bandwidth, MiB, '--bandwidth 1 is 1 MiB/s, as virsh');
  t.equal(await libvirtLimit(dom, 'vda'), MiB, 'virsh: libvirt was told 1 MiB/s');

  const k = await cli(['set-speed', '--job', job.jobId, '--bandwidth', '512K', ...conn]);
  t.equal(k.code, 0, `set-speed --bandwidth 512K: exit 0 ${k.stderr}`);
  t.equal(await libvirtLimit(dom, 'vda'), 512 * 1024, 'virsh: 512 KiB/s');

  const bytes = await cli(['set-speed', dom.name, 'vda', '--bandwidth', '300000', '--bytes', ...conn]);
  t.equal(bytes.code, 0, `set-speed DOMAIN DISK --bytes: exit 0 ${bytes.stderr}`);
  t.equal(await libvirtLimit(dom, 'vda'), 300000, 'virsh: --bytes keeps a bare number in bytes/s');

  // The brief's shape: set-speed JOB_ID BANDWIDTH (and DOMAIN DISK BANDWIDTH), a bare number in MiB/s.
  const positional = await cli(['set-speed', job.jobId, '2', ...conn]);
  t.equal(positional.code, 0, `set-speed JOB_ID 2: exit 0 ${positional.stderr}`);
  t.equal((JSON.parse(positional.stdout) as { job: { bandwidth: number } }).job.bandwidth, 2 * MiB, 'the answer: 2 is 2 MiB/s');
  t.equal(await libvirtLimit(dom, 'vda'), 2 * MiB, 'virsh: 2 MiB/s');
  const byDisk = await cli(['set-speed', dom.name, 'vda', '3M', ...conn]);
  t.equal(byDisk.code, 0, `set-speed DOMAIN DISK 3M: exit 0 ${byDisk.stderr}`);
  t.equal(await libvirtLimit(dom, 'vda'), 3 * MiB, 'virsh: 3 MiB/s');

  // The certificate from the environment (BLOCKCOPY_CA, BLOCKCOPY_CERT, BLOCKCOPY_KEY).
  const fromEnv = await cli(['set-speed', job.jobId, '4M', '--url', agent.url, '--json'], {
    BLOCKCOPY_CA: pki.ca,
    BLOCKCOPY_CERT: pki.client.cert,
    BLOCKCOPY_KEY: pki.client.key,
  });
  t.equal(fromEnv.code, 0, `set-speed with BLOCKCOPY_CA/CERT/KEY: exit 0 ${fromEnv.stderr}`);
  t.equal(await libvirtLimit(dom, 'vda'), 4 * MiB, 'virsh: 4 MiB/s');

  // The API: a string must name its unit ("100" is refused, not guessed); "5MiB" is 5 MiB/s.
  const unitless = await cli(['call', 'setSpeed', '--params', JSON.stringify({ jobId: job.jobId, bandwidth: '100' }), ...conn]);
  t.equal(unitless.code, 1, 'the API refuses a string without a unit');
  t.match(unitless.stderr, /has no unit/, 'and says so');
  t.equal(await libvirtLimit(dom, 'vda'), 4 * MiB, 'nothing changed');
  const withUnit = await cli(['call', 'setSpeed', '--params', JSON.stringify({ jobId: job.jobId, bandwidth: '5MiB' }), ...conn]);
  t.equal(withUnit.code, 0, `the API takes "5MiB" ${withUnit.stderr}`);
  t.equal(await libvirtLimit(dom, 'vda'), 5 * MiB, 'virsh: 5 MiB/s');
  const back = await cli(['set-speed', job.jobId, '300000', '--bytes', ...conn]);
  t.equal(back.code, 0, `set-speed JOB_ID 300000 --bytes: exit 0 ${back.stderr}`);

  const info = await cli(['info', '--job', job.jobId, ...conn]);
  t.equal((JSON.parse(info.stdout) as { job: { bandwidth: number } }).job.bandwidth, 300000, 'jobInfo: the job records bytes/s');

  for (const [args, code, why] of [
    [['set-speed', '--job', job.jobId, '--bandwidth', 'fast', ...conn], 2, 'junk bandwidth is a usage error'],
    [['set-speed', '--job', job.jobId, ...conn], 2, 'set-speed without a bandwidth'],
    [['set-speed', job.jobId, '100Q', ...conn], 2, 'an unknown unit'],
    [['set-speed', job.jobId, '-1', ...conn], 2, 'a negative bandwidth'],
    [
      ['info', '--job', job.jobId, '--url', agent.url.replace('wss:', 'ws:'), '--cert', pki.client.cert, '--key', pki.client.key],
      2,
      '--cert over ws://',
    ],
    [
      ['info', '--job', job.jobId, '--url', agent.url, '--ca', pki.ca, '--cert', `${dom.dir}/none.pem`, '--key', pki.client.key],
      2,
      'an unreadable --cert',
    ],
    [['set-speed', '--job', job.jobId, '--bandwidth', '20E', ...conn], 2, 'above 2^64-1 bytes/s'],
    [['info', '--job', job.jobId, '--url', agent.url, '--ca', pki.ca, '--cert', pki.client.cert, '--json'], 2, '--cert without --key'],
    [['info', '--job', job.jobId, '--url', agent.url, '--ca', pki.ca, '--json'], 3, 'no client certificate: the handshake is refused'],
    [
      [
        'info',
        '--job',
        job.jobId,
        '--url',
        agent.url,
        '--ca',
        pki.ca,
        '--cert',
        pki.rogueClient.cert,
        '--key',
        pki.rogueClient.key,
        '--json',
      ],
      3,
      'a certificate from another CA is refused',
    ],
  ] as Array<[string[], number, string]>) {
    const r = await cli(args);
    t.equal(r.code, code, `${why}: exit ${code} (${r.stderr.split('\n')[0]})`);
  }
  t.equal(await libvirtLimit(dom, 'vda'), 300000, 'refused calls changed nothing');

  const abort = await cli(['abort', '--job', job.jobId, ...conn]);
  t.equal(abort.code, 0, `abort: exit 0 ${abort.stderr}`);
  t.notMatch(await hv.liveXml(dom), /<mirror/, 'virsh: no copy left');
});
