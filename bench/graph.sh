#!/usr/bin/env bash
# The Microsoft 365 source against the Graph simulator (release build, a
# fresh SQLite database by default): a burst of 5,000 notifications, 64
# POSTs in flight (webhook acknowledgements/s, p50/p99), every message
# processed exactly once, then 300 messages at 50/s for the
# notification-to-processed latency (p50/p99).
#
# Usage: bench/graph.sh [--database-url postgres://…] [--notifications N] [--concurrency C]
# Results: bench/results/graph-*.json
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mailroom -p mailroom-loadgen
mkdir -p bench/results
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
db="sqlite://$work/graph.db"
for arg in "$@"; do [[ "$arg" == --database-url ]] && db=""; done
./target/release/mailroom-loadgen graph-load ${db:+--database-url "$db"} "$@" \
  | tee "bench/results/graph-$stamp.json"
