#!/usr/bin/env bash
# Runs the test suite once per Keras backend (the backend is fixed when keras is imported,
# so each needs its own pytest process). Extra arguments go to pytest, e.g. -x.
# Tests marked slow (minutes each) are left out unless KERASVIT_SLOW=1.
# BACKENDS="jax torch" limits the backends.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TFDS_DATA_DIR:-}" ] && [ -d ../shared/tensorflow_datasets ]; then
    export TFDS_DATA_DIR="$(cd ../shared/tensorflow_datasets && pwd)"
fi
failed=()
marker=(-m "not slow")
if [ "${KERASVIT_SLOW:-0}" = 1 ]; then marker=(); fi
for backend in ${BACKENDS:-tensorflow jax torch}; do
    echo "=== KERAS_BACKEND=$backend"
    start=$(date +%s)
    KERAS_BACKEND=$backend .venv/bin/python -m pytest -q -p no:cacheprovider "${marker[@]}" "$@" \
        || failed+=("$backend")
    echo "=== KERAS_BACKEND=$backend took $(( $(date +%s) - start )) s"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED on: ${failed[*]}"
    exit 1
fi
echo "all backends passed"
