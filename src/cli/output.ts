// What the verbs print: a live progress bar for a person at a terminal, JSON lines otherwise.
import type { Group, Job } from '../generated/api.js';
import type { Values } from './args.js';

const MiB = 1024 * 1024;

function progressLine(job: Job): string {
  const cur = Number(job.progress.cur);
  const end = Number(job.progress.end);
  const pct = job.progress.percent ?? 0;
  const filled = Math.round((pct / 100) * 30);
  const rate = job.progress.rate === null ? '' : ` ${(job.progress.rate / MiB).toFixed(1)} MiB/s`;
  const eta = job.progress.eta === null ? '' : ` ETA ${job.progress.eta}s`;
  // A commit or pull names its kind; a copy's line stays as it was.
  const kind = job.kind && job.kind !== 'copy' ? ` ${job.kind}` : '';
  return `${job.domain.name}/${job.disk}${kind} [${'#'.repeat(filled)}${'.'.repeat(30 - filled)}] ${pct.toFixed(0).padStart(3)}% ${(cur / MiB).toFixed(0)}/${(end / MiB).toFixed(0)} MiB${rate}${eta} ${job.state}${convergenceNote(job)}`;
}

/** The convergence verdict while copying, when there is one worth a look (docs/jobs.md). */
export function convergenceNote(job: Job): string {
  const c = job.convergence;
  if (!c || job.state !== 'copying') return '';
  const dirty = c.dirtyRateBytesPerSecond ? `, guest writes ${(c.dirtyRateBytesPerSecond / MiB).toFixed(1)} MiB/s` : '';
  if (c.state === 'converging')
    return c.etaSeconds !== null && c.dirtyRateBytesPerSecond ? `, converging (ready in ~${c.etaSeconds}s${dirty})` : '';
  if (c.state === 'notConverging') return `, NOT converging${dirty}`;
  if (c.state === 'stalled') return ', stalled';
  return '';
}

/** The jobs' progress summed (as a group's progress): percent null while any end is unknown. */
function overall(jobs: Job[]): { cur: number; end: number; percent: number | null } {
  const cur = jobs.reduce((s, j) => s + Number(j.progress.cur), 0);
  const end = jobs.reduce((s, j) => s + Number(j.progress.end), 0);
  const known = jobs.length > 0 && jobs.every((j) => Number(j.progress.end) > 0);
  return { cur, end, percent: known ? Math.min(100, Math.round((cur / end) * 10000) / 100) : null };
}

/** JSON lines (one document per line) with --json or whenever stdout is not a terminal. */
export const jsonLines = (v: Values): boolean => !!v.json || !process.stdout.isTTY;

/** Shows job changes: a live bar on a terminal, JSON lines otherwise. */
export function reporter(json: boolean) {
  const tty = !json;
  let open = false;
  /** The convergence state of the last advice shown per job: advice is printed on its own line
   *  when the job turns notConverging or stalled, not at every sample (its figures move). */
  const advised = new Map<string, string | null>();
  return {
    job(job: Job) {
      if (!tty) return void process.stdout.write(JSON.stringify({ event: 'job.changed', job }) + '\n');
      const advice = job.convergence?.advice ?? null;
      const key = advice ? job.convergence!.state : null;
      if (advice && key !== advised.get(job.jobId)) this.say(`${job.domain.name}/${job.disk}: ${advice}`, null);
      advised.set(job.jobId, key);
      process.stdout.write(`\r${progressLine(job)}\x1b[K`);
      open = true;
    },
    /** Several jobs at once (a group): one line on a terminal. */
    jobs(jobs: Job[]) {
      const all = overall(jobs);
      if (!tty) return void process.stdout.write(JSON.stringify({ event: 'jobs.changed', jobs, progress: all }) + '\n');
      process.stdout.write(
        `\r${jobs.map((j) => `${j.disk} ${(j.progress.percent ?? 0).toFixed(0).padStart(3)}% ${j.state}`).join(' | ')}` +
          ` | all ${(all.percent ?? 0).toFixed(0).padStart(3)}% ${(all.cur / MiB).toFixed(0)}/${(all.end / MiB).toFixed(0)} MiB\x1b[K`,
      );
      open = true;
    },
    say(msg: string, data: unknown) {
      if (!tty) return void process.stdout.write(JSON.stringify(data) + '\n');
      if (open) process.stdout.write('\n');
      open = false;
      process.stdout.write(msg + '\n');
    },
  };
}

export function groupSummary(g: Group): string {
  const sw = g.lastSwitch;
  const detail = sw
    ? `guest paused ${sw.pausedMs} ms to ${sw.operation}: ${sw.disks.map((d) => `${d.disk} ${d.outcome}`).join(', ')}`
    : g.jobs.map((j) => `${j.disk} ${j.state}`).join(', ');
  return `group ${g.groupId}: ${g.state} (${detail})${g.error ? `; ${g.error.message}` : ''}`;
}

/** The reader went away (a closed pipe, a caller that exited): nobody is left to answer. */
export function exitOnClosedStdout(): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
}
