#!/usr/bin/env python3
"""Writes the seed corpus replayed by tests/loader_robustness.rs
(`fuzz_regressions_never_panic`): a few valid models and crafted invalid ones.

    .venv/bin/python fuzz/regressions/make_seeds.py

Deterministic; the files are committed. The test asserts how many there are,
so adding a seed here means updating SEED_COUNT there.
"""
import pathlib
import random

import onnx
from onnx import TensorProto, helper

HERE = pathlib.Path(__file__).resolve().parent
TESTDATA = HERE.parent.parent / "testdata"


def raw_tensor(name, dims, raw):
    """A float initializer built by hand: make_tensor checks the size."""
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(dims)
    t.raw_data = raw
    return t


def write(name, data):
    (HERE / name).write_bytes(data)


def model(nodes, inits, inputs=None, outputs=None, opset=17):
    g = helper.make_graph(
        nodes, "g",
        inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        outputs if outputs is not None else [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] if opset else [])
    return m.SerializeToString()


def main():
    # Valid models.
    write("valid_mlp.onnx", (TESTDATA / "mlp.onnx").read_bytes())
    write("valid_bn_gemm.onnx", (TESTDATA / "bn_gemm.onnx").read_bytes())
    write("valid_if_subgraph.onnx", (TESTDATA / "if_subgraph.onnx").read_bytes())
    # Not protobuf / broken protobuf.
    write("empty.onnx", b"")
    write("random_bytes.onnx", bytes(random.Random(7).randrange(256) for _ in range(512)))
    mlp = (TESTDATA / "mlp.onnx").read_bytes()
    write("truncated_mlp.onnx", mlp[: len(mlp) // 2])
    # field 7 (graph), length-delimited, length 2^60: a length prefix past the end.
    write("huge_length_prefix.onnx", bytes([0x3A]) + bytes([0x80] * 8 + [0x10]) + b"\x00" * 8)
    # Well-formed protobuf, nonsense models.
    big = raw_tensor("w", [1 << 40, 1 << 40], b"\x00" * 4)
    write("huge_dims_numel_overflow.onnx",
          model([helper.make_node("Add", ["x", "w"], ["y"])], [big]))
    neg = raw_tensor("w", [-3, 4], b"\x00" * 4)
    write("negative_dim.onnx", model([helper.make_node("Add", ["x", "w"], ["y"])], [neg]))
    short = raw_tensor("w", [1, 4], b"\x00" * 3)
    write("raw_data_wrong_length.onnx", model([helper.make_node("Add", ["x", "w"], ["y"])], [short]))
    write("dangling_input.onnx", model([helper.make_node("Add", ["x", "nowhere"], ["y"])], []))
    write("node_cycle.onnx", model([
        helper.make_node("Add", ["x", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Identity", ["a"], ["y"]),
    ], []))
    write("no_opset_import.onnx", model([helper.make_node("Relu", ["x"], ["y"])], [], opset=None))
    write("conv_bad_attribute_kind.onnx", model([
        helper.make_node("Conv", ["x", "x"], ["y"], kernel_shape="three", strides=[0, -1]),
    ], []))


if __name__ == "__main__":
    main()
