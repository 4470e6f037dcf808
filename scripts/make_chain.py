#!/usr/bin/env python3
"""Write a long-chain ONNX model and calibration data for scaling measurements.

    python scripts/make_chain.py --nodes 10000 --kind conv --out DIR

writes DIR/chain.onnx and DIR/cal/input.npy (the calibration samples, leading
sample axis). Kinds:

  conv      repeated Conv(1x1, 4->4) -> Add(bias tensor) -> Relu blocks on
            [1, 4, 4, 4] activations (three nodes a block)
  eltwise   repeated Mul(const) -> Add(const) -> Relu on [1, 16] (three nodes
            a block): no weights worth quantizing, only activations

`--nodes` is rounded down to whole blocks. Weights are chosen so values stay
bounded through any number of blocks (Relu of a contraction plus a constant),
so every range is finite and non-degenerate. Used by benches/chain_scaling.sh.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_chain(blocks, rng):
    c = 4
    nodes, inits = [], []
    prev = "input"
    for i in range(blocks):
        w = (rng.standard_normal((c, c, 1, 1)) * 0.4).astype(np.float32)
        b = (rng.standard_normal((1, c, 1, 1)) * 0.1 + 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        inits.append(numpy_helper.from_array(b, f"b{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}"))
        nodes.append(helper.make_node("Add", [f"c{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"))
        nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    shape = [1, c, 4, 4]
    return nodes, inits, prev, shape


def eltwise_chain(blocks, rng):
    n = 16
    nodes, inits = [], []
    prev = "input"
    for i in range(blocks):
        m = (rng.uniform(0.5, 0.9, (1, n))).astype(np.float32)
        a = (rng.standard_normal((1, n)) * 0.1 + 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(m, f"m{i}"))
        inits.append(numpy_helper.from_array(a, f"k{i}"))
        nodes.append(helper.make_node("Mul", [prev, f"m{i}"], [f"p{i}"], name=f"mul{i}"))
        nodes.append(helper.make_node("Add", [f"p{i}", f"k{i}"], [f"a{i}"], name=f"add{i}"))
        nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    return nodes, inits, prev, [1, n]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--kind", choices=["conv", "eltwise"], default="conv")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    blocks = max(1, args.nodes // 3)
    make = conv_chain if args.kind == "conv" else eltwise_chain
    nodes, inits, last, shape = make(blocks, rng)
    nodes.append(helper.make_node("Identity", [last], ["output"], name="out"))
    graph = helper.make_graph(
        nodes,
        f"{args.kind}_chain_{len(nodes)}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N"] + shape[1:])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N"] + shape[1:])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    os.makedirs(os.path.join(args.out, "cal"), exist_ok=True)
    onnx.save(model, os.path.join(args.out, "chain.onnx"))
    data = rng.standard_normal([args.samples] + shape[1:]).astype(np.float32)
    np.save(os.path.join(args.out, "cal", "input.npy"), data)
    print(f"{len(nodes)} nodes -> {args.out}/chain.onnx")


if __name__ == "__main__":
    main()
