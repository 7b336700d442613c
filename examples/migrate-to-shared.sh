#!/usr/bin/env bash
# Move a running VM's local disks to shared storage with blockcopy-agent, then live-migrate it.
#
#   migrate-to-shared.sh DOMAIN SHARED_DIR DEST_URI [DISK...] [-- VIRSH_MIGRATE_OPTION...]
#
# 1. Refuses to start while the domain has an unfinished agent job it did not start (listed on
#    stderr and left alone: libvirt would refuse the migration anyway, and the job is someone
#    else's to end).
# 2. Moves DISK... (default: every file-backed disk not yet under SHARED_DIR) in ONE group with
#    its own group id: copies SHARED_DIR/DOMAIN-DISK.EXT (EXT of the source file; the source's
#    format is kept), ready together, pivoted in one short guest pause.
# 3. Once the group is pivoted, runs `virsh migrate --live --persistent --undefinesource
#    [VIRSH_MIGRATE_OPTION...] DOMAIN DEST_URI`: only memory moves, the disks are shared.
# On failure or interruption before the pivot it aborts its own group, and only that group: a
# job it did not start is never aborted. After the pivot nothing is undone: the guest runs on the
# shared copies here and the migration can be retried.
#
# Environment: BLOCKCOPY_AGENT (default: blockcopy-agent), BLOCKCOPY_ARGS (client options, e.g.
# "--url wss://hv1:7879 --ca /etc/ssl/agent-ca.pem"; BLOCKCOPY_TOKEN for the token), MOVE_ARGS
# (extra copy-group options, e.g. "--timeout 3600 --max-pause 5"), VIRSH_URI (default
# qemu:///system). Exit status: 0 migrated; 1 refused or failed (the reason on stderr); 2 usage;
# 130/143 interrupted (its own copies aborted).
set -euo pipefail

usage() {
  sed -n '2,22p' "$0" >&2
  exit 2
}
[ $# -ge 3 ] || usage
dom=$1 shared=${2%/} dest_uri=$3
shift 3
disks=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  disks+=("$1")
  shift
done
[ "${1:-}" = -- ] && shift
migrate_opts=("$@")

agent=${BLOCKCOPY_AGENT:-blockcopy-agent}
# shellcheck disable=SC2206
extra=(${BLOCKCOPY_ARGS:-})
# shellcheck disable=SC2206
move_args=(${MOVE_ARGS:-})
virsh=(virsh -c "${VIRSH_URI:-qemu:///system}")
bca() { "$agent" "$@" "${extra[@]}"; }
say() { echo "migrate-to-shared: $*" >&2; }

# 1. Someone else's unfinished job: stop here, touch nothing.
foreign=$(bca jobs "$dom" --json | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    for j in json.loads(line).get("jobs", []):
        if j["state"] not in ("pivoted", "finished", "completed", "cancelled", "failed"):
            print("%s job %s on %s is %s" % (j["kind"], j["jobId"], j["disk"], j["state"]))')
if [ -n "$foreign" ]; then
  say "$dom has unfinished jobs this script did not start; not touching them:"
  echo "$foreign" >&2
  exit 1
fi

# 2. The disks to move and where: file-backed disks, not yet under SHARED_DIR.
pairs=()
while read -r type device target source; do
  [ "$type" = file ] && [ "$device" = disk ] || continue
  if [ ${#disks[@]} -gt 0 ]; then
    case " ${disks[*]} " in *" $target "*) ;; *) continue ;; esac
  fi
  case $source in "$shared"/*) continue ;; esac
  ext=${source##*/}
  case $ext in *.*) ext=.${ext##*.} ;; *) ext= ;; esac
  pairs+=("$target=$shared/$dom-$target$ext")
done < <("${virsh[@]}" domblklist "$dom" --details | tail -n +3)

if [ ${#pairs[@]} -gt 0 ]; then
  group="to-shared-$(printf '%s' "$dom" | tr -c 'A-Za-z0-9._-' '_')-$(date +%s)-$$"
  pivoted=0
  on_exit() {
    rc=$?
    if [ "$pivoted" = 0 ]; then
      [ -z "${copier:-}" ] || kill "$copier" 2>/dev/null || true
      say "aborting group $group (this script's own copies only)"
      bca abort-group "$group" --json >/dev/null 2>&1 || true
    fi
    exit "$rc"
  }
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  say "moving ${pairs[*]} (group $group)"
  # In the background and waited for, so that a TERM or INT is handled at once.
  bca copy-group "$dom" "${pairs[@]}" --group-id "$group" --wait --pivot "${move_args[@]}" --json >&2 &
  copier=$!
  wait "$copier"
  state=$(bca group "$group" --json | python3 -c '
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
print((r.get("group") or r)["state"])')
  if [ "$state" != pivoted ]; then
    say "group $group ended $state, not pivoted"
    exit 1
  fi
  pivoted=1
  trap - EXIT INT TERM
  say "$dom runs on $shared"
else
  say "nothing to move: $dom's disks are already under $shared"
fi

# 3. Only memory has to move now.
say "migrating $dom to $dest_uri"
"${virsh[@]}" migrate --live --persistent --undefinesource "${migrate_opts[@]}" "$dom" "$dest_uri"
say "$dom migrated to $dest_uri"
