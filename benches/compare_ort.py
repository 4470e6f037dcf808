#!/usr/bin/env python3
"""Compare `quench compile` with ONNX Runtime's `quantize_static` (QDQ).

    compare_ort.py [--quench target/release/quench] [--work scratch/compare_ort]
                   [--calib-n 32] [--eval-n 16] [--runs 20] [--timeout 3600]
                   [--only NAME,NAME] [--ort-configs pc_u8s8,pc_s8s8,default]
                   [--real-dir scratch/real_models]

Usually run through benches/compare_ort.sh (release build + venv first).

For every model both tools get the same calibration samples (N per model) and
the results are evaluated on the same, separate evaluation samples (M per
model) in ONNX Runtime CPU:

* ORT: `quant_pre_process` (when it works; otherwise the original model) then
  `quantize_static(QDQ, MinMax, reduce_range=False)` in three configurations:
  pc_u8s8 (per-channel, QUInt8 activations, QInt8 weights), pc_s8s8
  (per-channel, QInt8/QInt8) and default (per-tensor QInt8/QInt8, ORT's
  defaults). The configuration with the best mean SQNR among those whose
  output loads and runs in ORT is shown in the main table; all are listed in
  the "ORT configurations" table. Each ORT run is a child process whose
  working directory is a fresh temp dir (files it leaves there are reported).
* quench: `quench compile MODEL --calibration DIR --eval DIR -o OUT --report
  R.json` (defaults otherwise; note its wall time includes its own
  verification in tract on the eval samples).

Per model and tool: wall time and peak RSS of the child process (GNU time %M),
output size (incl. external data), onnx.checker full_check, fidelity vs FP32
in ORT (SQNR per output averaged over outputs, mean per-sample cosine, a task
metric) and ORT CPU latency with one thread (median of --runs, FP32 / ORT /
quench interleaved in one process so the ratios are meaningful). Failures of
any step are captured and shown as "FAIL: ...", never raised.

Outputs (under --work): results.md (the tables), results.json (everything,
including full stderr of failures), per-model directories with the data, the
quantized models, logs and quench's report JSON.
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
    # name: (per_channel, activation type, weight type)
    "pc_u8s8": (True, "QUInt8", "QInt8"),
    "pc_s8s8": (True, "QInt8", "QInt8"),
    "default": (False, "QInt8", "QInt8"),
}


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

    per_channel, act, wt = spec["config"]
    candidates = []
    if spec.get("preprocess", True):
        pre = os.path.join(os.getcwd(), "preprocessed.onnx")
        t0 = time.perf_counter()
        try:
            quant_pre_process(spec["model"], pre)
            res["preprocess"] = "ok"
            candidates.append(pre)
        except Exception as e:  # noqa: BLE001
            res["preprocess"] = "failed"
            res["preprocess_error"] = short_exc(e)
        res["t_preprocess"] = time.perf_counter() - t0
    candidates.append(spec["model"])

    for cand in candidates:
        t0 = time.perf_counter()
        try:
            quantize_static(cand, spec["output"], Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=False,
                            activation_type=getattr(QuantType, act),
                            weight_type=getattr(QuantType, wt),
                            calibrate_method=CalibrationMethod.MinMax)
            res["t_quantize"] = time.perf_counter() - t0
            res["used_preprocessed"] = cand != spec["model"]
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


def short_exc(e: BaseException, n: int = 300) -> str:
    s = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    if not str(e).strip() and e.__traceback__ is not None:
        fr = traceback.extract_tb(e.__traceback__)[-1]
        s = f"{type(e).__name__} in {os.path.basename(fr.filename)}:{fr.lineno} {fr.name}"
    return s[:n]


# --------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------

FONT = {
    "0": [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
    "1": ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    "2": [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
    "3": ["#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "],
    "4": ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
    "5": ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
    "6": ["  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "],
    "7": ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
    "8": [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
    "9": [" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "],
    "A": [" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
    "B": ["#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "],
    "C": [" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "],
    "D": ["#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "],
    "E": ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"],
    "F": ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "],
    "H": ["#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
    "K": ["#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"],
    "L": ["#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"],
    "M": ["#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"],
    "N": ["#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #"],
    "O": [" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
    "P": ["#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "],
    "R": ["#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"],
    "S": [" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "],
    "T": ["#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "],
    "U": ["#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
    "X": ["#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"],
    "Y": ["#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "],
    "Z": ["#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####"],
}
GLYPHS = {k: np.array([[c == "#" for c in row] for row in v], np.float32) for k, v in FONT.items()}
CHARS = sorted(GLYPHS)


def render_text(text: str, cell: int) -> np.ndarray:
    """Ink mask (0..1) of `text` in the 5x7 font, each font cell `cell` px."""
    cols = []
    for ch in text:
        g = GLYPHS.get(ch)
        if g is None:  # space
            cols.append(np.zeros((7, 4), np.float32))
        else:
            cols.append(g)
            cols.append(np.zeros((7, 1), np.float32))
    m = np.concatenate(cols, axis=1) if cols else np.zeros((7, 1), np.float32)
    m = np.kron(m, np.ones((cell, cell), np.float32))
    # soften edges a little (3x3 box blur)
    p = np.pad(m, 1, mode="edge")
    m = sum(p[i:i + m.shape[0], j:j + m.shape[1]] for i in range(3) for j in range(3)) / 9.0
    return m


def random_text(rng, lo, hi):
    n = int(rng.integers(lo, hi + 1))
    s = "".join(rng.choice(CHARS) if rng.random() > 0.15 else " " for _ in range(n)).strip()
    return s or "A1"


def smooth_field(rng, h, w, c, cells=6):
    low = rng.random((c, cells, cells)).astype(np.float32)
    ys = np.linspace(0, cells - 1, h)
    xs = np.linspace(0, cells - 1, w)
    y0 = np.floor(ys).astype(int); x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, cells - 1); x1 = np.minimum(x0 + 1, cells - 1)
    fy = (ys - y0)[None, :, None]; fx = (xs - x0)[None, None, :]
    a = low[:, y0][:, :, x0]; b = low[:, y0][:, :, x1]
    c_ = low[:, y1][:, :, x0]; d = low[:, y1][:, :, x1]
    return (a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c_ * fy * (1 - fx) + d * fy * fx)


def text_image(rng, h, w, lines, cell_range):
    """RGB uint8-range float image [3,h,w] with dark-on-light or light-on-dark text."""
    bg = smooth_field(rng, h, w, 3) * 80 + rng.uniform(120, 200)
    invert = rng.random() < 0.3
    img = bg.copy()
    ink_val = rng.uniform(0, 60) if not invert else rng.uniform(220, 255)
    if invert:
        img = 255 - img * 0.8
    for _ in range(lines):
        cell = int(rng.integers(cell_range[0], cell_range[1] + 1))
        maxchars = max(2, (w - 8) // (6 * cell))
        mask = render_text(random_text(rng, 2, min(maxchars, 14)), cell)
        mh, mw = mask.shape
        if mh >= h or mw >= w:
            mask = mask[: h - 2, : w - 2]
            mh, mw = mask.shape
        y = int(rng.integers(0, h - mh + 1)); x = int(rng.integers(0, w - mw + 1))
        img[:, y:y + mh, x:x + mw] = img[:, y:y + mh, x:x + mw] * (1 - mask) + ink_val * mask
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.float32)


def gen_ocr_det(rng, n):
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    out = [((text_image(rng, 320, 320, int(rng.integers(2, 7)), (2, 5)) / 255.0 - mean) / std)[None]
           for _ in range(n)]
    return {"x": np.stack(out).astype(np.float32)}


def gen_ocr_line(rng, n, h, w, flip_some=False):
    out = []
    for _ in range(n):
        cell = int(rng.integers(3, 6))
        mask = render_text(random_text(rng, 3, max(3, (w - 8) // (6 * cell))), cell)
        bg = smooth_field(rng, h, w, 3, 4) * 60 + rng.uniform(150, 220)
        img = bg.copy()
        mh, mw = min(mask.shape[0], h - 2), min(mask.shape[1], w - 2)
        mask = mask[:mh, :mw]
        y = (h - mh) // 2 + int(rng.integers(-2, 3)); y = max(0, min(h - mh, y))
        x = int(rng.integers(0, max(1, min(12, w - mw))))
        img[:, y:y + mh, x:x + mw] = img[:, y:y + mh, x:x + mw] * (1 - mask) + rng.uniform(0, 50) * mask
        img += rng.normal(0, 4, img.shape)
        img = np.clip(img, 0, 255)
        if flip_some and rng.random() < 0.5:
            img = img[:, ::-1, ::-1]
        out.append(((img / 255.0 - 0.5) / 0.5)[None])
    return {"x": np.stack(out).astype(np.float32)}


def gen_nudenet(rng, n):
    out = []
    for _ in range(n):
        img = smooth_field(rng, 320, 320, 3, int(rng.integers(3, 9)))
        yy, xx = np.mgrid[0:320, 0:320].astype(np.float32)
        for _ in range(int(rng.integers(1, 5))):  # skin-toned ellipses
            cy, cx = rng.uniform(40, 280, 2); ry, rx = rng.uniform(20, 110, 2)
            m = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) < 1
            tone = np.array([rng.uniform(0.6, 0.95), rng.uniform(0.4, 0.75), rng.uniform(0.3, 0.6)], np.float32)
            img[:, m] = img[:, m] * 0.3 + tone[:, None] * 0.7
        img += rng.normal(0, 0.02, img.shape)
        out.append(np.clip(img, 0, 1)[None])
    return {"images": np.stack(out).astype(np.float32)}


def synth_speech(rng, seconds, sr=16000):
    """Speech-like signal: harmonic segments with wandering f0 and syllable-rate
    amplitude modulation, separated by noise-only gaps."""
    parts = []
    total = int(seconds * sr)
    while sum(len(p) for p in parts) < total:
        n = int(rng.uniform(0.3, 1.2) * sr)
        t = np.arange(n) / sr
        if rng.random() < 0.75:
            f0 = rng.uniform(90, 230) + rng.uniform(10, 50) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t)
            ph = np.cumsum(2 * np.pi * f0 / sr)
            tilt = rng.uniform(0.8, 1.6)
            x = sum(np.sin(k * ph + rng.uniform(0, 6.3)) / k ** tilt for k in range(1, 30))
            am = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.3)), 0, 1) ** 0.5
            x = x * am
            x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.1, 0.6)
        else:
            x = np.zeros(n)
        parts.append(x + rng.normal(0, rng.uniform(0.001, 0.01), n))
    return np.concatenate(parts)[:total].astype(np.float32)


def gen_silero(model_path):
    """(input [1,576] = 64 context + 512 new samples, state [2,1,128], sr) triples
    taken from rolling the FP32 model over a synthetic stream, as silero's own
    wrapper feeds it, so the recurrent state is realistic."""
    def g(rng, n):
        import onnxruntime as ort
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        sig = synth_speech(rng, (n * 2 + 4) * 512 / 16000)
        st = np.zeros((2, 1, 128), np.float32)
        ctx = np.zeros(64, np.float32)
        xs, sts = [], []
        for i in range(0, len(sig) - 511, 512):
            chunk = np.concatenate([ctx, sig[i:i + 512]])[None].astype(np.float32)
            xs.append(chunk); sts.append(st)
            _, st = sess.run(None, {"input": chunk, "state": st, "sr": np.array(16000, np.int64)})
            ctx = sig[i + 448:i + 512]
        # skip the first chunks (state still zero), take every other chunk
        idx = list(range(4, len(xs), 2))[:n]
        return {"input": np.stack([xs[i] for i in idx]), "state": np.stack([sts[i] for i in idx]),
                "sr": np.full((len(idx),), 16000, np.int64)}
    return g


def gen_gauss(name, shape):
    def g(rng, n):
        return {name: rng.standard_normal((n, *shape)).astype(np.float32)}
    return g


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------

def model_specs(real_dir):
    t = os.path.join(ROOT, "testdata")
    r = real_dir
    return [
        dict(name="digits_cnn", path=f"{t}/digits_cnn.onnx", kind="classifier",
             dirs=(f"{t}/digits/calib", f"{t}/digits/eval")),
        dict(name="resnet_tiny", path=f"{t}/resnet_tiny.onnx", kind="classifier",
             gen=gen_gauss("input", (1, 3, 32, 32))),
        dict(name="mobilenet_tiny", path=f"{t}/mobilenet_tiny.onnx", kind="classifier",
             gen=gen_gauss("input", (1, 3, 32, 32))),
        dict(name="transformer", path=f"{t}/transformer.onnx", kind="regression",
             gen=gen_gauss("input", (1, 8, 32))),
        dict(name="ocr_det (PP-OCRv4)", path=f"{r}/rapidocr__ch_PP-OCRv4_det_infer.onnx", kind="det_map",
             gen=gen_ocr_det),
        dict(name="ocr_rec (PP-OCRv4)", path=f"{r}/rapidocr__ch_PP-OCRv4_rec_infer.onnx", kind="ocr_rec",
             gen=lambda rng, n: gen_ocr_line(rng, n, 48, 320)),
        dict(name="ocr_cls (mobile v2)", path=f"{r}/rapidocr__ch_ppocr_mobile_v2.0_cls_infer.onnx",
             kind="classifier", gen=lambda rng, n: gen_ocr_line(rng, n, 48, 192, flip_some=True)),
        dict(name="nudenet 320n", path=f"{r}/nudenet__320n.onnx", kind="yolo", gen=gen_nudenet),
        dict(name="silero_vad", path=f"{r}/silero__silero_vad.onnx", kind="vad",
             gen=gen_silero(f"{r}/silero__silero_vad.onnx")),
        dict(name="silero_vad_16k_op15", path=f"{r}/silero__silero_vad_16k_op15.onnx", kind="vad",
             gen=gen_silero(f"{r}/silero__silero_vad_16k_op15.onnx")),
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


def make_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
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


def task_metric(kind, ref_outs, q_outs, labels):
    """Returns (short string, dict)."""
    r0, q0 = ref_outs[0], q_outs[0]
    d = {}
    if kind == "classifier":
        a = r0.reshape(r0.shape[0], -1, r0.shape[-1]).argmax(-1)
        b = q0.reshape(q0.shape[0], -1, q0.shape[-1]).argmax(-1)
        d["top1_agree"] = float(np.mean(a == b))
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
        d["fp32_text_frac"] = float(np.mean(r0 > 0.3))
        return f"map IoU@0.3 {d['iou_0.3']:.3f}", d
    if kind == "yolo":
        # [n,1,4+C,A]: box rows then class scores
        rs, qs = r0[..., 4:, :], q0[..., 4:, :]
        d["score_sqnr"] = sqnr_db(rs, qs)
        d["box_sqnr"] = sqnr_db(r0[..., :4, :], q0[..., :4, :])
        ra = rs.reshape(rs.shape[0], -1).argmax(-1); qa = qs.reshape(qs.shape[0], -1).argmax(-1)
        d["best_anchor_class_agree"] = float(np.mean(ra == qa))
        d["fp32_max_score"] = float(rs.max())
        return (f"scores {fmt_db(d['score_sqnr'])} dB, boxes {fmt_db(d['box_sqnr'])} dB, "
                f"top det {d['best_anchor_class_agree'] * 100:.0f}%"), d
    if kind == "vad":
        pa, pb = r0.ravel(), q0.ravel()
        d["decision_agree"] = float(np.mean((pa > 0.5) == (pb > 0.5)))
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
    return dict(sqnr_per_output=per_out, sqnr_mean=mean_sqnr,
                cosine=float(np.mean(coss)) if coss else float("nan"), task=task_s, task_detail=task_d)


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

def prepare_data(spec, wdir, args, rng):
    """Writes calib/ and eval/ (<input>.npy) and returns (calib, eval, add_batch, labels)."""
    import onnx
    m = onnx.load(spec["path"], load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if "dirs" in spec:
        cdir, edir = spec["dirs"]
        calib = {os.path.splitext(f)[0]: np.load(os.path.join(cdir, f)) for f in os.listdir(cdir)
                 if f.endswith(".npy")}
        ev = {os.path.splitext(f)[0]: np.load(os.path.join(edir, f)) for f in os.listdir(edir)
              if f.endswith(".npy")}
        labels = ev.pop("labels", None)
    else:
        calib = spec["gen"](rng, args.calib_n)
        ev = spec["gen"](rng, args.eval_n)
        labels = None
        cdir, edir = os.path.join(wdir, "calib"), os.path.join(wdir, "eval")
        for d, arrs in ((cdir, calib), (edir, ev)):
            os.makedirs(d, exist_ok=True)
            for k, v in arrs.items():
                np.save(os.path.join(d, k + ".npy"), v)
    add_batch = {}
    for i in inputs:
        rank = len(i.type.tensor_type.shape.dim)
        stored = calib[i.name].ndim - 1
        add_batch[i.name] = stored == rank - 1
    npz = os.path.join(wdir, "calib.npz")
    np.savez(npz, **{k: v for k, v in calib.items() if k in add_batch})
    calib = {k: v for k, v in calib.items() if k in add_batch}
    ev = {k: v for k, v in ev.items() if k in add_batch}
    return cdir, edir, npz, calib, ev, add_batch, labels


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


def evaluate_output(path, spec, ev, add_batch, labels, ref_outs, n_eval):
    """Size, checker, ORT load + fidelity. Returns (dict, session or None)."""
    r = {"size": file_size(path), "checker": checker(path)}
    try:
        sess = make_session(path)
    except Exception as e:  # noqa: BLE001
        r["status"] = "FAIL: ORT load: " + short_exc(e, 160)
        return r, None
    try:
        q_outs = run_all(sess, ev, add_batch, n_eval)
        r.update(fidelity(spec["kind"], ref_outs, q_outs, labels))
        r["status"] = "ok"
    except Exception as e:  # noqa: BLE001
        r["status"] = "FAIL: ORT run: " + short_exc(e, 160)
        return r, None
    return r, sess


def bench_model(spec, args, rng):
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
        cdir, edir, npz, calib, ev, add_batch, labels = prepare_data(spec, wdir, args, rng)
    except Exception as e:  # noqa: BLE001
        res["skip"] = "data: " + short_exc(e)
        return res
    n_eval = len(next(iter(ev.values())))
    res["calib_samples"] = len(next(iter(calib.values())))
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

    # quench
    qout = os.path.join(wdir, "quench.onnx")
    qrep = os.path.join(wdir, "quench_report.json")
    cmd = [args.quench, "compile", spec["path"], "--calibration", cdir, "--eval", edir,
           "-o", qout, "--report", qrep]
    print("  quench:", " ".join(cmd), flush=True)
    pr = run_measured(cmd, wdir, os.path.join(wdir, "quench"), args.timeout)
    q = {"cmd": cmd, "wall": pr["wall"], "maxrss_mb": pr["maxrss_mb"], "rc": pr["rc"]}
    rep, rep_err = read_quench_report(qrep)
    q["report"] = rep
    if pr["rc"] != 0 or not os.path.exists(qout):
        q["status"] = "FAIL: " + short_reason(pr["stderr"], pr["rc"], pr["timed_out"])
        q["stderr"] = pr["stderr"][-6000:]
    else:
        ev_r, qs = evaluate_output(qout, spec, ev, add_batch, labels, ref_outs, n_eval)
        q.update(ev_r)
        if qs is not None:
            sessions["quench"] = qs
        if pr["rc"] == 0 and pr["stderr"].strip():
            q["stderr"] = pr["stderr"][-3000:]
    res["quench"] = q
    print(f"  quench: {q['status']} ({q['wall']:.1f}s)", flush=True)

    # ORT configurations
    ort_runs = {}
    for cfg in args.ort_configs:
        cdir_tmp = tempfile.mkdtemp(prefix="cmp_ort_cwd_")
        out = os.path.join(wdir, f"ort_{cfg}.onnx")
        spec_json = os.path.join(wdir, f"ort_{cfg}.spec.json")
        result_json = os.path.join(wdir, f"ort_{cfg}.result.json")
        with open(spec_json, "w") as f:
            json.dump(dict(model=spec["path"], output=out, calib_npz=npz, add_batch=add_batch,
                           config=list(ORT_CONFIGS[cfg]), result=result_json, preprocess=True), f)
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
        left = sorted(set(os.listdir(cdir_tmp)) - {"preprocessed.onnx"})
        o["left_in_cwd"] = left
        o["left_in_model_dir"] = sorted(set(os.listdir(os.path.dirname(spec["path"]))) - model_dir_before)
        shutil.rmtree(cdir_tmp, ignore_errors=True)
        if pr["rc"] != 0 or not os.path.exists(out):
            reason = o.get("quantize_error") or short_reason(pr["stderr"], pr["rc"], pr["timed_out"])
            o["status"] = "FAIL: " + reason[:260]
            o["stderr"] = pr["stderr"][-4000:]
        else:
            ev_r, s = evaluate_output(out, spec, ev, add_batch, labels, ref_outs, n_eval)
            o.update(ev_r)
            o["_sess"] = s
        ort_runs[cfg] = o
        print(f"  ort {cfg}: {o['status']} ({o['wall']:.1f}s)", flush=True)

    # best ORT config by mean SQNR among those that load and run
    ok = [o for o in ort_runs.values() if o.get("status") == "ok"]
    best = max(ok, key=lambda o: (o["sqnr_mean"] if not math.isnan(o["sqnr_mean"]) else -1e9)) if ok else None
    if best is None and ort_runs:
        best = next(iter(ort_runs.values()))
    res["ort_best"] = best["config"] if best else None
    if best is not None and best.get("_sess") is not None:
        sessions["ort"] = best["_sess"]
    for o in ort_runs.values():
        o.pop("_sess", None)
    res["ort"] = ort_runs

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


def main_table(results):
    head = ("| model | tool | status | time s | peak RSS MB | size KB | checker | SQNR dB (mean; per output) "
            "| cosine | task agreement | latency ms (1 thr) | vs FP32 |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in results:
        if "skip" in r:
            lines.append(f"| {r['name']} | - | SKIP: {r['skip']} |" + " |" * 9)
            continue
        fp = r["fp32"]
        fpl = fp.get("latency_ms")
        lines.append(f"| {r['name']} | FP32 | {fp['status']} | - | - | {fp['size'] / 1024:.0f} | {fp['checker']} "
                     f"| - | - | - | {fmt_ms(fpl)} | 1.00 |")
        rows = []
        if "quench" in r:
            rows.append(("quench", r["quench"]))
        if r.get("ort_best"):
            rows.append((f"ORT ({r['ort_best']})", r["ort"][r["ort_best"]]))
        for tool, d in rows:
            if d.get("status", "").startswith("FAIL") and "size" not in d:
                lines.append(f"| | {tool} | {d['status']} | {d['wall']:.1f} | {d['maxrss_mb']:.0f} | - | - | - | - | - | - | - |")
                continue
            per = "; ".join(fmt_db(s) for s in d.get("sqnr_per_output", []))
            sq = f"{fmt_db(d.get('sqnr_mean'))} ({per})" if d.get("sqnr_per_output") and len(d["sqnr_per_output"]) > 1 \
                else fmt_db(d.get("sqnr_mean"))
            lat = d.get("latency_ms")
            ratio = f"{fpl / lat:.2f}x" if (lat and fpl) else "-"
            lines.append(f"| | {tool} | {d.get('status')} | {d['wall']:.1f} | {d['maxrss_mb']:.0f} | "
                         f"{d['size'] / 1024:.0f} | {d['checker']} | {sq} | {fmt(d.get('cosine'), '{:.4f}')} | "
                         f"{d.get('task', '-')} | {fmt_ms(lat)} | {ratio} |")
    return "\n".join(lines)


def verification_table(results):
    lines = ["| model | output | reference SQNR dB (twin vs FP32, tract) | file SQNR dB (file vs FP32, tract) "
             "| ORT-measured SQNR dB | runtime_discrepancy | quantized (w / act / float act) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        q = r.get("quench")
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
            lines.append(f"| {r['name']} | - | - | - | - | - | {counts} ({why}) |")
            continue
        ort_sq = q.get("sqnr_per_output") or []
        for i, o in enumerate(outs):
            # Non-finite figures are null with a "non_finite" entry naming them.
            def sq(m):
                m = m or {}
                v = m.get("sqnr_db")
                return v if v is not None else (m.get("non_finite") or {}).get("sqnr_db")
            ref = sq(o.get("reference"))
            fil = sq(o.get("file"))
            lines.append(f"| {r['name'] if i == 0 else ''} | {o.get('output')} | {fmt_db(as_float(ref))} | "
                         f"{fmt_db(as_float(fil))} | {fmt_db(ort_sq[i]) if i < len(ort_sq) else '-'} | "
                         f"{o.get('runtime_discrepancy')} | {counts if i == 0 else ''} |")
    return "\n".join(lines)


def ort_table(results):
    lines = ["| model | ORT config | pre-process | status | wall s (child) | quantize s | peak RSS MB | size KB "
             "| checker | SQNR dB | task | files left in cwd |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for i, (cfg, o) in enumerate((r.get("ort") or {}).items()):
            pre = o.get("preprocess") or "-"
            if o.get("preprocess_error"):
                pre += ": " + o["preprocess_error"][:90]
            pre += " (used)" if o.get("used_preprocessed") else ""
            best = " **best**" if cfg == r.get("ort_best") else ""
            lines.append(f"| {r['name'] if i == 0 else ''} | {cfg}{best} | {pre} | {o.get('status')} | "
                         f"{o['wall']:.1f} | {fmt(o.get('t_quantize'), '{:.1f}')} | {o['maxrss_mb']:.0f} | "
                         f"{fmt(o.get('size', None) and o['size'] / 1024, '{:.0f}')} | {o.get('checker', '-')} | "
                         f"{fmt_db(o.get('sqnr_mean'))} | {o.get('task', '-')} | "
                         f"{', '.join(o.get('left_in_cwd') or []) or 'none'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ort-worker", help=argparse.SUPPRESS)
    ap.add_argument("--quench", default=os.path.join(ROOT, "target", "release", "quench"))
    ap.add_argument("--work", default=os.path.join(ROOT, "scratch", "compare_ort"))
    ap.add_argument("--real-dir", default=os.path.join(ROOT, "scratch", "real_models"))
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--eval-n", type=int, default=16)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated substrings of model names")
    ap.add_argument("--ort-configs", default="pc_u8s8,pc_s8s8,default")
    ap.add_argument("--pydeps", default=os.path.join(ROOT, "scratch", "compare_ort_pydeps"),
                    help="extra site dir for the ORT worker (sympy for quant_pre_process); "
                         "benches/compare_ort.sh installs it there")
    args = ap.parse_args()
    if args.ort_worker:
        return ort_worker(args.ort_worker)
    args.ort_configs = [c for c in args.ort_configs.split(",") if c]
    for c in args.ort_configs:
        if c not in ORT_CONFIGS:
            ap.error(f"unknown ORT config {c}; known: {', '.join(ORT_CONFIGS)}")
    args.work = os.path.abspath(args.work)
    if os.path.isdir(args.pydeps):
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.path.abspath(args.pydeps), os.environ.get("PYTHONPATH")) if p)
    os.makedirs(args.work, exist_ok=True)
    import onnx
    import onnxruntime as ort
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, quench {args.quench}, "
          f"worker PYTHONPATH={os.environ.get('PYTHONPATH', '')}", flush=True)

    cwd_before = set(os.listdir(os.getcwd()))
    only = [s.strip().lower() for s in args.only.split(",") if s.strip()]
    results = []
    for spec in model_specs(os.path.abspath(args.real_dir)):
        if only and not any(s in spec["name"].lower() for s in only):
            continue
        rng = np.random.default_rng(args.seed)
        try:
            results.append(bench_model(spec, args, rng))
        except Exception as e:  # noqa: BLE001 - never crash on one model
            traceback.print_exc()
            results.append({"name": spec["name"], "skip": "script error: " + short_exc(e)})
    cwd_new = sorted(set(os.listdir(os.getcwd())) - cwd_before)

    md = ["## quench vs ONNX Runtime quantize_static", "",
          f"calibration samples per model: {args.calib_n} (digits: its calib dir), eval samples: {args.eval_n} "
          f"(digits: its eval dir with labels); latency: median of {args.runs} runs, ORT CPU, 1 thread, "
          "FP32/ORT/quench interleaved; time and RSS are those of the child process (ORT: python child "
          "incl. import, pre-processing and calibration; quench: incl. its tract verification).", "",
          main_table(results), "", "### quench verification (from its --report JSON)", "",
          verification_table(results), "", "### ORT configurations tried", "", ort_table(results), "",
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
