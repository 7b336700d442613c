// The backup verbs: `backup DOMAIN (--dir P | --pool N) [--disks vda,vdb] [--format raw|qcow2]
// [--incremental [NAME]] [--checkpoint [NAME]] [--quiesce required|try] [--checksum sha256|none] [--wait] [--verbose]
// [--timeout S] [--job-id ID]`
// (progress from jobInfo while it runs), and `checkpoints DOMAIN [--keep N]` (list; with
// --keep, delete the oldest so that N remain).
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentClient } from '../client/index.js';
import type { BackupJob, BackupParams } from '../generated/api.js';
import { isBackupJob } from '../job-types.js';
import { EXIT, num, OPTIONS, UsageError, type Values } from './args.js';
import { jsonLines } from './output.js';

/** Options whose value is optional: a bare `--incremental` means "since the latest checkpoint". */
const OPTIONAL_VALUE = new Set(['--incremental', '--checkpoint']);
const TAKES_VALUE = new Set(
  Object.entries(OPTIONS)
    .filter(([, o]) => o.type === 'string')
    .map(([k]) => `--${k}`),
);

/**
 * node's parseArgs has no optional values: `--incremental NAME` (a word after DOMAIN that is
 * not an option) becomes `--incremental=NAME`, a bare `--incremental` `--incremental=` (latest).
 */
export function backupArgv(argv: string[]): string[] {
  const out: string[] = [];
  let domainSeen = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (OPTIONAL_VALUE.has(a)) {
      const next = argv[i + 1];
      if (domainSeen && next !== undefined && !next.startsWith('-')) {
        out.push(`${a}=${next}`);
        i++;
      } else out.push(`${a}=`);
      continue;
    }
    out.push(a);
    if (TAKES_VALUE.has(a) && !OPTIONAL_VALUE.has(a)) {
      if (i + 1 < argv.length) out.push(argv[++i]!);
    } else if (!a.startsWith('-')) domainSeen = true;
  }
  return out;
}

const MiB = 1024 * 1024;
export const backupLine = (b: BackupJob) => {
  const pct = b.progress.percent ?? 0;
  const filled = Math.round((pct / 100) * 30);
  return `${b.domain.name} backup ${b.mode} [${'#'.repeat(filled)}${'.'.repeat(30 - filled)}] ${pct.toFixed(0).padStart(3)}% ${(Number(b.progress.processed) / MiB).toFixed(0)}/${(Number(b.progress.total) / MiB).toFixed(0)} MiB ${b.state}`;
};
const summary = (b: BackupJob) =>
  [
    `backup ${b.jobId} of ${b.domain.name}: ${b.state} (${b.mode}${b.since ? ` since ${b.since}` : ''}${b.checkpoint ? `, checkpoint ${b.checkpoint}` : ''})`,
    ...b.disks.map((d) => `  ${d.disk}: ${d.file} (${d.format}${d.sha256 ? `, sha256 ${d.sha256}` : ''})`),
    ...(b.manifest ? [`  manifest: ${b.manifest}`] : []),
    ...(b.error ? [`  error: ${b.error.message}`] : []),
    ...(b.partialFiles?.length ? [`  partial files left: ${b.partialFiles.join(', ')}`] : []),
  ].join('\n');

/** Words checked now (a usage error starts nothing); the returned run connects. */
export function backup(v: Values, pos: string[]): (client: AgentClient) => Promise<number> {
  if (pos.length !== 1) throw new UsageError('backup needs DOMAIN (and --dir PATH or --pool NAME)');
  if (!v.dir === !v.pool) throw new UsageError('backup needs exactly one of --dir PATH and --pool NAME');
  if (v.format !== undefined && v.format !== 'raw' && v.format !== 'qcow2') throw new UsageError('--format is raw or qcow2');
  if (v.quiesce !== undefined && !['required', 'try', 'none'].includes(v.quiesce))
    throw new UsageError(`--quiesce must be required, try or none, got '${v.quiesce}'`);
  if (v.checksum !== undefined && v.checksum !== 'sha256' && v.checksum !== 'none')
    throw new UsageError(`--checksum must be sha256 or none, got '${v.checksum}'`);
  const disks = v.disks?.split(',').map((d) => d.trim());
  if (disks?.some((d) => d === '')) throw new UsageError('--disks is a comma-separated list of disk targets (vda,vdb)');
  const params: BackupParams = {
    domain: pos[0]!,
    target: v.dir ? { dir: v.dir } : { pool: v.pool! },
    ...(disks ? { disks } : {}),
    ...(v.format ? { format: v.format as 'raw' | 'qcow2' } : {}),
    ...(v.incremental !== undefined ? { incremental: v.incremental === '' ? true : v.incremental } : {}),
    ...(v.checkpoint !== undefined ? { checkpoint: v.checkpoint === '' ? true : v.checkpoint } : {}),
    ...(v.quiesce ? { quiesce: v.quiesce as NonNullable<BackupParams['quiesce']> } : {}),
    ...(v.checksum ? { checksum: v.checksum as NonNullable<BackupParams['checksum']> } : {}),
    ...(v.timeout !== undefined ? { timeout: num(v.timeout, 'timeout')! } : {}),
    ...(v['job-id'] ? { jobId: v['job-id'] } : {}),
  };
  return async (client) => {
    const json = jsonLines(v);
    const say = (b: BackupJob, event: string) => process.stdout.write(json ? JSON.stringify({ event, job: b }) + '\n' : `${summary(b)}\n`);
    let b = (await client.call('backup', params)).job;
    if (!v.wait) return (say(b, 'backup'), EXIT.ok);
    const bar = v.verbose && !json;
    let last = '';
    while (b.state === 'running') {
      if (bar) process.stdout.write(`\r${backupLine(b)}\x1b[K`);
      else if (json && v.verbose && `${b.progress.processed}/${b.progress.total}` !== last) {
        last = `${b.progress.processed}/${b.progress.total}`;
        process.stdout.write(JSON.stringify({ event: 'progress', job: b }) + '\n');
      }
      await sleep(1000);
      const { job } = await client.call('jobInfo', { jobId: b.jobId });
      if (!isBackupJob(job)) throw new Error(`job ${b.jobId} is not a backup any more`);
      b = job;
    }
    if (bar) process.stdout.write(`\r${backupLine(b)}\x1b[K\n`);
    say(b, 'ended');
    return b.state === 'completed' ? EXIT.ok : EXIT.agentError;
  };
}

export function checkpoints(v: Values, pos: string[]): (client: AgentClient) => Promise<number> {
  if (pos.length !== 1) throw new UsageError('checkpoints needs DOMAIN');
  const keep = num(v.keep, 'keep');
  if (keep !== undefined && !Number.isInteger(keep)) throw new UsageError('--keep is a whole number');
  return async (client) => {
    const r =
      keep === undefined
        ? await client.call('checkpoints', { domain: pos[0]! })
        : await client.call('deleteCheckpoints', { domain: pos[0]!, keep });
    process.stdout.write(JSON.stringify(r, null, jsonLines(v) ? 0 : 2) + '\n');
    return EXIT.ok;
  };
}
