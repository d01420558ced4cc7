#!/bin/sh
# CI smoke run of every fuzz target: build them all, then run each for SECONDS (default 20) over
# its committed corpus (new inputs go to a scratch dir, so the committed corpora stay as they are).
# Exits non-zero if a build fails or any target crashes, leaks past the RSS limit or hangs; the
# crashing input is left in fuzz/artifacts/<target>/ for upload.
#
# Needs: cargo-fuzz (`cargo install cargo-fuzz`, ~3 min) and a stable toolchain (RUSTC_BOOTSTRAP
# lets stable accept the sanitizer flags cargo-fuzz passes).
#
# usage: fuzz/run-smoke.sh [SECONDS]
set -eu

SECONDS_PER_TARGET="${1:-20}"
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
export RUSTC_BOOTSTRAP=1
cargo fuzz build
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN="target/$TRIPLE/release"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

failed=""
# Regression: the inputs fuzzing found once (fixed in pxe's wire.rs, dns's relay.rs and ra's server.rs) must stay
# harmless. Each file is named after its target: <target>-<what it found>.bin.
for f in artifacts-keep/*; do
    target="$(basename "$f")"
    target="${target%%-*}"
    "$BIN/$target" "$f" >/dev/null 2>&1 || { echo "regression: $f crashes $target again"; failed="$failed $target"; }
done
for target in $(cargo fuzz list); do
    mkdir -p "artifacts/$target" "$SCRATCH/$target"
    echo "== $target: ${SECONDS_PER_TARGET}s"
    if "$BIN/$target" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -max_len=8192 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$target/" \
        "$SCRATCH/$target" "corpus/$target" >"$SCRATCH/$target.log" 2>&1; then
        grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units' "$SCRATCH/$target.log" || true
    else
        echo "!! $target FAILED:"
        tail -n 60 "$SCRATCH/$target.log"
        failed="$failed $target"
    fi
done

if [ -n "$failed" ]; then
    echo "fuzz smoke failed:$failed (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "fuzz smoke: all targets ran ${SECONDS_PER_TARGET}s without a finding"
