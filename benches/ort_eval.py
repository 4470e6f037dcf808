#!/usr/bin/env python3
"""SQNR of quantized model(s) against the FP32 model in ONNX Runtime CPU (one
thread, default graph optimizations) on the eval split of a
compare_ort.py / new_models_unseen.py work directory, per float output and
their mean, and 1-thread latency (median of --runs, models interleaved, on
eval sample 0).

    .venv/bin/python benches/ort_eval.py [--runs 20] [--task KIND] FP32.onnx WORKDIR Q.onnx [Q.onnx ...]

WORKDIR is a model's directory (it holds eval/NAME.npy, one array per model
input, samples along axis 0; a batch axis is added where the stored array has
one axis fewer than the input, as compare_ort.py does). --task KIND also prints
that task metric of new_models_unseen.py against FP32 (pitch: basic-pitch's
note/onset/contour IoU; mtcnn, saliency, mos, or compare_ort.py's kinds such
as classifier; labels are not stored, so no accuracy), e.g.

    .venv/bin/python benches/ort_eval.py --task pitch WORK/models/basic_pitch_nmp.onnx \\
        WORK/basic_pitch_nmp WORK/basic_pitch_nmp/quench.onnx other.onnx
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_ort as co  # noqa: E402


def load_eval(fp32, wdir):
    """eval arrays of the model's inputs and the add-batch flags."""
    import onnx
    d = os.path.join(wdir, "eval")
    ev = {f[:-4]: np.load(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".npy")}
    m = onnx.load(fp32, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    missing = [i.name for i in inputs if i.name not in ev]
    if missing:
        raise SystemExit(f"{d} has no array for input(s) {', '.join(missing)}")
    add_batch = {i.name: ev[i.name].ndim - 1 == len(i.type.tensor_type.shape.dim) - 1 for i in inputs}
    return {k: ev[k] for k in add_batch}, add_batch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fp32")
    ap.add_argument("workdir")
    ap.add_argument("quantized", nargs="+")
    ap.add_argument("--runs", type=int, default=20, help="latency runs per model (0: no latency)")
    ap.add_argument("--task", default=None, metavar="KIND",
                    help="also print this task metric (new_models_unseen.py's: pitch, mtcnn, saliency, mos; "
                         "or compare_ort.py's)")
    args = ap.parse_args()
    import onnxruntime as ort

    ev, add_batch = load_eval(args.fp32, args.workdir)
    n = len(next(iter(ev.values())))

    def sess(p):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])

    paths = [args.fp32] + args.quantized
    S = {p: sess(p) for p in paths}
    ref = co.run_all(S[args.fp32], ev, add_batch, n)
    task_metric = None
    if args.task:
        import new_models_unseen as nmu  # its task metrics (pitch, mtcnn, saliency, mos) over compare_ort's
        task_metric = nmu.task_metric
    for q in args.quantized:
        out = co.run_all(S[q], ev, add_batch, n)
        per = [co.sqnr_db(r, x) for r, x in zip(ref, out) if r.dtype.kind == "f"]
        print(f"{os.path.basename(q)}: SQNR mean {np.mean(per):.2f} dB per output {[round(x, 2) for x in per]}")
        if task_metric:
            print(f"  task ({args.task}): {task_metric(args.task, ref, out, None)[0]}")
    if args.runs > 0:
        lat = {p: [] for p in S}
        f0 = co.feeds(ev, add_batch, 0)
        for p in S:
            S[p].run(None, f0)
        for _ in range(args.runs):
            for p in S:
                t = time.perf_counter()
                S[p].run(None, f0)
                lat[p].append((time.perf_counter() - t) * 1e3)
        for p in S:
            print(f"latency {os.path.basename(p)}: {statistics.median(lat[p]):.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
