#!/usr/bin/env bash
# hostagent against the servers people run today (Kea, dnsmasq, tftpd-hpa), same load, same veth path.
#
#   sudo bench/run.sh            full run (~20 min): writes BENCHMARKS.md at the repo root
#   sudo bench/run.sh --smoke    tiny sizes, checks answers only (sha256, unique leases); report to a temp
#                                file; exits non-zero on a wrong answer. What CI runs.
#
# Everything runs inside network namespaces this script creates; they are deleted on exit, also on
# failure or Ctrl-C. Env: BENCH_SECTIONS=memory,memory_guests,apply,dhcp,dhcp6,leasedb,tftp,http,dns,storm,profile
# (a subset, reported to a temp file, not BENCHMARKS.md);
# BENCH_HOSTAGENT=/path/to/hostagent (prebuilt; dhcp-flood, dhcp-load and udp-pingpong beside it)
# skips the cargo build.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root (namespaces, ports 53 and 67)" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1

# Peers and tools, from Debian (the one install-and-verify rule: scripts/install-deps.sh). The
# harness never uses their packaged services; on a systemd host apt enables kea-dhcp4-server and
# tftpd-hpa for the host: `systemctl disable --now` them if unwanted.
deps=(--bench)
[ $smoke = 0 ] && deps+=(--profile)
"$repo/scripts/install-deps.sh" "${deps[@]}"

# Smoke checks answers, not speed: it reuses the debug build the test suite makes. Figures come
# from release builds only.
profile=release
[ $smoke = 1 ] && profile=${BENCH_PROFILE:-debug}
cargo_flags=(-p hostagent -p hostagent-tests)
[ "$profile" = release ] && cargo_flags+=(--release)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin="$target_dir/$profile/hostagent"
if [ -n "${BENCH_HOSTAGENT:-}" ]; then
  bin=$BENCH_HOSTAGENT   # a prebuilt hostagent with the test kit's load tools beside it: no build
else
  (cd "$repo" && cargo build -q "${cargo_flags[@]}")
fi

prefix="hab$$-"
cleanup() {
  # Namespaces of this run (bench.py deletes them too; this covers a kill of bench.py itself).
  for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

if [ $smoke = 1 ]; then
  out=$(mktemp /tmp/hostagent-bench-smoke.XXXXXX.md)
elif [ -n "${BENCH_SECTIONS:-}" ]; then
  # A subset's report would replace every other section of BENCHMARKS.md: it goes to a temp file.
  out=$(mktemp /tmp/hostagent-bench-sections.XXXXXX.md)
else
  out="$repo/BENCHMARKS.md"
fi
args=(--hostagent "$bin" --out "$out" --prefix "$prefix")
[ $smoke = 1 ] && args+=(--smoke)
[ -n "${BENCH_SECTIONS:-}" ] && args+=(--sections "$BENCH_SECTIONS")
start=$(date +%s)
rc=0
python3 "$here/bench.py" "${args[@]}" || rc=$?
echo "bench: $(( $(date +%s) - start )) s, report: $out"
exit $rc
