#!/usr/bin/env bash
# The main job in one command: set the host up, build, live-copy and pivot a throwaway VM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh
exec node dist/demo/main-job.js "$@"
