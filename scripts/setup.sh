#!/usr/bin/env bash
# Creates .venv in the repo root with kerasvit, all three Keras backends (TensorFlow,
# JAX, PyTorch CPU), the Gradio demo, ONNX export, W&B, the bench's Hugging Face baseline
# and the test tools, the demo's browser test included. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned to 2.13.0 in pyproject.toml: a bare `torch` pulls a multi-GB CUDA build.
# For a CPU-only torch elsewhere: .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
.venv/bin/python -m pip install --quiet -e ".[all,dev,demo,export,wandb,hf,browser]"
.venv/bin/python -c "import keras, tensorflow, jax, torch, keras_hub; print('installed: keras', keras.__version__, '| tensorflow', tensorflow.__version__, '| jax', jax.__version__, '| torch', torch.__version__, '| keras-hub', keras_hub.__version__)" 2>/dev/null
# Chromium for the demo's browser test (Debian's, through apt-get where this is root); where
# it cannot be installed, setup_browser.sh says why and the test is skipped with that reason.
bash scripts/setup_browser.sh
