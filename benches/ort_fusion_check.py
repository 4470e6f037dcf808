#!/usr/bin/env python3
"""SQNR of quantized models in ONNX Runtime against FP32, run twice: with ORT's
default graph optimizations (QDQ groups fused into its integer kernels, as a
deployment runs them) and with ORT_DISABLE_ALL (every DequantizeLinear ->
float op -> QuantizeLinear computed in float: the model's exact semantics).

    ort_fusion_check.py FP32.onnx INPUTS.npy QUANTIZED.onnx ...

INPUTS.npy holds [N, ...input shape] for the model's single input (a
compare_ort.py work dir's eval/*.npy). SQNR pools every output of every
sample (signal and error powers summed). A gap between the two columns is
the integer kernels' own error: on x86-64 CPUs with AVX2 but no VNNI, ORT's
u8 x s8 kernels use VPMADDUBSW, whose pairwise int16 sums saturate
(benches/results/ort_avx2_saturation_2026-11-28.md).
"""
import sys

import numpy as np
import onnxruntime as ort


def run(path, x, fused=True):
    so = ort.SessionOptions()
    if not fused:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.stack([np.concatenate([o.ravel() for o in s.run(None, {name: x[i]})]) for i in range(len(x))])


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    x = np.load(argv[2])
    ref = run(argv[1], x).astype(np.float64)

    def sqnr(q):
        return 10 * np.log10((ref ** 2).sum() / max(((q - ref) ** 2).sum(), 1e-30))

    print(f"{len(x)} samples from {argv[2]}")
    print("| model | ORT, fused integer kernels | ORT, no fusion (exact QDQ semantics) |")
    print("|---|---|---|")
    for p in argv[3:]:
        print(f"| {p} | {sqnr(run(p, x)):.2f} | {sqnr(run(p, x, False)):.2f} |")


if __name__ == "__main__":
    main(sys.argv)
