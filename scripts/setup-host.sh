#!/usr/bin/env bash
# Prepare this host to run blockcopy-agent against a real libvirtd with QEMU.
# Idempotent: every step checks first and says only what it changed.
# Works on a Debian 12 machine with or without systemd (containers, CI).
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "setup-host: must run as root" >&2; exit 1; }

say() { echo "setup-host: $*"; }
URI=qemu:///system

PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
          qemu-system-x86 qemu-utils pkg-config openssl)
# Extra packages the test suite uses (Ansible playbooks, linters; debhelper, help2man, dpkg-dev and
# lintian build and check the Debian package). BLOCKCOPY_SETUP_MINIMAL=1 skips them.
TEST_PACKAGES=(ansible-core yamllint pycodestyle systemd nasm prometheus ansible-lint debootstrap lintian dpkg-dev
               debhelper help2man python3-websocket python3-voluptuous pylint)

missing=()
wanted=("${PACKAGES[@]}")
[ "${BLOCKCOPY_SETUP_MINIMAL:-0}" = 1 ] || wanted+=("${TEST_PACKAGES[@]}")
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# What the Debian maintainer scripts normally create, but which is absent when they ran
# without systemd-sysusers or in a minimal container.
if ! getent group kvm >/dev/null; then say "creating group kvm"; groupadd --system kvm; fi
if ! getent group libvirt-qemu >/dev/null; then say "creating group libvirt-qemu"; groupadd --system libvirt-qemu; fi
if ! getent group libvirt >/dev/null; then say "creating group libvirt"; groupadd --system libvirt; fi
if ! id libvirt-qemu >/dev/null 2>&1; then
  say "creating user libvirt-qemu"
  useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
    --gid libvirt-qemu --groups kvm libvirt-qemu
fi
for d in /var/log/libvirt /var/log/libvirt/qemu /run/libvirt /var/lib/libvirt/images /var/cache/libvirt; do
  [ -d "$d" ] || { say "creating $d"; mkdir -p "$d"; }
done
if [ -e /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
  say "giving /dev/kvm to group kvm"
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

answers() { timeout 10 virsh -q -c "$URI" version >/dev/null 2>&1; }

if ! answers; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    say "starting libvirtd through systemd"
    systemctl start virtlogd.socket libvirtd.socket libvirtd.service 2>/dev/null || true
  fi
fi
if ! answers; then
  # No systemd: run the daemons ourselves. A stale pid file from a dead daemon blocks restart.
  if ! pgrep -x virtlogd >/dev/null; then
    rm -f /run/libvirt/virtlogd.pid
    say "starting virtlogd"
    virtlogd -d
  fi
  if ! pgrep -x libvirtd >/dev/null; then
    rm -f /run/libvirtd.pid
    say "starting libvirtd"
    libvirtd -d
  fi
  for _ in $(seq 1 100); do answers && break; sleep 0.2; done
fi
answers || { echo "setup-host: libvirtd does not answer on $URI" >&2; exit 1; }

if [ -r /dev/kvm ] && [ -w /dev/kvm ] && qemu-system-x86_64 -accel help 2>/dev/null | grep -qx kvm; then
  accel=kvm
else
  accel=tcg
fi
say "ready: $(virsh -c "$URI" version 2>/dev/null | grep -E 'library|hypervisor' | tr -s ' ' | paste -sd';'), accel=$accel"
