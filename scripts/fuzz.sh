#!/usr/bin/env bash
# Fuzz the model loader and IR import (fuzz/fuzz_targets/load.rs): arbitrary
# bytes -> quench_onnx::load_model_from_bytes -> quench_ir::Model::from_onnx
# -> to_text, to_onnx, encode, decode, re-import. Errors are fine; a panic or
# a sanitizer report is a finding.
#
#   scripts/fuzz.sh [SECONDS] [extra libFuzzer args...]    # default 600 s
#   FUZZ_TARGET=pipeline scripts/fuzz.sh 1800
#
# FUZZ_TARGET picks the target: `load` (default) or `pipeline`
# (fuzz/fuzz_targets/pipeline.rs: load -> import -> default passes ->
# weight-only quantize -> export -> re-import, on mutated model bytes and on
# small random graphs from a structured generator, inputs starting `QGEN`;
# the same code runs without libFuzzer in tests/fuzz_pipeline.rs, e.g.
# `QUENCH_FUZZ_SECONDS=1800 QUENCH_FUZZ_ITERS=100000000 cargo test --test
# fuzz_pipeline -- --nocapture`).
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
TARGET="${FUZZ_TARGET:-load}"

mkdir -p "fuzz/corpus/$TARGET"
for f in testdata/*.onnx testdata/bad/*.onnx fuzz/regressions/*; do
    [[ -f "$f" && "$f" != *.md && "$f" != *.py ]] && cp -n "$f" "fuzz/corpus/$TARGET/" 2>/dev/null || true
done
if [[ "$TARGET" == pipeline ]]; then
    # A few generator seeds, so libFuzzer starts from graphs too.
    for i in 1 2 3 4 5 6 7 8; do
        f="fuzz/corpus/pipeline/gen-seed-$i"
        [[ -f "$f" ]] || { printf 'QGEN'; head -c 256 /dev/urandom; } > "$f"
    done
fi

export RUSTC_BOOTSTRAP=1
# -max_len: the largest fixture is ~85 kB; 128 kB lets mutations grow it.
# -rss_limit_mb: an input that makes quench allocate gigabytes is a finding.
exec cargo fuzz run --sanitizer "$SANITIZER" "$TARGET" "fuzz/corpus/$TARGET" -- \
    -max_total_time="$SECONDS_TO_RUN" -max_len=131072 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "$@"
