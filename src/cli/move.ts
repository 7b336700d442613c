// The move verb: every disk of a running domain (or the ones --disks names) to a directory or a
// storage pool in one call (blockCopyGroup with target), each disk's progress and the overall.
import { AgentClient, RpcError } from '../client/index.js';
import type { AnyJob, BlockCopyGroupParams, BlockCopyGroupResult, Group, Job } from '../generated/api.js';
import { isBlockJob } from '../job-types.js';
import { bandwidthOption, EXIT, num, UsageError, type Values } from './args.js';
import { groupSummary, jsonLines, reporter } from './output.js';
import { cleanupSummary } from './copy.js';

/** Words checked now (a usage error starts nothing); the returned run connects. */
export function move(v: Values, pos: string[]): (client: AgentClient) => Promise<number> {
  if (pos.length !== 1) throw new UsageError('move needs DOMAIN (and --dir PATH or --pool NAME)');
  if (!v.dir === !v.pool) throw new UsageError('move needs exactly one of --dir PATH and --pool NAME');
  if (v.pivot && v.finish) throw new UsageError('--pivot and --finish exclude each other');
  if (v['remove-source'] && !v.pivot) throw new UsageError('--remove-source applies with --pivot');
  if (v['dry-run'] && (v.pivot || v.finish || v.wait)) throw new UsageError('--dry-run starts nothing: no --wait, --pivot or --finish');
  if (v.format !== undefined && v.format !== 'raw' && v.format !== 'qcow2') throw new UsageError('--format is raw or qcow2');
  const disks = v.disks?.split(',').map((d) => d.trim());
  if (disks?.some((d) => d === '')) throw new UsageError('--disks is a comma-separated list of disk targets (vda,vdb)');
  const whenReady = v.pivot ? 'pivot' : v.finish ? 'finish' : 'none';
  const params: BlockCopyGroupParams = {
    domain: pos[0]!,
    ...(disks ? { disks } : {}),
    target: {
      ...(v.dir ? { dir: v.dir } : { pool: v.pool! }),
      ...(v.format ? { format: v.format as 'raw' | 'qcow2' } : {}),
    },
    ...(v['dry-run'] ? { dryRun: true } : {}),
    whenReady,
    wait: whenReady !== 'none' ? 'done' : v.wait ? 'ready' : 'none',
    ...(v.timeout !== undefined ? { timeout: num(v.timeout, 'timeout')! } : {}),
    ...(v['max-pause'] !== undefined ? { maxPause: num(v['max-pause'], 'max-pause')! } : {}),
    ...(v['group-id'] ? { groupId: v['group-id'] } : {}),
    ...(v['remove-source'] ? { removeSource: true } : {}),
    ...bandwidthOption(v),
  };
  return (client) => followMove(client, params, v);
}

function planLines(r: BlockCopyGroupResult): string {
  const lines = [
    ...(r.plan ?? []).map((p) => `  ${p.disk}: ${p.source} -> ${p.destination} (${p.format})`),
    ...(r.alreadyThere ?? []).map((a) => `  ${a.disk}: already there (${a.path})`),
  ];
  return lines.join('\n');
}

async function followMove(client: AgentClient, params: BlockCopyGroupParams, v: Values): Promise<number> {
  const { domain } = params;
  const out = reporter(jsonLines(v));
  const shown = new Map<string, Job>();
  client.on('job.changed', (j: AnyJob) => {
    if (!isBlockJob(j) || !j.groupId || (j.domain.name !== domain && j.domain.uuid !== domain)) return;
    shown.set(j.disk, j);
    out.jobs([...shown.values()]);
  });
  if (params.wait !== 'none') await client.call('subscribe', { domain });
  const r = await client.call('blockCopyGroup', params).catch((e: unknown) => {
    const g = e instanceof RpcError ? (e.data as { group?: Group } | undefined)?.group : undefined;
    if (g) out.say(groupSummary(g), { event: 'group', group: g });
    throw e;
  });
  const where = params.target!.dir ?? `pool ${params.target!.pool}${r.pool ? ` (${r.pool.path})` : ''}`;
  if (params.dryRun) {
    out.say(`move of ${domain} to ${where}: ${r.changed ? 'would copy' : 'nothing to do'}\n${planLines(r)}`, { event: 'plan', ...r });
  } else if (!r.group) {
    out.say(`move of ${domain} to ${where}: nothing to do, every disk already is there\n${planLines(r)}`, { event: 'unchanged', ...r });
  } else {
    const cleanup = r.group.jobs.map((j) => cleanupSummary(j)).filter((c) => c !== '');
    const cleaned = cleanup.length ? `\nold files${cleanup.join('')}` : '';
    out.say(
      `move of ${domain} to ${where}${r.changed ? '' : ' (already under way)'}:\n${planLines(r)}\n${groupSummary(r.group)}${cleaned}`,
      {
        event: 'group',
        ...r,
      },
    );
  }
  return EXIT.ok;
}
