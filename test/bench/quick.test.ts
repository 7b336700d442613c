// The benchmark suite's smoke run: every suite runs end to end against the real libvirtd and
// reports its measurements. No timing is asserted here: speed is judged from the ratios the
// full run prints (npm run bench), never by a test.
import t from 'tap';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { scratchDir } from '../../harness/hypervisor.js';

const run = promisify(execFile);

t.test('npm run bench -- --quick works', async (t) => {
  const out = scratchDir('bench-');
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const script = fileURLToPath(new URL('../../bench/run.js', import.meta.url));
  const r = await run(process.execPath, [script, '--quick', '--out', out], { maxBuffer: 16 * 1024 * 1024 });
  const json = readdirSync(out).find((f) => f.endsWith('-quick.json'));
  t.ok(json, 'a JSON result file');
  const doc = JSON.parse(readFileSync(join(out, json!), 'utf8'));
  t.match(doc, { quick: true, machine: { cores: Number, accel: /KVM|TCG/ } }, 'with the machine facts');
  t.same(
    doc.results.map((s: { name: string }) => s.name.split(' ')[0]),
    ['Copy', 'Readiness', 'Control', 'Scale', 'Convergence', 'Group', 'libvirt', 'libvirt', 'Hostile', 'CLI', 'Backup'],
    'every suite ran',
  );
  for (const s of doc.results)
    t.ok(
      s.rows.length > 0 && s.rows.every((row: { value: string }) => row.value && !/NaN|undefined/.test(row.value)),
      `${s.name}: measurements reported`,
    );
  t.match(r.stdout, /# Benchmarks .* \(quick smoke run\)/, 'and a Markdown report');
});
