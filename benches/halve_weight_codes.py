#!/usr/bin/env python3
"""Rewrites a quench QDQ model's int8 weights to 7-bit codes after the fact, for
experiments (results/ort_avx2_saturation_2026-11-28.md): the chosen layers'
codes are halved (rounded, so [-63, 63]) and their scales doubled; their int32
bias codes are halved and bias scales doubled too, as ORT's fusion needs
bias scale = input scale x weight scale. Double rounding: a real
`--weights i7` compile rounds once and scores higher.

    halve_weight_codes.py IN.onnx OUT.onnx {all|dw|nondw|nodes=NAME,NAME}

dw: depthwise convolutions only; nondw: every other Conv/Gemm/MatMul.
"""
import sys, numpy as np, onnx
from onnx import numpy_helper as nh
m = onnx.load(sys.argv[1]); which = sys.argv[3]
g = m.graph
init = {i.name: i for i in g.initializer}
prod = {o: n for n in g.node for o in n.output}
def setinit(name, arr):
    t = nh.from_array(arr, name); init[name].CopyFrom(t)
cnt = 0
for n in g.node:
    if n.op_type != "Conv" and n.op_type != "Gemm" and n.op_type != "MatMul": continue
    grp = next((a.i for a in n.attribute if a.name == "group"), 1)
    w_dq = prod.get(n.input[1])
    if w_dq is None or w_dq.op_type != "DequantizeLinear" or w_dq.input[0] not in init: continue
    W = nh.to_array(init[w_dq.input[0]])
    if W.dtype != np.int8: continue
    dw = n.op_type == "Conv" and grp > 1 and W.shape[1] == 1
    if which == "dw" and not dw: continue
    if which == "nondw" and dw: continue
    if which.startswith("nodes=") and n.name not in which[6:].split(","): continue
    Wn = np.clip(np.round(W.astype(np.float64) / 2), -63, 63).astype(np.int8)
    s = nh.to_array(init[w_dq.input[1]])
    setinit(w_dq.input[0], Wn); setinit(w_dq.input[1], (s * 2).astype(s.dtype))
    if len(n.input) > 2 and n.input[2]:
        b_dq = prod.get(n.input[2])
        if b_dq is not None and b_dq.op_type == "DequantizeLinear" and b_dq.input[0] in init:
            B = nh.to_array(init[b_dq.input[0]]); bs = nh.to_array(init[b_dq.input[1]])
            setinit(b_dq.input[0], np.round(B.astype(np.float64) / 2).astype(B.dtype)); setinit(b_dq.input[1], (bs * 2).astype(bs.dtype))
    cnt += 1
onnx.save(m, sys.argv[2]); print(which, cnt, "layers")
