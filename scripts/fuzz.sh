#!/usr/bin/env bash
# Fuzz the model loader and IR import (fuzz/fuzz_targets/load.rs): arbitrary
# bytes -> quench_onnx::load_model_from_bytes -> quench_ir::Model::from_onnx
# -> to_text, to_onnx, encode, decode, re-import. Errors are fine; a panic or
# a sanitizer report is a finding.
#
#   scripts/fuzz.sh [SECONDS] [extra libFuzzer args...]    # default 600 s
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a compiler that accepts
# -Z flags: a nightly toolchain if installed, otherwise stable with
# RUSTC_BOOTSTRAP=1 (what this script does; both give AddressSanitizer). Set
# FUZZ_SANITIZER=none for a faster build without ASan.
#
# fuzz/ is its own Cargo workspace (not a member of the main one), with its
# own target dir fuzz/target/. The corpus lives in fuzz/corpus/load/ (not
# committed) and is seeded from testdata/**/*.onnx; crashes land in
# fuzz/artifacts/load/.
#
# After a crash:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run load fuzz/artifacts/load/crash-...   # reproduce with a backtrace
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin load fuzz/artifacts/load/crash-...  # minimise
# then copy the minimised input to fuzz/regressions/<what-it-does>.onnx:
# tests/loader_robustness.rs replays that directory in `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_RUN="${1:-600}"
shift || true
SANITIZER="${FUZZ_SANITIZER:-address}"

mkdir -p fuzz/corpus/load
for f in testdata/*.onnx testdata/bad/*.onnx fuzz/regressions/*; do
    [[ -f "$f" && "$f" != *.md ]] && cp -n "$f" fuzz/corpus/load/ 2>/dev/null || true
done

export RUSTC_BOOTSTRAP=1
# -max_len: the largest fixture is ~85 kB; 128 kB lets mutations grow it.
# -rss_limit_mb: an input that makes quench allocate gigabytes is a finding.
exec cargo fuzz run --sanitizer "$SANITIZER" load fuzz/corpus/load -- \
    -max_total_time="$SECONDS_TO_RUN" -max_len=131072 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "$@"
