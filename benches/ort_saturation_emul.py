#!/usr/bin/env python3
"""Emulates ONNX Runtime's fused u8 x s8 convolution on x86 CPUs without VNNI
(VPMADDUBSW: pairs of products along K summed into a saturating int16) for
every dense Conv (group 1) of a QDQ model, on the first sample of INPUTS.npy.

    ort_saturation_emul.py QUANTIZED.onnx INPUTS.npy

The model runs in ORT with graph optimizations off (exact QDQ semantics) with
each Conv's u8 input codes and u8 output codes exposed; the emulation takes
im2col in NHWC order (K = kh, kw, c_in), pads with the input's zero point,
clamps each pair sum (2j, 2j+1) to int16 and sums exactly. Per layer it
prints the fraction of pairs that saturate, the mean error that causes in
the layer's output codes, and, for comparison, the mean difference between
ORT's fused and exact output codes. Only the first layer's input is the same
in both runs, so only there must the last two agree (mobile cls 7.445 against
7.442, PP-OCRv4 det 3.365 against 3.362; results/ort_avx2_saturation_2026-11-28.md).
Only meaningful on such a CPU.
"""
import sys, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper as nh, helper
qpath, xpath = sys.argv[1], sys.argv[2]
m = onnx.load(qpath); g = m.graph
init = {i.name: i for i in g.initializer}
prod = {o: n for n in g.node for o in n.output}
convs = []
for n in g.node:
    if n.op_type != "Conv": continue
    at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    if at.get("group", 1) != 1: continue
    xdq, wdq = prod.get(n.input[0]), prod.get(n.input[1])
    if not xdq or xdq.op_type != "DequantizeLinear" or not wdq or wdq.op_type != "DequantizeLinear": continue
    if wdq.input[0] not in init: continue
    ydq_users = [u for u in g.node if n.output[0] in u.input and u.op_type == "QuantizeLinear"]
    convs.append((n, at, xdq, wdq, ydq_users[0] if ydq_users else None))
# expose each conv's u8 input and its output Q
outs = []
for n, at, xdq, wdq, yq in convs:
    outs.append(xdq.input[0])
    if yq is not None: outs.append(yq.output[0])
outs = list(dict.fromkeys(outs))
m2 = onnx.load(qpath)
for o in outs: m2.graph.output.append(helper.make_tensor_value_info(o, onnx.TensorProto.UINT8, None))
import os, tempfile
tmp = os.path.join(tempfile.mkdtemp(), "exposed.onnx")
onnx.save(m2, tmp)
x = np.load(xpath)
def sess(opt):
    so = ort.SessionOptions()
    if not opt: so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(tmp, so, providers=["CPUExecutionProvider"])
se, sf = sess(False), sess(True)
nin = se.get_inputs()[0].name
names = [o.name for o in se.get_outputs()]
print("| layer | C_out | K | pairs saturating | emulated mean error, output codes | ORT fused - exact, mean, output codes |")
print("|---|---|---|---|---|---|")
for i in range(1):
    E = dict(zip(names, se.run(None, {nin: x[i]})))
    F = dict(zip(names, sf.run(None, {nin: x[i]})))
    for n, at, xdq, wdq, yq in convs:
        a = E[xdq.input[0]].astype(np.int64)  # N C H W u8 codes (exact run)
        za = int(nh.to_array(init[xdq.input[2]])) if len(xdq.input) > 2 else 0
        W = nh.to_array(init[wdq.input[0]]).astype(np.int64)
        co, ci, kh, kw = W.shape
        pads = at.get("pads", [0, 0, 0, 0]); st = at.get("strides", [1, 1]); dl = at.get("dilations", [1, 1])
        ap = np.pad(a, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=za)
        H = (ap.shape[2] - (dl[0] * (kh - 1) + 1)) // st[0] + 1; Wd = (ap.shape[3] - (dl[1] * (kw - 1) + 1)) // st[1] + 1
        cols = np.stack([ap[0, :, r * dl[0]: r * dl[0] + st[0] * H: st[0], s * dl[1]: s * dl[1] + st[1] * Wd: st[1]] for r in range(kh) for s in range(kw)], 0)  # [kh*kw, ci, H, W]
        A = cols.transpose(2, 3, 0, 1).reshape(H * Wd, kh * kw * ci)  # NHWC K order
        Wk = W.transpose(0, 2, 3, 1).reshape(co, -1)
        K = A.shape[1]
        if K % 2: A = np.pad(A, ((0, 0), (0, 1))); Wk = np.pad(Wk, ((0, 0), (0, 1)))
        P = A[:, 0::2, None] * Wk.T[0::2][None] + A[:, 1::2, None] * Wk.T[1::2][None]  # [pos, K/2, co]
        sat = np.clip(P, -32768, 32767)
        frac = (sat != P).mean()
        d = (sat - P).sum(1)  # accumulator error [pos, co]
        if yq is None: continue
        ys = float(nh.to_array(init[yq.input[1]])); xs = float(nh.to_array(init[xdq.input[1]])); ws = nh.to_array(init[wdq.input[1]]).astype(np.float64)
        dy = np.abs(d * xs * ws[None, :] / ys).mean()
        fy = F[yq.output[0]].astype(np.float64); ey = E[yq.output[0]].astype(np.float64)
        print(f"| {n.name} | {co} | {K} | {frac:.5f} | {dy:.3f} | {np.abs(fy - ey).mean():.3f} |")
