# usage: layout_split.py WORKDIR LABEL=q.onnx ...
# Same metrics as layout_eval.py, split by source kind of the eval image (doc window / digit page / photo crop),
# by old-16 vs new-48, and with an image bootstrap of (model - first model) differences.
import sys, os, json
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "benches")); sys.path.append(os.path.join(ROOT, "scratch/compare_ort_pydeps"))
import numpy as np, new_models as nm, compare_ort as co

wd = sys.argv[1]
ev = {"image": np.load(os.path.join(wd, "eval/image.npy"))}
ab = {"image": False}
n = len(ev["image"])
here = wd  # the FP32 cache and the JSON go to the work dir
z = np.load(os.path.join(here, "fp32_outs.npz")); fp = [z[f"o{k}"] for k in range(len(z.files))]

# source kind per eval index, replaying new_models.gen_layout's interleave
docs = nm.doc_windows_portrait("eval", 800, 608)
kinds = co.interleave([f"doc{i}" for i in range(0, len(docs), 2)], [f"doc{i}" for i in range(1, len(docs), 2)],
                      [f"digits{i}" for i in range(4)],
                      [f"photo{p}_crop{c}" for c in range(6) for p in range(len(co.PHOTO_SPLITS['eval']))])[:n]
kind = np.array([k.rstrip("0123456789").split("_")[0].rstrip("0123456789") for k in kinds])
photo_id = np.array([int(k[5:].split("_")[0]) if k.startswith("photo") else -1 for k in kinds])


def flat_scores(outs):
    return np.concatenate([outs[k][:, 0].reshape(n, -1) for k in range(4)], 1)


def dets(outs, thr):
    return [nm.picodet_dets([o[:, 0] if o.ndim == 4 else o for o in outs], i, conf=thr) for i in range(n)]


def per_image_tp(ref, q, thr=0.5):
    tp, nr, nq = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        f1, _, a, b = nm.match_f1([ref[i]], [q[i]], thr)
        nr[i], nq[i] = a, b
        tp[i] = f1 * (a + b) / 2 if a + b else 0
    return tp, nr, nq


sf = flat_scores(fp)
T = 0.5
ref = dets(fp, T)
M = {}
for arg in sys.argv[2:]:
    label, _, p = arg.partition("=")
    q = co.run_all(co.make_session(p), ev, ab, n)
    sq = flat_scores(q)
    tp, nr, nq = per_image_tp(ref, dets(q, T))
    m = sf > 0.2
    M[label] = dict(tp=tp, nr=nr, nq=nq, esum=np.where(m, sq - sf, 0).sum(1), asum=np.where(m, np.abs(sq - sf), 0).sum(1),
                    cnt=m.sum(1))
    print("done", label, flush=True)

groups = {"all": np.ones(n, bool), "first 16 (the earlier eval set)": np.arange(n) < 16,
          "images 17-64 (new)": np.arange(n) >= 16,
          "doc windows": kind == "doc", "digit pages": kind == "digits", "photo crops": kind == "photo"}
print(f"\nkinds: " + ", ".join(f"{k}: {(kind == k).sum()}" for k in ("doc", "digits", "photo"))
      + f"; photo crops come from {len(set(photo_id[photo_id >= 0]))} photos")
print("\n| subset (images) | model | F1@0.5 (FP32/q boxes) | err, FP32>0.2 (n) | abs err, FP32>0.2 |")
print("|---|---|---|---|---|")
for g, gm in groups.items():
    for label, d in M.items():
        nr, nq, tp = d["nr"][gm].sum(), d["nq"][gm].sum(), d["tp"][gm].sum()
        f1 = 2 * tp / (nr + nq) if nr + nq else float("nan")
        c = d["cnt"][gm].sum()
        print(f"| {g} ({gm.sum()}) | {label} | {f1:.3f} ({int(nr)}/{int(nq)}) | "
              f"{d['esum'][gm].sum() / max(c, 1):+.3f} ({c}) | {d['asum'][gm].sum() / max(c, 1):.3f} |")

# bootstrap over images (and, more conservatively, over source clusters: each photo, each doc, digits)
rng = np.random.default_rng(0)
cluster = np.array([f"p{photo_id[i]}" if kind[i] == "photo" else ("digits" if kind[i] == "digits" else "docs")
                    for i in range(n)])
cl_names = sorted(set(cluster))
labels = list(M)
base = labels[0]


def stats(idx, d):
    nr, nq, tp = d["nr"][idx].sum(), d["nq"][idx].sum(), d["tp"][idx].sum()
    c = d["cnt"][idx].sum()
    return 2 * tp / max(nr + nq, 1), d["esum"][idx].sum() / max(c, 1)


print(f"\nbootstrap 2000x, 95% interval of ({base}) - (other): det F1@0.5 and mean err FP32>0.2")
print("| other | resample | dF1 point [2.5%, 97.5%] | d mean err point [2.5%, 97.5%] |")
print("|---|---|---|---|")
for other in labels[1:]:
    pt = np.subtract(stats(np.arange(n), M[base]), stats(np.arange(n), M[other]))
    for mode in ("images", "clusters"):
        bs = []
        for _ in range(2000):
            if mode == "images":
                idx = rng.integers(0, n, n)
            else:
                pick = rng.choice(cl_names, len(cl_names))
                idx = np.concatenate([np.where(cluster == c)[0] for c in pick])
            bs.append(np.subtract(stats(idx, M[base]), stats(idx, M[other])))
        bs = np.array(bs)
        lo, hi = np.percentile(bs, [2.5, 97.5], axis=0)
        print(f"| {other} | {mode} ({len(cl_names) if mode == 'clusters' else n}) | {pt[0]:+.3f} [{lo[0]:+.3f}, {hi[0]:+.3f}] | "
              f"{pt[1]:+.3f} [{lo[1]:+.3f}, {hi[1]:+.3f}] |")
json.dump({"kinds": kinds, **{k: {kk: np.asarray(vv).tolist() for kk, vv in v.items()} for k, v in M.items()}},
          open(os.path.join(here, "layout_split.json"), "w"))
