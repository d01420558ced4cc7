#!/usr/bin/env bash
# The whole test suite, as root: unit tests, integration tests in network namespaces the tests
# create and delete, and end-to-end QEMU network boots. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: the tests create network namespaces: run as root (sudo $0)" >&2; exit 1; }
./scripts/install-deps.sh --tests
./tests/payload/build.sh
cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast "$@"
# Short runs that keep the benchmark harness and the fuzz targets from rotting: they check answers
# (sha256, unique leases, no crash), not speed. HOSTAGENT_SKIP_SMOKE=1 skips them.
if [ "${HOSTAGENT_SKIP_SMOKE:-0}" != 1 ]; then
  ./bench/run.sh --smoke
  sh fuzz/run-smoke.sh 15
fi
