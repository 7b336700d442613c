// The snapshot-chain verbs, shaped like virsh: snapshot (snapshot-create-as --disk-only
// --diskspec), commit (blockcommit --active --pivot|--keep-overlay --wait --verbose) and pull
// (blockpull --wait --verbose). Words are checked before anything connects.
import type { AgentClient } from '../client/index.js';
import type { BlockCommitParams, BlockPullParams, Job, SnapshotDisksParams } from '../generated/api.js';
import { bandwidthOption, EXIT, num, UsageError, type Values } from './args.js';
import { jsonLines, reporter } from './output.js';
import { awaitJob } from './await-job.js';

/** virsh's --diskspec: `DISK,file=PATH` (also `snapshot=external` and `driver=qcow2`, virsh's words). */
function diskspec(spec: string): SnapshotDisksParams['disks'][number] {
  const [disk, ...fields] = spec.split(',');
  let path: string | undefined;
  for (const f of fields) {
    const m = /^(\w+)=(.*)$/.exec(f);
    if (!m) throw new UsageError(`--diskspec '${spec}': '${f}' is not KEY=VALUE`);
    const [, key, value] = m as unknown as [string, string, string];
    if (key === 'file') path = value;
    else if (key === 'snapshot' && value === 'external') continue;
    else if (key === 'driver' && value === 'qcow2') continue;
    else throw new UsageError(`--diskspec '${spec}': only file=PATH (snapshot=external, driver=qcow2) is supported, not '${f}'`);
  }
  if (!disk || !path) throw new UsageError(`--diskspec '${spec}' must be DISK,file=PATH`);
  return { disk, overlay: { path } };
}

/** snapshot DOMAIN --diskspec DISK,file=PATH...: only the listed disks get an overlay. */
export function snapshot(v: Values, pos: string[]): (client: AgentClient) => Promise<number> {
  if (pos.length !== 1) throw new UsageError('snapshot needs DOMAIN (and --diskspec DISK,file=PATH for each disk)');
  if (!v.diskspec?.length) throw new UsageError('snapshot needs at least one --diskspec DISK,file=PATH');
  if (v.quiesce !== undefined && !['required', 'try', 'none'].includes(v.quiesce))
    throw new UsageError(`--quiesce must be required, try or none, got '${v.quiesce}'`);
  const params: SnapshotDisksParams = {
    domain: pos[0]!,
    disks: v.diskspec.map(diskspec),
    ...(v.quiesce ? { quiesce: v.quiesce as 'required' | 'try' | 'none' } : {}),
  };
  return async (client) => {
    const out = reporter(jsonLines(v));
    const r = await client.call('snapshotDisks', params);
    const disks = r.disks.map((d) => `${d.disk} on ${d.overlay.path} (above ${d.backing})`).join(', ');
    out.say(`snapshot of ${r.domain.name}${r.quiesced ? ' (quiesced)' : ''}: ${disks}`, { event: 'snapshot', ...r });
    return EXIT.ok;
  };
}

const common = (v: Values) => ({
  ...bandwidthOption(v),
  ...(v.timeout !== undefined ? { timeout: num(v.timeout, 'timeout')! } : {}),
  ...(v['job-id'] ? { jobId: v['job-id'] } : {}),
});

/** commit DOMAIN DISK like virsh blockcommit; without --top the active layer is committed. */
export function commit(v: Values, pos: string[]): (client: AgentClient) => Promise<number> {
  if (pos.length !== 2) throw new UsageError('commit needs DOMAIN DISK');
  if (v.pivot && v['keep-overlay']) throw new UsageError('--pivot and --keep-overlay exclude each other');
  if (v.active && v.top !== undefined) throw new UsageError('--active commits the active layer: not together with --top');
  if (v.shallow && v.base !== undefined) throw new UsageError('--shallow and --base exclude each other');
  const active = v.top === undefined;
  if (!active && (v.pivot || v['keep-overlay']))
    throw new UsageError('--pivot and --keep-overlay apply to an active commit only (--active, or no --top)');
  const whenReady = v.pivot ? 'pivot' : v['keep-overlay'] ? 'finish' : 'none';
  // virsh: --wait on an active commit waits for ready (then leaves it running); below the top, for the end.
  const wait = whenReady !== 'none' || (v.wait && !active) ? 'done' : v.wait ? 'ready' : 'none';
  const params: BlockCommitParams = {
    domain: pos[0]!,
    disk: pos[1]!,
    ...(v.top !== undefined ? { top: v.top } : {}),
    ...(v.base !== undefined ? { base: v.base } : {}),
    ...(v.shallow ? { shallow: true } : {}),
    whenReady,
    wait: 'none',
    ...common(v),
  };
  return (client) => followChain(client, () => client.call('blockCommit', params), wait, v);
}

/** pull DOMAIN DISK like virsh blockpull; without --base the whole chain is pulled. */
export function pull(v: Values, pos: string[]): (client: AgentClient) => Promise<number> {
  if (pos.length !== 2) throw new UsageError('pull needs DOMAIN DISK');
  if (v.pivot || v['keep-overlay'] || v.top !== undefined || v.active || v.shallow)
    throw new UsageError('pull takes --base, not --top, --active, --shallow, --pivot or --keep-overlay');
  const params: BlockPullParams = {
    domain: pos[0]!,
    disk: pos[1]!,
    ...(v.base !== undefined ? { base: v.base } : {}),
    wait: 'none',
    ...common(v),
  };
  return (client) => followChain(client, () => client.call('blockPull', params), v.wait ? 'done' : 'none', v);
}

function ended(final: Job): string {
  const where = `${final.domain.name}/${final.disk}`;
  const top = final.layers?.top?.path ?? 'the top layer';
  switch (final.state) {
    case 'pivoted':
      return `pivoted: ${where} now runs on ${final.destination.path} (${top} merged into it)`;
    case 'finished':
      return `finished: ${final.destination.path} holds the merged data; ${where} stays on ${top}`;
    case 'completed':
      return final.kind === 'pull'
        ? `completed: ${where} pulled into ${final.destination.path}${final.layers?.base?.path ? ` down to ${final.layers.base.path}` : ''}`
        : `completed: ${top} merged into ${final.destination.path}`;
    case 'ready':
      return `ready: ${where} in sync with ${final.destination.path}; pivot, finish or abort it (job ${final.jobId})`;
    default:
      return `${final.state}: job ${final.jobId}`;
  }
}

/** Starts a commit or pull and follows it: progress (a bar with --verbose, JSON lines always), then the outcome. */
async function followChain(
  client: AgentClient,
  start: () => Promise<{ job: Job; changed: boolean }>,
  wait: 'none' | 'ready' | 'done',
  v: Values,
): Promise<number> {
  const json = jsonLines(v);
  const out = reporter(json);
  const { job } = await start();
  if (wait === 'none') {
    out.say(`${job.kind} started: job ${job.jobId} (${job.state})`, { event: 'started', job });
    return EXIT.ok;
  }
  if (json || v.verbose) {
    client.on('job.changed', (j: Job) => {
      if (j.jobId === job.jobId) out.job(j);
    });
    await client.call('subscribe', { jobIds: [job.jobId] });
  }
  // Ctrl-C leaves the job as it is (a commit or pull loses nothing by going on), and says so.
  const r = await awaitJob(client, out, job, wait, { cancelInPhase1: false });
  if ('exit' in r) return r.exit;
  const { final } = r;
  out.say(ended(final), { event: final.state, job: final });
  return EXIT.ok;
}
