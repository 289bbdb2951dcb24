#!/usr/bin/env bash
# The shipped model on the TEST split with a reviewer correcting every
# mistake as it is made (bench/score_feedback.py): what online learning
# from corrections buys. The shipped model file is not touched; the server
# learns into a scratch copy.
# Usage: bench/score-feedback.sh [SPLIT_DIR [MODEL]]
#        (default: $EML_DIR/test and models/default.mrmodel)
# Env:   EML_DIR (default /tmp/sa-eml)
set -euo pipefail
cd "$(dirname "$0")/.."
EML_DIR="${EML_DIR:-/tmp/sa-eml}"
[ -d "$EML_DIR/test/ham" ] || python3 "${PEERS_DIR:-../shared/bench/peers}/export-corpus.py" "$EML_DIR"
cargo build --release -p mailroom
work="$(mktemp -d)"
key=bench-feedback-key-0123456789abcdef0123456789abcdef
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
split="${1:-$EML_DIR/test}"
cp "${2:-models/default.mrmodel}" "$work/live.mrmodel"
DATABASE_URL="sqlite://$work/db" MAILROOM_API_KEYS="$key" LOG_LEVEL=error \
  MAILROOM_SCORE_MODEL_PATH="$work/live.mrmodel" \
  MAILROOM_RATE_LIMIT_KEY_PER_SECOND=1000000 MAILROOM_RATE_LIMIT_KEY_BURST=10000000 \
  ./target/release/mailroom serve --bind "127.0.0.1:$port" 2>/dev/null &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
python3 bench/score_feedback.py "http://127.0.0.1:$port" "$key" "$split"
