#!/usr/bin/env python3
"""Would a per-block range choice help a detector's score parts? An experiment,
not part of the product (results: results/block_ranges_2026-11-29.md).

    block_ranges.py WORK FP32.onnx TABLE.json AXIS:START:STOP[,AXIS:START:STOP...] [--blocks 8]

WORK is one model's directory from compare_ort.py / new_models.py (calib/,
eval/ and quench.onnx, quench's default file); TABLE is `quench calibrate
FP32.onnx --calibration WORK/calib -o TABLE` (every method's range per
tensor). The parts are slices of the one float output (batch axis 0 first;
STOP empty for the end), e.g. ddddocr det `2:4:5,2:0:4,2:5:6` (objectness,
boxes, class), nudenet `1:4:,1:0:4` (classes, boxes).

quench's activations, in graph order, are cut into --blocks blocks; for
each block and each of min/max, percentile 99.999 and MSE, that block's
ranges are replaced by the method's (the rest stay as quench's file has
them; Sigmoid/Softmax outputs keep theirs, as `--method auto` does) and the
file is run in ONNX Runtime on three sets: the first 16 calibration samples
("fit", what a search would choose on), the other calibration samples
("judge") and the eval samples (held back). Printed per block and method:
the SQNR change (dB) of the whole output, of each part, and of the mean
over the parts of their error ratios ("mp"), on each set.
"""

import argparse
import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper as nh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("fp32")
    ap.add_argument("table")
    ap.add_argument("parts")
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--json")
    ap.add_argument("--save", help="directory to write each rule's file to")
    a = ap.parse_args()
    parts = []
    for p in a.parts.split(","):
        ax, lo, hi = p.split(":")
        parts.append((int(ax), slice(int(lo), int(hi) if hi else None)))
    q = onnx.load(a.work + "/quench.onnx")
    inp = q.graph.input[0].name

    def load(split):
        x = np.load(f"{a.work}/{split}/{inp}.npy")
        return x.reshape(-1, *x.shape[-3:])

    cal, ev = load("calib"), load("eval")
    xs = {"fit": cal[:16], "judge": cal[16:], "eval": ev}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1

    def run(m, x):
        s = ort.InferenceSession(
            m if isinstance(m, str) else m.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        return np.concatenate([s.run(None, {inp: x[i : i + 1]})[0] for i in range(len(x))])

    refs = {k: run(a.fp32, x) for k, x in xs.items()}

    def db(e, r):
        return 10 * np.log10((r**2).sum() / max((e**2).sum(), 1e-30))

    def sl(t, ax, s):
        ix = [slice(None)] * t.ndim
        ix[ax] = s
        return t[tuple(ix)]

    def figs(y, ref):
        e = y - ref
        ps = [db(sl(e, ax, s), sl(ref, ax, s)) for ax, s in parts]
        mp = -10 * np.log10(np.mean([10 ** (-v / 10) for v in ps]))
        return np.array([db(e, ref)] + ps + [mp])

    tab = json.load(open(a.table))["ranges"]
    init = {i.name: nh.to_array(i) for i in q.graph.initializer}
    prod = {o: n.op_type for n in q.graph.node for o in n.output}
    base = {}
    for n in q.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in tab:
            sc = float(init[n.input[1]])
            z = init[n.input[2]]
            info = np.iinfo(z.dtype)
            base[n.input[0]] = ((info.min - float(z)) * sc, (info.max - float(z)) * sc)
    order = list(base)
    bounded = {t for t in order if prod.get(t) in ("Sigmoid", "Softmax")}

    def build(choice):
        m = copy.deepcopy(q)
        mi = {i.name: i for i in m.graph.initializer}
        for n in m.graph.node:
            if n.op_type == "QuantizeLinear" and n.input[0] in choice:
                lo, hi = choice[n.input[0]]
                z = nh.to_array(mi[n.input[2]])
                info = np.iinfo(z.dtype)
                lo, hi = min(lo, 0.0), max(hi, 0.0)
                s = (hi - lo) / (info.max - info.min)
                zz = np.clip(np.round(info.min - lo / s), info.min, info.max).astype(z.dtype)
                mi[n.input[1]].CopyFrom(nh.from_array(np.array(s, dtype=np.float32), n.input[1]))
                mi[n.input[2]].CopyFrom(nh.from_array(np.array(zz), n.input[2]))
        return m

    def allfigs(m):
        return {k: figs(run(m, x), refs[k]) for k, x in xs.items()}

    b0 = allfigs(q)
    check = allfigs(build(base))
    for k in b0:
        assert np.allclose(b0[k], check[k], atol=0.01), "the rebuilt file differs from quench's"
        print(f"quench {k}: " + " ".join("%.2f" % v for v in b0[k]))
    sz = (len(order) + a.blocks - 1) // a.blocks
    res = []
    for meth in ["mse", "percentile_99.999", "minmax"]:
        for k in range(a.blocks):
            blk = order[k * sz : (k + 1) * sz]
            c = dict(base)
            c.update({t: tab[t][meth] for t in blk if t not in bounded})
            f = allfigs(build(c))
            d = {s: [float(v) for v in f[s] - b0[s]] for s in f}
            res.append((meth, k, blk[0], blk[-1], d))
            print(
                f"{meth} block {k} [{blk[0]}..{blk[-1]}] "
                + " | ".join(f"{s} " + " ".join("%+.2f" % v for v in d[s]) for s in d),
                flush=True,
            )
    # What three acceptance rules would choose, one method per block (the
    # best by "mp" among the accepted), all blocks at once, and what that
    # gives. Deltas: whole output first, "mp" last.
    rules = {
        "A: mp +0.05 on fit": lambda d: d["fit"][-1] > 0.05,
        "B: mp +0.05, whole -0.05 at worst, on fit": lambda d: d["fit"][-1] > 0.05 and d["fit"][0] >= -0.05,
        "C: B on fit and on judge": lambda d: all(d[s][-1] > 0.05 and d[s][0] >= -0.05 for s in ("fit", "judge")),
    }
    chosen = {}
    for name, ok in rules.items():
        pick = {}
        for meth, k, _, _, d in res:
            if ok(d) and (k not in pick or d["fit"][-1] > pick[k][1]):
                pick[k] = (meth, d["fit"][-1])
        c = dict(base)
        for k, (meth, _) in pick.items():
            c.update({t: tab[t][meth] for t in order[k * sz : (k + 1) * sz] if t not in bounded})
        m = build(c)
        f = allfigs(m) if pick else b0
        if a.save:
            import os

            os.makedirs(a.save, exist_ok=True)
            onnx.save(m, os.path.join(a.save, name.split(":")[0] + ".onnx"))
        chosen[name] = {"blocks": {k: m for k, (m, _) in pick.items()}, "figs": {s: list(map(float, f[s])) for s in f}}
        print(
            f"{name}: {sorted((k, m) for k, (m, _) in pick.items())} "
            + " | ".join(f"{s} " + " ".join("%.2f" % v for v in f[s]) for s in f),
            flush=True,
        )
    if a.json:
        json.dump(
            {"base": {k: list(map(float, v)) for k, v in b0.items()}, "blocks": res, "rules": chosen},
            open(a.json, "w"),
        )


if __name__ == "__main__":
    main()
