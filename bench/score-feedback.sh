#!/usr/bin/env bash
# The shipped model on the TEST split with a reviewer correcting every
# mistake as it is made (bench/score_feedback.py): what online learning
# from corrections buys. The shipped model file is not touched; the server
# learns into a scratch copy.
# Usage: bench/score-feedback.sh [SPLIT_DIR [MODEL]]
#        (default: $EML_DIR/test and models/default.mrmodel)
# Env:   EML_DIR (default /tmp/sa-eml)
source "$(dirname "$0")/score-lib.sh"
cargo build --release -p mailroom
split="${1:-$EML_DIR/test}"
cp "${2:-models/default.mrmodel}" "$work/live.mrmodel"
start_server "$work/live.mrmodel"
python3 bench/score_feedback.py "$base" "$BENCH_KEY" "$split"
