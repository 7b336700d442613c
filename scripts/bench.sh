#!/usr/bin/env bash
# The benchmarks in one command: set the host up, build, run (add --quick for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
log=$(mktemp)
bash scripts/build.sh >"$log" 2>&1 || { cat "$log"; exit 1; }
rm -f "$log"
exec node dist/bench/run.js "$@"
