#!/usr/bin/env bash
# The one test command: sets the host up (packages, libvirtd), installs, builds, runs every
# test against the real libvirtd, and ends with `N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
bash scripts/build.sh
node -e "import('./dist/test/helpers/hypervisor.js').then(m => m.cleanupStale())"
set +e
npx tap --reporter=tap "$@" | node scripts/tap-summary.mjs
status=${PIPESTATUS[1]}
set -e
exit "$status"
