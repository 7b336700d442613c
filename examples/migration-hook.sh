#!/usr/bin/env bash
# Live-migration hook for an OpenStack-like flow, built on the blockcopy-agent CLI.
#
#   migration-hook.sh pre-migrate DOMAIN
#       libvirt refuses to migrate a domain with an active block job: abort every copy job
#       still running on DOMAIN (the guest stays on its sources), then check none is left.
#   migration-hook.sh to-shared DOMAIN SHARED_DIR [DISK…]
#       before migrating a VM whose disks are local: move them to shared storage and pivot
#       (copy --wait --pivot, one disk after the other), so that only memory has to migrate.
#
# Environment: BLOCKCOPY_AGENT (default: blockcopy-agent), BLOCKCOPY_ARGS (extra client options,
# e.g. "--url wss://hv1:7879 --ca /etc/ssl/agent-ca.pem"; BLOCKCOPY_TOKEN for the token).
# Exit status: 0 when the VM is ready to migrate, non-zero (the client's exit code) otherwise.
set -euo pipefail

agent=${BLOCKCOPY_AGENT:-blockcopy-agent}
# shellcheck disable=SC2206
extra=(${BLOCKCOPY_ARGS:-})
bca() { $agent "$@" "${extra[@]}"; }

running_jobs() {   # prints "jobId disk" for each job of $1 that has not ended
  bca jobs "$1" --json | python3 -c '
import json, sys
for j in json.load(sys.stdin)["jobs"]:
    if j["state"] not in ("pivoted", "finished", "cancelled", "failed"):
        print(j["jobId"], j["disk"])'
}

case "${1:-}" in
  pre-migrate)
    dom=${2:?usage: $0 pre-migrate DOMAIN}
    while read -r job disk; do
      [ -n "$job" ] || continue
      echo "aborting copy job $job on $dom/$disk"
      bca abort --job "$job" --json >/dev/null
    done < <(running_jobs "$dom")
    left=$(running_jobs "$dom")
    if [ -n "$left" ]; then echo "copy jobs still running on $dom: $left" >&2; exit 1; fi
    echo "$dom has no copy job: ready to migrate"
    ;;
  to-shared)
    dom=${2:?usage: $0 to-shared DOMAIN SHARED_DIR [DISK...]}
    shared=${3:?usage: $0 to-shared DOMAIN SHARED_DIR [DISK...]}
    shift 3
    disks=("$@")
    [ ${#disks[@]} -gt 0 ] || disks=(vda)
    for disk in "${disks[@]}"; do
      echo "moving $dom/$disk to $shared"
      bca copy "$dom" "$disk" "$shared/$dom-$disk.qcow2" --format qcow2 --wait --pivot --json | tail -n 1
    done
    echo "$dom runs on $shared: ready to migrate"
    ;;
  *)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
