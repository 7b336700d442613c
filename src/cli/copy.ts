// The verbs that start copies and follow them: copy (like virsh blockcopy --wait --pivot) and
// copy-group; Ctrl-C during phase 1 cancels the copy, later it leaves it running.
import { AgentClient, RpcError } from '../client/index.js';
import type { AnyJob, BlockCopyGroupParams, BlockCopyParams, Group, Job } from '../generated/api.js';
import { isBlockJob } from '../job-types.js';
import { bandwidthOption, EXIT, num, UsageError, type Values } from './args.js';
import { groupSummary, jsonLines, reporter } from './output.js';
import { awaitJob } from './await-job.js';

/** The copy verb: its words are checked now (a usage error starts nothing), the returned run connects. */
export function copy(v: Values, pos: string[]): (client: AgentClient) => Promise<number> {
  if (pos.length !== 3) throw new UsageError('copy needs DOMAIN DISK DEST');
  if (v.pivot && v.finish) throw new UsageError('--pivot and --finish exclude each other');
  if (v['remove-source'] && v.finish) throw new UsageError('--remove-source applies to a pivot, not --finish');
  const [domain, disk, path] = pos as [string, string, string];
  const whenReady = v.pivot ? 'pivot' : v.finish ? 'finish' : 'none';
  const wait = whenReady !== 'none' ? 'done' : v.wait ? 'ready' : 'none';
  const params: BlockCopyParams = {
    domain,
    disk,
    destination: {
      path,
      ...(v.format ? { format: v.format as 'raw' | 'qcow2' } : {}),
      ...(v.type ? { type: v.type as 'file' | 'block' } : {}),
    },
    whenReady,
    wait: 'none',
    ...(v.shallow ? { shallow: true } : {}),
    ...(v['reuse-external'] ? { reuseExternal: true } : {}),
    ...(v['transient-job'] ? { transientJob: true } : {}),
    ...(v['synchronous-writes'] ? { synchronousWrites: true } : {}),
    ...bandwidthOption(v),
    ...(v['remove-source'] ? { removeSource: true } : {}),
    // The agent's schema checks the value (a power of two in range); here it is only a number.
    ...(v.granularity !== undefined ? { granularity: num(v.granularity, 'granularity') as BlockCopyParams['granularity'] } : {}),
    ...(v['buf-size'] !== undefined ? { bufSize: num(v['buf-size'], 'buf-size')! } : {}),
    ...(v.timeout !== undefined ? { timeout: num(v.timeout, 'timeout')! } : {}),
    ...(v['job-id'] ? { jobId: v['job-id'] } : {}),
  };
  return (client) => follow(client, params, wait, v);
}

async function follow(client: AgentClient, params: BlockCopyParams, wait: 'none' | 'ready' | 'done', v: Values): Promise<number> {
  const { domain, disk } = params;
  const out = reporter(jsonLines(v));
  const { job } = await client.call('blockCopy', params);
  if (wait === 'none') {
    out.say(`copy started: job ${job.jobId} (${job.state})`, { event: 'started', job });
    return EXIT.ok;
  }
  client.on('job.changed', (j: Job) => {
    if (j.jobId === job.jobId) out.job(j);
  });
  await client.call('subscribe', { jobIds: [job.jobId] });
  // Ctrl-C: a copy still in phase 1 is cancelled (nothing useful exists yet); later it stays.
  const r = await awaitJob(client, out, job, wait, { cancelInPhase1: true });
  if ('exit' in r) return r.exit;
  const { final } = r;
  const what =
    final.state === 'pivoted'
      ? `pivoted: ${domain}/${disk} now runs on ${final.destination.path}${cleanupSummary(final)}`
      : final.state === 'finished'
        ? `finished: ${final.destination.path} holds a consistent copy`
        : `ready: mirroring to ${final.destination.path} (job ${final.jobId})`;
  out.say(what, { event: final.state, job: final });
  return EXIT.ok;
}

/** What removeSource did, for the line a person reads (the JSON carries the job's cleanup). */
export function cleanupSummary(job: Job): string {
  const c = job.cleanup;
  if (!c) return '';
  const removed = c.removed.length ? `; removed ${c.removed.join(', ')}` : '';
  const kept = c.kept.length ? `; kept ${c.kept.map((k) => `${k.path} (${k.reason})`).join(', ')}` : '';
  return removed + kept;
}

/** The copy-group verb: words checked now, the returned run connects. */
export function copyGroup(v: Values, pos: string[]): (client: AgentClient) => Promise<number> {
  if (pos.length < 2) throw new UsageError('copy-group needs DOMAIN DISK=DEST...');
  if (v.pivot && v.finish) throw new UsageError('--pivot and --finish exclude each other');
  if (v['remove-source'] && v.finish) throw new UsageError('--remove-source applies to a pivot, not --finish');
  const [domain, ...pairs] = pos as [string, ...string[]];
  const disks = pairs.map((p) => {
    const m = /^([^=]+)=(.+)$/.exec(p);
    if (!m) throw new UsageError(`'${p}' is not DISK=DEST`);
    return {
      disk: m[1]!,
      destination: { path: m[2]!, ...(v.format ? { format: v.format as 'raw' | 'qcow2' } : {}) },
      ...bandwidthOption(v),
    };
  });
  const whenReady = v.pivot ? 'pivot' : v.finish ? 'finish' : 'none';
  const params: BlockCopyGroupParams = {
    domain,
    disks,
    whenReady,
    wait: whenReady !== 'none' ? 'done' : v.wait ? 'ready' : 'none',
    ...(v.timeout !== undefined ? { timeout: num(v.timeout, 'timeout')! } : {}),
    ...(v['max-pause'] !== undefined ? { maxPause: num(v['max-pause'], 'max-pause')! } : {}),
    ...(v['group-id'] ? { groupId: v['group-id'] } : {}),
    ...(v['remove-source'] ? { removeSource: true } : {}),
  };
  return (client) => followGroup(client, params, pairs, v);
}

async function followGroup(client: AgentClient, params: BlockCopyGroupParams, pairs: string[], v: Values): Promise<number> {
  const { domain } = params;
  const out = reporter(jsonLines(v));
  const shown = new Map<string, Job>();
  client.on('job.changed', (j: AnyJob) => {
    // A backup of the domain is not one of the group's copies.
    if (!isBlockJob(j)) return;
    const ours = pairs.some((p) => p.startsWith(`${j.disk}=`)) && (j.domain.name === domain || j.domain.uuid === domain) && !!j.groupId;
    if (!ours) return;
    shown.set(j.disk, j);
    out.jobs([...shown.values()]);
  });
  if (params.wait !== 'none') await client.call('subscribe', { domain });
  const { group } = await client.call('blockCopyGroup', params).catch((e: unknown) => {
    const g = e instanceof RpcError ? (e.data as { group?: Group } | undefined)?.group : undefined;
    if (g) out.say(groupSummary(g), { event: 'group', group: g });
    throw e;
  });
  out.say(groupSummary(group!), { event: 'group', group });
  return EXIT.ok;
}
