#!/usr/bin/env bash
# Reproduce the demo policies in models/: seeded expert demonstrations -> seeded CfC/NCP training.
# Usage: scripts/train_demo_policies.sh [PYTHON]   (default .venv/bin/python; run from the repo root)
# CONFIG_DIR (default config/) holds <robot>.yaml; DATA_DIR (default out/demos) receives the bags;
# MODELS_DIR (default models/) receives <robot>.npz plus loss / rollout plots.
set -euo pipefail
PY=${1:-.venv/bin/python}
CONFIG_DIR=${CONFIG_DIR:-config}
DATA_DIR=${DATA_DIR:-out/demos}
MODELS_DIR=${MODELS_DIR:-models}
export OMP_NUM_THREADS=1  # bit-reproducible CPU training
for robot in diff_drive arm; do
  rm -rf "$DATA_DIR/$robot"
  "$PY" -m lnn_control.record --robot "$robot" --episodes 48 --out "$DATA_DIR/$robot" --seed 100
  "$PY" -m lnn_control.cli train --config "$CONFIG_DIR/$robot.yaml" --data "$DATA_DIR/$robot" \
    --cell cfc --wiring ncp --units 19 --epochs 60 --window 32 --lr 1e-2 --patience 10 --seed 0 \
    --out "$MODELS_DIR/$robot.npz" --no-progress
done
