#!/usr/bin/env bash
# The whole test suite: Rust tests, then the interop check of every model the
# tests wrote (onnx.checker full_check + onnxruntime CPU), then the round trip
# of every fixture compared in onnxruntime (bitwise-identical outputs).
#
# Needs only the Rust toolchain and Python 3.11 with pip: the Python packages
# (onnx, onnxruntime, numpy) are installed into .venv by scripts/setup_venv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="$(scripts/setup_venv.sh | tail -n 1)"

rm -rf target/interop
cargo test --workspace --all-targets

echo "== interop: every model the tests wrote"
"$PY" scripts/interop_check.py target/interop

echo "== round trip: quench convert vs original, outputs compared in onnxruntime"
"$PY" scripts/roundtrip_check.py --quench target/debug/quench --out target/interop-roundtrip testdata
