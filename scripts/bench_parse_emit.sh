#!/usr/bin/env bash
# Throughput of load (mmap + decode) -> IR import -> export + encode -> save,
# next to memcpy of the same bytes, in release (benches/parse_emit.rs).
#
#   scripts/bench_parse_emit.sh                 # synthetic 256 MB MLP + scratch/real_models/*.onnx if present
#   QUENCH_BENCH_SYNTH_MB=1024 scripts/bench_parse_emit.sh
#   QUENCH_BENCH_MODELS=a.onnx:dir/ scripts/bench_parse_emit.sh   # files or directories, colon-separated
#
# QUENCH_BENCH_SYNTH_MB=0 skips the synthetic model. The synthetic model is
# written to a temporary directory under target/ and removed afterwards.
# Numbers are best-of-N with a warm page cache; on a busy machine they vary,
# the memcpy column (measured in the same loop) shows by how much.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${QUENCH_BENCH_MODELS:-}" && -d scratch/real_models ]]; then
    export QUENCH_BENCH_MODELS="$PWD/scratch/real_models"
fi
exec cargo bench --bench parse_emit "$@"
