#!/usr/bin/env bash
# Mail Score on the TEST split of the public SpamAssassin corpus, side by
# side with rspamd and SpamAssassin when ../shared/bench/peers has them
# running (bash setup.sh && bash train.sh there, same TRAIN split).
#
#   mailroom   `mailroom score` over every test file, both cores, shipped
#              model, median of three runs:
#              F1, ham false-positive rate, messages/s, in-process
#              p50/p99 per message (scan_time_us, parsing included)
#   rspamd     scan.py --proto rspamd (its /checkv2), 4 clients: messages/s,
#              with Bayes and rules only (its fastest configuration) when
#              the peers' setup.sh made both (RSPAMD_VARIANTS to choose)
#   spamassassin (BENCH_SA=1; ~5 min) scan.py --proto spamc: messages/s
#   http_open_loop   POST /api/v1/score offered 2,000 requests/s for 10 s
#              by mailroom-loadgen score-load (a second process), latency
#              from each request's due time (tokio's timer adds up to 1 ms)
#   http_max   the same route under wrk (16 connections, 10 s, closed
#              loop): the most requests/s the server answers, when wrk is
#              installed (Debian package wrk)
#
# Usage: bench/score.sh     Env: EML_DIR (default /tmp/sa-eml), PEERS_DIR
# Results: bench/results/score-*.json
source "$(dirname "$0")/score-lib.sh"
cargo build --release -p mailroom -p mailroom-loadgen
mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)"

# Warm the page cache so the first scorer does not pay for the disk.
cat "$EML_DIR"/test/*/*.eml > /dev/null
# Three runs (this machine's neighbours make one run noisy); the median
# run's figures are reported.
for run in 1 2 3; do
  start=$(date +%s.%N)
  MAILROOM_SCORE_MODEL_PATH="$work/none.mrmodel" ./target/release/mailroom score --quiet "$EML_DIR/test" > "$work/mailroom-$run.jsonl" || true
  end=$(date +%s.%N)
  python3 bench/score_eval.py "$work/mailroom-$run.jsonl" "$(python3 -c "print($end - $start)")" > "$work/mailroom-$run.json"
done
mailroom=$(python3 -c "
import json, sys
runs = sorted((json.load(open(p)) for p in sys.argv[1:]), key=lambda r: r['messages_per_second'])
median = runs[len(runs) // 2]
median['messages_per_second_runs'] = [r['messages_per_second'] for r in runs]
print(json.dumps(median))" "$work"/mailroom-[123].json)
echo "mailroom: $mailroom"

# A run with failed or unsent requests exits non-zero: its figures still
# print, marked, and the rest of the benchmark goes on.
http_open_loop=$(./target/release/mailroom-loadgen score-load --database-url "sqlite://$work/load.db" \
  --model "$work/none.mrmodel" --corpus "$EML_DIR/test" --rate "${HTTP_RATE:-2000}" --seconds 10 \
  2>"$work/loadgen.err" > "$work/loadgen.json" && echo ok || echo failed)
http_open_loop=$(python3 -c "
import json, sys
try:
    result = json.load(open(sys.argv[1]))
except ValueError:
    result = {}
if sys.argv[2] != 'ok':
    result['failed_run'] = open(sys.argv[3]).read().strip()[-300:]
print(json.dumps(result))" "$work/loadgen.json" "$http_open_loop" "$work/loadgen.err")
echo "http_open_loop: $http_open_loop"

http_max='"wrk not installed"'
if command -v wrk >/dev/null; then
  start_server
  ls "$EML_DIR"/test/*/*.eml > "$work/bodies"
  http_max=$(BODIES="$work/bodies" KEY="$BENCH_KEY" wrk -t1 -c16 -d10s -s bench/score-http.lua \
    "$base/api/v1/score" | tail -1)
  stop_server
fi
echo "http_max: $http_max"

peer() { # NAME PROTO PORT
  if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
    python3 "$PEERS/scan.py" --proto "$2" --port "$3" --concurrency 4 \
      --out "$work/$1.jsonl" --meta "$work/$1.meta.json" "$EML_DIR/test" > /dev/null
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps({k: m[k] for k in m if k in ('msgs_per_s','wall_s','latency_ms','n')}))" "$work/$1.meta.json"
  else
    echo '"not running"'
  fi
}
# rspamd in each configuration the peers set up (with Bayes, and its
# fastest: rules only), switched with the peers' own start/stop helpers.
peers_state="${PEERS_STATE:-/var/tmp/peers-bench}"
if [ -f "$PEERS/lib.sh" ] && [ -d "$peers_state/rspamd/nobayes" ]; then
  rspamd="{"
  for variant in ${RSPAMD_VARIANTS:-bayes nobayes}; do
    other=$([ "$variant" = bayes ] && echo nobayes || echo bayes)
    (source "$PEERS/lib.sh"; stop_rspamd "$other"; start_rspamd "$variant") >/dev/null 2>&1 \
      || echo "rspamd ($variant) did not start" >&2
    rspamd="$rspamd\"$variant\": $(peer "rspamd-$variant" rspamd "${RSPAMD_PORT:-11383}"), "
  done
  # Leave the peers as setup.sh does: rspamd with Bayes.
  (source "$PEERS/lib.sh"; stop_rspamd nobayes; start_rspamd bayes) >/dev/null 2>&1 || true
  rspamd="${rspamd%, }}"
else
  rspamd=$(peer rspamd rspamd "${RSPAMD_PORT:-11383}")
fi
echo "rspamd: $rspamd"
spamassassin='"skipped (BENCH_SA=1 to run)"'
if [ "${BENCH_SA:-0}" = 1 ]; then spamassassin=$(peer spamassassin spamc "${SPAMD_PORT:-7830}"); fi
echo "spamassassin: $spamassassin"
printf '{"mailroom": %s, "http_open_loop": %s, "http_max": %s, "rspamd": %s, "spamassassin": %s}\n' \
  "$mailroom" "$http_open_loop" "$http_max" "$rspamd" "$spamassassin" \
  | tee "bench/results/score-$stamp.json"
