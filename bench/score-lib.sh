# Sourced by the bench/score*.sh scripts: the corpus, a scratch directory,
# and a scoring server on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
EML_DIR="${EML_DIR:-/tmp/sa-eml}"
PEERS="${PEERS_DIR:-../shared/bench/peers}"
[ -d "$EML_DIR/train/ham" ] && [ -d "$EML_DIR/test/ham" ] || python3 "$PEERS/export-corpus.py" "$EML_DIR"
work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# The key every benchmark server accepts (admin), and limits far above the load.
BENCH_KEY=bench-score-key-0123456789abcdef0123456789abcdef

# start_server [MODEL_FILE]: `mailroom serve` on a fresh SQLite database;
# sets $server (pid) and $base (URL). The model file is learned into.
start_server() {
  local port
  port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  DATABASE_URL="sqlite://$work/server.db" MAILROOM_API_KEYS="$BENCH_KEY" LOG_LEVEL=error \
    MAILROOM_SCORE_MODEL_PATH="${1:-$work/none.mrmodel}" \
    MAILROOM_RATE_LIMIT_KEY_PER_SECOND=1000000 MAILROOM_RATE_LIMIT_KEY_BURST=10000000 \
    ./target/release/mailroom serve --bind "127.0.0.1:$port" 2>/dev/null &
  server=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -fs "$base/health/ready" >/dev/null && return 0; sleep 0.1; done
  echo "server did not become ready" >&2
  return 1
}

stop_server() {
  kill "$server"; wait "$server" 2>/dev/null || true
  server=""
}
