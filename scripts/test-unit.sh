#!/usr/bin/env bash
# The fast loop: the unit tests only. No root, no libvirtd, no native addon: generates the
# types, compiles the TypeScript (tsc only) and runs test/unit/ on fakes. Under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/gen-types.mjs
npx tsc -p tsconfig.json
npx tap --reporter="${TAP_REPORTER:-terse}" dist/test/unit/*.test.js
