#!/usr/bin/env bash
# Runs the test suite once per Keras backend (the backend is fixed when keras is imported,
# so each needs its own pytest process). Extra arguments go to pytest, e.g. -x.
# Tests marked slow (minutes each) are left out unless KERASVIT_SLOW=1.
# BACKENDS="jax torch" limits the backends.
# Each pass runs on WORKERS pytest-xdist processes (default 2), a test file per worker: one
# process kept 1.3 of the 2 cores busy (imports, XLA compiles and small models are serial);
# the timings are in the README's Tests section. WORKERS=0 runs in this process (-x, pdb).
# DIST=load hands out single tests instead of files: for the slow pass, whose 18 config runs
# are one file and share no fixture worth keeping on one worker.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TFDS_DATA_DIR:-}" ] && [ -d ../shared/tensorflow_datasets ]; then
    export TFDS_DATA_DIR="$(cd ../shared/tensorflow_datasets && pwd)"
fi
failed=()
marker=(-m "not slow")
workers=(-n "${WORKERS:-2}" --dist "${DIST:-loadfile}")
if [ "${WORKERS:-2}" = 0 ]; then workers=(); fi
if [ "${KERASVIT_SLOW:-0}" = 1 ]; then marker=(); fi
for backend in ${BACKENDS:-tensorflow jax torch}; do
    echo "=== KERAS_BACKEND=$backend"
    start=$(date +%s)
    KERAS_BACKEND=$backend .venv/bin/python -m pytest -q -p no:cacheprovider "${marker[@]}" "${workers[@]}" "$@" \
        || failed+=("$backend")
    echo "=== KERAS_BACKEND=$backend took $(( $(date +%s) - start )) s"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED on: ${failed[*]}"
    exit 1
fi
echo "all backends passed"
