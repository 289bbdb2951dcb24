#!/usr/bin/env bash
# Overhead of authentication + rate limiting on a cheap authenticated GET.
#
# Runs the release server on one fresh SQLite database in three
# configurations, interleaved ROUNDS times (so machine drift hits all alike):
#   no_auth_no_limits          --insecure-no-auth, rate_limit.enabled = false
#   api_key_and_memory_limits  a database API key (read scope), in-memory limiter
#   api_key_and_redis_limits   the same with the Redis limiter (REDIS_URL)
# and measures requests/s of GET /api/v1/jobs?state=dead&limit=1 with 16
# concurrent keep-alive clients; prints medians and the overhead in percent.
# Usage: bench/auth.sh [SECONDS_PER_RUN] [ROUNDS]   (default 8, 3)
# Env:   BENCH_REDIS_URL (default redis://127.0.0.1:6379; "" skips Redis).
# Results: bench/results/auth-overhead-*.json
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-8}"
ROUNDS="${2:-3}"
REDIS="${BENCH_REDIS_URL-redis://127.0.0.1:6379}"
cargo build --release -p mailroom -p mailroom-loadgen
mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
./target/release/mailroom-loadgen auth-overhead \
  --database-url "sqlite://$work/bench.db" \
  --seconds "$SECONDS_PER_RUN" --rounds "$ROUNDS" --redis-url "$REDIS" \
  | tee "bench/results/auth-overhead-$stamp.json"
