#!/usr/bin/env bash
# Calibration cost in release (benches/calibration.rs): `quench calibrate`
# time vs plain tract inference of the same samples (target <= 1.5x), and
# peak RSS of `quench calibrate` at 32 vs 512 samples (bounded by what the
# allocator keeps of freed batches; see benches/calibration.rs).
#
#   scripts/bench_calibration.sh                 # digits CNN, resnet_tiny, a generated ResNet-ish CNN
#                                                # at 3x112x112, and PP-OCRv4 det at 3x320x320 if present
#   QUENCH_BENCH_RUNS=5 scripts/bench_calibration.sh
#   QUENCH_BENCH_MEM_SAMPLES=32,512 scripts/bench_calibration.sh
#   QUENCH_BENCH_CALIB_MODELS='a.onnx@3x224x224#128:b.onnx' scripts/bench_calibration.sh
#
# QUENCH_BENCH_CALIB_MODELS entries are PATH[@SAMPLE_SHAPE][#TIMING_SAMPLES];
# when it is set, only those models are added (no generated CNN, no OCR).
# The generated model is written to target/bench-calibration/ with the venv's
# Python (scripts/setup_venv.sh). Numbers vary on a busy machine: each figure
# is the best of QUENCH_BENCH_RUNS alternating runs, and both sides of a ratio
# are measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${QUENCH_BENCH_CALIB_MODELS:-}" ]]; then
    PY="$(scripts/setup_venv.sh | tail -n 1)"
    mkdir -p target/bench-calibration
    GEN=target/bench-calibration/resnet_ish_112.onnx
    "$PY" - "$GEN" <<'EOF'
"""A ResNet-ish CNN for 3x112x112 input, batch axis symbolic: stem conv
stride 2 + BN + Relu, three stages (32, 64, 128 channels) of two basic
blocks each (conv-BN-relu-conv-BN + residual Add, 1x1 projection when the
shape changes), global average pool, Gemm to 100 classes. He-initialised
random weights, fixed seed."""
import sys
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

rng = np.random.default_rng(7)
nodes, inits = [], []
count = [0]

def name(p):
    count[0] += 1
    return f"{p}{count[0]}"

def const(p, a):
    n = name(p)
    inits.append(numpy_helper.from_array(np.asarray(a, dtype=np.float32), n))
    return n

def conv(x, cin, cout, k, stride):
    w = const("w", rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k)))
    b = const("b", np.zeros(cout))
    y = name("conv")
    nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                                  pads=[k // 2] * 4))
    return y

def bn(x, c):
    ins = [x, const("g", 1 + 0.1 * rng.standard_normal(c)), const("beta", 0.1 * rng.standard_normal(c)),
           const("mean", 0.1 * rng.standard_normal(c)), const("var", 1 + 0.1 * rng.random(c))]
    y = name("bn")
    nodes.append(helper.make_node("BatchNormalization", ins, [y]))
    return y

def op(t, ins, **kw):
    y = name(t.lower())
    nodes.append(helper.make_node(t, ins, [y], **kw))
    return y

def block(x, cin, cout, stride):
    h = op("Relu", [bn(conv(x, cin, cout, 3, stride), cout)])
    h = bn(conv(h, cout, cout, 3, 1), cout)
    skip = x if (cin == cout and stride == 1) else bn(conv(x, cin, cout, 1, stride), cout)
    return op("Relu", [op("Add", [h, skip])])

x = op("Relu", [bn(conv("input", 3, 32, 3, 2), 32)])
c = 32
for cout, stride in [(32, 1), (64, 2), (128, 2)]:
    x = block(x, c, cout, stride)
    x = block(x, cout, cout, 1)
    c = cout
x = op("Flatten", [op("GlobalAveragePool", [x])])
w = const("fc_w", rng.standard_normal((100, c)) * np.sqrt(1.0 / c))
b = const("fc_b", np.zeros(100))
nodes.append(helper.make_node("Gemm", [x, w, b], ["logits"], transB=1))
g = helper.make_graph(nodes, "resnet_ish_112",
                      [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 100])], inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                      producer_name="quench-bench")
onnx.checker.check_model(m, full_check=True)
onnx.save(m, sys.argv[1])
EOF
    MODELS="$PWD/$GEN#256"
    OCR=scratch/real_models/rapidocr__ch_PP-OCRv4_det_infer.onnx
    if [[ -f "$OCR" ]]; then
        MODELS="$MODELS:$PWD/$OCR@3x320x320#64"
    fi
    export QUENCH_BENCH_CALIB_MODELS="$MODELS"
fi
exec cargo bench --bench calibration "$@"
