#!/usr/bin/env bash
# ansible-test sanity --test validate-modules, offline.
# ansible-test runs validate-modules in a venv of its own that it fills with pip from PyPI
# (voluptuous, pyyaml, jinja2, antsibull-docs-parser in 2.15+). Debian ships those as
# python3-voluptuous, python3-yaml and python3-jinja2, so this seeds that venv instead: it lets
# ansible-test name the venv (the name hashes the pip commands), replaces it with one that sees
# the system's site-packages, and marks it complete (marker.txt) so ansible-test uses it as is.
# The venv lives under a private HOME, never in ~/.ansible. Usage: validate-modules.sh [collection dir]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
coll=${1:-"$here/ansible_collections/blockcopy/agent"}
py=/usr/bin/python3
pyver=$($py -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if ! $py -c 'import voluptuous, yaml, jinja2' 2>/dev/null; then
  echo "validate-modules needs Debian's python3-voluptuous, python3-yaml and python3-jinja2 (apt-get install python3-voluptuous)" >&2
  exit 1
fi
vm_home=${BLOCKCOPY_SANITY_HOME:-"${XDG_CACHE_HOME:-$HOME/.cache}/blockcopy-agent-sanity"}
mkdir -p "$vm_home"
export ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-$here} ANSIBLE_NOCOLOR=1
cd "$coll"
venvs="$vm_home/.ansible/test/venv/sanity.validate-modules/$pyver"
if ! ls "$venvs"/*/marker.txt >/dev/null 2>&1; then
  # Fails at pip (no PyPI) after creating the venv directory under its hashed name.
  HOME="$vm_home" ansible-test sanity --test validate-modules --python "$pyver" --prime-venvs >/dev/null 2>&1 || true
  venv=$(ls -d "$venvs"/*/ 2>/dev/null | head -1)
  [ -n "$venv" ] || { echo "ansible-test did not create its validate-modules venv under $venvs" >&2; exit 1; }
  rm -rf "$venv"
  "/usr/bin/python$pyver" -m venv --system-site-packages --without-pip "$venv"
  echo '[]' >"$venv/meta.install.json"
  echo 'null' >"$venv/meta.yaml.json"
  touch "$venv/marker.txt"
fi
# ansible-test prints its findings and exits non-zero on any.
HOME="$vm_home" ansible-test sanity --test validate-modules --python "$pyver" 2>&1 | grep -v 'locale' || exit 1
