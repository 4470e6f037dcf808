#!/usr/bin/env bash
# Phase times of `quench compile` (static, minmax, default verification) on
# long chains: the scaling check of issue 12 item 9 ("linear time on long
# chains"). Timing lives here, never in unit tests.
#
#   benches/chain_scaling.sh                       # conv chains, 10k 20k 40k 100k nodes
#   benches/chain_scaling.sh --kind eltwise 1000 2000 4000
#   QUENCH=/path/to/quench TIMEOUT=600 benches/chain_scaling.sh 10000
#
# Builds target/release/quench unless QUENCH is set; models and calibration
# data are written by scripts/make_chain.py into scratch/chains/. Prints one
# row per size: the phase times `compile -v` reports (load, passes,
# calibration, bias correction, quantize, verification, total) and the wall time; a
# run over TIMEOUT seconds (default 400) prints "timeout". Doubling the size
# should about double every phase; a phase that grows 4x per doubling is
# quadratic.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KIND=conv
if [ "${1:-}" = "--kind" ]; then
    KIND="$2"
    shift 2
fi
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(10000 20000 40000 100000)
TIMEOUT="${TIMEOUT:-400}"

if [ -z "${QUENCH:-}" ]; then
    cargo build --release --bin quench >&2
    QUENCH="$ROOT/target/release/quench"
fi
PY="$(scripts/setup_venv.sh | tail -1)"
OUT="$ROOT/scratch/chains"
mkdir -p "$OUT"

printf '%-8s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n' kind nodes load passes calib bias quant verify total wall
for n in "${SIZES[@]}"; do
    d="$OUT/$KIND$n"
    [ -f "$d/chain.onnx" ] || "$PY" scripts/make_chain.py --kind "$KIND" --nodes "$n" --out "$d" >&2
    start=$(date +%s.%N)
    if log=$(timeout "$TIMEOUT" "$QUENCH" compile -v "$d/chain.onnx" -c "$d/cal" -o "$d/out.onnx" 2>&1); then
        end=$(date +%s.%N)
        line=$(printf '%s\n' "$log" | grep '^time:' || true)
        field() { printf '%s\n' "$line" | sed -n "s/.*$1 \([0-9.]*\) s.*/\1/p"; }
        printf '%-8s %8s %8s %8s %8s %8s %8s %8s %8s %8.1f\n' "$KIND" "$n" \
            "$(field load)" "$(field passes)" "$(field calibration)" "$(field 'bias correction')" "$(field quantize)" \
            "$(field verification)" "$(printf '%s\n' "$line" | sed -n 's/.*total \([0-9.]*\) s.*/\1/p')" \
            "$(echo "$end - $start" | bc)"
    else
        code=$?
        if [ "$code" = 124 ]; then
            printf '%-8s %8s  timeout after %ss\n' "$KIND" "$n" "$TIMEOUT"
        else
            printf '%-8s %8s  failed (exit %s)\n' "$KIND" "$n" "$code"
            printf '%s\n' "$log" | tail -5 >&2
        fi
    fi
done
