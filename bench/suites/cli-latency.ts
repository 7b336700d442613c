// CLI latency, hyperfine-style: one short command run again and again (warm-up runs first),
// side by side with `virsh list`. The CLI's verb over the agent's unix socket, the same verb by
// the old path (a spawned `stdio` relaying over the WebSocket: an agent without the socket),
// `--help`, and bare `node` as the floor. Ratios are to virsh.
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { CLI, serveAgent } from '../../harness/agent.js';
import { BENCH_AGENT_CONFIG } from './common.js';
import { Scope, median, now, round, type BenchContext, type SuiteResult } from '../lib.js';

interface Stats {
  meanMs: number;
  sdMs: number;
  minMs: number;
  medianMs: number;
  maxMs: number;
  cpuMs: number;
  runs: number;
}

/** GNU time reports the child's CPU seconds (user, system), which a loaded host inflates far less than wall time. */
const TIME = '/usr/bin/time';

/** Runs the command `runs` times after `warmup` runs; each run must exit 0. */
function measure(cmd: string, args: string[], runs: number, warmup: number, input?: string): Stats {
  const cpu: number[] = [];
  const once = () => {
    const t0 = now();
    const r = spawnSync(TIME, ['-f', 'cpu %U %S', cmd, ...args], {
      stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'pipe'],
      encoding: 'utf8',
      ...(input === undefined ? {} : { input }),
    });
    const ms = now() - t0;
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    const m = /cpu ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr);
    if (m) cpu.push((Number(m[1]) + Number(m[2])) * 1000);
    return ms;
  };
  for (let i = 0; i < warmup; i++) once();
  cpu.length = 0;
  const xs = Array.from({ length: runs }, once);
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1));
  return {
    meanMs: round(mean, 1),
    sdMs: round(sd, 1),
    minMs: round(Math.min(...xs), 1),
    medianMs: round(median(xs), 1),
    maxMs: round(Math.max(...xs), 1),
    cpuMs: round(cpu.reduce((a, b) => a + b, 0) / Math.max(1, cpu.length), 1),
    runs,
  };
}

export async function cliLatency(ctx: BenchContext): Promise<SuiteResult> {
  const scope = new Scope();
  try {
    const runs = ctx.quick ? 5 : 30;
    const warmup = ctx.quick ? 1 : 3;
    const withSocket = await serveAgent(scope, { config: BENCH_AGENT_CONFIG });
    const withoutSocket = await serveAgent(scope, { config: { ...BENCH_AGENT_CONFIG, socket: { enabled: false } } });
    // The CLI as installed runs node without the agent's V8 flags: the same here.
    const node = process.execPath;
    const request = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'listJobs', params: {} }) + '\n';
    const cases: Array<[string, string, string[], string?]> = [
      ['virsh list', 'virsh', ['-q', 'list', '--all']],
      ['blockcopy-agent jobs (unix socket)', node, [CLI, 'jobs', '--json', '--state-dir', withSocket.stateDir]],
      ['blockcopy-agent jobs (stdio relay, no socket)', node, [CLI, 'jobs', '--json', '--state-dir', withoutSocket.stateDir]],
      ['blockcopy-agent stdio, one request (unix socket)', node, [CLI, 'stdio', '--state-dir', withSocket.stateDir], request],
      [
        'blockcopy-agent stdio, one request (WebSocket relay, no socket)',
        node,
        [CLI, 'stdio', '--state-dir', withoutSocket.stateDir],
        request,
      ],
      ['blockcopy-agent --help', node, [CLI, '--help']],
      ['node -e 0 (the floor)', node, ['-e', '0']],
    ];
    const results: Record<string, Stats> = {};
    for (const [name, cmd, args, input] of cases) {
      ctx.log(`cli-latency: ${name}`);
      results[name] = measure(cmd, args, runs, warmup, input);
    }
    const virsh = results['virsh list']!.meanMs;
    const virshCpu = results['virsh list']!.cpuMs;
    const rows: SuiteResult['rows'] = Object.entries(results).map(([name, s]) => ({
      metric: name,
      value: `${s.meanMs} ± ${s.sdMs} ms (min ${s.minMs}, median ${s.medianMs}, max ${s.maxMs}; ${s.runs} runs)${name === 'virsh list' ? '' : `; ${round(s.meanMs / virsh, 1)}× virsh`}; CPU ${s.cpuMs} ms${name === 'virsh list' || virshCpu === 0 ? '' : ` (${round(s.cpuMs / virshCpu, 1)}× virsh)`}`,
      ...(name === 'blockcopy-agent jobs (unix socket)' ? { target: '≤ 100 ms', met: s.medianMs <= 100 } : {}),
    }));
    return {
      name: 'CLI latency: a short verb against a running agent, side by side with virsh',
      rows,
      data: {
        runs,
        warmup,
        results,
        ratiosToVirsh: Object.fromEntries(Object.entries(results).map(([k, s]) => [k, round(s.meanMs / virsh, 2)])),
      },
      notes: [
        'Each command is spawned and waited for as a script would (spawnSync, under GNU time for its CPU time), after warm-up runs; wall time mean ± standard deviation over the runs, and mean CPU (user + system). On a shared, loaded host compare the CPU column and the ratios to bare node; the target is judged on the median wall time.',
        `Load average at the end: ${loadavg()
          .map((x) => round(x, 1))
          .join(', ')}.`,
        'The socket verb loads only the CLI client (no ajv, no libvirt binding, no ws); the relay path starts a second Node process that loads the agent and relays over the WebSocket.',
      ],
    };
  } finally {
    await scope.close();
  }
}
