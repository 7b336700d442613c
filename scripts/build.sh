#!/usr/bin/env bash
# Builds the native addon (configured once) and the TypeScript sources.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f scripts/gen-types.mjs ] && node scripts/gen-types.mjs
[ -f build/Makefile ] || npx node-gyp configure
npx node-gyp build
npx tsc -p tsconfig.json
