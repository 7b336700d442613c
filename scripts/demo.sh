#!/usr/bin/env bash
# The main job in one command: set the host up, build, live-copy and pivot a throwaway VM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
bash scripts/build.sh >/dev/null
exec node dist/demo/main-job.js "$@"
