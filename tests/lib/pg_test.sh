#!/bin/bash
# pg_test.sh: the set-up the shell integration tests on PostgreSQL share.
# Source it after `set -euo pipefail`. It gives:
#   SRC, BUILD       the source and build roots (from meson's test env)
#   T                a scratch directory
#   PGDIR            the directory for a pg_cluster.sh cluster
#   PIDS             append the processes you start; they are killed at exit
# and the pg_cluster_* functions. At exit everything is stopped and
# removed. Define fail() yourself when you want more than the message.
SRC=${MCD_SOURCE_ROOT:?}
BUILD=${MCD_BUILD_ROOT:?}
# shellcheck source=tests/lib/pg_cluster.sh
source "$SRC/tests/lib/pg_cluster.sh"

T=$(mktemp -d)
PGDIR=$(mktemp -d)
PIDS=()
pg_test_cleanup() {
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	pg_cluster_stop "$PGDIR" || true
	rm -rf "$T"
}
trap pg_test_cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
