#!/usr/bin/env bash
# The one test command: sets the host up (packages, libvirtd), installs, builds, runs every
# test against the real libvirtd, and ends with `N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
# Lint and format first: a style or correctness finding fails fast, before the long run.
npx eslint .
npx prettier --check . >/dev/null || { npx prettier --list-different .; echo 'not formatted: run npm run format' >&2; exit 1; }
bash scripts/build.sh
node -e "import('./dist/harness/hypervisor.js').then(m => m.cleanupStale())"
# Test files that need the Debian package build it once per run (test/helpers/debroot.ts).
BLOCKCOPY_TEST_STARTED=$(date +%s%3N)
export BLOCKCOPY_TEST_STARTED
set +e
out=$(mktemp -d)
if [ $# -gt 0 ]; then
  npx tap --reporter=tap "$@" | tee "$out/1.tap"
else
  # Everything that may share the host runs two files at a time (package.json "tap")…
  npx tap --reporter=tap | tee "$out/1.tap"
  # …then the tests that restart libvirtd (*.serial.js, outside tap's include), one at a time.
  npx tap --reporter=tap --jobs=1 dist/test/serial/*.serial.js | tee "$out/2.tap"
fi
node scripts/tap-summary.mjs "$out"/*.tap
status=$?
rm -rf "$out"
set -e
exit "$status"
