// The benchmark suite: side-by-side measurements against the real libvirtd, reported as ratios
// and percentiles with the machine's facts. `--quick` is a smoke run (the tests use it).
//   node dist/bench/run.js [--quick] [--only NAME,…] [--out DIR] [--scale-copies N]
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { domainType } from '../harness/hypervisor.js';
import { type BenchContext, type SuiteResult, round } from './lib.js';
import { backup } from './suites/backup.js';
import { bindingChurn, libvirtdHang } from './suites/binding.js';
import { cliLatency } from './suites/cli-latency.js';
import { controlPlane } from './suites/control-plane.js';
import { convergence } from './suites/convergence.js';
import { groupPause } from './suites/group-pause.js';
import { hostileClients } from './suites/hostile.js';
import { latency } from './suites/latency.js';
import { scale } from './suites/scale.js';
import { throughput } from './suites/throughput.js';

const SUITES: Record<string, (ctx: BenchContext) => Promise<SuiteResult>> = {
  throughput,
  latency,
  controlPlane,
  scale,
  convergence,
  groupPause,
  libvirtdHang,
  bindingChurn,
  hostileClients,
  cliLatency,
  backup,
};

function machine() {
  const v = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args).toString().trim();
    } catch {
      return 'unknown';
    }
  };
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    accel: domainType() === 'kvm' ? 'KVM' : 'TCG',
    node: process.version,
    libvirt:
      v('virsh', ['-q', 'version', '--daemon'])
        .split('\n')
        .find((l) => /library/i.test(l))
        ?.replace(/.*libvirt /, '') ?? 'unknown',
    qemu: v('qemu-system-x86_64', ['--version']).split('\n')[0],
  };
}

function markdown(when: string, quick: boolean, m: ReturnType<typeof machine>, results: SuiteResult[]): string {
  const lines = [
    `# Benchmarks ${when}${quick ? ' (quick smoke run)' : ''}`,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.accel}; libvirt ${m.libvirt}; ${m.qemu}; Node ${m.node}.`,
    '',
  ];
  for (const r of results) {
    lines.push(`## ${r.name}`, '', '| measurement | result | target | met |', '| --- | --- | --- | --- |');
    for (const row of r.rows)
      lines.push(
        `| ${row.metric} | ${row.value} | ${row.target ?? ''} | ${row.met === undefined || row.met === null ? '' : row.met ? 'yes' : '**no**'} |`,
      );
    for (const n of r.notes ?? []) lines.push('', `- ${n}`);
    lines.push('');
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { quick: { type: 'boolean' }, only: { type: 'string' }, out: { type: 'string' }, 'scale-copies': { type: 'string' } },
  });
  const quick = !!values.quick;
  const names = values.only ? values.only.split(',') : Object.keys(SUITES);
  const scaleCopies = values['scale-copies'] === undefined ? undefined : Number(values['scale-copies']);
  if (scaleCopies !== undefined && !(Number.isInteger(scaleCopies) && scaleCopies >= 1 && scaleCopies <= 128)) {
    throw new Error('--scale-copies takes an integer from 1 to 128');
  }
  const ctx: BenchContext = { quick, scaleCopies, log: (msg) => process.stderr.write(`bench: ${msg}\n`) };
  const m = machine();
  const started = Date.now();
  const results: SuiteResult[] = [];
  for (const name of names) {
    const suite = SUITES[name];
    if (!suite) throw new Error(`unknown suite ${name} (${Object.keys(SUITES).join(', ')})`);
    ctx.log(`${name}…`);
    results.push(await suite(ctx));
  }
  const when = new Date().toISOString().slice(0, 10);
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  const out = values.out ?? join(repo, 'bench/results');
  mkdirSync(out, { recursive: true });
  const base = join(out, `${when}-${quick ? 'quick' : 'full'}`);
  const doc = { date: new Date().toISOString(), quick, machine: m, seconds: round((Date.now() - started) / 1000, 1), results };
  writeFileSync(`${base}.json`, JSON.stringify(doc, null, 2) + '\n');
  const md = markdown(when, quick, m, results);
  writeFileSync(`${base}.md`, md);
  if (!quick && !values.only) writeFileSync(join(repo, 'bench/results/LATEST.md'), md);
  process.stdout.write(md + `\n(${doc.seconds} s; results in ${base}.json and .md)\n`);
}

main().catch((e) => {
  console.error('bench failed:', e);
  process.exitCode = 1;
});
