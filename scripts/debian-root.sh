#!/usr/bin/env bash
# Prints the path of a tarball of a clean Debian 12 root (debootstrap --variant=minbase
# bookworm: no compiler, no Node.js), made once and cached for later runs. The mirror is the
# one apt on this host is configured with. Used by the package and role tests.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "debian-root: must run as root" >&2; exit 1; }
CACHE=${BLOCKCOPY_ROOT_CACHE:-/var/cache/blockcopy-test}
tarball="$CACHE/bookworm-minbase.tar"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ ! -s "$tarball" ]; then
  if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  # The first Debian mirror apt knows (deb822 sources or one-line sources.list).
  mirror=$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
    | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  work=$(mktemp -d "$CACHE/root.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "debian-root: debootstrap bookworm from $mirror (once; cached in $tarball)" >&2
  debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/log" 2>&1 || { tail -20 "$work/log" >&2; exit 1; }
  # apt inside the root uses the same mirror; its package lists are fetched when needed.
  echo "deb $mirror bookworm main" >"$work/root/etc/apt/sources.list"
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*_Packages
  tar -C "$work/root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
echo "$tarball"
