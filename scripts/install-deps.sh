#!/usr/bin/env bash
# Installs what hostagent, its test suite (--tests) and its benchmark harness (--bench, --profile)
# need on Debian 12 / Ubuntu. Idempotent; run as root.
#
# Every wanted package goes into ONE apt transaction whenever anything is missing, so apt must
# satisfy all of them together: installing one can no longer remove another that was already there
# (e.g. qemu-utils from bookworm-backports, removed when qemu-system-x86 came from bookworm). Then
# every package and every command the tests run is checked AFTER the install, and the script fails
# naming what is missing.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (sudo $0)" >&2; exit 1; }

runtime=(nftables iproute2 ipxe kmod procps)
build=(gcc)   # libvirt is loaded at run time (libvirt0), not linked
tests=(busybox-static isc-dhcp-client atftp curl cpio gzip tcpdump bind9-dnsutils dnsmasq-base dnsperf
       iptables firewalld dbus-daemon util-linux dhcpcd-base
       pxelinux syslinux-common shim-signed grub-efi-amd64-signed debian-installer-12-netboot-amd64
       qemu-system-arm qemu-efi-aarch64 ndisc6
       qemu-system-x86 ovmf ipxe-qemu
       libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-utils
       postgresql)
# Commands the suite runs, with the package that ships each: a package can be "installed" and
# still lack the file (a diverted or half-removed package), so the files are checked too.
runtime_cmds=(nft:nftables ip:iproute2 modprobe:kmod sysctl:procps)
test_cmds=(busybox:busybox-static dhclient:isc-dhcp-client atftp:atftp curl:curl cpio:cpio
           tcpdump:tcpdump dig:bind9-dnsutils dnsmasq:dnsmasq-base dnsperf:dnsperf
           iptables-nft:iptables firewall-cmd:firewalld firewalld:firewalld dbus-daemon:dbus-daemon
           unshare:util-linux dhcpcd:dhcpcd-base qemu-system-aarch64:qemu-system-arm rdisc6:ndisc6
           qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils
           libvirtd:libvirt-daemon virsh:libvirt-clients)
# The peers and tools of the benchmark harness (bench/run.sh); --profile adds perf.
bench=(kea-dhcp4-server kea-dhcp6-server kea-admin dnsmasq-base tftpd-hpa atftp curl hyperfine busybox-static
       iproute2 python3 dnsperf postgresql)
bench_cmds=(perfdhcp:kea-admin kea-dhcp4:kea-dhcp4-server kea-dhcp6:kea-dhcp6-server in.tftpd:tftpd-hpa hyperfine:hyperfine
            dnsperf:dnsperf python3:python3)
want=("${runtime[@]}" "${build[@]}")
cmds=("${runtime_cmds[@]}")
with_tests=0
for arg in "$@"; do
  case "$arg" in
    --tests) with_tests=1; want+=("${tests[@]}"); cmds+=("${test_cmds[@]}") ;;
    --bench) want+=("${bench[@]}"); cmds+=("${bench_cmds[@]}") ;;
    --profile) want+=(linux-perf); cmds+=(perf:linux-perf) ;;
    *) echo "usage: install-deps.sh [--tests] [--bench] [--profile]" >&2; exit 2 ;;
  esac
done

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
has_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
for c in "${cmds[@]}"; do has_cmd "${c%%:*}" || missing+=("${c#*:}"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps.sh: missing: ${missing[*]}; installing every wanted package in one transaction"
  export DEBIAN_FRONTEND=noninteractive
  apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
  "${apt[@]}" update
  # The tests run firewalld only inside their own namespace, on a private D-Bus, and PostgreSQL
  # only as a private cluster in a temporary directory (testkit::PgCluster). Installing the
  # packages must not start them on this host (firewalld would apply its default zone to the
  # host's own interfaces; postgresql would start the machine's own cluster): while apt runs, a
  # policy-rc.d refuses every service start, as in a container build; on a systemd host the
  # units are then disabled so they do not start at the next boot.
  firewalld_new=0
  installed firewalld || firewalld_new=1
  postgresql_new=0
  installed postgresql || postgresql_new=1
  wants() { printf '%s\n' "${want[@]}" | grep -qx "$1"; }
  if { { [ $firewalld_new = 1 ] && wants firewalld; } || { [ $postgresql_new = 1 ] && wants postgresql; }; } \
     && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# hostagent install-deps.sh: no service starts while it installs\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  # First every wanted package at once. That fails when an installed package comes from outside
  # the configured repositories and breaks what they ship: this machine image carries qemu-utils
  # 10.0 from bookworm-backports, which Breaks bookworm's qemu-system-common 7.2. Then install
  # what is missing (apt may remove such a package to make room) and install again whatever that
  # removed, now in the repositories' version. The check after all of this is what counts.
  if ! "${apt[@]}" install "${want[@]}"; then
    echo "install-deps.sh: not installable together as they are; installing the missing ones first"
    "${apt[@]}" install "${missing[@]}"
    again=()
    for p in "${want[@]}"; do installed "$p" || again+=("$p"); done
    if [ ${#again[@]} -gt 0 ]; then
      echo "install-deps.sh: installing again what that removed: ${again[*]}"
      "${apt[@]}" install "${again[@]}"
    fi
  fi
  # --reinstall only for packages whose status is fine but whose files are gone.
  for c in "${cmds[@]}"; do
    has_cmd "${c%%:*}" || "${apt[@]}" install --reinstall "${c#*:}"
  done
  if [ $firewalld_new = 1 ] && installed firewalld && [ -d /run/systemd/system ]; then
    systemctl disable firewalld.service >/dev/null 2>&1 || true
    echo "install-deps.sh: firewalld installed for the tests, not started and disabled on this host"
  fi
  if [ $postgresql_new = 1 ] && installed postgresql && [ -d /run/systemd/system ]; then
    systemctl disable postgresql.service >/dev/null 2>&1 || true
    echo "install-deps.sh: postgresql installed for the tests, its own cluster not started and disabled"
  fi
fi

# Verify after installing: what apt did is checked, not assumed.
gone=()
for p in "${want[@]}"; do installed "$p" || gone+=("package $p"); done
for c in "${cmds[@]}"; do has_cmd "${c%%:*}" || gone+=("command ${c%%:*} (package ${c#*:})"); done
if [ ${#gone[@]} -gt 0 ]; then
  echo "install-deps.sh: still missing after installing: ${gone[*]}" >&2
  echo "  another package's install may have removed them; see 'apt-get install -s ${want[*]}'" >&2
  exit 1
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps.sh: cargo not found; install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi
if [ $with_tests = 1 ]; then
  cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest
  cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
fi
echo "install-deps.sh: all ${#want[@]} packages and ${#cmds[@]} commands present"
