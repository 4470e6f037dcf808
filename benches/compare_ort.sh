#!/usr/bin/env bash
# Compare `quench compile` with ONNX Runtime's quantize_static on the fixtures
# and the real models in scratch/real_models (see benches/compare_ort.py).
#
#   benches/compare_ort.sh [compare_ort.py options...]
#   e.g. benches/compare_ort.sh --only digits,ocr --calib-n 32 --eval-n 16
#
# Steps: cargo build --release; the venv (scripts/setup_venv.sh); sympy into
# scratch/compare_ort_pydeps (needed by ORT's quant_pre_process, which ORT
# recommends; kept out of the shared venv); the real models if
# scratch/real_models holds none; then the Python script. Results go to
# scratch/compare_ort/results.md and results.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

echo "== cargo build --release" >&2
cargo build --release >&2

PY="$(scripts/setup_venv.sh | tail -n 1)"

PYDEPS="$ROOT/scratch/compare_ort_pydeps"
if ! PYTHONPATH="$PYDEPS" "$PY" -c "import sympy" 2>/dev/null; then
    echo "== installing sympy into $PYDEPS (for quant_pre_process)" >&2
    "$PY" -m pip install --disable-pip-version-check -q --target "$PYDEPS" sympy >&2 \
        || echo "   sympy install failed: ORT's pre-processing will be reported as failed" >&2
fi

if ! ls "$ROOT"/scratch/real_models/*.onnx >/dev/null 2>&1; then
    echo "== fetching real models" >&2
    PYTHON="$PY" scripts/fetch_real_models.sh || echo "   some downloads failed; those models are skipped" >&2
fi

exec "$PY" "$ROOT/benches/compare_ort.py" --quench "$ROOT/target/release/quench" --pydeps "$PYDEPS" "$@"
