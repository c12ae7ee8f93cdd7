#!/usr/bin/env bash
# The README's test command (scripts/test_all_backends.sh), timed per backend on two checkouts
# side by side, alternating which goes first, on a machine with nothing else running:
#
#     bash bench/suite_times.sh ../kerasvit-before ../kerasvit-after
#     BACKENDS="jax torch" bash bench/suite_times.sh ../kerasvit-before ../kerasvit-after
#
# Each checkout needs its own .venv (a symlink to one is fine); PYTHONPATH points at the
# checkout so that the CLI subprocesses of the tests run its code too. Logs: $LOG_DIR (/tmp).
set -u
[ $# -eq 2 ] || { echo "usage: bash bench/suite_times.sh BEFORE_DIR AFTER_DIR" >&2; exit 2; }
LOG_DIR=${LOG_DIR:-/tmp}
if [ -z "${TFDS_DATA_DIR:-}" ] && [ -d ../shared/tensorflow_datasets ]; then
    export TFDS_DATA_DIR="$(cd ../shared/tensorflow_datasets && pwd)"
fi
one() {  # checkout backend
    local tree log start rc
    tree=$(cd "$1" && pwd)
    log="$LOG_DIR/suite-$(basename "$tree")-$2.log"
    start=$(date +%s)
    (cd "$tree" && PYTHONPATH="$tree" BACKENDS=$2 bash scripts/test_all_backends.sh) > "$log" 2>&1
    rc=$?
    echo "$2 $(basename "$tree") exit=$rc $(( $(date +%s) - start )) s: $(grep -E '[0-9]+ (passed|failed)' "$log" | tail -1)"
}
# BACKENDS="jax torch" limits the backends; who goes first alternates from one to the next.
turn=0
for backend in ${BACKENDS:-tensorflow jax torch}; do
    if [ $((turn % 2)) = 0 ]; then one "$1" "$backend"; one "$2" "$backend"
    else one "$2" "$backend"; one "$1" "$backend"; fi
    turn=$((turn + 1))
done
