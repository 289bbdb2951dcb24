#!/usr/bin/env bash
# Mail Score on the TEST split of the public SpamAssassin corpus, side by
# side with rspamd and SpamAssassin when ../shared/bench/peers has them
# running (bash setup.sh && bash train.sh there, same TRAIN split).
#
#   mailroom   `mailroom score` over every test file, both cores, shipped
#              model: F1, ham false-positive rate, messages/s, in-process
#              p50/p99 per message (scan_time_us, parsing included)
#   rspamd     scan.py --proto rspamd (its /checkv2), 4 clients: messages/s
#   spamassassin (BENCH_SA=1; ~5 min) scan.py --proto spamc: messages/s
#
# Usage: bench/score.sh     Env: EML_DIR (default /tmp/sa-eml), PEERS_DIR
# Results: bench/results/score-*.json
set -euo pipefail
cd "$(dirname "$0")/.."
EML_DIR="${EML_DIR:-/tmp/sa-eml}"
PEERS="${PEERS_DIR:-../shared/bench/peers}"
[ -d "$EML_DIR/test/ham" ] || python3 "$PEERS/export-corpus.py" "$EML_DIR"
cargo build --release -p mailroom
mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Warm the page cache so the first scorer does not pay for the disk.
cat "$EML_DIR"/test/*/*.eml > /dev/null
start=$(date +%s.%N)
MAILROOM_SCORE_MODEL_PATH="$work/none.mrmodel" ./target/release/mailroom score --quiet "$EML_DIR/test" > "$work/mailroom.jsonl" || true
end=$(date +%s.%N)
mailroom=$(python3 bench/score_eval.py "$work/mailroom.jsonl" "$(python3 -c "print($end - $start)")")
echo "mailroom: $mailroom"

peer() { # NAME PROTO PORT
  if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
    python3 "$PEERS/scan.py" --proto "$2" --port "$3" --concurrency 4 \
      --out "$work/$1.jsonl" --meta "$work/$1.meta.json" "$EML_DIR/test" > /dev/null
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps({k: m[k] for k in m if k in ('msgs_per_s','wall_s','latency_ms','n')}))" "$work/$1.meta.json"
  else
    echo '"not running"'
  fi
}
rspamd=$(peer rspamd rspamd "${RSPAMD_PORT:-11383}")
echo "rspamd: $rspamd"
spamassassin='"skipped (BENCH_SA=1 to run)"'
if [ "${BENCH_SA:-0}" = 1 ]; then spamassassin=$(peer spamassassin spamc "${SPAMD_PORT:-7830}"); fi
echo "spamassassin: $spamassassin"
printf '{"mailroom": %s, "rspamd": %s, "spamassassin": %s}\n' "$mailroom" "$rspamd" "$spamassassin" \
  | tee "bench/results/score-$stamp.json"
