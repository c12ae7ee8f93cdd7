#!/usr/bin/env bash
# Sets everything up, then trains the CNN for one epoch on CIFAR-10 and evaluates it
# (about 5-10 minutes on a 2-core CPU with TensorFlow, the fastest backend for it there).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Offline machines of this project keep a TFDS copy of CIFAR-10 beside the repo; elsewhere
# tfds downloads it (~160 MB) on first use.
if [ -z "${TFDS_DATA_DIR:-}" ] && [ -d ../shared/tensorflow_datasets ]; then
    export TFDS_DATA_DIR="$(cd ../shared/tensorflow_datasets && pwd)"
fi
export KERAS_BACKEND="${KERAS_BACKEND:-tensorflow}"
RUN_DIR="runs/quickstart-cnn-${KERAS_BACKEND}-$(date +%Y%m%d-%H%M%S)"
.venv/bin/python -m kerasvit.train --model cnn --epochs 1 --run-dir "$RUN_DIR"
.venv/bin/python -m kerasvit.evaluate "$RUN_DIR"
echo "Done: open $RUN_DIR/report.md, or run: .venv/bin/tensorboard --logdir runs"
