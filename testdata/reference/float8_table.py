"""Reference table for quench-calib's float8 conversion (crates/quench-calib/src/format/tests.rs).

Runs ONNX's own reference implementation (onnx.reference.ReferenceEvaluator) of
QuantizeLinear-19 (scale 1, zero point 0, default saturate=1) and
DequantizeLinear-19 for FLOAT8E4M3FN and FLOAT8E5M2, and writes
float8_table.json next to this script:

    {"f8e4m3fn": {"quantize": [[f32_bits, code], ...], "dequantize": [[code, f32_bits], ...]}, ...}

Floats are stored as their IEEE bit patterns so that NaN, infinities, -0 and
subnormals survive JSON exactly. Inputs: every representable value, every
midpoint between neighbours (ties) and the f32 values just around each
midpoint, values beyond the largest finite value, +-inf, NaN, the smallest
subnormal's half (a tie with zero), and deterministic pseudo-random floats.

    .venv/bin/python testdata/reference/float8_table.py
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

TYPES = {"f8e4m3fn": TensorProto.FLOAT8E4M3FN, "f8e5m2": TensorProto.FLOAT8E5M2}


def model(op, in_type, out_type, zp_type):
    zp = helper.make_tensor("zp", zp_type, [], [0])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0])
    node = helper.make_node(op, ["x", "scale", "zp"], ["y"])
    g = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", in_type, [None])],
        [helper.make_tensor_value_info("y", out_type, [None])],
        [scale, zp],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(m)
    return ReferenceEvaluator(m)


def bits_f32(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def codes(y):
    return np.asarray(y).view(np.uint8).astype(np.int64)


def main():
    out = {}
    for name, t in TYPES.items():
        dq = model("DequantizeLinear", t, TensorProto.FLOAT, t)
        q = model("QuantizeLinear", TensorProto.FLOAT, t, t)
        all_codes = np.arange(256, dtype=np.uint8)
        f8 = all_codes.view(helper.tensor_dtype_to_np_dtype(t))
        (vals,) = dq.run(None, {"x": f8})
        vals = np.asarray(vals, dtype=np.float32)
        finite = np.unique(vals[np.isfinite(vals)])
        mids = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)
        up = np.nextafter(mids, np.float32(np.inf))
        down = np.nextafter(mids, np.float32(-np.inf))
        big = float(finite.max())
        extra = np.array(
            [big * 1.01, big * 1.0625, big * 1.07, big * 2, 3.0e38, np.inf, -np.inf, np.nan, -np.nan,
             0.0, -0.0, float(finite[finite > 0].min()) / 2, float(finite[finite > 0].min()) * 0.75,
             1e-30, -1e-30],
            dtype=np.float32,
        )
        rng = np.random.default_rng(7)
        rand = (rng.standard_normal(2000) * np.exp(rng.uniform(-12, 12, 2000))).astype(np.float32)
        xs = np.concatenate([finite, mids, up, down, extra, rand]).astype(np.float32)
        (y,) = q.run(None, {"x": xs})
        out[name] = {
            "quantize": [[int(a), int(b)] for a, b in zip(bits_f32(xs), codes(y))],
            "dequantize": [[int(c), int(b)] for c, b in zip(all_codes, bits_f32(vals))],
        }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "float8_table.json")
    with open(path, "w") as f:
        json.dump({"onnx_version": onnx.__version__, **out}, f, separators=(",", ":"))
        f.write("\n")
    print(path, {k: len(v["quantize"]) for k, v in out.items()})


if __name__ == "__main__":
    main()
