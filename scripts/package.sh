#!/usr/bin/env bash
# Builds the Debian package of the agent: dist/deb/blockcopy-agent_<version>_<arch>.deb.
# It carries the Node.js runtime this build runs on (the one the tests ran with), the
# production node_modules, the native addon and the compiled agent, so a Debian 12 hypervisor
# installs it with no compiler and no npm. Depends are computed by dpkg-shlibdeps from the two
# ELF files (node, the addon). Ends with a lintian run that must report no error.
#   OUT_DIR=... to put the .deb elsewhere; LINTIAN=0 to skip lintian.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${OUT_DIR:-$repo/dist/deb}
version=$(node -p "require('./package.json').version")
arch=$(dpkg --print-architecture)
node_bin=$(readlink -f "$(command -v node)")
node_major=$(node -p 'process.versions.node.split(".")[0]')
want_major=$(node -p "require('./package.json').engines.node.replace(/[^0-9.]/g, '').split('.')[0]")
[ "$node_major" -ge "$want_major" ] || { echo "package: node $(node -v) is older than package.json engines ($want_major)" >&2; exit 1; }
changelog_version=$(sed -n '1s/^blockcopy-agent (\([^)]*\)).*/\1/p' packaging/debian/changelog)
[ "$changelog_version" = "$version" ] || { echo "package: packaging/debian/changelog is at $changelog_version, package.json at $version" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
lib=$root/usr/lib/blockcopy-agent

# The native addon (make: a no-op when it is up to date) and the agent compiled straight into
# the staging tree, so that a running test suite's dist/ is never rewritten under it.
[ -f build/Makefile ] || npx node-gyp configure >/dev/null
npx node-gyp build >/dev/null 2>&1 || npx node-gyp build
node scripts/gen-types.mjs >/dev/null
mkdir -p "$lib/build/Release"
npx tsc -p tsconfig.build.json --outDir "$lib/dist" --declaration false --sourceMap false
install -m 0644 build/Release/blockcopy_libvirt.node "$lib/build/Release/"
cp -r schemas "$lib/"
install -m 0644 package.json package-lock.json "$lib/"
# Production dependencies only, exactly as locked; no install scripts (the addon is built above).
(cd "$lib" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$lib/package-lock.json"
# Documentation and the packages' own dotfiles (lint configs, .gitattributes) are not needed.
find "$lib/node_modules" \( -name '*.md' -o -name '.*' \) -type f -delete
# As Debian's dh_strip: symbol tables and debug information out, code untouched (the dynamic
# symbols the addon links against stay).
install -m 0755 "$node_bin" "$lib/node"
strip --remove-section=.comment --remove-section=.note "$lib/node"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$lib/build/Release/blockcopy_libvirt.node"

install -D -m 0755 packaging/blockcopy-agent "$root/usr/bin/blockcopy-agent"
install -D -m 0644 systemd/blockcopy-agent.service "$root/lib/systemd/system/blockcopy-agent.service"
install -D -m 0644 packaging/config.json "$root/etc/blockcopy-agent/config.json"
install -d -m 0700 "$root/var/lib/blockcopy-agent" "$root/var/log/blockcopy-agent"
doc=$root/usr/share/doc/blockcopy-agent
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
gzip -9n -c packaging/debian/changelog >"$doc/changelog.gz"
install -D -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/blockcopy-agent"
# The default configuration must be one the agent accepts.
"$lib/node" "$lib/dist/src/cli/main.js" config check "$root/etc/blockcopy-agent/config.json" >/dev/null

# Files 0644 and directories 0755 (npm leaves some scripts executable), then the executables.
find "$root" -type d ! -path "$root/var/*" -exec chmod 0755 {} +
find "$root" -type f -exec chmod 0644 {} +
# The CLI's `#!/usr/bin/env node` would find no node (or Debian's 18): it runs only through
# /usr/bin/blockcopy-agent, which names the packaged runtime.
sed -i '1s|^#!.*|// Run by /usr/bin/blockcopy-agent with /usr/lib/blockcopy-agent/node.|' "$lib/dist/src/cli/main.js"
chmod 0755 "$lib/node" "$root/usr/bin/blockcopy-agent"

install -d "$root/DEBIAN"
for f in postinst prerm postrm; do install -m 0755 "packaging/debian/$f" "$root/DEBIAN/$f"; done
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
# Depends from what the ELF files link (libc6, libstdc++6, libgcc-s1, libvirt0).
mkdir -p "$work/src/debian"
printf 'Source: blockcopy-agent\n\nPackage: blockcopy-agent\nArchitecture: any\n' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O --warnings=0 "-e$lib/node" "-e$lib/build/Release/blockcopy_libvirt.node" | sed -n 's/^shlibs:Depends=//p')
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@SHLIBS@/$shlibs/" \
  packaging/debian/control.in >"$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/blockcopy-agent_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
echo "package: $deb ($(du -h "$deb" | cut -f1); node $(node -v); Depends: $shlibs)"
if [ "${LINTIAN:-1}" = 1 ]; then
  command -v lintian >/dev/null || { echo "package: lintian is not installed (apt-get install lintian)" >&2; exit 1; }
  lintian --fail-on error "$deb" || { echo "package: lintian reported errors" >&2; exit 1; }
fi
