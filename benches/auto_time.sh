#!/usr/bin/env bash
# The cost of `--method auto` (the default): compile times with
# `--method minmax` and with the default, side by side, per model, and
# their ratio (issue 13 bounds it at 3x). Prints a markdown table.
#
# usage: benches/auto_time.sh [--quench BIN] [--repeat N] MODEL.onnx:DATA_DIR ...
#   DATA_DIR holds calib/ and val/ (as benches/compare_ort.sh writes them
#   under scratch/compare_ort*/<model>/), or calib/ and eval/ (testdata). Without --quench, builds
#   target/release/quench. Each pair of compiles runs back to back, N times
#   (default 1), after one untimed compile that warms the page cache; the
#   table gives each run's ratio, since these machines are noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=""
REPEAT=1
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quench) BIN="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [ ${#ARGS[@]} -eq 0 ]; then
  sed -n 2,12p "$0" >&2
  exit 2
fi
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=target/release/quench
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
now() { date +%s.%N; }
echo "| model | run | minmax s | default s | ratio | search runs | method | val SQNR minmax / default dB |"
echo "|---|---|---|---|---|---|---|---|"
for spec in "${ARGS[@]}"; do
  model="${spec%%:*}"
  data="${spec#*:}"
  name=$(basename "$model" .onnx)
  held="$data/val"
  [ -d "$held" ] || held="$data/eval"
  # One untimed compile first: the model and data files into the page
  # cache (a cold first run read 3x slower here), for both modes alike.
  "$BIN" compile "$model" -c "$data/calib" --eval "$held" -o "$WORK/warm.onnx" \
    --method minmax >/dev/null 2>&1 || true
  for r in $(seq 1 "$REPEAT"); do
    declare -A T=()
    for v in minmax auto; do
      s=$(now)
      "$BIN" compile "$model" -c "$data/calib" --eval "$held" -o "$WORK/$v.onnx" \
        --method "$v" --report "$WORK/$v.json" >"$WORK/$v.out" 2>&1 \
        || { echo "| $name | $r | failed: $(tail -1 "$WORK/$v.out") |"; continue 2; }
      T[$v]=$(echo "$(now) - $s" | bc)
    done
    python3 - "$name" "$r" "${T[minmax]}" "${T[auto]}" "$WORK" <<'PY'
import json, sys
name, r, tm, ta, work = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
a = json.load(open(f"{work}/auto.json"))
m = json.load(open(f"{work}/minmax.json"))
def sq(rep):
    outs = (rep.get("verification") or {}).get("outputs") or []
    v = [o["file"]["sqnr_db"] for o in outs if o.get("file") and o["file"].get("sqnr_db") is not None]
    return f"{min(v):.2f}" if v else "-"
ar = a.get("auto_ranges") or {}
print(f"| {name} | {r} | {tm:.1f} | {ta:.1f} | {ta / tm:.2f}x | {ar.get('runs', '-')} | "
      f"{ar.get('method', '-')} | {sq(m)} / {sq(a)} |")
PY
  done
done
