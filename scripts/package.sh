#!/usr/bin/env bash
# Builds the Debian package of the agent: dist/deb/blockcopy-agent_<version>_<arch>.deb, with
# dpkg-buildpackage from debian/ (debhelper, `dh $@`; see debian/rules). It carries the Node.js
# runtime this build runs on (the one the tests ran with), the production node_modules, the
# native addon and the compiled agent, so a Debian 12 hypervisor installs it with no compiler and
# no npm. The build runs in a copy of the tree (so a running test suite's dist/ and build/ are
# never rewritten under it, and dpkg-buildpackage's output lands in a scratch directory), then
# lintian must report no error and no warning.
#   OUT_DIR=... to put the .deb elsewhere; LINTIAN=0 to skip lintian.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${OUT_DIR:-$repo/dist/deb}
version=$(node -p "require('./package.json').version")
arch=$(dpkg --print-architecture)
node_major=$(node -p 'process.versions.node.split(".")[0]')
want_major=$(node -p "require('./package.json').engines.node.replace(/[^0-9.]/g, '').split('.')[0]")
[ "$node_major" -ge "$want_major" ] || { echo "package: node $(node -v) is older than package.json engines ($want_major)" >&2; exit 1; }
changelog_version=$(dpkg-parsechangelog -S Version)
[ "$changelog_version" = "$version" ] || { echo "package: debian/changelog is at $changelog_version, package.json at $version" >&2; exit 1; }
[ -d node_modules/node-gyp ] || { echo "package: run npm ci first (node-gyp, typescript)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/blockcopy-agent-$version
mkdir "$src"
cp -r binding.gyp native package.json package-lock.json tsconfig.json tsconfig.build.json schemas src \
  packaging systemd debian "$src/"
mkdir "$src/scripts" && cp scripts/gen-types.mjs "$src/scripts/"
# The dev dependencies (node-gyp, typescript, json-schema-to-typescript) as installed here.
ln -s "$(readlink -f node_modules)" "$src/node_modules"
rm -rf "$src/src/generated" "$src/debian/build"

(cd "$src" && dpkg-buildpackage --build=binary -us -uc) >"$work/build.log" 2>&1 || {
  tail -40 "$work/build.log" >&2
  echo "package: dpkg-buildpackage failed" >&2
  exit 1
}
mkdir -p "$out"
deb=$out/blockcopy-agent_${version}_${arch}.deb
mv "$work/blockcopy-agent_${version}_${arch}.deb" "$deb"
# The detached debug symbols (dh_strip), for whoever needs to read a core dump.
mv "$work"/blockcopy-agent-dbgsym_"${version}"_"${arch}".*deb "$out/" 2>/dev/null || true
depends=$(dpkg-deb -f "$deb" Depends)
echo "package: $deb ($(du -h "$deb" | cut -f1); node $(node -v); Depends: $depends)"
if [ "${LINTIAN:-1}" = 1 ]; then
  command -v lintian >/dev/null || { echo "package: lintian is not installed (apt-get install lintian)" >&2; exit 1; }
  lintian --fail-on error,warning "$deb" || { echo "package: lintian reported errors or warnings" >&2; exit 1; }
fi
