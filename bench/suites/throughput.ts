// Copy throughput on the user's paths, side by side in one run: the same idle guest's disk
// copied and pivoted through the agent by a WebSocket client, through the CLI a user types
// (`blockcopy-agent copy DOM vda DEST --wait --pivot` against the running agent), through
// `virsh blockcopy --wait --pivot`, and `cp` + sync of an image of the same size (the storage
// limit). Each round runs the four in a rotated order; each starts with dirty data written back
// and the page cache dropped, and each reads what it itself wrote the round before, so that
// every source has the same history (the host's cache of the virtual disk favours a file written
// seconds ago: a baseline reading the file the agent had just written was always "warm").
import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent } from '../../harness/agent.js';
import type { Job } from '../../src/generated/api.js';
import { BENCH_AGENT_CONFIG, fill } from './common.js';
import { Scope, median, now, round, type BenchContext, type SuiteResult } from '../lib.js';

const run = promisify(execFile);

/** Every timed run starts from the same state: dirty data written back, page cache dropped. */
async function settle(): Promise<void> {
  await run('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3\n');
}

type Way = 'agentWs' | 'agentCli' | 'virsh' | 'cp';
const WAYS: Way[] = ['agentWs', 'agentCli', 'virsh', 'cp'];
const LABEL: Record<Way, string> = {
  agentWs: 'agent, WebSocket client (`blockCopy` whenReady pivot, wait done)',
  agentCli: 'agent, CLI `blockcopy-agent copy DOM vda DEST --wait --pivot`',
  virsh: '`virsh blockcopy DOM vda DEST --wait --pivot`',
  cp: '`cp` + `sync DEST` of an image of the same size (storage limit)',
};

const loads = () =>
  loadavg()
    .map((x) => round(x, 1))
    .join(', ');

export async function throughput(ctx: BenchContext): Promise<SuiteResult> {
  const scope = new Scope();
  try {
    const sizeMiB = ctx.quick ? 256 : 2048;
    const rounds = ctx.quick ? 2 : 6;
    const loadBefore = loads();
    const agent = await serveAgent(scope, { config: BENCH_AGENT_CONFIG });
    const client = await agent.connect();
    const doms = {
      agentWs: await hv.createDomain(scope, { disks: [{ format: 'raw', sizeMiB }] }),
      agentCli: await hv.createDomain(scope, { disks: [{ format: 'raw', sizeMiB }] }),
      virsh: await hv.createDomain(scope, { disks: [{ format: 'raw', sizeMiB }] }),
    };
    ctx.log(`throughput: filling three ${sizeMiB} MiB disks with non-zero data, and an image for cp`);
    for (const d of Object.values(doms)) await fill(d, 'vda', sizeMiB, 0x5a);
    const cpDir = hv.scratchDir('bench-cp-');
    scope.teardown(() => rmSync(cpDir, { recursive: true, force: true }));
    const src: Record<Way, string> = {
      agentWs: doms.agentWs.disks[0]!.path,
      agentCli: doms.agentCli.disks[0]!.path,
      virsh: doms.virsh.disks[0]!.path,
      cp: `${cpDir}/cp-src.raw`,
    };
    // The cp source is a copy of a filled disk, written the same way the others' sources are.
    await run('cp', ['--sparse=never', src.agentWs, src.cp]);
    const times: Record<Way, number[]> = { agentWs: [], agentCli: [], virsh: [], cp: [] };
    // The WebSocket run's phases, from the job's notifications: call → first notification (the
    // agent's start), → ready (QEMU's copy and its flush of the destination), → pivoted and
    // answered (the agent's pivot and its verification).
    const toStarted: number[] = [];
    const toReady: number[] = [];
    const readyToAnswer: number[] = [];
    let t0 = 0;
    let startedAt = 0;
    let readyAt = 0;
    client.on('job.changed', (j: Job) => {
      if (j.domain.name !== doms.agentWs.name) return;
      if (!startedAt) startedAt = now();
      if (j.state === 'ready' && !readyAt) readyAt = now();
    });
    await client.call('subscribe', { domain: doms.agentWs.name });

    const once: Record<Way, (dest: string) => Promise<void>> = {
      agentWs: async (dest) => {
        readyAt = 0;
        startedAt = 0;
        t0 = now();
        await client.call('blockCopy', {
          domain: doms.agentWs.name,
          disk: 'vda',
          destination: { path: dest, format: 'raw' },
          whenReady: 'pivot',
          wait: 'done',
        });
        if (readyAt && startedAt) {
          toStarted.push((startedAt - t0) / 1000);
          toReady.push((readyAt - startedAt) / 1000);
          readyToAnswer.push((now() - readyAt) / 1000);
        }
      },
      // The CLI as a user runs it: a fresh node (without the agent's V8 flags), over the agent's unix socket.
      agentCli: async (dest) => {
        await run(process.execPath, [
          CLI,
          'copy',
          doms.agentCli.name,
          'vda',
          dest,
          '--format',
          'raw',
          '--wait',
          '--pivot',
          '--state-dir',
          agent.stateDir,
        ]);
      },
      virsh: async (dest) => {
        await run('virsh', ['-q', 'blockcopy', doms.virsh.name, 'vda', dest, '--format', 'raw', '--transient-job', '--wait', '--pivot']);
      },
      // `sync DEST` is fsync of the copy: what QEMU does to the destination (fdatasync) before READY.
      cp: async (dest) => {
        await run('cp', ['--sparse=never', src.cp, dest]);
        await run('sync', [dest]);
      },
    };
    const dirOf = (w: Way) => (w === 'cp' ? cpDir : doms[w].dir);

    for (let r = 0; r < rounds; r++) {
      // Rotate who goes first, so that no way always follows the same other.
      const order = WAYS.map((_, i) => WAYS[(i + r) % WAYS.length]!);
      for (const w of order) {
        const dest = `${dirOf(w)}/${w}-${r}.raw`;
        await settle();
        const start = now();
        await once[w](dest);
        times[w].push((now() - start) / 1000);
        // Each reads, next round, what it wrote now: every source has the same history.
        rmSync(src[w]);
        src[w] = dest;
      }
      ctx.log(
        `throughput round ${r + 1}/${rounds} (${order.join(' → ')}): ${WAYS.map((w) => `${w} ${times[w][r]!.toFixed(2)} s`).join(', ')}`,
      );
    }

    const m = Object.fromEntries(WAYS.map((w) => [w, median(times[w])])) as Record<Way, number>;
    const mibps = (s: number) => `${round(sizeMiB / s, 0)} MiB/s`;
    const spread = (xs: number[]) => `${round(Math.min(...xs))}–${round(Math.max(...xs))} s`;
    const ratio = (a: number, b: number) => round(a / b, 3);
    const rows: SuiteResult['rows'] = [
      ...WAYS.map((w) => ({
        metric: `copy + pivot of ${sizeMiB} MiB, median of ${rounds}: ${LABEL[w]}`,
        value: `${round(m[w])} s (${mibps(m[w])}; ${spread(times[w])})`,
      })),
      { metric: 'ratio agent (WebSocket) / cp', value: `${ratio(m.agentWs, m.cp)}`, target: '≤ 1.1', met: m.agentWs / m.cp <= 1.1 },
      {
        metric: 'ratio agent (WebSocket) / virsh',
        value: `${ratio(m.agentWs, m.virsh)}`,
        target: '≤ 1.0',
        met: m.agentWs / m.virsh <= 1.0,
      },
      { metric: 'ratio agent (CLI) / cp', value: `${ratio(m.agentCli, m.cp)}`, target: '≤ 1.1', met: m.agentCli / m.cp <= 1.1 },
      { metric: 'ratio agent (CLI) / virsh', value: `${ratio(m.agentCli, m.virsh)}`, target: '≤ 1.0', met: m.agentCli / m.virsh <= 1.0 },
      {
        metric: 'agent (WebSocket) phases, median: call → copy started / → READY (QEMU: copy, flush) / → verified pivot answered',
        value: `${round(median(toStarted) * 1000, 0)} ms / ${round(median(toReady))} s / ${round(median(readyToAnswer) * 1000, 0)} ms`,
      },
    ];
    return {
      name: 'Copy throughput on the user paths (agent via WebSocket and CLI, virsh, cp)',
      rows,
      data: {
        sizeMiB,
        rounds,
        seconds: times,
        medians: m,
        agentWsToStartedSeconds: toStarted,
        agentWsStartedToReadySeconds: toReady,
        agentWsReadyToAnswerSeconds: readyToAnswer,
        ratios: {
          agentWsCp: m.agentWs / m.cp,
          agentWsVirsh: m.agentWs / m.virsh,
          agentCliCp: m.agentCli / m.cp,
          agentCliVirsh: m.agentCli / m.virsh,
        },
        loadAverage: { before: loadBefore, after: loads() },
        dirtyAfterKiB: Number(/Dirty:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0),
      },
      notes: [
        'Each round runs the four ways in a rotated order; before each run dirty data is written back and the page cache dropped (sync; drop_caches), and each way copies the file it wrote the round before, so that every source has the same age in the host cache under the virtual disk (a file read for the first time since it was written long ago reads at a fraction of the speed of one written seconds ago).',
        'cp is timed to the end of `sync DEST` (fsync of the copy), which is what QEMU does to the destination (fdatasync) before it reports READY; both leave the data on disk.',
        'The CLI run includes starting node and connecting over the unix socket; virsh --wait polls every 500 ms, the agent pivots on the READY event.',
        `Load average (1, 5, 15 min) before: ${loadBefore}; after: ${loads()}. On a machine shared with other work, the times swing with the others' I/O; the ratios of the same round's runs are the point.`,
      ],
    };
  } finally {
    await scope.close();
  }
}
