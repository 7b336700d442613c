#!/usr/bin/env bash
# Builds and packs the client package (packages/client/: the typed client and the client CLI,
# no agent, no native addon) from the shared sources: tsc compiles the library entry and the
# client CLI with what they import (packages/client/tsconfig.json), in a staging directory, and
# `npm pack` makes blockcopy-agent-client-VERSION.tgz in DEST (default: packages/client/).
# Prints the tarball's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=$(realpath "${1:-packages/client}")
agent_version=$(node -p 'require("./package.json").version')
client_version=$(node -p 'require("./packages/client/package.json").version')
if [ "$agent_version" != "$client_version" ]; then
  echo "packages/client/package.json has version $client_version, the agent $agent_version: they are released together" >&2
  exit 1
fi
node scripts/gen-types.mjs
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp packages/client/package.json packages/client/README.md "$stage/"
npx tsc -p packages/client/tsconfig.json --outDir "$stage/dist"
# local-socket.ts reads the state directory's default from the schema, as the agent does.
mkdir -p "$stage/schemas"
cp schemas/config.schema.json "$stage/schemas/"
chmod 0755 "$stage/dist/src/cli/client-main.js"
mkdir -p "$dest"
name=$(cd "$stage" && npm pack --silent --pack-destination "$dest")
echo "$dest/$name"
