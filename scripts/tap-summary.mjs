#!/usr/bin/env node
// Reads raw TAP (from the files given, or from stdin, echoed) and ends with one line `N passed, N failed`,
// preceded by the reliability table when the run included the fault-injection suite (rows are the
// `# reliability: {...}` comments of test/helpers/faults.ts). Counts leaf test points (assertions). A subtest (or test file) that fails without any
// failing assertion of its own — a crash, a timeout, a missed plan — counts as one failure.
import { readFileSync } from 'node:fs';
import { Parser } from 'tap-parser';

let passed = 0;
let failed = 0;
// What failed, by its path of names: CI shows only the end of the output, so the end must say it.
const failures = [];
const MAX_LISTED = 40;

function note(path, res) {
  if (failures.length >= MAX_LISTED) return;
  const where = res.diag?.at
    ? ` (${res.diag.at.fileName ?? res.diag.at.file ?? ''}:${res.diag.at.lineNumber ?? res.diag.at.line ?? ''})`
    : '';
  const why = res.diag?.message ?? res.diag?.error ?? res.diag?.reason;
  failures.push([...path, res.name].join(' > ') + where + (why ? `\n    ${String(why).split('\n')[0].slice(0, 300)}` : ''));
}

function watch(parser, path = []) {
  const children = new Map(); // child name → its own failure count
  parser.on('child', (child) => {
    const state = { failures: 0 };
    children.set(child.name, state);
    watch(child, [...path, child.name]).onFail = () => {
      state.failures++;
    };
  });
  const api = { onFail: () => {} };
  parser.on('assert', (res) => {
    const child = children.get(res.name);
    if (child) {
      children.delete(res.name);
      if (!res.ok && child.failures === 0 && !res.todo && !res.skip) {
        failed++;
        note(path, res);
        api.onFail();
      } else if (child.failures > 0) api.onFail();
      return;
    }
    if (res.todo || res.skip) return;
    if (res.ok) passed++;
    else {
      failed++;
      note(path, res);
      api.onFail();
    }
  });
  return api;
}

const faults = new Map(); // fault → { tried, recovered, mismatches }
function collect(text) {
  for (const m of text.matchAll(/^\s*# reliability: (\{.*\})\s*$/gm)) {
    let row;
    try {
      row = JSON.parse(m[1]);
    } catch {
      continue;
    }
    const n = row.count ?? 1;
    const agg = faults.get(row.fault) ?? { tried: 0, recovered: 0, mismatches: null };
    agg.tried += n;
    if (row.recovered) agg.recovered += n;
    if (row.mismatches !== null) agg.mismatches = (agg.mismatches ?? 0) + row.mismatches;
    faults.set(row.fault, agg);
  }
}

function faultTable() {
  if (faults.size === 0) return;
  const rows = [
    ['fault', 'tried', 'recovered', 'data mismatches'],
    ...[...faults].map(([f, a]) => [f, String(a.tried), String(a.recovered), a.mismatches === null ? 'n/a' : String(a.mismatches)]),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log('\nReliability (fault-injection suite):');
  for (const [i, r] of rows.entries()) {
    console.log('| ' + r.map((c, j) => (j === 0 ? c.padEnd(widths[j]) : c.padStart(widths[j]))).join(' | ') + ' |');
    if (i === 0) console.log('|' + widths.map((w, j) => (j === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|');
  }
  console.log('');
}

function finish() {
  faultTable();
  if (failures.length > 0) {
    console.log(`Failed (${failed}${failed > failures.length ? `, the first ${failures.length} listed` : ''}):`);
    for (const f of failures) console.log(`- ${f}`);
  }
  console.log(`${passed} passed, ${failed} failed`);
  // A run that executed nothing is a broken run, not a green one.
  process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
}

const files = process.argv.slice(2);
if (files.length > 0) {
  // Several TAP files (runs one after the other): each parsed on its own, the counts summed.
  for (const f of files) {
    const p = new Parser();
    watch(p);
    const text = readFileSync(f);
    collect(text.toString('utf8'));
    p.end(text);
  }
  finish();
} else {
  // TAP on stdin, echoed as it comes.
  const root = new Parser();
  watch(root);
  const chunks = [];
  process.stdin.on('data', (d) => {
    process.stdout.write(d);
    root.write(d);
    chunks.push(d);
  });
  process.stdin.on('end', () => {
    root.end();
    collect(Buffer.concat(chunks).toString('utf8'));
    finish();
  });
}
