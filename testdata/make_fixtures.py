#!/usr/bin/env python3
"""Regenerate every ONNX fixture under testdata/ deterministically.

Usage (from the repository root, in a venv built from scripts/requirements.txt):

    python testdata/make_fixtures.py            # write all fixtures
    python testdata/make_fixtures.py --out DIR  # write them somewhere else

All randomness comes from fixed seeds, so re-running with the pinned package
versions reproduces the same bytes (the digits CNN is trained with plain
numpy; its float results can differ in the last bits on another BLAS).

Every "good" fixture is checked with onnx.checker.check_model(full_check=True)
(except custom_domain.onnx, see below) and executed once in onnxruntime CPU.
The fixtures under bad/ deliberately violate the ONNX spec and are written
without any checking.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # accepted by every onnxruntime >= 1.10
FLOAT_LOWEST = float(np.finfo(np.float32).min)  # -3.4028235e38

OUT = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def init(name: str, arr) -> TensorProto:
    arr = np.asarray(arr)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def vi(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(graph, opset=OPSET, ir_version=IR_VERSION, extra_opsets=()):
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="quench-testdata",
                          producer_version="1")
    m.ir_version = ir_version
    return m


def conv_w(rng, cout, cin, k, groups=1):
    fan_in = (cin // groups) * k * k
    return f32(rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(cout, cin // groups, k, k)))


def bn_params(rng, c, prefix):
    """Random, non-trivial BN parameters (mean/var/scale/bias all far from identity)."""
    return [
        init(prefix + ".scale", rng.uniform(0.5, 1.5, c)),
        init(prefix + ".bias", rng.normal(0.0, 0.3, c)),
        init(prefix + ".mean", rng.normal(0.0, 0.5, c)),
        init(prefix + ".var", rng.uniform(0.5, 2.0, c)),
    ]


def bn_node(x, y, prefix, eps=1e-5):
    return helper.make_node(
        "BatchNormalization",
        [x, prefix + ".scale", prefix + ".bias", prefix + ".mean", prefix + ".var"],
        [y], name=prefix, epsilon=eps)


def ort_session(model_or_path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def random_feeds(sess, rng):
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if i.type == "tensor(float)":
            feeds[i.name] = f32(rng.normal(0, 1, shape))
        elif i.type == "tensor(int64)":
            feeds[i.name] = rng.integers(0, 4, shape).astype(np.int64)
        else:
            raise ValueError(i.type)
    return feeds


def calibrate_bn(model: onnx.ModelProto, samples: list[dict]) -> onnx.ModelProto:
    """Set every BatchNormalization's running mean/var to the real statistics of
    its input over `samples` (processed in node order, so later BNs see the
    already-calibrated earlier ones).  Gives realistic, well-conditioned stats."""
    inits = {t.name: i for i, t in enumerate(model.graph.initializer)}
    for node in list(model.graph.node):
        if node.op_type != "BatchNormalization":
            continue
        probe = copy.deepcopy(model)
        del probe.graph.output[:]
        probe.graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None))
        sess = ort_session(probe)
        outs = np.concatenate([sess.run(None, s)[0] for s in samples], axis=0)
        axes = tuple(a for a in range(outs.ndim) if a != 1)
        mean = outs.mean(axis=axes, dtype=np.float64)
        var = outs.var(axis=axes, dtype=np.float64)
        for name, val in ((node.input[3], mean), (node.input[4], var)):
            model.graph.initializer[inits[name]].CopyFrom(init(name, val))
    return model


def save_checked(model, name, run=True, full_check=True):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save_model(model, path)
    onnx.checker.check_model(path, full_check=full_check)
    if run:
        sess = ort_session(path)
        outs = sess.run(None, random_feeds(sess, np.random.default_rng(0)))
        for o in outs:
            assert np.all(np.isfinite(o)), f"{name}: non-finite output"
    size = os.path.getsize(path)
    assert size < 1_000_000, f"{name} too big: {size}"
    print(f"  wrote {name:32s} {size:8d} B")
    return path


def image_samples(rng, shape, n=8):
    return [{"input": f32(rng.uniform(0, 1, shape) - 0.5) * 2} for _ in range(n)]


# --------------------------------------------------------------------------
# cnn_bn.onnx
# --------------------------------------------------------------------------

def make_cnn_bn():
    rng = np.random.default_rng(1)
    inits = [
        init("conv1.w", conv_w(rng, 8, 3, 3)), init("conv1.b", rng.normal(0, 0.1, 8)),
        *bn_params(rng, 8, "bn1"),
        init("conv2.w", conv_w(rng, 16, 8, 3)), init("conv2.b", rng.normal(0, 0.1, 16)),
        *bn_params(rng, 16, "bn2"),
        init("fc.w", rng.normal(0, 0.25, (10, 16))), init("fc.b", rng.normal(0, 0.1, 10)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        bn_node("c1", "b1", "bn1"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        bn_node("c2", "b2", "bn2"),
        helper.make_node("Relu", ["b2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["output"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "cnn_bn", [vi("input", [1, 3, 16, 16])], [vi("output", [1, 10])], inits)
    m = calibrate_bn(make_model(g), image_samples(rng, [1, 3, 16, 16]))
    save_checked(m, "cnn_bn.onnx")


# --------------------------------------------------------------------------
# mlp.onnx
# --------------------------------------------------------------------------

def make_mlp():
    rng = np.random.default_rng(2)
    inits = [
        init("w1", rng.normal(0, 1 / math.sqrt(32), (32, 64))), init("b1", rng.normal(0, 0.1, 64)),
        init("w2", rng.normal(0, 1 / math.sqrt(64), (64, 64))), init("b2", rng.normal(0, 0.1, 64)),
        init("w3", rng.normal(0, 1 / math.sqrt(64), (10, 64))), init("b3", rng.normal(0, 0.1, 10)),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["mm1"], name="mm1"),
        helper.make_node("Add", ["mm1", "b1"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["h1"], name="relu1"),
        helper.make_node("MatMul", ["h1", "w2"], ["mm2"], name="mm2"),
        helper.make_node("Add", ["mm2", "b2"], ["a2"], name="add2"),
        helper.make_node("Relu", ["a2"], ["h2"], name="relu2"),
        helper.make_node("Gemm", ["h2", "w3", "b3"], ["output"], name="gemm", transB=1),
    ]
    g = helper.make_graph(nodes, "mlp", [vi("input", ["N", 32])], [vi("output", ["N", 10])], inits)
    save_checked(make_model(g), "mlp.onnx")


# --------------------------------------------------------------------------
# residual.onnx
# --------------------------------------------------------------------------

def make_residual():
    rng = np.random.default_rng(3)
    inits = [
        init("conv1.w", conv_w(rng, 8, 3, 3)), init("conv1.b", rng.normal(0, 0.1, 8)),
        init("conv2.w", conv_w(rng, 8, 8, 3)), init("conv2.b", rng.normal(0, 0.1, 8)),
        init("conv3.w", conv_w(rng, 8, 8, 3)), init("conv3.b", rng.normal(0, 0.1, 8)),
        init("conv4.w", conv_w(rng, 4, 16, 1)), init("conv4.b", rng.normal(0, 0.1, 4)),
    ]
    k3 = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], name="conv1", **k3),
        helper.make_node("Relu", ["c1"], ["a"], name="relu1"),
        helper.make_node("Conv", ["a", "conv2.w", "conv2.b"], ["c2"], name="conv2", **k3),
        helper.make_node("Relu", ["c2"], ["b"], name="relu2"),
        helper.make_node("Conv", ["b", "conv3.w", "conv3.b"], ["c3"], name="conv3", **k3),
        helper.make_node("Add", ["c3", "a"], ["sum"], name="skip_add"),
        helper.make_node("Relu", ["sum"], ["d"], name="relu3"),
        helper.make_node("Concat", ["d", "a"], ["cat"], name="concat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["pool"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool", "conv4.w", "conv4.b"], ["output"], name="conv4", kernel_shape=[1, 1]),
    ]
    g = helper.make_graph(nodes, "residual", [vi("input", [1, 3, 16, 16])], [vi("output", [1, 4, 8, 8])], inits)
    save_checked(make_model(g), "residual.onnx")


# --------------------------------------------------------------------------
# transformer.onnx
# --------------------------------------------------------------------------

def make_transformer():
    rng = np.random.default_rng(4)
    S, H, NH, FF = 8, 32, 2, 64
    D = H // NH
    w = lambda *s: rng.normal(0, 1 / math.sqrt(s[0]), s)  # noqa: E731
    mask = np.zeros((1, 1, S, S), dtype=np.float32)
    mask[0, 0][np.triu_indices(S, 1)] = FLOAT_LOWEST  # causal mask with float32 lowest
    inits = [
        init("wq", w(H, H)), init("bq", rng.normal(0, 0.1, H)),
        init("wk", w(H, H)), init("bk", rng.normal(0, 0.1, H)),
        init("wv", w(H, H)), init("bv", rng.normal(0, 0.1, H)),
        init("wo", w(H, H)), init("bo", rng.normal(0, 0.1, H)),
        init("heads_shape", np.array([1, S, NH, D], dtype=np.int64)),
        init("merge_shape", np.array([1, S, H], dtype=np.int64)),
        init("sqrt_d", np.array(math.sqrt(D), dtype=np.float32)),
        init("attn_mask", mask),
        init("two", np.array(2.0, dtype=np.float32)),
        init("ln1.eps", np.array(1e-5, dtype=np.float32)),
        init("ln1.gamma", rng.uniform(0.8, 1.2, H)), init("ln1.beta", rng.normal(0, 0.1, H)),
        init("w1", w(H, FF)), init("b1", rng.normal(0, 0.1, FF)),
        init("sqrt2", np.array(math.sqrt(2.0), dtype=np.float32)),
        init("one", np.array(1.0, dtype=np.float32)),
        init("half", np.array(0.5, dtype=np.float32)),
        init("w2", w(FF, H)), init("b2", rng.normal(0, 0.1, H)),
        init("ln2.gamma", rng.uniform(0.8, 1.2, H)), init("ln2.beta", rng.normal(0, 0.1, H)),
    ]
    N = helper.make_node
    nodes = []
    for p in "qkv":
        nodes += [
            N("MatMul", ["input", "w" + p], [p + "_mm"], name=p + "_proj"),
            N("Add", [p + "_mm", "b" + p], [p + "_b"], name=p + "_bias"),
            N("Reshape", [p + "_b", "heads_shape"], [p + "_heads"], name=p + "_reshape"),
        ]
    nodes += [
        N("Transpose", ["q_heads"], ["q_t"], name="q_transpose", perm=[0, 2, 1, 3]),   # [1,2,8,16]
        N("Transpose", ["k_heads"], ["k_t"], name="k_transpose", perm=[0, 2, 3, 1]),   # [1,2,16,8]
        N("Transpose", ["v_heads"], ["v_t"], name="v_transpose", perm=[0, 2, 1, 3]),   # [1,2,8,16]
        N("MatMul", ["q_t", "k_t"], ["scores"], name="qk_matmul"),
        N("Div", ["scores", "sqrt_d"], ["scores_scaled"], name="scale"),
        N("Add", ["scores_scaled", "attn_mask"], ["scores_masked"], name="mask_add"),
        N("Softmax", ["scores_masked"], ["probs"], name="softmax", axis=-1),
        N("MatMul", ["probs", "v_t"], ["ctx"], name="pv_matmul"),
        N("Transpose", ["ctx"], ["ctx_t"], name="ctx_transpose", perm=[0, 2, 1, 3]),
        N("Reshape", ["ctx_t", "merge_shape"], ["ctx_m"], name="ctx_reshape"),
        N("MatMul", ["ctx_m", "wo"], ["o_mm"], name="o_proj"),
        N("Add", ["o_mm", "bo"], ["attn_out"], name="o_bias"),
        N("Add", ["input", "attn_out"], ["res1"], name="residual1"),
        # decomposed LayerNorm
        N("ReduceMean", ["res1"], ["ln1_mean"], name="ln1_mean", axes=[-1], keepdims=1),
        N("Sub", ["res1", "ln1_mean"], ["ln1_centered"], name="ln1_sub"),
        N("Pow", ["ln1_centered", "two"], ["ln1_sq"], name="ln1_pow"),
        N("ReduceMean", ["ln1_sq"], ["ln1_var"], name="ln1_var", axes=[-1], keepdims=1),
        N("Add", ["ln1_var", "ln1.eps"], ["ln1_var_eps"], name="ln1_add_eps"),
        N("Sqrt", ["ln1_var_eps"], ["ln1_std"], name="ln1_sqrt"),
        N("Div", ["ln1_centered", "ln1_std"], ["ln1_norm"], name="ln1_div"),
        N("Mul", ["ln1_norm", "ln1.gamma"], ["ln1_scaled"], name="ln1_mul"),
        N("Add", ["ln1_scaled", "ln1.beta"], ["ln1_out"], name="ln1_add"),
        # FFN with erf-GELU
        N("MatMul", ["ln1_out", "w1"], ["ff1_mm"], name="ff1"),
        N("Add", ["ff1_mm", "b1"], ["ff1"], name="ff1_bias"),
        N("Div", ["ff1", "sqrt2"], ["gelu_div"], name="gelu_div"),
        N("Erf", ["gelu_div"], ["gelu_erf"], name="gelu_erf"),
        N("Add", ["gelu_erf", "one"], ["gelu_add"], name="gelu_add"),
        N("Mul", ["ff1", "gelu_add"], ["gelu_mul"], name="gelu_mul"),
        N("Mul", ["gelu_mul", "half"], ["gelu"], name="gelu_half"),
        N("MatMul", ["gelu", "w2"], ["ff2_mm"], name="ff2"),
        N("Add", ["ff2_mm", "b2"], ["ff2"], name="ff2_bias"),
        N("Add", ["ln1_out", "ff2"], ["res2"], name="residual2"),
        N("LayerNormalization", ["res2", "ln2.gamma", "ln2.beta"], ["output"], name="ln2",
          axis=-1, epsilon=1e-5),
    ]
    g = helper.make_graph(nodes, "transformer_block", [vi("input", [1, S, H])], [vi("output", [1, S, H])], inits)
    save_checked(make_model(g), "transformer.onnx")


# --------------------------------------------------------------------------
# if_subgraph.onnx
# --------------------------------------------------------------------------

def make_if_subgraph():
    rng = np.random.default_rng(5)
    inits = [
        init("w", rng.normal(0, 0.25, (16, 8))),  # used inside both branches (outer scope)
        init("b", rng.normal(0, 0.1, 8)),
        init("zero", np.array(0.0, dtype=np.float32)),
        init("out_scale", rng.uniform(0.5, 1.5, 8)),
    ]
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["t_mm"], name="then_matmul"),
         helper.make_node("Add", ["t_mm", "b"], ["t_add"], name="then_add"),
         helper.make_node("Relu", ["t_add"], ["then_out"], name="then_relu")],
        "then_branch", [], [vi("then_out", [1, 8])])
    else_g = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["e_mm"], name="else_matmul"),
         helper.make_node("Sigmoid", ["e_mm"], ["else_out"], name="else_sigmoid")],
        "else_branch", [], [vi("else_out", [1, 8])])
    nodes = [
        helper.make_node("ReduceSum", ["input"], ["sum"], name="reduce_sum", keepdims=0),
        helper.make_node("Greater", ["sum", "zero"], ["cond"], name="greater"),
        helper.make_node("If", ["cond"], ["branch_out"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Mul", ["branch_out", "out_scale"], ["output"], name="post_mul"),
    ]
    g = helper.make_graph(nodes, "if_subgraph", [vi("input", [1, 16])], [vi("output", [1, 8])], inits)
    m = make_model(g)
    path = save_checked(m, "if_subgraph.onnx")
    # make sure both branches are reachable
    sess = ort_session(path)
    x = f32(np.abs(rng.normal(0, 1, (1, 16))))
    pos = sess.run(None, {"input": x})[0]
    neg = sess.run(None, {"input": -x})[0]
    assert not np.allclose(pos, neg)


# --------------------------------------------------------------------------
# external_data.onnx (+ .data)
# --------------------------------------------------------------------------

def make_external_data():
    rng = np.random.default_rng(6)
    inits = [
        init("w1", rng.normal(0, 1 / 8, (64, 64))),   # 16 KiB
        init("b1", rng.normal(0, 0.1, 64)),           # 256 B, stays inline
        init("w2", rng.normal(0, 1 / 8, (64, 16))),   # 4 KiB
        init("b2", rng.normal(0, 0.1, 16)),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["mm1"], name="mm1"),
        helper.make_node("Add", ["mm1", "b1"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["h1"], name="relu1"),
        helper.make_node("MatMul", ["h1", "w2"], ["mm2"], name="mm2"),
        helper.make_node("Add", ["mm2", "b2"], ["output"], name="add2"),
    ]
    g = helper.make_graph(nodes, "external_data", [vi("input", [1, 64])], [vi("output", [1, 16])], inits)
    m = make_model(g)
    path = os.path.join(OUT, "external_data.onnx")
    data = path + ".data"
    if os.path.exists(data):
        os.remove(data)  # onnx appends to an existing data file
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="external_data.onnx.data", size_threshold=1024)
    onnx.checker.check_model(path, full_check=True)
    sess = ort_session(path)
    sess.run(None, random_feeds(sess, np.random.default_rng(0)))
    n_ext = sum(1 for t in onnx.load(path, load_external_data=False).graph.initializer
                if t.data_location == TensorProto.EXTERNAL)
    assert n_ext == 2, n_ext
    print(f"  wrote {'external_data.onnx':32s} {os.path.getsize(path):8d} B (+ .data {os.path.getsize(data)} B)")


# --------------------------------------------------------------------------
# custom_domain.onnx
# --------------------------------------------------------------------------

def make_custom_domain():
    rng = np.random.default_rng(7)
    inits = [init("w", rng.normal(0, 0.3, (8, 8))), init("bias", rng.normal(0, 0.1, 8))]
    my = helper.make_node("MyOp", ["relu_out"], ["my_out"], name="my_op", domain="com.quench.test",
                          alpha=0.5, mode="fast", doc_string="custom op, not runnable in onnxruntime")
    helper.set_metadata_props(my, {"quench.note": "node-level metadata", "origin": "make_fixtures.py"})
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["mm"], name="matmul", doc_string="dense layer"),
        helper.make_node("Relu", ["mm"], ["relu_out"], name="relu"),
        my,
        helper.make_node("Add", ["my_out", "bias"], ["output"], name="add"),
    ]
    g = helper.make_graph(nodes, "custom_domain", [vi("input", [1, 8])], [vi("output", [1, 8])], inits,
                          doc_string="graph doc string",
                          value_info=[vi("relu_out", [1, 8]), vi("my_out", [1, 8])])
    # NodeProto.metadata_props requires IR version 10
    m = make_model(g, ir_version=10, extra_opsets=[("com.quench.test", 1)])
    m.doc_string = "model with a custom-domain op and metadata for round-trip tests"
    m.domain = "com.quench.test"
    m.model_version = 3
    helper.set_model_props(m, {"quench.fixture": "custom_domain", "author": "quench"})
    # full_check (strict shape inference) passes: unknown non-ONNX domains are skipped.
    save_checked(m, "custom_domain.onnx", run=False, full_check=True)


# --------------------------------------------------------------------------
# constant_weights.onnx
# --------------------------------------------------------------------------

def make_constant_weights():
    rng = np.random.default_rng(8)

    def const(name, arr):
        return helper.make_node("Constant", [], [name], name=name + "_const",
                                value=init(name + "_value", arr))

    nodes = [
        const("conv.w", conv_w(rng, 4, 3, 3)),
        const("conv.b", rng.normal(0, 0.1, 4)),
        helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        const("flat_shape", np.array([1, 4 * 8 * 8], dtype=np.int64)),
        helper.make_node("Reshape", ["r", "flat_shape"], ["flat"], name="reshape"),
        const("fc.w", rng.normal(0, 1 / 16, (256, 10))),
        const("fc.b", rng.normal(0, 0.1, 10)),
        helper.make_node("MatMul", ["flat", "fc.w"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "fc.b"], ["output"], name="add"),
    ]
    g = helper.make_graph(nodes, "constant_weights", [vi("input", [1, 3, 8, 8])], [vi("output", [1, 10])], [])
    save_checked(make_model(g), "constant_weights.onnx")


def make_identity_dedup():
    """identity_dedup.onnx: makes `remove_identity` and `dedup_initializers`
    fire. Two Identity nodes (one producing the graph output, so its input
    must take over the output's name), an inference-mode Dropout (ratio given,
    training_mode absent), and two parallel convs whose weights and biases are
    byte-identical initializers under different names (merged into one)."""
    rng = np.random.default_rng(21)
    w1, b1 = conv_w(rng, 4, 3, 3), f32(rng.normal(0, 0.1, 4))
    w2, b2 = conv_w(rng, 6, 4, 3), f32(rng.normal(0, 0.1, 6))
    nodes = [
        helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["c1"], ["c1_id"], name="identity_mid"),
        helper.make_node("Relu", ["c1_id"], ["r1"], name="relu1"),
        helper.make_node("Dropout", ["r1", "drop.ratio"], ["d1"], name="dropout"),
        helper.make_node("Conv", ["d1", "a.w", "a.b"], ["ca"], name="conv_a",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d1", "b.w", "b.b"], ["cb"], name="conv_b",
                         kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("Add", ["ca", "cb"], ["s"], name="add"),
        helper.make_node("GlobalAveragePool", ["s"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Identity", ["flat"], ["output"], name="identity_out"),
    ]
    inits = [init("c1.w", w1), init("c1.b", b1), numpy_helper.from_array(np.array(0.3, dtype=np.float32), "drop.ratio"),
             init("a.w", w2), init("a.b", b2), init("b.w", w2.copy()), init("b.b", b2.copy())]
    g = helper.make_graph(nodes, "identity_dedup", [vi("input", [1, 3, 8, 8])], [vi("output", [1, 6])], inits)
    save_checked(make_model(g), "identity_dedup.onnx")


def make_softmax_head():
    """softmax_head.onnx: MatMul -> Softmax -> MatMul, the Softmax input made
    by a quantizable MatMul (no mask in between), so `--quantize-softmax-inputs`
    changes whether `logits` gets a Q/DQ (tests/compile_options.rs)."""
    rng = np.random.default_rng(22)
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["logits"], name="proj"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "w2"], ["output"], name="mix"),
    ]
    inits = [init("w1", f32(rng.normal(0, 0.5, (16, 12)))), init("w2", f32(rng.normal(0, 1.0, (12, 4))))]
    g = helper.make_graph(nodes, "softmax_head", [vi("input", [1, 8, 16])], [vi("output", [1, 8, 4])], inits)
    save_checked(make_model(g), "softmax_head.onnx")


# --------------------------------------------------------------------------
# bn_*.onnx
# --------------------------------------------------------------------------

def make_bn_variants():
    k3 = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    # depthwise conv + BN
    rng = np.random.default_rng(10)
    inits = [init("dw.w", conv_w(rng, 8, 8, 3, groups=8)), init("dw.b", rng.normal(0, 0.1, 8)),
             *bn_params(rng, 8, "bn")]
    nodes = [helper.make_node("Conv", ["input", "dw.w", "dw.b"], ["c"], name="dwconv", group=8, **k3),
             bn_node("c", "output", "bn")]
    g = helper.make_graph(nodes, "bn_depthwise", [vi("input", [1, 8, 8, 8])], [vi("output", [1, 8, 8, 8])], inits)
    save_checked(make_model(g), "bn_depthwise.onnx")

    # conv without bias + BN
    rng = np.random.default_rng(11)
    inits = [init("conv.w", conv_w(rng, 8, 3, 3)), *bn_params(rng, 8, "bn")]
    nodes = [helper.make_node("Conv", ["input", "conv.w"], ["c"], name="conv", **k3),
             bn_node("c", "output", "bn")]
    g = helper.make_graph(nodes, "bn_nobias", [vi("input", [1, 3, 8, 8])], [vi("output", [1, 8, 8, 8])], inits)
    save_checked(make_model(g), "bn_nobias.onnx")

    # ConvTranspose + BN (weight layout [C_in, C_out/group, kH, kW])
    rng = np.random.default_rng(12)
    inits = [init("deconv.w", rng.normal(0, 0.2, (4, 6, 3, 3))), init("deconv.b", rng.normal(0, 0.1, 6)),
             *bn_params(rng, 6, "bn")]
    nodes = [helper.make_node("ConvTranspose", ["input", "deconv.w", "deconv.b"], ["c"], name="deconv",
                              kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
             bn_node("c", "output", "bn")]
    g = helper.make_graph(nodes, "bn_convtranspose", [vi("input", [1, 4, 8, 8])],
                          [vi("output", [1, 6, 16, 16])], inits)
    save_checked(make_model(g), "bn_convtranspose.onnx")

    # Gemm (transB=1) + BN on 2D [N, C]
    rng = np.random.default_rng(13)
    inits = [init("fc.w", rng.normal(0, 0.25, (8, 16))), init("fc.b", rng.normal(0, 0.1, 8)),
             *bn_params(rng, 8, "bn")]
    nodes = [helper.make_node("Gemm", ["input", "fc.w", "fc.b"], ["g"], name="gemm", transB=1),
             bn_node("g", "output", "bn")]
    g = helper.make_graph(nodes, "bn_gemm", [vi("input", ["N", 16])], [vi("output", ["N", 8])], inits)
    save_checked(make_model(g), "bn_gemm.onnx")

    # MatMul with constant right operand + BN on 2D
    rng = np.random.default_rng(14)
    inits = [init("mm.w", rng.normal(0, 0.25, (16, 8))), *bn_params(rng, 8, "bn")]
    nodes = [helper.make_node("MatMul", ["input", "mm.w"], ["m"], name="matmul"),
             bn_node("m", "output", "bn")]
    g = helper.make_graph(nodes, "bn_matmul", [vi("input", ["N", 16])], [vi("output", ["N", 8])], inits)
    save_checked(make_model(g), "bn_matmul.onnx")

    # conv output consumed by BN *and* by another op: must not be folded
    rng = np.random.default_rng(15)
    inits = [init("conv.w", conv_w(rng, 8, 3, 3)), init("conv.b", rng.normal(0, 0.1, 8)),
             *bn_params(rng, 8, "bn")]
    nodes = [helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["c"], name="conv", **k3),
             bn_node("c", "bn_out", "bn"),
             helper.make_node("Sigmoid", ["c"], ["gate"], name="sigmoid"),
             helper.make_node("Add", ["bn_out", "gate"], ["output"], name="add")]
    g = helper.make_graph(nodes, "bn_shared", [vi("input", [1, 3, 8, 8])], [vi("output", [1, 8, 8, 8])], inits)
    save_checked(make_model(g), "bn_shared.onnx")

    # BN whose scale is computed from the input: must not be folded
    rng = np.random.default_rng(16)
    p = bn_params(rng, 4, "bn")
    inits = [init("conv.w", conv_w(rng, 4, 4, 3)), init("conv.b", rng.normal(0, 0.1, 4)),
             init("one", np.array(1.0, dtype=np.float32))] + p[1:]
    nodes = [helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["c"], name="conv", **k3),
             helper.make_node("ReduceMean", ["input"], ["chan_mean"], name="chan_mean", axes=[0, 2, 3], keepdims=0),
             helper.make_node("Sigmoid", ["chan_mean"], ["sig"], name="sigmoid"),
             helper.make_node("Add", ["sig", "one"], ["bn.scale"], name="scale_add"),
             bn_node("c", "output", "bn")]
    g = helper.make_graph(nodes, "bn_nonconst", [vi("input", [1, 4, 8, 8])], [vi("output", [1, 4, 8, 8])], inits)
    save_checked(make_model(g), "bn_nonconst.onnx")

    # Paddle-style constant Mul/Add/Sub after Conv and Gemm (folded into
    # weights and bias), plus a spatially varying Mul that must stay.
    rng = np.random.default_rng(17)
    inits = [init("c1.w", conv_w(rng, 8, 3, 3)), init("c1.b", rng.normal(0, 0.1, 8)),
             init("c2.w", conv_w(rng, 8, 8, 3)),
             init("scale", np.array([1.7], dtype=np.float32)),
             init("shift", rng.normal(0, 0.2, (1, 8, 1, 1))),
             init("sub", rng.normal(0, 0.2, (8, 1, 1))),
             init("spatial", rng.uniform(0.5, 1.5, (1, 1, 8, 8))),
             init("fc.w", rng.normal(0, 0.3, (8, 5))), init("fc.b", rng.normal(0, 0.1, 5)),
             init("fc.scale", rng.uniform(0.5, 2.0, 5))]
    nodes = [helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["c1"], name="conv1", **k3),
             helper.make_node("Mul", ["scale", "c1"], ["m1"], name="mul_scalar"),
             helper.make_node("Add", ["m1", "shift"], ["a1"], name="add_channel"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "c2.w"], ["c2"], name="conv2", **k3),
             helper.make_node("Sub", ["c2", "sub"], ["s2"], name="sub_channel"),
             helper.make_node("Mul", ["s2", "spatial"], ["m2"], name="mul_spatial"),
             helper.make_node("GlobalAveragePool", ["m2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["fc"], name="fc"),
             helper.make_node("Mul", ["fc", "fc.scale"], ["output"], name="mul_fc")]
    g = helper.make_graph(nodes, "affine_fold", [vi("input", [1, 3, 8, 8])], [vi("output", [1, 5])], inits)
    save_checked(make_model(g), "affine_fold.onnx")


# --------------------------------------------------------------------------
# silu_cnn.onnx
# --------------------------------------------------------------------------

def make_silu_cnn():
    """YOLOv8-style SiLU (Conv → Sigmoid, Mul) whose Sigmoid and Mul sit in
    an integer chain, then a written-out hard-swish (x · clip(x+3, 0, 6) / 6)
    whose Mul does not, a LeakyRelu, pooling and a classifier."""
    rng = np.random.default_rng(18)
    k3 = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    inits = [init("c1.w", conv_w(rng, 8, 3, 3)), init("c1.b", rng.normal(0, 0.1, 8)),
             init("c2.w", conv_w(rng, 8, 8, 3)), init("c2.b", rng.normal(0, 0.1, 8)),
             init("c3.w", conv_w(rng, 8, 8, 3)), init("c3.b", rng.normal(0, 0.1, 8)),
             init("three", np.array(3.0, dtype=np.float32)), init("six", np.array(6.0, dtype=np.float32)),
             init("zero", np.array(0.0, dtype=np.float32)),
             init("fc.w", rng.normal(0, 0.3, (10, 8))), init("fc.b", rng.normal(0, 0.1, 10))]
    nodes = [helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["c1"], name="conv1", **k3),
             helper.make_node("Sigmoid", ["c1"], ["s1"], name="silu_sigmoid"),
             helper.make_node("Mul", ["c1", "s1"], ["silu"], name="silu_mul"),
             helper.make_node("Conv", ["silu", "c2.w", "c2.b"], ["c2"], name="conv2", **k3),
             helper.make_node("Add", ["c2", "three"], ["hs_add"], name="hswish_add"),
             helper.make_node("Clip", ["hs_add", "zero", "six"], ["hs_clip"], name="hswish_clip"),
             helper.make_node("Mul", ["c2", "hs_clip"], ["hs_mul"], name="hswish_mul"),
             helper.make_node("Div", ["hs_mul", "six"], ["hswish"], name="hswish_div"),
             helper.make_node("Conv", ["hswish", "c3.w", "c3.b"], ["c3"], name="conv3", **k3),
             helper.make_node("LeakyRelu", ["c3"], ["lrelu"], name="leaky", alpha=0.1),
             helper.make_node("MaxPool", ["lrelu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["pool"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["output"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "silu_cnn", [vi("input", ["N", 3, 16, 16])], [vi("output", ["N", 10])], inits)
    save_checked(make_model(g), "silu_cnn.onnx")


# --------------------------------------------------------------------------
# resnet_tiny.onnx / mobilenet_tiny.onnx
# --------------------------------------------------------------------------

class Builder:
    def __init__(self, rng):
        self.rng, self.nodes, self.inits, self.n = rng, [], [], 0

    def fresh(self, p):
        self.n += 1
        return f"{p}_{self.n}"

    def conv(self, x, cin, cout, k, stride=1, groups=1, bias=False, name="conv"):
        w = name + ".weight"
        self.inits.append(init(w, conv_w(self.rng, cout, cin, k, groups)))
        ins = [x, w]
        if bias:
            self.inits.append(init(name + ".bias", self.rng.normal(0, 0.05, cout)))
            ins.append(name + ".bias")
        y = name + "_out"
        self.nodes.append(helper.make_node("Conv", ins, [y], name=name, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4, group=groups))
        return y

    def bn(self, x, c, name):
        # scale/bias random; mean/var filled in by calibrate_bn
        self.inits += [init(name + ".weight", self.rng.uniform(0.5, 1.5, c)),
                       init(name + ".bias", self.rng.normal(0.0, 0.2, c)),
                       init(name + ".running_mean", np.zeros(c)),
                       init(name + ".running_var", np.ones(c))]
        y = name + "_out"
        self.nodes.append(helper.make_node(
            "BatchNormalization",
            [x, name + ".weight", name + ".bias", name + ".running_mean", name + ".running_var"],
            [y], name=name, epsilon=1e-5, momentum=0.9))
        return y

    def op(self, op, ins, name, **attrs):
        y = name + "_out"
        self.nodes.append(helper.make_node(op, ins, [y], name=name, **attrs))
        return y


def make_resnet_tiny():
    rng = np.random.default_rng(20)
    b = Builder(rng)
    x = b.conv("input", 3, 16, 3, name="conv1")
    x = b.bn(x, 16, "bn1")
    x = b.op("Relu", [x], "relu")
    x = b.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 16x16

    def basic_block(x, cin, cout, stride, p):
        idt = x
        y = b.conv(x, cin, cout, 3, stride, name=p + ".conv1")
        y = b.bn(y, cout, p + ".bn1")
        y = b.op("Relu", [y], p + ".relu1")
        y = b.conv(y, cout, cout, 3, 1, name=p + ".conv2")
        y = b.bn(y, cout, p + ".bn2")
        if stride != 1 or cin != cout:
            idt = b.conv(x, cin, cout, 1, stride, name=p + ".downsample.0")
            idt = b.bn(idt, cout, p + ".downsample.1")
        y = b.op("Add", [y, idt], p + ".add")
        return b.op("Relu", [y], p + ".relu2")

    x = basic_block(x, 16, 16, 1, "layer1.0")
    x = basic_block(x, 16, 32, 2, "layer2.0")  # 8x8, downsample shortcut
    x = b.op("GlobalAveragePool", [x], "avgpool")
    x = b.op("Flatten", [x], "flatten", axis=1)
    b.inits += [init("fc.weight", rng.normal(0, 1 / math.sqrt(32), (10, 32))),
                init("fc.bias", rng.normal(0, 0.05, 10))]
    b.nodes.append(helper.make_node("Gemm", [x, "fc.weight", "fc.bias"], ["output"], name="fc", transB=1))
    g = helper.make_graph(b.nodes, "resnet_tiny", [vi("input", [1, 3, 32, 32])], [vi("output", [1, 10])], b.inits)
    m = calibrate_bn(make_model(g), image_samples(rng, [1, 3, 32, 32]))
    save_checked(m, "resnet_tiny.onnx")


def make_mobilenet_tiny():
    rng = np.random.default_rng(21)
    b = Builder(rng)
    b.inits += [init("relu6.min", np.array(0.0, dtype=np.float32)),
                init("relu6.max", np.array(6.0, dtype=np.float32))]

    def relu6(x, name):
        return b.op("Clip", [x, "relu6.min", "relu6.max"], name)

    x = b.conv("input", 3, 16, 3, 2, name="features.0.0")          # 16x16
    x = b.bn(x, 16, "features.0.1")
    x = relu6(x, "features.0.2")

    def inverted_residual(x, cin, cout, stride, t, p):
        hid = cin * t
        y = b.conv(x, cin, hid, 1, name=p + ".conv.0.0")            # pointwise expand
        y = b.bn(y, hid, p + ".conv.0.1")
        y = relu6(y, p + ".conv.0.2")
        y = b.conv(y, hid, hid, 3, stride, groups=hid, name=p + ".conv.1.0")  # depthwise
        y = b.bn(y, hid, p + ".conv.1.1")
        y = relu6(y, p + ".conv.1.2")
        y = b.conv(y, hid, cout, 1, name=p + ".conv.2")             # pointwise project
        y = b.bn(y, cout, p + ".conv.3")
        if stride == 1 and cin == cout:
            y = b.op("Add", [x, y], p + ".add")
        return y

    x = inverted_residual(x, 16, 16, 1, 4, "features.1")
    x = inverted_residual(x, 16, 24, 2, 4, "features.2")           # 8x8
    x = b.op("GlobalAveragePool", [x], "avgpool")
    x = b.op("Flatten", [x], "flatten", axis=1)
    b.inits += [init("classifier.weight", rng.normal(0, 1 / math.sqrt(24), (10, 24))),
                init("classifier.bias", rng.normal(0, 0.05, 10))]
    b.nodes.append(helper.make_node("Gemm", [x, "classifier.weight", "classifier.bias"], ["output"],
                                    name="classifier", transB=1))
    g = helper.make_graph(b.nodes, "mobilenet_tiny", [vi("input", [1, 3, 32, 32])], [vi("output", [1, 10])],
                          b.inits)
    m = calibrate_bn(make_model(g), image_samples(rng, [1, 3, 32, 32]))
    save_checked(m, "mobilenet_tiny.onnx")


# --------------------------------------------------------------------------
# digits_cnn.onnx: trained with numpy on sklearn's bundled digits
# --------------------------------------------------------------------------

def _im2col(x, k, stride, pad):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    oh, ow = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
    return cols, oh, ow


def _conv_fwd(x, W, b, stride, pad):
    cout, _, k, _ = W.shape
    cols, oh, ow = _im2col(x, k, stride, pad)
    out = cols @ W.reshape(cout, -1).T + b
    return out.reshape(x.shape[0], oh, ow, cout).transpose(0, 3, 1, 2), cols


def _conv_bwd(dout, x_shape, cols, W, stride, pad, need_dx=True):
    cout, cin, k, _ = W.shape
    n, _, oh, ow = dout.shape
    d = dout.transpose(0, 2, 3, 1).reshape(-1, cout)
    dW = (d.T @ cols).reshape(W.shape)
    db = d.sum(0)
    if not need_dx:
        return None, dW, db
    dcols = (d @ W.reshape(cout, -1)).reshape(n, oh, ow, cin, k, k)
    h, w = x_shape[2], x_shape[3]
    dxp = np.zeros((n, cin, h + 2 * pad, w + 2 * pad))
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += dcols[..., i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, pad:pad + h, pad:pad + w], dW, db


def _digits_forward(p, x):
    z1, c1 = _conv_fwd(x, p["w1"], p["b1"], 1, 1)
    a1 = np.maximum(z1, 0)
    z2, c2 = _conv_fwd(a1, p["w2"], p["b2"], 2, 1)
    a2 = np.maximum(z2, 0)
    f = a2.reshape(len(x), -1)
    logits = f @ p["w3"].T + p["b3"]
    return logits, (z1, c1, a1, z2, c2, a2, f)


def train_digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    X = (d.images / 16.0).astype(np.float64)[:, None]  # [1797,1,8,8] in [0,1]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(1234).permutation(len(X))
    tr, ca, ev = perm[:1200], perm[1200:1456], perm[1456:]

    rng = np.random.default_rng(42)
    p = {
        "w1": rng.normal(0, math.sqrt(2 / 9), (8, 1, 3, 3)), "b1": np.zeros(8),
        "w2": rng.normal(0, math.sqrt(2 / 72), (16, 8, 3, 3)), "b2": np.zeros(16),
        "w3": rng.normal(0, math.sqrt(1 / 256), (10, 256)), "b3": np.zeros(10),
    }
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    lr, b1, b2, eps, t = 3e-3, 0.9, 0.999, 1e-8, 0
    Xtr, ytr = X[tr], y[tr]
    for epoch in range(25):
        order = rng.permutation(len(Xtr))
        for s in range(0, len(order), 32):
            idx = order[s:s + 32]
            xb, yb = Xtr[idx], ytr[idx]
            logits, (z1, c1, a1, z2, c2, a2, f) = _digits_forward(p, xb)
            e = np.exp(logits - logits.max(1, keepdims=True))
            prob = e / e.sum(1, keepdims=True)
            dl = prob
            dl[np.arange(len(yb)), yb] -= 1
            dl /= len(yb)
            g = {"w3": dl.T @ f, "b3": dl.sum(0)}
            df = dl @ p["w3"]
            dz2 = df.reshape(a2.shape) * (z2 > 0)
            da1, g["w2"], g["b2"] = _conv_bwd(dz2, a1.shape, c2, p["w2"], 2, 1)
            dz1 = da1 * (z1 > 0)
            _, g["w1"], g["b1"] = _conv_bwd(dz1, xb.shape, c1, p["w1"], 1, 1, need_dx=False)
            t += 1
            for k in p:
                m[k] = b1 * m[k] + (1 - b1) * g[k]
                v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
                p[k] -= lr * (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
    return p, X, y, tr, ca, ev


def _fold_in_bn(W, b, z, rng, eps=1e-5):
    """Return conv (W', b') and BN params such that BN(conv'(x)) == conv(x) exactly
    (in real arithmetic) and the BN running stats equal the real per-channel
    mean/var of conv'(x) over the training set."""
    mu = z.mean(axis=(0, 2, 3))
    sigma = np.maximum(z.std(axis=(0, 2, 3)), 1e-3)
    m = rng.normal(0.0, 0.5, len(mu))          # running_mean of the new pre-BN activation
    var = rng.uniform(0.5, 2.0, len(mu))       # running_var of the new pre-BN activation
    sv = np.sqrt(var)
    k = sv / sigma
    W2 = W * k[:, None, None, None]
    b2 = (b - mu) * k + m
    gamma = sigma * np.sqrt(var + eps) / sv
    beta = mu
    return W2, b2, gamma, beta, m, var


def make_digits_cnn():
    p, X, y, tr, ca, ev = train_digits()
    acc_np = (np.argmax(_digits_forward(p, X[ev])[0], 1) == y[ev]).mean()

    _, (z1, _, a1, z2, _, _, _) = _digits_forward(p, X[tr])
    rng = np.random.default_rng(7)
    w1, b1, g1, be1, m1, v1 = _fold_in_bn(p["w1"], p["b1"], z1, rng)
    w2, b2, g2, be2, m2, v2 = _fold_in_bn(p["w2"], p["b2"], z2, rng)

    inits = [
        init("conv1.weight", w1), init("conv1.bias", b1),
        init("bn1.weight", g1), init("bn1.bias", be1), init("bn1.running_mean", m1), init("bn1.running_var", v1),
        init("conv2.weight", w2), init("conv2.bias", b2),
        init("bn2.weight", g2), init("bn2.bias", be2), init("bn2.running_mean", m2), init("bn2.running_var", v2),
        init("fc.weight", p["w3"]), init("fc.bias", p["b3"]),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1_out"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv1_out", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                                "bn1.running_var"], ["bn1_out"], name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["bn1_out"], ["relu1_out"], name="relu1"),
        helper.make_node("Conv", ["relu1_out", "conv2.weight", "conv2.bias"], ["conv2_out"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["conv2_out", "bn2.weight", "bn2.bias", "bn2.running_mean",
                                                "bn2.running_var"], ["bn2_out"], name="bn2", epsilon=1e-5),
        helper.make_node("Relu", ["bn2_out"], ["relu2_out"], name="relu2"),
        helper.make_node("Flatten", ["relu2_out"], ["flatten_out"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flatten_out", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "digits_cnn", [vi("input", ["N", 1, 8, 8])], [vi("logits", ["N", 10])], inits)
    path = save_checked(make_model(g), "digits_cnn.onnx")

    sess = ort_session(path)
    xe = f32(X[ev])
    logits = sess.run(None, {"input": xe})[0]
    acc = float((np.argmax(logits, 1) == y[ev]).mean())
    # BN rewrite must not change the function
    ref = _digits_forward(p, X[ev])[0]
    assert np.max(np.abs(logits - ref)) < 1e-3, np.max(np.abs(logits - ref))
    print(f"  digits_cnn: numpy eval acc {acc_np:.4f}, onnxruntime FP32 eval acc {acc:.4f} "
          f"(train {len(tr)}, calib {len(ca)}, eval {len(ev)})")
    assert acc >= 0.90, acc

    dd = os.path.join(OUT, "digits")
    os.makedirs(os.path.join(dd, "calib"), exist_ok=True)
    os.makedirs(os.path.join(dd, "eval"), exist_ok=True)
    calib = f32(X[ca])
    np.save(os.path.join(dd, "calib", "input.npy"), calib)
    np.savez(os.path.join(dd, "calib.npz"), input=calib)
    np.save(os.path.join(dd, "eval", "input.npy"), xe)
    np.save(os.path.join(dd, "eval", "labels.npy"), y[ev].astype(np.int64))
    for i in range(3):
        td = os.path.join(dd, "test_data", f"test_data_set_{i}")
        os.makedirs(td, exist_ok=True)
        xi = xe[i:i + 1]
        yi = sess.run(None, {"input": xi})[0]
        with open(os.path.join(td, "input_0.pb"), "wb") as fh:
            fh.write(numpy_helper.from_array(xi, "input").SerializeToString())
        with open(os.path.join(td, "output_0.pb"), "wb") as fh:
            fh.write(numpy_helper.from_array(yi, "logits").SerializeToString())

    with open(os.path.join(dd, "README.md"), "w") as fh:
        fh.write(f"""# digits

Data and reference outputs for `../digits_cnn.onnx`, generated by `testdata/make_fixtures.py`.

Source: scikit-learn's bundled `load_digits()` (1797 8x8 grayscale digits, pixel values scaled
from 0..16 to [0, 1]). Deterministic split (`np.random.default_rng(1234).permutation`):

| split | samples | files |
| --- | --- | --- |
| train | {len(tr)} | (not stored) |
| calibration | {len(ca)} | `calib/input.npy` (f32 [{len(ca)},1,8,8]), `calib.npz` (key `input`) |
| eval | {len(ev)} | `eval/input.npy` (f32 [{len(ev)},1,8,8]), `eval/labels.npy` (int64 [{len(ev)}]) |

Model: Conv(1->8, 3x3, pad 1)+BN+Relu, Conv(8->16, 3x3, stride 2, pad 1)+BN+Relu, Flatten,
Gemm(256->10). Input `input` f32 [N,1,8,8], output `logits` f32 [N,10]. Trained with plain numpy
(Adam, 25 epochs, batch 32); the BatchNormalization nodes were inserted afterwards in a
function-preserving way, with running mean/var equal to the real per-channel statistics of the
conv outputs on the training set.

**FP32 eval accuracy (onnxruntime CPU): {acc * 100:.2f}%** ({int(round(acc * len(ev)))}/{len(ev)})

`test_data/test_data_set_{{0,1,2}}/{{input_0,output_0}}.pb`: the first three eval samples in the
standard ONNX test-data layout (TensorProto `input` [1,1,8,8], `logits` [1,10], computed by
onnxruntime CPU).
""")
    return acc


# --------------------------------------------------------------------------
# bad/*.onnx: deliberately invalid, never checked
# --------------------------------------------------------------------------

def _write_raw(model, name):
    path = os.path.join(OUT, "bad", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    print(f"  wrote bad/{name:28s} {os.path.getsize(path):8d} B")
    return path


def _expect_checker_failure(path):
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception:
        return
    raise AssertionError(f"{path} unexpectedly passed the checker")


def make_bad():
    rng = np.random.default_rng(30)

    # cycle: a = Add(input, b); b = Relu(a)
    g = helper.make_graph(
        [helper.make_node("Add", ["input", "b"], ["a"], name="add"),
         helper.make_node("Relu", ["a"], ["b"], name="relu")],
        "cycle", [vi("input", [1, 4])], [vi("b", [1, 4])])
    _expect_checker_failure(_write_raw(make_model(g), "cycle.onnx"))

    # undefined input
    g = helper.make_graph(
        [helper.make_node("Add", ["input", "ghost"], ["output"], name="add")],
        "undefined_input", [vi("input", [1, 4])], [vi("output", [1, 4])])
    _expect_checker_failure(_write_raw(make_model(g), "undefined_input.onnx"))

    # two nodes producing the same output name
    g = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"], name="relu"),
         helper.make_node("Sigmoid", ["input"], ["output"], name="sigmoid")],
        "duplicate_names", [vi("input", [1, 4])], [vi("output", [1, 4])])
    _expect_checker_failure(_write_raw(make_model(g), "duplicate_names.onnx"))

    def ext_model(name, location, offset, length):
        w = TensorProto()
        w.name = "w"
        w.data_type = TensorProto.FLOAT
        w.dims.extend([16, 16])
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
            e = w.external_data.add()
            e.key, e.value = k, v
        g = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["output"], name="matmul")],
                              name, [vi("input", [1, 16])], [vi("output", [1, 16])], [w])
        return make_model(g)

    # external data referencing a file that does not exist
    _expect_checker_failure(_write_raw(ext_model("missing_external", "missing_external.onnx.data", 0, 1024),
                                       "missing_external.onnx"))

    # external data file shorter than offset + length (needs 128 + 1024 bytes, has 512)
    with open(os.path.join(OUT, "bad", "short_external.onnx.data"), "wb") as fh:
        fh.write(f32(rng.normal(0, 1, 128)).tobytes())
    p = _write_raw(ext_model("short_external", "short_external.onnx.data", 128, 1024), "short_external.onnx")
    try:
        _expect_checker_failure(p)
    except AssertionError:
        # the checker only validates the path, not the length; loading must still fail
        try:
            onnx.load(p)
        except Exception:
            pass
        else:
            raise


# --------------------------------------------------------------------------
def make_detector_head():
    """A YOLOX-style detector head whose one output concatenates box values
    (times 32, like pixel offsets) and two sigmoid scores, then reshapes it
    with a shape computed from the input's batch (Shape, Gather, Concat) and
    transposes it to [N, anchors, 6]: verification measures the boxes and
    the scores as parts of the output."""
    rng = np.random.default_rng(31)
    k3 = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    inits = [init("c1.w", conv_w(rng, 8, 3, 3)), init("c1.b", rng.normal(0, 0.1, 8)),
             init("box.w", conv_w(rng, 4, 8, 1)), init("box.b", rng.normal(0, 0.1, 4)),
             init("score.w", conv_w(rng, 2, 8, 1)), init("score.b", rng.normal(-1.0, 0.1, 2)),
             init("stride", np.array(32.0, dtype=np.float32)),
             init("zero_axis", np.array([0], dtype=np.int64)),
             init("tail", np.array([6, 256], dtype=np.int64))]
    nodes = [helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["c1"], name="conv1", **k3),
             helper.make_node("Relu", ["c1"], ["a"], name="relu1"),
             helper.make_node("Conv", ["a", "box.w", "box.b"], ["box_raw"], name="box_conv", kernel_shape=[1, 1]),
             helper.make_node("Mul", ["box_raw", "stride"], ["boxes"], name="box_scale"),
             helper.make_node("Conv", ["a", "score.w", "score.b"], ["score_logit"], name="score_conv", kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["score_logit"], ["scores"], name="score_sigmoid"),
             helper.make_node("Concat", ["boxes", "scores"], ["cat"], name="concat", axis=1),
             helper.make_node("Shape", ["input"], ["in_shape"], name="shape"),
             helper.make_node("Gather", ["in_shape", "zero_axis"], ["batch"], name="batch", axis=0),
             helper.make_node("Concat", ["batch", "tail"], ["flat_shape"], name="flat_shape", axis=0),
             helper.make_node("Reshape", ["cat", "flat_shape"], ["flat"], name="flatten"),
             helper.make_node("Transpose", ["flat"], ["output"], name="to_anchors", perm=[0, 2, 1])]
    g = helper.make_graph(nodes, "detector_head", [vi("input", ["N", 3, 16, 16])], [vi("output", ["N", 256, 6])], inits)
    save_checked(make_model(g), "detector_head.onnx")

# --------------------------------------------------------------------------

def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT, help="output directory (default: the testdata/ dir of this script)")
    OUT = os.path.abspath(ap.parse_args().out)
    print(f"onnx {onnx.__version__}, numpy {np.__version__}; writing to {OUT}")
    make_cnn_bn()
    make_mlp()
    make_residual()
    make_transformer()
    make_if_subgraph()
    make_external_data()
    make_custom_domain()
    make_constant_weights()
    make_identity_dedup()
    make_softmax_head()
    make_bn_variants()
    make_silu_cnn()
    make_detector_head()
    make_resnet_tiny()
    make_mobilenet_tiny()
    make_digits_cnn()
    make_bad()
    print("done")


if __name__ == "__main__":
    sys.exit(main())
