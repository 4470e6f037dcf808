#!/usr/bin/env python3
"""Reference calibration ranges from ONNX Runtime's calibrators.

    scripts/ort_calibration_reference.py [--quench BIN | --table TABLE.json]
                                         [--model M.onnx] [--data INPUT.npy]
                                         [--out testdata/reference/ort_calibration.json]

Runs onnxruntime.quantization.calibrate's calibrators (MinMax, Percentile,
Entropy) over the same calibration samples quench uses and writes, for every
tensor quench observes, the range each of them chose:

    {"onnxruntime": "1.32.0", ..., "settings": {...},
     "tensors": {name: {"minmax": [lo, hi], "percentile": [lo, hi],
                        "percentile_symmetric": [lo, hi],
                        "entropy": [lo, hi], "entropy_default": [lo, hi]}}}

The tensor names come from `quench calibrate MODEL --passes none` (so they are
the original model's names; graph passes such as BatchNormalization folding
rename or remove tensors). Pass `--table` to read an existing table instead of
running quench; otherwise the binary is $QUENCH, target/release/quench or
target/debug/quench, in that order.

Settings (what each entry means, chosen to match what quench's table records
for its default uint8 asymmetric target):

* minmax: CalibrationMethod.MinMax, defaults (symmetric=False, no moving
  average). Exact min/max of every tensor over all samples.
* percentile: CalibrationMethod.Percentile with percentile=99.999,
  num_bins=2048 and **symmetric=False**: a signed histogram over
  [-max|x|, max|x|] and (100 - p) / 2 percent cut from each tail, which is
  what quench's `percentile_99.999` entry does for uint8. ORT's default is
  symmetric=True (a histogram of |x| and the range [-T, T]); that default is
  recorded as `percentile_symmetric` for information only.
* entropy: CalibrationMethod.Entropy with num_bins=2048 and
  num_quantized_bins=128 (a real KL threshold search over a signed histogram,
  as MXNet's original). ORT's defaults (128 bins, 128 quantized bins) leave a
  single candidate, so `entropy_default` equals `minmax`; recorded to show
  that.

Determinism: samples are fed in file order in batches of 16 (the histogram
calibrators collect every batch before building one histogram, so batching
does not change their result); ONNX Runtime runs single-threaded with graph
optimizations off (as the calibrators do); the JSON has sorted keys and no
timestamps. Floats are f32 values written as the shortest decimal that
round-trips through f64.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

ROOT = Path(__file__).resolve().parent.parent
BATCH = 16
PERCENTILE = 99.999

METHODS = {
    # key: (method, extra_options)
    "minmax": (CalibrationMethod.MinMax, {}),
    "percentile": (CalibrationMethod.Percentile,
                   {"percentile": PERCENTILE, "num_bins": 2048, "symmetric": False}),
    "percentile_symmetric": (CalibrationMethod.Percentile,
                             {"percentile": PERCENTILE, "num_bins": 2048, "symmetric": True}),
    "entropy": (CalibrationMethod.Entropy, {"num_bins": 2048, "num_quantized_bins": 128}),
    "entropy_default": (CalibrationMethod.Entropy, {}),
}


class Reader(CalibrationDataReader):
    """Feeds `data` (leading sample axis) to input `name` in batches."""

    def __init__(self, name: str, data: np.ndarray):
        self.name = name
        self.data = data
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.data):
            return None
        batch = self.data[self.pos:self.pos + BATCH]
        self.pos += BATCH
        return {self.name: np.ascontiguousarray(batch)}


def quench_binary() -> Path:
    for cand in (os.environ.get("QUENCH"), ROOT / "target/release/quench", ROOT / "target/debug/quench"):
        if cand and Path(cand).is_file():
            return Path(cand)
    sys.exit("no quench binary: build it (cargo build) or pass --quench / --table")


def quench_tensors(args, tmp: Path) -> list[str]:
    if args.table:
        table = json.loads(Path(args.table).read_text())
    else:
        binary = Path(args.quench) if args.quench else quench_binary()
        out = tmp / "quench_table.json"
        subprocess.run([str(binary), "calibrate", str(args.model), "--calibration",
                        str(Path(args.data).parent), "--passes", "none", "-o", str(out)],
                       check=True, stdout=sys.stderr)
        table = json.loads(out.read_text())
    return sorted(table["tensors"])


def f32(x) -> float:
    """An ORT result (numpy scalar or 0-d array) as the f64 holding its f32 value."""
    return float(np.float32(np.asarray(x).reshape(())))


def run_method(model: Path, input_name: str, data: np.ndarray, method, extra: dict, tmp: Path):
    calib = create_calibrator(model, op_types_to_calibrate=None,
                              augmented_model_path=str(tmp / "augmented.onnx"),
                              calibrate_method=method, extra_options=extra)
    # Same settings as the calibrator's own session, but single-threaded so
    # the float results do not depend on the machine's core count.
    so = onnxruntime.SessionOptions()
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    calib.infer_session = onnxruntime.InferenceSession(
        calib.augmented_model_path, sess_options=so, providers=["CPUExecutionProvider"])
    calib.collect_data(Reader(input_name, data))
    ranges = calib.compute_data()
    return {name: [f32(r.range_value[0]), f32(r.range_value[1])] for name, r in ranges.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "testdata/digits_cnn.onnx"))
    ap.add_argument("--data", default=str(ROOT / "testdata/digits/calib/input.npy"),
                    help="<input>.npy with a leading sample axis (its directory is given to quench)")
    ap.add_argument("--quench", help="quench binary (default: $QUENCH, target/release, target/debug)")
    ap.add_argument("--table", help="existing `quench calibrate --passes none` table to take tensor names from")
    ap.add_argument("--out", default=str(ROOT / "testdata/reference/ort_calibration.json"))
    args = ap.parse_args()

    model = Path(args.model)
    proto = onnx.load(str(model))
    inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1:
        sys.exit(f"{model}: expected one input, found {inputs}")
    data = np.load(args.data)
    if data.dtype != np.float32:
        sys.exit(f"{args.data}: expected float32, found {data.dtype}")

    with tempfile.TemporaryDirectory(prefix="ort_calib_") as tmpdir:
        tmp = Path(tmpdir)
        names = quench_tensors(args, tmp)
        results = {}
        # ORT prints progress on stdout; keep stdout for nothing but errors.
        with contextlib.redirect_stdout(sys.stderr):
            for key, (method, extra) in METHODS.items():
                results[key] = run_method(model, inputs[0], data, method, extra, tmp)

    tensors = {}
    for name in names:
        missing = [k for k in METHODS if name not in results[k]]
        if missing:
            sys.exit(f"ONNX Runtime did not calibrate {name!r} with {missing}")
        tensors[name] = {k: results[k][name] for k in METHODS}

    def rel(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(ROOT))
        except ValueError:
            return str(p)

    out = {
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "model": rel(model),
        "data": rel(Path(args.data)),
        "samples": int(data.shape[0]),
        "batch": BATCH,
        "settings": {k: {"method": m.name, "extra_options": e} for k, (m, e) in METHODS.items()},
        "notes": [
            "percentile: signed histogram (symmetric=False), (100-p)/2 % cut from each tail: "
            "comparable with quench's uint8 `percentile_99.999` entry",
            "percentile_symmetric: ORT's default |x| histogram, range [-T, T] clamped to [min, max]",
            "entropy_default: ORT's default 128 bins / 128 quantized bins leave one candidate, = minmax",
        ],
        "tensors": tensors,
    }
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(tensors)} tensors to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
