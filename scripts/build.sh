#!/usr/bin/env bash
# Builds the native addon (configured once) and the TypeScript sources.
# TSCONFIG=tsconfig.build.json builds the product alone (no tests, demo or benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f scripts/gen-types.mjs ] && node scripts/gen-types.mjs
# Reconfigured when binding.gyp changed (a new native source file), not only on a fresh tree.
[ build/Makefile -nt binding.gyp ] || npx node-gyp configure
npx node-gyp build
# From scratch: a test file deleted from the sources must not live on in dist/ (tap runs dist).
rm -rf dist
npx tsc -p "${TSCONFIG:-tsconfig.json}"
# Docs generated from tables in the code (needs the build above).
node scripts/gen-docs.mjs
chmod 0755 dist/src/cli/main.js
