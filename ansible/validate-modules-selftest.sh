#!/usr/bin/env bash
# Shows that validate-modules (validate-modules.sh) fails on a module whose argument spec
# disagrees with its DOCUMENTATION: it runs on a copy of the collection with block_copy's
# timeout default changed in the spec only, and with an option added to the spec only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
expect() { # <code> <python edit of block_copy.py's text>
  rm -rf "$tmp/ansible_collections"
  mkdir -p "$tmp/ansible_collections/blockcopy"
  (cd "$here/ansible_collections/blockcopy" && tar --exclude=tests/output --exclude=__pycache__ -cf - agent) | tar -C "$tmp/ansible_collections/blockcopy" -xf -
  f="$tmp/ansible_collections/blockcopy/agent/plugins/modules/block_copy.py"
  /usr/bin/python3 -c 'import sys; p = sys.argv[1]; s = open(p).read(); t = eval(sys.argv[2]); assert t != s, "edit did not apply"; open(p, "w").write(t)' "$f" "$2"
  if out=$(ANSIBLE_COLLECTIONS_PATH="$tmp" bash "$here/validate-modules.sh" "$tmp/ansible_collections/blockcopy/agent" 2>&1); then
    echo "validate-modules passed a module with a deliberate mismatch ($1):" >&2; echo "$out" >&2; exit 1
  fi
  grep -q "block_copy.py.*$1" <<<"$out" || { echo "validate-modules failed without reporting $1:" >&2; echo "$out" >&2; exit 1; }
  echo "mismatch caught: $1"
}
expect doc-default-does-not-match-spec 's.replace("timeout=dict(type=\"int\", default=3600)", "timeout=dict(type=\"int\", default=60)")'
expect undocumented-parameter 's.replace("pivot_timeout=dict(type=\"int\", default=60),", "pivot_timeout=dict(type=\"int\", default=60), jobTimeout=dict(type=\"int\"),")'
expect doc-choices-do-not-match-spec 's.replace("choices=[\"raw\", \"qcow2\"]", "choices=[\"raw\", \"qcow2\", \"vmdk\"]")'
