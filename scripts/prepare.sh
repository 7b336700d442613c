#!/usr/bin/env bash
# Makes this host ready to run the agent from this checkout: host set up, dependencies
# installed (if missing), everything built. Build output is shown only when the build fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
log=$(mktemp)
bash scripts/build.sh >"$log" 2>&1 || { cat "$log"; rm -f "$log"; exit 1; }
rm -f "$log"
