#!/usr/bin/env python3
"""FP16 fixtures for static compile of half-precision models (testdata/fp16/).

    .venv/bin/python testdata/make_fp16_fixtures.py

- `mlp_fp16_opset19.onnx`: input `input` float16 [N,16] -> MatMul (f16
  weight [16,32]) -> Add (f16 bias) -> Relu -> MatMul ([32,8]) -> Add ->
  `output` float16 [N,8]. Opset 19: QuantizeLinear/DequantizeLinear take a
  float16 scale, so activations and weights can be quantized in f16.
- `mlp_fp16_opset17.onnx`: the same graph at opset 17, where Q/DQ scales
  are float32 only: quench leaves f16 tensors float and says so.
- `calib/input.npy`: 32 samples float16 [32,16] (npy layout, `<f2`);
  `calib_pb/test_data_set_{0..7}/input_0.pb`: the same 32 rows as 8 samples
  [4,16] float16 TensorProtos (ONNX test-data layout).
- `eval/input.npy`: 16 evaluation inputs (float16 [16,16], not among the
  calibration samples) and `eval/fp32_output.npy` (float32 [16,8]): ONNX Runtime's outputs
  of the FP32 model with the same weights (the float16 values widened), i.e.
  the FP32 answer the quantized FP16 model is compared against.

Every model passes onnx.checker (full check) and runs in onnxruntime; the
script asserts both. Fixed seed: output is reproducible.
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fp16")
rng = np.random.default_rng(16)

w1 = (rng.standard_normal((16, 32)) * 0.3).astype(np.float16)
b1 = (rng.standard_normal(32) * 0.1).astype(np.float16)
w2 = (rng.standard_normal((32, 8)) * 0.3).astype(np.float16)
b2 = (rng.standard_normal(8) * 0.1).astype(np.float16)


def model(elem, opset, dtype):
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "b1"], ["a1"], name="fc1_bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Add", ["h2", "b2"], ["output"], name="fc2_bias"),
    ]
    inits = [
        numpy_helper.from_array(a.astype(dtype), n)
        for n, a in [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]
    ]
    graph = helper.make_graph(
        nodes,
        "mlp_fp16",
        [helper.make_tensor_value_info("input", elem, ["N", 16])],
        [helper.make_tensor_value_info("output", elem, ["N", 8])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    m.producer_name = "quench make_fp16_fixtures.py"
    onnx.checker.check_model(m, full_check=True)
    return m


def run(m, x):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


os.makedirs(OUT, exist_ok=True)
for opset in (19, 17):
    m = model(TensorProto.FLOAT16, opset, np.float16)
    path = os.path.join(OUT, f"mlp_fp16_opset{opset}.onnx")
    onnx.save(m, path)
    print("wrote", path)

calib = rng.standard_normal((32, 16)).astype(np.float16)
os.makedirs(os.path.join(OUT, "calib"), exist_ok=True)
np.save(os.path.join(OUT, "calib", "input.npy"), calib)
for k in range(8):
    d = os.path.join(OUT, "calib_pb", f"test_data_set_{k}")
    os.makedirs(d, exist_ok=True)
    t = numpy_helper.from_array(calib[4 * k : 4 * k + 4], "input")
    with open(os.path.join(d, "input_0.pb"), "wb") as f:
        f.write(t.SerializeToString())

# Within the calibration samples' range (|x| <= 2.8 there), so the check is
# of quantization, not of clipping values calibration never saw.
x = np.clip(rng.standard_normal((16, 16)), -2.5, 2.5).astype(np.float16)
assert np.abs(x).max() <= np.abs(calib).max()
fp32 = run(model(TensorProto.FLOAT, 19, np.float32), x.astype(np.float32))
fp16 = run(model(TensorProto.FLOAT16, 19, np.float16), x)
assert fp16.dtype == np.float16
# The FP16 model itself is within f16 rounding of the FP32 one.
err = np.abs(fp16.astype(np.float32) - fp32).max() / np.abs(fp32).max()
assert err < 5e-3, err
os.makedirs(os.path.join(OUT, "eval"), exist_ok=True)
np.save(os.path.join(OUT, "eval", "input.npy"), x)
np.save(os.path.join(OUT, "eval", "fp32_output.npy"), fp32)
print("fp16 vs fp32 max rel err", err)
