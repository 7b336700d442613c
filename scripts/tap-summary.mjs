#!/usr/bin/env node
// Reads raw TAP (from the files given, or from stdin, echoed) and ends with one line `N passed, N failed`.
// Counts leaf test points (assertions). A subtest (or test file) that fails without any
// failing assertion of its own — a crash, a timeout, a missed plan — counts as one failure.
import { readFileSync } from 'node:fs';
import { Parser } from 'tap-parser';

let passed = 0;
let failed = 0;

function watch(parser) {
  const children = new Map(); // child name → its own failure count
  parser.on('child', (child) => {
    const state = { failures: 0 };
    children.set(child.name, state);
    watch(child).onFail = () => { state.failures++; };
  });
  const api = { onFail: () => {} };
  parser.on('assert', (res) => {
    const child = children.get(res.name);
    if (child) {
      children.delete(res.name);
      if (!res.ok && child.failures === 0 && !res.todo && !res.skip) { failed++; api.onFail(); }
      else if (child.failures > 0) api.onFail();
      return;
    }
    if (res.todo || res.skip) return;
    if (res.ok) passed++;
    else { failed++; api.onFail(); }
  });
  return api;
}

function finish() {
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
    p.end(readFileSync(f));
  }
  finish();
} else {
  // TAP on stdin, echoed as it comes.
  const root = new Parser();
  watch(root);
  process.stdin.on('data', (d) => { process.stdout.write(d); root.write(d); });
  process.stdin.on('end', () => { root.end(); finish(); });
}
