#!/usr/bin/env bash
# MCP over Streamable HTTP on a fresh SQLite database (release build):
# 500 stored messages, then 16 concurrent stateless (2026-07-28) clients,
# closed loop, 5 s per workload: tools/list, tools/call messages_list (a page
# of 20), tools/call message_get (the parsed view of one message); calls/s,
# p50/p99 latency and server CPU per call. Then 200 legacy (2025-11-25)
# sessions are opened and the server's RSS growth per session is reported.
#
# Usage: bench/mcp.sh        Results: bench/results/mcp-*.json
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mailroom -p mailroom-loadgen
mkdir -p bench/results
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
./target/release/mailroom-loadgen mcp-load --database-url "sqlite://$work/mcp.db" "$@" \
  | tee "bench/results/mcp-$stamp.json"
