// Backup speed, side by side in one run on one running guest's disk (qcow2, filled with data):
// a full push-mode backup through the agent (`backup`, wait: true, over a WebSocket client),
// the same backup with `virsh backup-begin` (its end read from `virsh event job-completed`,
// not polled), and `cp` + `sync DEST` of the disk's file (the storage limit); then incrementals
// after 5 % of the disk was rewritten (through QEMU's monitor, as a guest would), each against
// the full backup with the checkpoint it is relative to. Each round runs the three full backups
// in a rotated order, each after dirty data is written back and the page cache dropped; the
// report gives medians and ratios, never a pass/fail on time.
import { execFile, spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent } from '../../harness/agent.js';
import type { BackupParams } from '../../src/generated/api.js';
import { isLocked } from '../../src/jobs/kinds/backup/held-open.js';
import { describeFile } from '../../src/jobs/kinds/backup/manifest.js';
import { BENCH_AGENT_CONFIG, fill, settle } from './common.js';
import { MiB, Scope, median, now, round, type BenchContext, type SuiteResult } from '../lib.js';

const run = promisify(execFile);

const loads = () =>
  loadavg()
    .map((x) => round(x, 1))
    .join(', ');

/**
 * libvirt's job-completed events of one domain, as `virsh event --loop` prints them (line-buffered
 * through stdbuf), each stamped when it arrives: the end of a backup as libvirt tells it, for the
 * agent's and virsh's runs alike, with no polling delay.
 */
class JobCompleted {
  private times: number[] = [];
  private waiters = new Set<() => void>();
  private out = '';
  private constructor(private readonly proc: ReturnType<typeof spawn>) {
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (chunk: string) => {
      const t = now();
      this.out += chunk;
      let nl: number;
      while ((nl = this.out.indexOf('\n')) >= 0) {
        const line = this.out.slice(0, nl);
        this.out = this.out.slice(nl + 1);
        if (/event 'job-completed'/.test(line)) this.times.push(t);
      }
      for (const w of [...this.waiters]) w();
    });
  }

  static async watch(scope: Scope, domain: string): Promise<JobCompleted> {
    const proc = spawn(
      'stdbuf',
      ['-oL', 'virsh', '-q', '-c', 'qemu:///system', 'event', '--domain', domain, '--event', 'job-completed', '--loop'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    scope.teardown(() => proc.kill());
    // virsh prints nothing once it listens: give it time to connect and register.
    await new Promise((r) => setTimeout(r, 1500));
    if (proc.exitCode !== null) throw new Error(`virsh event exited with ${proc.exitCode}`);
    return new JobCompleted(proc);
  }

  get count(): number {
    return this.times.length;
  }

  /** When the n-th event (0-based) arrived; waits up to `timeoutS` for it. */
  async at(n: number, timeoutS = 120): Promise<number> {
    const deadline = now() + timeoutS * 1000;
    while (this.times.length <= n) {
      if (now() > deadline || this.proc.exitCode !== null) throw new Error(`virsh event printed no job-completed event #${n + 1}`);
      await new Promise<void>((r) => {
        const done = () => {
          this.waiters.delete(done);
          clearTimeout(timer);
          r();
        };
        const timer = setTimeout(done, 1000);
        this.waiters.add(done);
      });
    }
    return this.times[n]!;
  }
}

type Way = 'agent' | 'agentNoSum' | 'virsh' | 'virshClosed' | 'cp';
/** The runs of a round (virsh's one run gives both of its times). */
const RUNS = ['agent', 'agentNoSum', 'virsh', 'cp'] as const;
const WAYS: Way[] = ['agent', 'agentNoSum', 'virsh', 'virshClosed', 'cp'];
const LABEL: Record<Way, string> = {
  agent: 'agent `backup` (wait: true, WebSocket client; checksum sha256, the default: every file read back)',
  agentNoSum: 'agent `backup` with `checksum: "none"` (no read-back)',
  virsh: '`virsh backup-begin` to its job-completed event (QEMU still holds the file open)',
  virshClosed: '`virsh backup-begin` to its file closed by QEMU (complete: no lock left on its inode)',
  cp: '`cp` + `sync DEST` of the disk file (storage limit)',
};

/** When QEMU lets go of `file`: polls its locks (held-open.ts) every 5 ms after seeing it locked. */
async function closedAt(file: string, timeoutS = 600): Promise<number> {
  const deadline = now() + timeoutS * 1000;
  let seen = false;
  for (;;) {
    const locked = await isLocked(file);
    if (locked) seen = true;
    else if (seen && locked === false) return now();
    if (now() > deadline) throw new Error(`${file}: ${seen ? 'still open' : 'never seen open'} after ${timeoutS} s`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function backup(ctx: BenchContext): Promise<SuiteResult> {
  const scope = new Scope();
  try {
    const sizeMiB = ctx.quick ? 256 : 2048;
    const rounds = ctx.quick ? 2 : 3;
    const incRounds = ctx.quick ? 1 : 3;
    const loadBefore = loads();
    const agent = await serveAgent(scope, { config: BENCH_AGENT_CONFIG });
    const client = await agent.connect();
    // qcow2: checkpoints (for the incrementals) are persistent bitmaps in the image.
    const dom = await hv.createDomain(scope, { disks: [{ format: 'qcow2', sizeMiB }] });
    // Runs before the domain's teardown: the checkpoints the incrementals made are deleted.
    scope.teardown(async () => {
      await client.call('deleteCheckpoints', { domain: dom.name, keep: 0 });
    });
    const events = await JobCompleted.watch(scope, dom.name);
    ctx.log(`backup: filling a ${sizeMiB} MiB qcow2 disk of a running guest`);
    await fill(dom, 'vda', sizeMiB, 0x5b);
    const src = dom.disks[0]!.path;
    const out = hv.scratchDir('bench-backup-');
    scope.teardown(() => rmSync(out, { recursive: true, force: true }));

    // The agent's job.changed notification of a backup running: libvirt's backupBegin answered.
    let startedAt = 0;
    client.on('job.changed', (j: { kind?: string; state: string; domain: { name: string } }) => {
      if (j.kind === 'backup' && j.state === 'running' && j.domain.name === dom.name && !startedAt) startedAt = now();
    });
    await client.call('subscribe', { domain: dom.name });

    /** One backup through the agent; its time to started, to libvirt's job-completed event, to the answer. */
    const agentBackup = async (params: Pick<BackupParams, 'format' | 'checkpoint' | 'incremental' | 'checksum'>, dir: string) => {
      const n = events.count;
      startedAt = 0;
      const t0 = now();
      // The result key is `job` (BackupJob) since the fold into the job core.
      const { job } = await client.call('backup', { domain: dom.name, target: { dir }, wait: true, ...params });
      const answered = now();
      if (job.state !== 'completed') throw new Error(`agent backup ${job.jobId} ended ${job.state}: ${job.error?.message ?? ''}`);
      const ended = await events.at(n);
      return { seconds: (answered - t0) / 1000, toStarted: startedAt ? (startedAt - t0) / 1000 : NaN, toEvent: (ended - t0) / 1000, job };
    };

    const times: Record<Way, number[]> = { agent: [], agentNoSum: [], virsh: [], virshClosed: [], cp: [] };
    const agentToStarted: number[] = [];
    const agentToEvent: number[] = [];
    const virshBegin: number[] = [];
    const virshDescribe: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // Rotate who goes first: the first reader of the disk file after a pause reads it coldest.
      const order = RUNS.map((_, i) => RUNS[(i + r) % RUNS.length]!);
      for (const w of order) {
        const dir = join(out, `${w}-${r}`);
        await run('mkdir', ['-p', dir]);
        await settle();
        if (w === 'agent') {
          const a = await agentBackup({ format: 'qcow2' }, dir);
          times.agent.push(a.seconds);
          agentToStarted.push(a.toStarted);
          agentToEvent.push(a.toEvent);
        } else if (w === 'agentNoSum') {
          times.agentNoSum.push((await agentBackup({ format: 'qcow2', checksum: 'none' }, dir)).seconds);
        } else if (w === 'virsh') {
          const file = join(dir, 'vda.qcow2');
          const xml = join(out, `virsh-${r}.xml`);
          writeFileSync(
            xml,
            `<domainbackup mode='push'><disks><disk name='vda' backup='yes' type='file'><target file='${file}'/><driver type='qcow2'/></disk></disks></domainbackup>`,
          );
          const n = events.count;
          const t0 = now();
          await run('virsh', ['-q', '-c', 'qemu:///system', 'backup-begin', dom.name, '--backupxml', xml]);
          virshBegin.push((now() - t0) / 1000);
          // libvirt attached the target before backup-begin answered: watched from now on.
          const closed = closedAt(file);
          times.virsh.push(((await events.at(n)) - t0) / 1000);
          times.virshClosed.push(((await closed) - t0) / 1000);
          const info = await hv.virsh('domjobinfo', dom.name, '--completed');
          if (!/Completed/.test(info)) throw new Error(`virsh backup-begin did not complete: ${info}`);
          // Untimed above: what describing the file costs right after, the agent's way (a query
          // that waits for libvirt's detach of the target, then the SHA-256 once no lock is
          // left): the agent's answer includes it.
          const s0 = now();
          await hv.virsh('domblkinfo', dom.name, 'vda');
          await describeFile(file, 'qcow2', { detached: true });
          virshDescribe.push((now() - s0) / 1000);
        } else {
          const dest = join(dir, 'vda.qcow2');
          const t0 = now();
          await run('cp', ['--sparse=never', src, dest]);
          await run('sync', [dest]);
          times.cp.push((now() - t0) / 1000);
        }
        // The next run writes its own file: this one's space and cache go.
        rmSync(dir, { recursive: true, force: true });
      }
      ctx.log(`backup round ${r + 1}/${rounds} (${order.join(' → ')}): ${WAYS.map((w) => `${w} ${times[w][r]!.toFixed(2)} s`).join(', ')}`);
    }

    // Incrementals: a full with a checkpoint, 5 % of the disk rewritten in spread 16 MiB pieces
    // (through QEMU's monitor, flushed), then an incremental since that checkpoint.
    const changedMiB = Math.max(1, Math.round(sizeMiB * 0.05));
    const pieces = Math.ceil(changedMiB / 16);
    const inc = {
      full: [] as number[],
      incremental: [] as number[],
      ratio: [] as number[],
      incFileMiB: [] as number[],
      incPhases: [] as number[][],
    };
    for (let r = 0; r < incRounds; r++) {
      const dir = join(out, `inc-${r}`);
      await run('mkdir', ['-p', dir]);
      await settle();
      const full = await agentBackup({ checkpoint: true }, dir);
      for (let i = 0; i < pieces; i++)
        await hv.guestWrite(dom, 'vda', {
          pattern: 0x60 + r,
          offset: i * Math.floor(sizeMiB / pieces) * MiB,
          length: Math.min(16, changedMiB - i * 16) * MiB,
        });
      await settle();
      const incr = await agentBackup({ incremental: true }, dir);
      if (incr.job.mode !== 'incremental' || incr.job.since !== full.job.checkpoint)
        throw new Error(`expected an incremental since ${full.job.checkpoint}, got ${incr.job.mode} since ${incr.job.since}`);
      inc.full.push(full.seconds);
      inc.incremental.push(incr.seconds);
      inc.ratio.push(incr.seconds / full.seconds);
      inc.incFileMiB.push(round(Number(incr.job.disks[0]!.size ?? 0) / MiB, 1));
      inc.incPhases.push([incr.toStarted, incr.toEvent, incr.seconds].map((x) => round(x, 3)));
      rmSync(dir, { recursive: true, force: true });
      ctx.log(`backup incremental ${r + 1}/${incRounds}: full ${full.seconds.toFixed(2)} s, incremental ${incr.seconds.toFixed(2)} s`);
    }

    const m = Object.fromEntries(WAYS.map((w) => [w, median(times[w])])) as Record<Way, number>;
    const mibps = (s: number) => `${round(sizeMiB / s, 0)} MiB/s`;
    const spread = (xs: number[]) => `${round(Math.min(...xs))}–${round(Math.max(...xs))} s`;
    const ratioAV = m.agent / m.virsh;
    const ratioLike = m.agentNoSum / m.virshClosed;
    const incRatio = median(inc.ratio);
    const rows: SuiteResult['rows'] = [
      ...WAYS.map((w) => ({
        metric: `full backup of ${sizeMiB} MiB, median of ${rounds}: ${LABEL[w]}`,
        value: `${round(m[w])} s (${mibps(m[w])}; ${spread(times[w])})`,
      })),
      {
        metric: 'ratio agent (checksum sha256, the default) / virsh to its job-completed event',
        value: `${round(ratioAV, 3)}`,
        target: '≤ 1.02',
        met: ratioAV <= 1.02,
      },
      {
        metric: 'ratio agent (checksum none) / virsh to its file closed: the same work, both ending with the file complete',
        value: `${round(ratioLike, 3)}`,
        target: '≤ 1.02',
        met: ratioLike <= 1.02,
      },
      { metric: 'ratio agent (checksum none) / virsh to its job-completed event', value: `${round(m.agentNoSum / m.virsh, 3)}` },
      { metric: 'ratio agent (checksum sha256) / virsh to its file closed', value: `${round(m.agent / m.virshClosed, 3)}` },
      { metric: 'ratio agent / cp', value: `${round(m.agent / m.cp, 3)}` },
      {
        metric:
          'agent phases, median: call → backup started (plan, journal, backupBegin answered) / → job-completed event (QEMU) / → answer (targets detached, SHA-256, manifest)',
        value: `${round(median(agentToStarted))} s / +${round(median(agentToEvent.map((e, i) => e - agentToStarted[i]!)))} s / +${round(median(times.agent.map((s, i) => s - agentToEvent[i]!)))} s`,
      },
      { metric: '`virsh backup-begin` command itself (start only), median', value: `${round(median(virshBegin) * 1000, 0)} ms` },
      {
        metric:
          "the agent's file description (wait for libvirt's detach, SHA-256) run on virsh's backup file after its end, in the bench process, median; ratio agent / (virsh + that)",
        value: `${round(median(virshDescribe))} s; ${round(m.agent / median(times.virsh.map((v, i) => v + virshDescribe[i]!)), 3)}`,
      },
      {
        metric: `incremental after ${changedMiB} MiB (5 %) rewritten, median of ${incRounds}: incremental / full with its checkpoint`,
        value: `${round(median(inc.incremental))} s / ${round(median(inc.full))} s; ratio ${round(incRatio, 3)} (file ${median(inc.incFileMiB)} MiB)`,
        target: '≤ 0.15',
        met: incRatio <= 0.15,
      },
      {
        metric: 'incremental phases, median: call → started / → job-completed event / → answer',
        value: [0, 1, 2].map((k) => `${round(median(inc.incPhases.map((p) => p[k]!)))} s`).join(' / '),
      },
    ];
    const loadAfter = loads();
    return {
      name: 'Backup speed, full and incremental (agent, virsh backup-begin, cp)',
      rows,
      data: {
        sizeMiB,
        rounds,
        seconds: times,
        medians: m,
        agentToStartedSeconds: agentToStarted,
        agentToJobCompletedSeconds: agentToEvent,
        virshBeginSeconds: virshBegin,
        virshDescribeSeconds: virshDescribe,
        ratios: {
          agentVirsh: ratioAV,
          agentNoSumVirshClosed: ratioLike,
          agentNoSumVirsh: m.agentNoSum / m.virsh,
          agentVirshClosed: m.agent / m.virshClosed,
          agentCp: m.agent / m.cp,
          incrementalFull: incRatio,
        },
        incremental: { changedMiB, ...inc },
        loadAverage: { before: loadBefore, after: loadAfter },
      },
      notes: [
        "All four full backups (agent, agent with checksum none, virsh, cp) read the same running guest's qcow2 disk; each round runs them in a rotated order, each after `sync` and `drop_caches`. Every backup is written as qcow2; cp copies the disk file and syncs the copy.",
        "virsh is timed from `virsh backup-begin` to the job-completed event that a `virsh event --loop` started beforehand prints (no polling delay), and, in the same run, to the moment QEMU closed the file (its OFD locks gone from /proc/locks, polled every 5 ms): libvirt sends job-completed before it detaches the target, and QEMU's close writes the image's last metadata and flushes it, so only then is virsh's file complete. The agent answers `wait: true` after that event, once it has verified the end from libvirt's completed-job stats and described the files into the manifest: libvirt sends job-completed before it detaches the targets from QEMU, so the agent first waits for that detach (a query that needs the domain job, then no lock left on each file), then reads each file's SHA-256.",
        "The incremental ratio divides each incremental by the full backup (with checkpoint: true) it is relative to, taken in the same round; the median of the rounds' ratios is reported.",
        `Load average (1, 5, 15 min) before: ${loadBefore}; after: ${loadAfter}. On a machine shared with other work the times swing with the others' I/O; the ratios of the same round's runs are the point.`,
      ],
    };
  } finally {
    await scope.close();
  }
}
