#!/usr/bin/env bash
# The benchmarks in one command: set the host up, build, run (add --quick for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh
exec node dist/bench/run.js "$@"
