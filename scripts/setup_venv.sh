#!/usr/bin/env bash
# Create (or refresh) the Python venv used by testdata/make_fixtures.py and
# scripts/interop_check.py.  Idempotent: when the venv already holds the pinned
# requirements it returns immediately.
#
#   scripts/setup_venv.sh            # venv at ./.venv (relative to the repo root)
#   QUENCH_VENV=/path scripts/setup_venv.sh
#
# Prints the venv's python path on the last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/scripts/requirements.txt"
VENV="${QUENCH_VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="${PYTHON:-python3}"
STAMP="$VENV/.quench-requirements"

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && cmp -s "$REQ" "$STAMP"; then
    echo "$VENV/bin/python"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv at $VENV" >&2
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ" >&2
"$VENV/bin/python" -c "import onnx, onnxruntime, numpy, sklearn" >&2
cp "$REQ" "$STAMP"
echo "$VENV/bin/python"
