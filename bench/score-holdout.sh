#!/usr/bin/env bash
# Model choices (FTRL strengths, points offset, which headers are features)
# are made on a hold-out of the TRAIN split, never on the TEST split:
# fit on the first 70% of spam-1 and easy-ham-1 (by id, i.e. by time) and
# on hard-ham-1 ids 1 mod 4; evaluate on the rest. Extra arguments go to
# `mailroom train` (e.g. --l1 1 --spam-weight 2).
# Usage: bench/score-holdout.sh [TRAIN FLAGS]   Env: EML_DIR (default /tmp/sa-eml)
source "$(dirname "$0")/score-lib.sh"
cargo build --release -p mailroom
mkdir -p "$work"/{fit,val}/{ham,spam}
for label in ham spam; do
  for source in $(ls "$EML_DIR/train/$label" | sed 's/-[0-9]*\.eml$//' | sort -u); do
    files=($(ls "$EML_DIR/train/$label" | grep "^$source-" | sort))
    cut=$(( ${#files[@]} * 7 / 10 ))
    for i in "${!files[@]}"; do
      f=${files[$i]}
      id=$((10#$(echo "$f" | sed 's/.*-\([0-9]*\)\.eml$/\1/')))
      if [ "$source" = hard-ham-1 ]; then part=$([ $((id % 4)) = 1 ] && echo fit || echo val)
      else part=$([ "$i" -lt "$cut" ] && echo fit || echo val); fi
      ln -s "$EML_DIR/train/$label/$f" "$work/$part/$label/$f"
    done
  done
done
./target/release/mailroom train --quiet --ham "$work/fit/ham" --spam "$work/fit/spam" \
  --out "$work/holdout.mrmodel" "$@"
MAILROOM_SCORE_MODEL_PATH="$work/holdout.mrmodel" ./target/release/mailroom score --quiet \
  "$work/val" > "$work/val.jsonl" || true
python3 bench/score_eval.py "$work/val.jsonl" 1
