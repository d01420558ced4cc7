#!/usr/bin/env bash
# Installs what hostagent and its test suite need on Debian 12 / Ubuntu. Idempotent; run as root.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (sudo $0)" >&2; exit 1; }

runtime=(nftables iproute2 ipxe kmod procps)
build=(gcc)   # libvirt is loaded at run time (libvirt0), not linked
tests=(busybox-static isc-dhcp-client atftp curl cpio gzip tcpdump
       qemu-system-x86 ovmf ipxe-qemu
       libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-utils)
want=("${runtime[@]}" "${build[@]}")
[ "${1:-}" = "--tests" ] && want+=("${tests[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps.sh: cargo not found; install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi
if [ "${1:-}" = "--tests" ] && ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
if [ "${1:-}" = "--tests" ] && ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
