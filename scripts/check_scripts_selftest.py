#!/usr/bin/env python3
"""The checkers must be able to fail: runs scripts/interop_check.py and
scripts/roundtrip_check.py on inputs they must reject and requires a non-zero
exit (and on one good pair, a zero exit).

    check_scripts_selftest.py --quench target/debug/quench

Cases: an empty directory (both scripts); fewer models than --expect-models /
--expect (both); a model with NaN outputs; an "exact" pair whose weights
differ by 1%; a "quantized" pair whose model disagrees with its twin by
several quantization steps; a quantized pair whose fused-kernel SQNR
(ORT's default optimizations) is below its floor; a check.json naming a
missing reference.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = pathlib.Path(__file__).resolve().parent
PY = sys.executable


def run(args):
    return subprocess.run([PY, *map(str, args)], capture_output=True, text=True)


def linear_model(w: np.ndarray) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def qdq_model(scale: float) -> onnx.ModelProto:
    """y = DQ(Q(x * 2)) with the given activation scale (u8, zero point 128)."""
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["m"]),
         helper.make_node("QuantizeLinear", ["m", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
         helper.make_node("Relu", ["dq"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
         numpy_helper.from_array(np.array(scale, np.float32), "s"),
         numpy_helper.from_array(np.array(128, np.uint8), "z")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def twin_model(scale: float) -> onnx.ModelProto:
    """The float twin of qdq_model(scale): Div, Round, Add, Clip, Sub, Mul."""
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["m"]),
         helper.make_node("Div", ["m", "s"], ["a"]),
         helper.make_node("Round", ["a"], ["b"]),
         helper.make_node("Add", ["b", "z"], ["c"]),
         helper.make_node("Clip", ["c", "lo", "hi"], ["d"]),
         helper.make_node("Sub", ["d", "z"], ["e"]),
         helper.make_node("Mul", ["e", "s"], ["m_sim_out"]),
         helper.make_node("Relu", ["m_sim_out"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.array(v, np.float32), n)
         for n, v in (("two", 2.0), ("s", scale), ("z", 128.0), ("lo", 0.0), ("hi", 255.0))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quench", required=True)
    a = ap.parse_args()
    interop = HERE / "interop_check.py"
    roundtrip = HERE / "roundtrip_check.py"
    failures = []

    def expect(name, r, code_ok):
        ok = (r.returncode == 0) == code_ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: exit {r.returncode}")
        if not ok:
            failures.append(name)
            print(r.stdout[-2000:], r.stderr[-2000:])

    with tempfile.TemporaryDirectory() as t:
        t = pathlib.Path(t)
        empty = t / "empty"
        empty.mkdir()
        expect("interop: empty directory fails", run([interop, empty]), False)
        expect("roundtrip: empty directory fails",
               run([roundtrip, "--quench", a.quench, "--out", t / "rt", "--expect", 0, empty]), False)

        rng = np.random.default_rng(0)
        w = rng.standard_normal((4, 3))
        good = t / "good"
        good.mkdir()
        onnx.save(linear_model(w), good / "a.onnx")
        onnx.save(linear_model(w), good / "a.fp32.onnx")
        (good / "a.check.json").write_text(json.dumps(
            {"model": "a.onnx", "reference": "a.fp32.onnx", "kind": "exact", "rel_tol": 1e-5}))
        onnx.save(qdq_model(0.05), good / "q.onnx")
        onnx.save(linear_model(w), good / "unused.onnx")
        g2 = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["m"]),
                                helper.make_node("Relu", ["m"], ["y"])], "g",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                               [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
        onnx.save(helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17)]), good / "q.fp32.onnx")
        onnx.save(twin_model(0.05), good / "q.twin.onnx")
        (good / "q.check.json").write_text(json.dumps(
            {"model": "q.onnx", "reference": "q.fp32.onnx", "twin": "q.twin.onnx", "kind": "quantized",
             "min_sqnr_fp32_db": 20.0, "min_sqnr_twin_db": 60.0, "steps": [["m", "m_sim_out"]]}))
        expect("interop: good pairs pass", run([interop, "--expect-models", 6, "--expect-compared", 2, good]), True)
        expect("roundtrip: good models pass",
               run([roundtrip, "--quench", a.quench, "--out", t / "rt", "--expect", 6, good]), True)
        expect("interop: fewer models than expected fails", run([interop, "--expect-models", 7, good]), False)
        expect("interop: fewer comparisons than expected fails",
               run([interop, "--expect-compared", 3, good]), False)
        expect("roundtrip: a different count fails",
               run([roundtrip, "--quench", a.quench, "--out", t / "rt", "--expect", 7, good]), False)

        bad = t / "nan"
        bad.mkdir()
        g = helper.make_graph([helper.make_node("Log", ["x"], ["l"]), helper.make_node("Sqrt", ["l"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), bad / "nan.onnx")
        expect("interop: NaN outputs fail", run([interop, bad]), False)

        off = t / "off"
        off.mkdir()
        onnx.save(linear_model(w * 1.01), off / "a.onnx")
        onnx.save(linear_model(w), off / "a.fp32.onnx")
        (off / "a.check.json").write_text((good / "a.check.json").read_text())
        expect("interop: an exact pair 1% off fails", run([interop, off]), False)

        qoff = t / "qoff"
        qoff.mkdir()
        onnx.save(qdq_model(0.05), qoff / "q.onnx")
        onnx.save(twin_model(0.05 * 1.1), qoff / "q.twin.onnx")
        onnx.save(onnx.load(good / "q.fp32.onnx"), qoff / "q.fp32.onnx")
        (qoff / "q.check.json").write_text((good / "q.check.json").read_text())
        expect("interop: a model steps away from its twin fails", run([interop, qoff]), False)

        fused = t / "fused"
        fused.mkdir()
        for f in ("q.onnx", "q.fp32.onnx", "q.twin.onnx"):
            (fused / f).write_bytes((good / f).read_bytes())
        spec = json.loads((good / "q.check.json").read_text())
        spec["min_sqnr_fp32_fused_db"] = 200.0
        (fused / "q.check.json").write_text(json.dumps(spec))
        expect("interop: a fused-kernel SQNR below its floor fails", run([interop, fused]), False)

        missing = t / "missing"
        missing.mkdir()
        onnx.save(linear_model(w), missing / "a.onnx")
        (missing / "a.check.json").write_text((good / "a.check.json").read_text())
        expect("interop: a missing reference fails", run([interop, missing]), False)

    print("all self-tests passed" if not failures else f"{len(failures)} self-test(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
