#!/usr/bin/env bash
# Ingest and processing benchmark, on SQLite and PostgreSQL.
#
# Measures, per backend, with the release binary on a fresh database:
#   - messages accepted per second over HTTP (unique ~10 KB messages,
#     32 concurrent clients), and request latency percentiles;
#   - end-to-end processed per second (first request sent -> last processed);
#   - RSS at idle, after ingest, and peak (VmHWM); server CPU per message;
#   - time from process start to /health/ready = 200.
# Usage: bench/ingest.sh [MESSAGES]   (default 20000)
# Env:   BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test;
#        set to "" to skip PostgreSQL). Results: bench/results/ingest-*.json
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES="${1:-20000}"
PG_URL="${BENCH_POSTGRES_URL-postgres://postgres@127.0.0.1:5432/test}"
cargo build --release -p mailroom -p mailroom-loadgen
mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== SQLite"
./target/release/mailroom-loadgen --database-url "sqlite://$work/bench.db" \
  --messages "$MESSAGES" --label sqlite | tee "bench/results/ingest-sqlite-$stamp.json"

if [ -n "$PG_URL" ]; then
  echo "== PostgreSQL"
  db="mailroom_bench_$$"
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  ./target/release/mailroom-loadgen --database-url "${PG_URL%/*}/$db" \
    --messages "$MESSAGES" --label postgres | tee "bench/results/ingest-postgres-$stamp.json"
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
fi
