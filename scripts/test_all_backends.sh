#!/usr/bin/env bash
# Runs the test suite once per Keras backend (the backend is fixed when keras is imported,
# so each needs its own pytest process). Extra arguments go to pytest, e.g. -m "not slow".
# BACKENDS="jax torch" limits the backends.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TFDS_DATA_DIR:-}" ] && [ -d ../shared/tensorflow_datasets ]; then
    export TFDS_DATA_DIR="$(cd ../shared/tensorflow_datasets && pwd)"
fi
failed=()
for backend in ${BACKENDS:-tensorflow jax torch}; do
    echo "=== KERAS_BACKEND=$backend"
    start=$(date +%s)
    KERAS_BACKEND=$backend .venv/bin/python -m pytest -q -p no:cacheprovider "$@" || failed+=("$backend")
    echo "=== KERAS_BACKEND=$backend took $(( $(date +%s) - start )) s"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED on: ${failed[*]}"
    exit 1
fi
echo "all backends passed"
