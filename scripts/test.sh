#!/usr/bin/env bash
# The whole test suite: Rust tests and doctests, a self-test showing the two
# checkers fail on bad input, then the interop check of every model the tests
# wrote (onnx.checker full_check + onnxruntime CPU; models registered with a
# .check.json compared with their reference, float twin and FP32), then the
# round trip of every fixture compared in onnxruntime (bitwise-identical
# outputs), then ONNX's backend node tests through quench
# (scripts/node_tests.py).
#
# Needs only the Rust toolchain and Python 3.11 with pip: the Python packages
# (onnx, onnxruntime, numpy) are installed into .venv by scripts/setup_venv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="$(scripts/setup_venv.sh | tail -n 1)"

rm -rf target/interop
cargo test --workspace --all-targets
# --all-targets leaves doctests out.
cargo test --workspace --doc

echo "== the checkers can fail: empty directories, short counts, NaN, 1% off, steps off the twin"
"$PY" scripts/check_scripts_selftest.py --quench target/debug/quench

# How many models the tests must have written under target/interop: every
# model compared with a reference registered itself with a .check.json next
# to it (tests/common/mod.rs `write_interop_pair`); the totals below are the
# counts of a full run (November 2026) and are minimums: a test that stops
# writing its models fails here instead of shrinking the check.
INTEROP_MIN_MODELS=370
INTEROP_MIN_COMPARED=103
echo "== interop: every model the tests wrote (>= $INTEROP_MIN_MODELS models, >= $INTEROP_MIN_COMPARED compared with a reference)"
"$PY" scripts/interop_check.py --expect-models "$INTEROP_MIN_MODELS" --expect-compared "$INTEROP_MIN_COMPARED" target/interop

# Every fixture in testdata/ (not bad/): the script fails unless exactly this
# many were round-tripped, and on zero.
FIXTURES=$(find testdata -maxdepth 1 -name '*.onnx' | wc -l)
echo "== round trip: quench convert vs original, outputs compared in onnxruntime ($FIXTURES fixtures)"
"$PY" scripts/roundtrip_check.py --quench target/debug/quench --out target/interop-roundtrip --expect "$FIXTURES" testdata

# ONNX's backend node tests (generated from the onnx wheel into
# target/onnx-node-tests): every model ONNX Runtime runs goes through convert
# (bitwise), the passes (within 1e-4), weight-only and static (loads and runs);
# fails on any panic, invalid model or mismatch, and on a refusal not listed
# in scripts/node_tests_expected.json. About 2-3 minutes on 2 cores.
echo "== ONNX backend node tests: the harness can fail (a fake quench that panics, aborts, writes garbage, is 1e-3 off, ...)"
"$PY" scripts/node_tests.py --selftest
echo "== ONNX backend node tests through quench, checked in onnxruntime"
"$PY" scripts/node_tests.py --quench target/debug/quench --expected scripts/node_tests_expected.json
