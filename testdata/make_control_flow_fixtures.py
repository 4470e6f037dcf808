#!/usr/bin/env python3
"""Write testdata/control_flow/vad_if.onnx: a small model shaped like silero VAD.

Usage (from the repository root, in a venv built from scripts/requirements.txt):

    python testdata/make_control_flow_fixtures.py

silero VAD wraps its whole network in an `If` on the sample-rate input `sr`;
its weights sit inside the branches (as Constant nodes or initializers) or
are captured from the main graph, and its LSTM weights reach the LSTM
through Slice/Concat/Unsqueeze (as PyTorch exports an LSTM cell). This
fixture has all of it, small:

* inputs `input` f32[1,64], `state` f32[2,1,32], `sr` int64 scalar;
  outputs `output` f32[1,1] (a speech probability) and `stateN` f32[2,1,32];
* `If(Equal(sr, 16000))`: then (16 kHz) and else (8 kHz) branches, each
  Conv -> Relu -> Conv -> Relu -> ReduceMean -> LSTM -> MatMul -> Sigmoid;
* then branch: first Conv weight a Constant node inside the branch, second
  Conv weight an initializer of the main graph captured by the branch;
  else branch: both Conv weights initializers of the branch;
* both branches: the LSTM's W and R sliced per gate from `[4H, I]`
  initializers of the main graph that both branches capture, the LSTM bias
  captured and unsqueezed (a bias: stays float), the output MatMul weight an
  initializer of the branch.

Also testdata/control_flow/loop_scan.onnx: a `Loop` of 3 steps whose body
multiplies the carried state by a MatMul weight captured from the main
graph and adds a body initializer, then a `Scan` over the rows of the input
whose body applies a Gemm with a weight of its own (`transB=1`); inputs
`input` f32[4,16], `h` f32[1,16]; outputs `output` f32[1,16] (the loop's
final state) and `rows` f32[4,8] (the scan's outputs).

And testdata/control_flow/if_shape.onnx: an `If` on a shape, as silero's
decoder has (`Equal(Gather(Shape(x), 0), 1)`), whose then branch squeezes
the batch axis away and whose else branch is the identity, so the branches'
outputs differ in rank and tract cannot type the If; then Reshape to [1,16]
and a MatMul weight [16,8]. Input `input` f32[1,16], output f32[1,8].

Fixed seed; checked with onnx.checker (full_check) and run once in
onnxruntime CPU (vad_if.onnx for both branches).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "control_flow")
H = 32  # LSTM hidden size
C1, C2 = 8, 32  # conv channels


def rnd(rng, shape, fan_in):
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def const_i64(name, vals):
    return numpy_helper.from_array(np.array(vals, np.int64), name)


def branch(rng, prefix, k1, stride1, conv2_name, conv2_inner, conv1_as_node):
    """One branch body; `conv2_name` is captured unless `conv2_inner`."""
    nodes, inits = [], []
    p = lambda n: f"{prefix}_{n}"
    w1 = rnd(rng, [C1, 1, k1], k1)
    if conv1_as_node:
        nodes.append(helper.make_node("Constant", [], [p("w1")], name=p("w1_const"),
                                      value=numpy_helper.from_array(w1, p("w1"))))
    else:
        inits.append(numpy_helper.from_array(w1, p("w1")))
    inits.append(numpy_helper.from_array(rnd(rng, [C1], 4.0), p("b1")))
    inits.append(const_i64(p("ax1"), [1]))
    nodes.append(helper.make_node("Unsqueeze", ["input", p("ax1")], [p("x3")], name=p("unsq_in")))
    nodes.append(helper.make_node("Conv", [p("x3"), p("w1"), p("b1")], [p("c1")], name=p("conv1"),
                                  strides=[stride1]))
    nodes.append(helper.make_node("Relu", [p("c1")], [p("r1")], name=p("relu1")))
    if conv2_inner:
        inits.append(numpy_helper.from_array(rnd(rng, [C2, C1, 3], C1 * 3), conv2_name))
    nodes.append(helper.make_node("Conv", [p("r1"), conv2_name], [p("c2")], name=p("conv2"), pads=[1, 1]))
    nodes.append(helper.make_node("Relu", [p("c2")], [p("r2")], name=p("relu2")))
    nodes.append(helper.make_node("ReduceMean", [p("r2")], [p("m")], name=p("mean"), axes=[2], keepdims=0))
    inits.append(const_i64(p("ax0"), [0]))
    nodes.append(helper.make_node("Unsqueeze", [p("m"), p("ax0")], [p("seq")], name=p("unsq_seq")))
    # W and R: per-gate slices of the captured [4H, H] tables, concatenated.
    for t in ("w", "r"):
        parts = []
        for gate in range(2):
            lo, hi = gate * 2 * H, (gate + 1) * 2 * H
            inits += [const_i64(p(f"{t}s{gate}"), [lo]), const_i64(p(f"{t}e{gate}"), [hi])]
            nodes.append(helper.make_node("Slice", [f"lstm_{t}", p(f"{t}s{gate}"), p(f"{t}e{gate}"), p("ax0")],
                                          [p(f"{t}_part{gate}")], name=p(f"slice_{t}{gate}")))
            parts.append(p(f"{t}_part{gate}"))
        nodes.append(helper.make_node("Concat", parts, [p(f"{t}_cat")], name=p(f"concat_{t}"), axis=0))
        nodes.append(helper.make_node("Unsqueeze", [p(f"{t}_cat"), p("ax0")], [p(f"{t}_3d")], name=p(f"unsq_{t}")))
    nodes.append(helper.make_node("Unsqueeze", ["lstm_b", p("ax0")], [p("b_2d")], name=p("unsq_b")))
    for i, n in enumerate(("h0", "c0")):
        inits.append(const_i64(p(f"i{i}"), [i]))
        nodes.append(helper.make_node("Gather", ["state", p(f"i{i}")], [p(n)], name=p(f"gather_{n}"), axis=0))
    nodes.append(helper.make_node("LSTM", [p("seq"), p("w_3d"), p("r_3d"), p("b_2d"), "", p("h0"), p("c0")],
                                  [p("y"), p("yh"), p("yc")], name=p("lstm"), hidden_size=H))
    nodes.append(helper.make_node("Squeeze", [p("yh"), p("ax0")], [p("h")], name=p("squeeze_h")))
    inits.append(numpy_helper.from_array(rnd(rng, [H, 1], H), p("wout")))
    nodes.append(helper.make_node("MatMul", [p("h"), p("wout")], [p("logit")], name=p("head")))
    nodes.append(helper.make_node("Sigmoid", [p("logit")], [p("prob")], name=p("sigmoid")))
    nodes.append(helper.make_node("Concat", [p("yh"), p("yc")], [p("state_out")], name=p("concat_state"), axis=0))
    return helper.make_graph(
        nodes, f"{prefix}_branch", [],
        [helper.make_tensor_value_info(p("prob"), TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info(p("state_out"), TensorProto.FLOAT, [2, 1, H])],
        initializer=inits)


def build():
    rng = np.random.default_rng(2026)
    then_g = branch(rng, "k16", 16, 4, "conv2_w_16k", conv2_inner=False, conv1_as_node=True)
    else_g = branch(rng, "k8", 8, 2, "k8_conv2_w", conv2_inner=True, conv1_as_node=False)
    inits = [
        numpy_helper.from_array(rnd(rng, [C2, C1, 3], C1 * 3), "conv2_w_16k"),
        numpy_helper.from_array(rnd(rng, [4 * H, C2], C2), "lstm_w"),
        numpy_helper.from_array(rnd(rng, [4 * H, H], H), "lstm_r"),
        numpy_helper.from_array(rnd(rng, [8 * H], 4.0), "lstm_b"),
        numpy_helper.from_array(np.array(16000, np.int64), "sr_16k"),
    ]
    nodes = [
        helper.make_node("Equal", ["sr", "sr_16k"], ["is_16k"], name="is_16k"),
        helper.make_node("If", ["is_16k"], ["output", "stateN"], name="by_rate",
                         then_branch=then_g, else_branch=else_g),
    ]
    g = helper.make_graph(
        nodes, "vad_if",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 64]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, H]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, H])],
        initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="quench-fixtures")
    m.ir_version = 8
    return m


def build_loop_scan():
    rng = np.random.default_rng(7)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "loop_w"], ["hw"], name="loop_mm"),
         helper.make_node("Add", ["hw", "loop_b"], ["hb"], name="loop_add"),
         helper.make_node("Tanh", ["hb"], ["h_out"], name="loop_tanh"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond")],
        "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 16])],
        initializer=[numpy_helper.from_array(rnd(rng, [1, 16], 4.0), "loop_b")])
    scan_body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["row", "scan_ax"], ["row2"], name="scan_unsq"),
         helper.make_node("Gemm", ["row2", "scan_w"], ["y2"], name="scan_gemm", transB=1),
         helper.make_node("Squeeze", ["y2", "scan_ax"], ["y"], name="scan_sq"),
         helper.make_node("Identity", ["acc_in"], ["acc_out"], name="scan_acc")],
        "scan_body",
        [helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("row", TensorProto.FLOAT, [16])],
        [helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])],
        initializer=[numpy_helper.from_array(rnd(rng, [8, 16], 16), "scan_w"),
                     const_i64("scan_ax", [0])])
    g = helper.make_graph(
        [helper.make_node("Loop", ["trip", "cond", "h"], ["output"], name="steps", body=body),
         helper.make_node("Scan", ["acc0", "input"], ["acc", "rows"], name="per_row",
                          body=scan_body, num_scan_inputs=1)],
        "loop_scan",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 16]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 16]),
         helper.make_tensor_value_info("rows", TensorProto.FLOAT, [4, 8])],
        initializer=[numpy_helper.from_array(rnd(rng, [16, 16], 16), "loop_w"),
                     numpy_helper.from_array(np.array(3, np.int64), "trip"),
                     numpy_helper.from_array(np.array(True), "cond"),
                     numpy_helper.from_array(np.zeros([1], np.float32), "acc0")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="quench-fixtures")
    m.ir_version = 8
    return m


def build_if_shape():
    rng = np.random.default_rng(9)
    then_g = helper.make_graph(
        [helper.make_node("Squeeze", ["input", "ax0"], ["sq"], name="then_squeeze")],
        "then_branch", [], [helper.make_tensor_value_info("sq", TensorProto.FLOAT, None)])
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["same"], name="else_identity")],
        "else_branch", [], [helper.make_tensor_value_info("same", TensorProto.FLOAT, None)])
    g = helper.make_graph(
        [helper.make_node("Shape", ["input"], ["shape"], name="shape"),
         helper.make_node("Gather", ["shape", "zero"], ["batch"], name="batch", axis=0),
         helper.make_node("Equal", ["batch", "one"], ["single"], name="single"),
         helper.make_node("If", ["single"], ["y"], name="drop_batch",
                          then_branch=then_g, else_branch=else_g),
         helper.make_node("Reshape", ["y", "shape_1x16"], ["y2"], name="reshape"),
         helper.make_node("MatMul", ["y2", "w"], ["output"], name="head")],
        "if_shape",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8])],
        initializer=[numpy_helper.from_array(np.array(0, np.int64), "zero"),
                     numpy_helper.from_array(np.array(1, np.int64), "one"),
                     const_i64("ax0", [0]), const_i64("shape_1x16", [1, 16]),
                     numpy_helper.from_array(rnd(rng, [16, 8], 16), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="quench-fixtures")
    m.ir_version = 8
    return m


def main():
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "vad_if.onnx")
    onnx.save(build(), path)
    onnx.checker.check_model(path, full_check=True)
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for sr in (16000, 8000):
        out = s.run(None, {"input": rng.standard_normal((1, 64)).astype(np.float32),
                           "state": np.zeros((2, 1, H), np.float32), "sr": np.array(sr, np.int64)})
        assert out[0].shape == (1, 1) and out[1].shape == (2, 1, H), [o.shape for o in out]
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    path = os.path.join(OUT, "loop_scan.onnx")
    onnx.save(build_loop_scan(), path)
    onnx.checker.check_model(path, full_check=True)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = s.run(None, {"input": rng.standard_normal((4, 16)).astype(np.float32),
                       "h": rng.standard_normal((1, 16)).astype(np.float32)})
    assert out[0].shape == (1, 16) and out[1].shape == (4, 8), [o.shape for o in out]
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    path = os.path.join(OUT, "if_shape.onnx")
    onnx.save(build_if_shape(), path)
    onnx.checker.check_model(path, full_check=True)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = s.run(None, {"input": rng.standard_normal((1, 16)).astype(np.float32)})
    assert out[0].shape == (1, 8), out[0].shape
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
