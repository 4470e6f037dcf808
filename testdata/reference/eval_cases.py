#!/usr/bin/env python3
"""Op-by-op reference table for quench's constant evaluator.

Writes testdata/reference/eval_cases.json: one single-node case per entry,
computed by ONNX's own reference implementation (onnx.reference.
ReferenceEvaluator). The Rust test crates/quench-passes/tests/eval_reference.rs
evaluates every case with quench_passes::eval and compares element types,
shapes and values exactly (floats within 1 ulp; NaN matches NaN).

Cases marked "decline" are ones the evaluator must refuse to fold (undefined
results such as integer division by zero or i64::MIN / -1, invalid
axes/perms, outputs over the size cap); they are not run through the
reference implementation.

Run by hand after changing the evaluator's coverage, commit the output:

    .venv/bin/python testdata/reference/eval_cases.py

Each case: {"name", "opset", "node": hex NodeProto, "inputs": [hex TensorProto
or null], "expect": [hex TensorProto] or "decline"}.
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval_cases.json")

INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
SIGNED = [np.int8, np.int16, np.int32, np.int64]
FLOATS = [np.float32, np.float64]
NUMERIC = FLOATS + INTS

cases = []


def tname(dt):
    return np.dtype(dt).name


def add(name, op, inputs, opset=21, expect=None, **attrs):
    """Adds a case; `inputs` are numpy arrays or None (omitted)."""
    in_names = [f"x{i}" if a is not None else "" for i, a in enumerate(inputs)]
    node = helper.make_node(op, in_names, ["y"], name=name, **attrs)
    entry = {
        "name": name,
        "opset": opset,
        "node": node.SerializeToString().hex(),
        "inputs": [
            None if a is None else numpy_helper.from_array(np.asarray(a), n).SerializeToString().hex()
            for a, n in zip(inputs, in_names)
        ],
    }
    if expect == "decline":
        entry["expect"] = "decline"
    else:
        graph = helper.make_graph(
            [node],
            "g",
            [
                helper.make_tensor_value_info(
                    n, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), np.asarray(a).shape
                )
                for a, n in zip(inputs, in_names)
                if a is not None
            ],
            [helper.make_empty_tensor_value_info("y")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        feeds = {n: np.asarray(a) for a, n in zip(inputs, in_names) if a is not None}
        (res,) = ReferenceEvaluator(model).run(None, feeds)
        res = np.asarray(res)
        entry["expect"] = [numpy_helper.from_array(res, "y").SerializeToString().hex()]
    cases.append(entry)


def arr(values, dt):
    return np.array(values, dtype=dt)


def edges(dt):
    info = np.iinfo(dt)
    return info.min, info.max


# ---- binary arithmetic: every numeric type, broadcasting, overflow edges ----
for dt in NUMERIC:
    a = arr([[1, 2, 3], [4, 5, 6]], dt)
    b = arr([7, 0, 2], dt)
    for op in ["Add", "Sub", "Mul"]:
        add(f"{op}_{tname(dt)}_broadcast", op, [a, b])
        add(f"{op}_{tname(dt)}_scalar", op, [a, arr(3, dt)])
        add(f"{op}_{tname(dt)}_empty", op, [np.zeros((0, 3), dt), b])
    if dt in INTS:
        lo, hi = edges(dt)
        ov = arr([lo, hi, hi, lo], dt)
        add(f"Add_{tname(dt)}_wraps", "Add", [ov, arr([-1 if lo < 0 else 1, 1, hi, lo], dt)])
        add(f"Sub_{tname(dt)}_wraps", "Sub", [ov, arr([1, np.array(lo, dt), 0, hi], dt)])
        add(f"Mul_{tname(dt)}_wraps", "Mul", [ov, arr([2, 2, hi, lo], dt)])
    # Division: integers truncate toward zero.
    num = arr([7, 8, 9, 100], dt) if dt not in SIGNED and dt not in FLOATS else arr([7, -7, 9, -100], dt)
    den = arr([2, 3, 4, 7], dt) if dt not in SIGNED and dt not in FLOATS else arr([2, 2, -4, -7], dt)
    add(f"Div_{tname(dt)}", "Div", [num, den])
    if dt in INTS:
        add(f"Div_{tname(dt)}_by_zero", "Div", [num, arr([1, 0, 1, 1], dt)], expect="decline")
        add(f"Mod_{tname(dt)}_by_zero", "Mod", [num, arr([1, 0, 1, 1], dt)], expect="decline")
        add(f"Mod_{tname(dt)}", "Mod", [num, den])
        add(f"Mod_{tname(dt)}_fmod", "Mod", [num, den], fmod=1)
        lo, hi = edges(dt)
        add(f"Div_{tname(dt)}_edges", "Div", [arr([lo, hi, lo], dt), arr([1, hi, hi], dt)])
    if dt in SIGNED:
        lo, _ = edges(dt)
        add(f"Div_{tname(dt)}_min_by_minus_one", "Div", [arr([lo], dt), arr([-1], dt)], expect="decline")
    if dt in FLOATS:
        add(f"Div_{tname(dt)}_by_zero", "Div", [arr([1, -1, 0], dt), arr([0, 0, 0], dt)])
        add(f"Mod_{tname(dt)}_fmod", "Mod", [arr([5.5, -5.5, 7], dt), arr([2, 2, -3], dt)], fmod=1)
        add(f"Pow_{tname(dt)}", "Pow", [arr([[2, 3], [0.5, 9]], dt), arr([3, 0.5], dt)])

# ---- unary ----
for dt in FLOATS:
    x = arr([-2.5, -0.5, 0, 0.5, 1.5, 2.5, 4, np.nan, np.inf, -np.inf], dt)
    for op in ["Neg", "Abs", "Relu", "Sqrt", "Reciprocal", "Exp", "Log", "Floor", "Ceil", "Round"]:
        add(f"{op}_{tname(dt)}", op, [x])
for dt in SIGNED:
    lo, hi = edges(dt)
    x = arr([lo, -3, 0, 5, hi], dt)
    for op in ["Neg", "Abs", "Relu"]:
        add(f"{op}_{tname(dt)}", op, [x])

# ---- comparisons and logic ----
for dt in NUMERIC:
    a = arr([[1, 5, 3], [4, 2, 6]], dt)
    b = arr([[3], [4]], dt)
    for op in ["Equal", "Less", "Greater"]:
        add(f"{op}_{tname(dt)}", op, [a, b])
add("Equal_bool", "Equal", [arr([True, False, True], bool), arr([True], bool)])
add("Less_f32_nan", "Less", [arr([np.nan, 1], np.float32), arr([1, np.nan], np.float32)])
t = arr([[True], [False]], bool)
f = arr([True, False, False], bool)
for op in ["And", "Or", "Xor"]:
    add(f"{op}_bool", op, [t, f])
add("Not_bool", "Not", [f])
add("Not_empty", "Not", [np.zeros((2, 0), bool)])
for dt in [np.float32, np.int64, np.uint8, bool]:
    add(
        f"Where_{tname(dt)}",
        "Where",
        [arr([[True, False, True]], bool), arr([[1], [0]], dt), arr([0, 1, 1], dt)],
    )

# ---- Cast: every pair of covered types, values in range of both ----
for src in NUMERIC + [bool]:
    for dst in NUMERIC + [bool]:
        if src is bool:
            x = arr([True, False, True], bool)
        elif src in FLOATS:
            x = arr([0, 1.75, 100.5, 3], src)
            if dst in SIGNED:
                x = arr([0, -1.75, 100.5, -3], src)
        elif src in SIGNED:
            x = arr([0, -1, 100, 127], src)
        else:
            x = arr([0, 1, 100, 127], src)
        add(f"Cast_{tname(src)}_to_{tname(dst)}", "Cast", [x],
            to=helper.np_dtype_to_tensor_dtype(np.dtype(dst)))
# Narrowing integer casts wrap; large i64 to f32 rounds to nearest.
add("Cast_int64_to_int8_wraps", "Cast", [arr([300, -129, 2**40 + 5], np.int64)], to=TensorProto.INT8)
add("Cast_int64_to_uint8_wraps", "Cast", [arr([-1, 256, 511], np.int64)], to=TensorProto.UINT8)
add("Cast_int64_to_float_rounds", "Cast", [arr([2**53 + 1, 2**62 + 2**38 + 1, -(2**63)], np.int64)],
    to=TensorProto.FLOAT)
add("Cast_uint64_to_float_rounds", "Cast", [arr([2**64 - 1, 2**63 + 2**39 + 1], np.uint64)],
    to=TensorProto.FLOAT)
add("Cast_double_to_float_rounds", "Cast", [arr([0.1, 1e300, -1e-300, 3.4028235677973366e38], np.float64)],
    to=TensorProto.FLOAT)
add("Cast_float_nan_to_bool", "Cast", [arr([np.nan, 0, -0.0, 2], np.float32)], to=TensorProto.BOOL)
add("Cast_float_nan_to_int", "Cast", [arr([np.nan], np.float32)], to=TensorProto.INT32, expect="decline")
add("Cast_float_out_of_range", "Cast", [arr([300], np.float32)], to=TensorProto.INT8, expect="decline")

# ---- shapes ----
x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
add("Shape", "Shape", [x])
add("Shape_start_end", "Shape", [x], start=-2, end=10)
add("Shape_scalar", "Shape", [arr(3, np.int32)])
add("Size", "Size", [x])
add("Size_empty", "Size", [np.zeros((3, 0), np.uint8)])
add("Reshape_infer", "Reshape", [x, arr([4, -1], np.int64)])
add("Reshape_zero_copies", "Reshape", [x, arr([0, 0, 2, 2], np.int64)])
add("Reshape_allowzero_empty", "Reshape", [np.zeros((0, 4), np.int16), arr([2, 0, 3], np.int64)], allowzero=1)
add("Reshape_to_scalar", "Reshape", [arr([7], np.int64), arr([], np.int64)])
add("Reshape_bool", "Reshape", [arr([[True, False], [False, True]], bool), arr([-1], np.int64)])
add("Reshape_two_minus_one", "Reshape", [x, arr([-1, -1], np.int64)], expect="decline")
add("Reshape_count_mismatch", "Reshape", [x, arr([5, 5], np.int64)], expect="decline")
for axis in [0, 2, -1, 3]:
    add(f"Flatten_axis{axis}", "Flatten", [x.astype(np.int8)], axis=axis)
add("Unsqueeze", "Unsqueeze", [x, arr([0, -1], np.int64)])
add("Unsqueeze_scalar", "Unsqueeze", [arr(5, np.uint32), arr([0], np.int64)])
add("Unsqueeze_opset11_attr", "Unsqueeze", [arr([1, 2], np.float64)], opset=11, axes=[1])
add("Unsqueeze_duplicate_axes", "Unsqueeze", [x, arr([0, 0], np.int64)], expect="decline")
add("Squeeze", "Squeeze", [np.zeros((1, 3, 1), np.uint16), arr([-1], np.int64)])
add("Squeeze_all", "Squeeze", [np.ones((1, 3, 1), bool)])
add("Squeeze_scalar", "Squeeze", [arr(1.0, np.float32), arr([0], np.int64)], expect="decline")
add("Squeeze_not_one", "Squeeze", [x, arr([0], np.int64)], expect="decline")
add("Transpose_default", "Transpose", [x.astype(np.uint64)])
add("Transpose_perm", "Transpose", [x, ], perm=[1, 0, 2])
add("Transpose_bool", "Transpose", [arr([[True, False, True]], bool)], perm=[1, 0])
add("Transpose_perm_repeated", "Transpose", [arr([[1, 2]], np.float32)], perm=[0, 0], expect="decline")
add("Transpose_perm_short", "Transpose", [x], perm=[1, 0], expect="decline")
add("Concat", "Concat", [x[:, :1], x[:, 1:]], axis=1)
add("Concat_neg_axis_empty", "Concat", [np.zeros((2, 0), np.int32), arr([[1], [2]], np.int32)], axis=-1)
add("Concat_bool", "Concat", [arr([True], bool), arr([False, True], bool)], axis=0)
add("Concat_scalar", "Concat", [arr(1, np.int64), arr(2, np.int64)], axis=0, expect="decline")
add("Concat_mixed_types", "Concat", [arr([1], np.int64), arr([2], np.int32)], axis=0, expect="decline")
add("Gather_axis0_neg", "Gather", [x, arr([-1, 0], np.int64)])
add("Gather_axis1_i32", "Gather", [x.astype(np.int16), arr([[2, 0], [1, 1]], np.int32)], axis=1)
add("Gather_scalar_index", "Gather", [arr([10, 20, 30], np.int64), arr(1, np.int64)])
add("Gather_bool", "Gather", [arr([True, False], bool), arr([1, 1, 0], np.int64)])
add("Gather_scalar_data", "Gather", [arr(5.0, np.float32), arr(0, np.int64)], expect="decline")
add("Gather_out_of_range", "Gather", [arr([1, 2], np.int64), arr([2], np.int64)], expect="decline")
add("Gather_empty_table", "Gather", [np.zeros((0, 4), np.float32), arr([0], np.int64)], expect="decline")
add("Expand", "Expand", [arr([[1], [2]], np.int8), arr([2, 1, 3], np.int64)])
add("Expand_smaller_shape", "Expand", [arr([[1, 2, 3]], np.float32), arr([3, 1], np.int64)])
add("Tile", "Tile", [arr([[1, 2], [3, 4]], np.uint8), arr([2, 3], np.int64)])
add("Tile_zero", "Tile", [arr([[1, 2]], bool), arr([0, 2], np.int64)])
y = np.arange(20, dtype=np.int64).reshape(4, 5)
add("Slice_basic", "Slice", [y, arr([1, 0], np.int64), arr([3, 10], np.int64)])
add("Slice_axes_steps", "Slice", [y, arr([-1, 4], np.int64), arr([-1000, 0], np.int64),
                                  arr([1, 0], np.int64), arr([-2, -1], np.int64)])
add("Slice_int64_max_end", "Slice", [y, arr([2], np.int32), arr([2**31 - 1], np.int32), arr([-1], np.int32)])
add("Slice_empty", "Slice", [y, arr([3], np.int64), arr([1], np.int64), arr([0], np.int64)])
add("Slice_opset1_attrs", "Slice", [y.astype(np.float32)], opset=9, starts=[1], ends=[-1], axes=[1])
add("Slice_step_zero", "Slice", [y, arr([0], np.int64), arr([2], np.int64), arr([0], np.int64),
                                 arr([0], np.int64)], expect="decline")
for dt in [np.int16, np.int32, np.int64]:
    add(f"Range_{tname(dt)}", "Range", [arr(10, dt), arr(-3, dt), arr(-4, dt)])
add("Range_float", "Range", [arr(0.5, np.float32), arr(3, np.float32), arr(0.25, np.float32)])
add("Range_double", "Range", [arr(1, np.float64), arr(2, np.float64), arr(0.125, np.float64)])
add("Range_empty", "Range", [arr(5, np.int64), arr(1, np.int64), arr(1, np.int64)])
add("Range_zero_delta", "Range", [arr(0, np.int64), arr(5, np.int64), arr(0, np.int64)], expect="decline")
for name, value in [
    ("bool", helper.make_tensor("v", TensorProto.BOOL, [1], [True])),
    ("int32", helper.make_tensor("v", TensorProto.INT32, [1], [-7])),
    ("uint8", helper.make_tensor("v", TensorProto.UINT8, [1], [200])),
    ("double", helper.make_tensor("v", TensorProto.DOUBLE, [1], [0.1])),
]:
    add(f"ConstantOfShape_{name}", "ConstantOfShape", [arr([2, 3], np.int64)], value=value)
add("ConstantOfShape_default", "ConstantOfShape", [arr([3], np.int64)])
add("ConstantOfShape_scalar", "ConstantOfShape", [arr([], np.int64)],
    value=helper.make_tensor("v", TensorProto.INT64, [1], [9]))
add("ConstantOfShape_empty", "ConstantOfShape", [arr([2, 0], np.int64)],
    value=helper.make_tensor("v", TensorProto.BOOL, [1], [False]))

# ---- outputs over the size cap (2^24 elements): never allocated ----
add("ConstantOfShape_2p32_squared", "ConstantOfShape", [arr([2**32, 2**32], np.int64)], expect="decline")
add("ConstantOfShape_wraps_to_zero", "ConstantOfShape", [arr([2**32, 2**32, 0], np.int64)], expect="decline")
add("ConstantOfShape_negative", "ConstantOfShape", [arr([-1, 4], np.int64)], expect="decline")
# (Add of [1, 60000] and [60000, 1] is built in eval.rs's unit tests: its
# inputs would make this file 1 MB.)
add("Add_outer_broadcast_5000", "Add",
    [np.zeros((1, 5000), np.float32), np.zeros((5000, 1), np.float32)], expect="decline")
add("Expand_huge", "Expand", [arr([1], np.float32), arr([2**31, 2**31], np.int64)], expect="decline")
add("Tile_huge", "Tile", [arr([1, 2], np.float32), arr([2**62], np.int64)], expect="decline")
add("Range_huge", "Range", [arr(0, np.int64), arr(2**62, np.int64), arr(1, np.int64)], expect="decline")
add("Range_float_huge", "Range", [arr(0, np.float32), arr(1e30, np.float32), arr(1, np.float32)],
    expect="decline")

with open(OUT, "w") as fh:
    json.dump({"generator": "testdata/reference/eval_cases.py", "onnx": onnx.__version__,
               "numpy": np.__version__, "cases": cases}, fh, indent=0)
    fh.write("\n")
print(f"wrote {len(cases)} cases to {OUT}")
