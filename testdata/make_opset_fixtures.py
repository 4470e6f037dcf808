#!/usr/bin/env python3
"""Old-opset fixtures for quench's opset upgrade (testdata/opset/*.onnx).

Each model uses an op whose signature changed between opset 7 and 13, in its
old form: Dropout with `ratio` (7, 11), Clip with min/max attributes (10),
Pad with pads/value attributes (10), Slice with starts/ends/axes attributes
(9), TopK with `k` (9), Upsample with scales as attribute (7) and as input
(9, nearest and linear), Resize of opset 10 (nearest and linear, up and
down), BatchNormalization with `spatial` (7), and the
opset-13 changes from 12 (Split `split`, Squeeze/Unsqueeze/ReduceSum/
ReduceMean `axes`, Softmax on a middle axis).

tests/opset_upgrade.rs upgrades each one to opset 13 and 21 with
quench_passes::upgrade_opset and checks in tract that the outputs are the
same as the original's: onnxruntime's outputs of the original, saved beside
each model as <name>.npz (inputs `in_<input>`, outputs `out_<i>` as f32), and
tract's outputs of the original where tract runs it. Every model here passes
onnx.checker (full check) and runs in onnxruntime; the script asserts both.

    .venv/bin/python testdata/make_opset_fixtures.py
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "opset")
rng = np.random.default_rng(7)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def save(name, opset, nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    # IR 5 (initializers need not be graph inputs from IR 4 on) for opsets
    # up to 10; the IR version each later opset shipped with after that.
    ir = 5 if opset <= 10 else (6 if opset <= 11 else 7)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    model.producer_name = "quench make_opset_fixtures.py"
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {n: f32(*s) for n, s in inputs}
    outs = sess.run(None, feeds)
    # The reference: inputs and onnxruntime's outputs of the original model
    # (as f32; TopK's indices too).
    arrays = {f"in_{n}": v for n, v in feeds.items()}
    arrays.update({f"out_{i}": np.asarray(o).astype(np.float32) for i, o in enumerate(outs)})
    np.savez(os.path.join(OUT, f"{name}.npz"), **arrays)
    print("wrote", path)


os.makedirs(OUT, exist_ok=True)
F = TensorProto.FLOAT

w = f32(8, 8)
save(
    "dropout_opset11",
    11,
    [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Dropout", ["h"], ["d"], ratio=0.3),
        helper.make_node("Relu", ["d"], ["y"]),
    ],
    [("x", [2, 8])],
    [("y", F, [2, 8])],
    [("w", w)],
)
save(
    "dropout_opset7",
    7,
    [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Dropout", ["h"], ["y"], ratio=0.5),
    ],
    [("x", [2, 8])],
    [("y", F, [2, 8])],
    [("w", w)],
)
save(
    "clip_opset10",
    10,
    [
        helper.make_node("Clip", ["x"], ["a"], min=-0.5, max=0.75),
        helper.make_node("Clip", ["x"], ["b"], max=0.25),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ],
    [("x", [2, 3, 4])],
    [("y", F, [2, 3, 4])],
)
save(
    "pad_opset10",
    10,
    [
        helper.make_node("Pad", ["x"], ["a"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=1.5),
        helper.make_node("Pad", ["x"], ["b"], pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),
        helper.make_node("ReduceSum", ["b"], ["bs"], axes=[2, 3], keepdims=1),
        helper.make_node("Add", ["a", "bs"], ["y"]),
    ],
    [("x", [1, 2, 4, 4])],
    [("y", F, [1, 2, 7, 7])],
)
save(
    "slice_opset9",
    9,
    [
        helper.make_node("Slice", ["x"], ["a"], starts=[1, 0], ends=[3, -1], axes=[1, 2]),
        helper.make_node("Slice", ["a"], ["y"], starts=[0], ends=[1000], axes=[2]),
    ],
    [("x", [2, 4, 6])],
    [("y", F, [2, 2, 5])],
)
save(
    "topk_opset9",
    9,
    [helper.make_node("TopK", ["x"], ["v", "i"], k=3, axis=1)],
    [("x", [2, 7])],
    [("v", F, [2, 3]), ("i", TensorProto.INT64, [2, 3])],
)
save(
    "upsample_attr_opset7",
    7,
    [helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 3.0], mode="nearest")],
    [("x", [1, 2, 3, 3])],
    [("y", F, [1, 2, 6, 9])],
)
save(
    "upsample_input_opset9",
    9,
    [
        helper.make_node("Upsample", ["x", "s"], ["n"], mode="nearest"),
        helper.make_node("Upsample", ["x", "s"], ["l"], mode="linear"),
        helper.make_node("Add", ["n", "l"], ["y"]),
    ],
    [("x", [1, 2, 3, 3])],
    [("y", F, [1, 2, 6, 6])],
    [("s", np.array([1, 1, 2, 2], np.float32))],
)
save(
    "resize_opset10",
    10,
    [
        helper.make_node("Resize", ["x", "up"], ["n"], mode="nearest"),
        helper.make_node("Resize", ["x", "up"], ["l"], mode="linear"),
        helper.make_node("Add", ["n", "l"], ["s"]),
        helper.make_node("Resize", ["s", "down"], ["dn"], mode="nearest"),
        helper.make_node("Resize", ["s", "down"], ["dl"], mode="linear"),
        helper.make_node("Add", ["dn", "dl"], ["y"]),
    ],
    [("x", [1, 2, 3, 5])],
    [("y", F, [1, 2, 4, 7])],
    [
        ("up", np.array([1, 1, 2, 2.5], np.float32)),
        ("down", np.array([1, 1, 0.7, 0.6], np.float32)),
    ],
)
c = 4
save(
    "bn_spatial_opset7",
    7,
    [
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], spatial=1, epsilon=1e-5),
    ],
    [("x", [1, 3, 5, 5])],
    [("y", F, [1, c, 5, 5])],
    [
        ("cw", f32(c, 3, 3, 3)),
        ("g", f32(c)),
        ("b", f32(c)),
        ("m", f32(c)),
        ("v", (np.abs(f32(c)) + 0.5).astype(np.float32)),
    ],
)
save(
    "axes_opset12",
    12,
    [
        helper.make_node("Split", ["x"], ["s0", "s1"], axis=1, split=[2, 6]),
        helper.make_node("ReduceMean", ["s1"], ["m"], axes=[1], keepdims=1),
        helper.make_node("ReduceSum", ["s0"], ["r"], axes=[1], keepdims=0),
        helper.make_node("Unsqueeze", ["r"], ["u"], axes=[1]),
        helper.make_node("Add", ["m", "u"], ["a"]),
        helper.make_node("Squeeze", ["a"], ["q"], axes=[1]),
        helper.make_node("Softmax", ["x"], ["sm"], axis=1),
        helper.make_node("ReduceMax", ["sm"], ["smax"], axes=[1], keepdims=0),
        helper.make_node("Add", ["q", "smax"], ["y"]),
    ],
    [("x", [2, 8, 3])],
    [("y", F, [2, 3])],
)
