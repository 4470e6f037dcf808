#!/usr/bin/env python3
"""ONNX's backend node tests through quench, checked in ONNX Runtime.

    node_tests.py --quench target/debug/quench [--expected scripts/node_tests_expected.json]

The node tests (one small model per operator variant, with one set of inputs
and expected outputs) are generated from the installed `onnx` wheel's
`onnx.backend.test.case.node` into `--data` (default target/onnx-node-tests/
onnx-<version>/node/test_*/{model.onnx,test_data_set_0/{input,output}_*.pb});
the wheel does not ship them as files. Nothing is downloaded.

Every model ONNX Runtime (CPU) loads and runs on its test inputs is a case
(models it refuses are skipped and counted by reason). Each case goes through
four stages, each a `quench` call on the case's model:

  convert     `quench convert`: outputs in ORT bitwise identical to the
              original's (dtype, shape and bytes; NaN payloads included);
  passes      `quench compile --no-quantize`: outputs within
              |q - r| <= 1e-4 * max(|r|, 1e-2 * max|r over that output|, 1e-30)
              elementwise (1e-3 for float16/bfloat16 outputs, whose ulp is
              ~1e-3), NaN and +-Inf at the same places, other dtypes exact;
  weight-only `quench compile --mode weight-only`: loads and runs in ORT,
              same output dtypes and shapes, finite wherever the original's
              outputs are;
  static      `quench compile -c <case>/test_data_set_0` (the ONNX test-data
              layout; static is the default mode), only on models with a
              floating-point tensor input: loads and runs in ORT, same output
              dtypes and shapes.

Models with a random op (RandomNormal, Bernoulli, Dropout in training mode,
...) give different outputs from two ORT sessions of the original itself;
those are detected (a second session of the original) and compared by dtype
and shape only. Every model quench writes must pass `onnx.checker`
(full_check=True, i.e. with strict shape inference; when the original fails
that check itself, the plain check).

A quench call ends in one of:
  ok        exit 0, the output model passes the stage's checks;
  refused   exit 1 with an `error:` message and nothing written at -o: counted
            by reason (the message with names and numbers blanked);
  failed    anything else: a panic (exit 101 / "panicked at"), a signal
            (abort, segfault), the timeout, exit 2/3 or another status, a
            model left at -o after an error, an invalid model, a model ORT
            cannot load or run, a mismatch.

The run fails (exit 1) on any failure, and on any refusal that is not listed
in the expectation file (`--expected`, a JSON object stage -> {test name:
reason}); listed refusals that now pass are reported as improvements (update
the file with `--write-expected`). The table at the end gives, per stage:
cases, ok, refused (by reason), failed.

Calls run in parallel (`--jobs`, default 2) with a per-call timeout
(`--timeout`, default 30 s). `--only SUBSTR` restricts the run to test names
containing SUBSTR (for debugging; the expectation check then covers only those).
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import json
import multiprocessing
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

STAGES = ("convert", "passes", "weight-only", "static")


# --------------------------------------------------------------------------
# Generating the node tests from the onnx wheel
# --------------------------------------------------------------------------

def generate(data_root: pathlib.Path) -> pathlib.Path:
    """Writes every node test case of the installed onnx into
    data_root/onnx-<version>/node (once; a `.complete` stamp marks a finished
    generation). Returns that directory."""
    import onnx
    from onnx import numpy_helper

    node_dir = data_root / f"onnx-{onnx.__version__}" / "node"
    stamp = node_dir / ".complete"
    if stamp.exists():
        return node_dir
    if node_dir.exists():
        shutil.rmtree(node_dir)
    node_dir.mkdir(parents=True)
    import warnings

    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)

    def serialize(value, vi) -> bytes:
        t = vi.type
        if t.HasField("map_type"):
            return numpy_helper.from_dict(value, vi.name).SerializeToString()
        if t.HasField("sequence_type"):
            return numpy_helper.from_list(value, vi.name).SerializeToString()
        if t.HasField("optional_type"):
            return numpy_helper.from_optional(value, vi.name).SerializeToString()
        if isinstance(value, onnx.TensorProto):
            return value.SerializeToString()
        return numpy_helper.from_array(value, vi.name).SerializeToString()

    for case in cases:
        d = node_dir / case.name
        d.mkdir()
        (d / "model.onnx").write_bytes(case.model.SerializeToString())
        for k, (inputs, outputs) in enumerate(case.data_sets):
            s = d / f"test_data_set_{k}"
            s.mkdir()
            for j, v in enumerate(inputs):
                (s / f"input_{j}.pb").write_bytes(serialize(v, case.model.graph.input[j]))
            for j, v in enumerate(outputs):
                (s / f"output_{j}.pb").write_bytes(serialize(v, case.model.graph.output[j]))
    stamp.write_text(f"{len(cases)}\n")
    return node_dir


# --------------------------------------------------------------------------
# One case (runs in a worker process)
# --------------------------------------------------------------------------

# Element types ONNX Runtime's Python binding exchanges as numpy arrays; the
# others (bfloat16, float8, int4, int2, float4, ...) are fed and read as raw
# bytes through OrtValue (see `Raw`).
NUMPY_TYPES = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}


class Raw:
    """A tensor of an element type numpy cannot hold: ONNX element type,
    shape and the bytes as ONNX Runtime stores them (sub-byte types packed)."""

    def __init__(self, elem: int, shape, data: bytes):
        self.elem, self.shape, self.data = elem, tuple(shape), data

    def __eq__(self, o) -> bool:
        return isinstance(o, Raw) and (self.elem, self.shape, self.data) == (o.elem, o.shape, o.data)

    def decode(self):
        """The values as a numpy array of onnx's (ml_dtypes) type."""
        import onnx
        from onnx import numpy_helper

        t = onnx.helper.make_tensor("x", self.elem, list(self.shape), self.data, raw=True)
        return numpy_helper.to_array(t)


def _load_value(path: pathlib.Path, vi):
    import onnx
    from onnx import numpy_helper

    t = vi.type
    data = path.read_bytes()
    if t.HasField("sequence_type"):
        p = onnx.SequenceProto()
        p.ParseFromString(data)
        return numpy_helper.to_list(p)
    if t.HasField("optional_type"):
        p = onnx.OptionalProto()
        p.ParseFromString(data)
        return numpy_helper.to_optional(p)
    if t.HasField("map_type"):
        p = onnx.MapProto()
        p.ParseFromString(data)
        return numpy_helper.to_dict(p)
    p = onnx.TensorProto()
    p.ParseFromString(data)
    if p.data_type not in NUMPY_TYPES:
        raw = p.raw_data if p.HasField("raw_data") else numpy_helper.from_array(numpy_helper.to_array(p)).raw_data
        return Raw(p.data_type, p.dims, raw)
    return numpy_helper.to_array(p)


def _session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


_ORT_NUMPY = {"tensor(float)", "tensor(uint8)", "tensor(int8)", "tensor(uint16)", "tensor(int16)",
              "tensor(int32)", "tensor(int64)", "tensor(string)", "tensor(bool)", "tensor(float16)",
              "tensor(double)", "tensor(uint32)", "tensor(uint64)"}


def _run_session(s, feeds: dict):
    """Runs s on feeds; Raw inputs and outputs of types numpy cannot hold go
    through OrtValue as bytes."""
    import ctypes

    import onnxruntime as ort

    raw_in = any(isinstance(v, Raw) for v in feeds.values())
    raw_out = any(o.type.startswith("tensor(") and o.type not in _ORT_NUMPY for o in s.get_outputs())
    if not raw_in and not raw_out:
        return s.run(None, feeds)
    vals = {}
    for k, v in feeds.items():
        if isinstance(v, Raw):
            ov = ort.OrtValue.ortvalue_from_shape_and_type(list(v.shape), v.elem)
            if ov.tensor_size_in_bytes() != len(v.data):
                raise ValueError(f"input {k}: {len(v.data)} bytes for {ov.tensor_size_in_bytes()}")
            if v.data:
                ctypes.memmove(ov.data_ptr(), v.data, len(v.data))
            vals[k] = ov
        else:
            import numpy as np

            if not isinstance(v, np.ndarray):
                raise ValueError(f"input {k}: a non-tensor input next to a raw-typed one")
            vals[k] = ort.OrtValue.ortvalue_from_numpy(v)
    outs = s.run_with_ort_values([o.name for o in s.get_outputs()], vals)
    res = []
    for o, meta in zip(outs, s.get_outputs()):
        if meta.type in _ORT_NUMPY:
            res.append(o.numpy())
        elif o.is_tensor():
            import onnx

            name = meta.type[len("tensor("):-1].upper()
            n = o.tensor_size_in_bytes()
            res.append(Raw(getattr(onnx.TensorProto, name), o.shape(), ctypes.string_at(o.data_ptr(), n) if n else b""))
        else:
            raise ValueError(f"output {meta.name}: {meta.type} is neither a numpy type nor a tensor")
    return res


def _run(path: str, feeds: dict):
    return _run_session(_session(path), feeds)


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


def _ort_reason(e: BaseException) -> str:
    """ONNX Runtime's refusal, short: its status and the gist of the message."""
    msg = _first_line(e)
    m = re.match(r"\[ONNXRuntimeError\] : \d+ : (\w+) : (.*)", msg)
    if m:
        msg = f"{m.group(1)}: {m.group(2)}"
    msg = re.sub(r"Status Message: .*", "", msg)
    return _normalize(msg)[:110]


def _bitwise_equal(a, b) -> bool:
    import numpy as np

    if isinstance(a, Raw) or isinstance(b, Raw):
        return a == b
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype == object or a.dtype.kind in "USO":
            return a.tolist() == b.tolist()
        return a.tobytes() == b.tobytes()
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_bitwise_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_bitwise_equal(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is None and b is None
    return type(a) is type(b) and a == b


def _structure_diff(a, b, where: str = "output") -> str | None:
    """None when a and b have the same kind, dtype and shape (recursively)."""
    import numpy as np

    if isinstance(a, Raw):
        if not isinstance(b, Raw) or a.elem != b.elem:
            return f"{where}: not a tensor of element type {a.elem}"
        if a.shape != b.shape:
            return f"{where}: shape {list(b.shape)} instead of {list(a.shape)}"
        return None
    if isinstance(a, np.ndarray):
        if not isinstance(b, np.ndarray):
            return f"{where}: {type(b).__name__} instead of a tensor"
        if a.dtype != b.dtype:
            return f"{where}: dtype {b.dtype} instead of {a.dtype}"
        if a.shape != b.shape:
            return f"{where}: shape {list(b.shape)} instead of {list(a.shape)}"
        return None
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return f"{where}: not a sequence of {len(a)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _structure_diff(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return f"{where}: map keys differ"
        return None
    if a is None:
        return None if b is None else f"{where}: a value where the original has none"
    return None if type(a) is type(b) else f"{where}: {type(b).__name__} instead of {type(a).__name__}"


# The passes' relative tolerance per floating-point type: 1e-4 for float and
# double, about one unit in the last place for the narrower types.
RTOL = {"float64": 1e-4, "float32": 1e-4, "float16": 1e-3, "bfloat16": 8e-3,
        "float8_e4m3fn": 0.125, "float8_e4m3fnuz": 0.125, "float8_e5m2": 0.25, "float8_e5m2fnuz": 0.25,
        "float8_e8m0fnu": 1.0, "float4_e2m1fn": 0.5}


def _tolerance_diff(r, q, where: str = "output") -> str | None:
    """None when q is within the passes' tolerance of r (see the module doc)."""
    import numpy as np

    d = _structure_diff(r, q, where)
    if d:
        return d
    if isinstance(r, list):
        for i, (x, y) in enumerate(zip(r, q)):
            d = _tolerance_diff(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(r, Raw):
        if r == q:
            return None
        r, q = r.decode(), q.decode()
    if not isinstance(r, np.ndarray):
        return None if _bitwise_equal(r, q) else f"{where}: differs"
    name = str(r.dtype)
    if name not in RTOL:
        return None if _bitwise_equal(r, q) else f"{where}: {name} values differ"
    rtol = RTOL[name]
    r64 = r.astype(np.float64)
    q64 = q.astype(np.float64)
    rn, qn = np.isnan(r64), np.isnan(q64)
    if not np.array_equal(rn, qn):
        return f"{where}: NaN at {int((rn != qn).sum())} other places"
    rf, qf = np.isfinite(r64), np.isfinite(q64)
    if not np.array_equal(rf, qf) or not np.array_equal(r64[~rf & ~rn], q64[~qf & ~qn]):
        return f"{where}: infinities differ"
    if not rf.any():
        return None
    ra, qa = r64[rf], q64[rf]
    scale = max(float(np.abs(ra).max()) * 1e-2, 1e-30)
    err = np.abs(qa - ra) / np.maximum(np.abs(ra), scale)
    worst = float(err.max())
    if worst > rtol:
        i = int(err.argmax())
        return f"{where}: relative error {worst:.3g} > {rtol:g} (value {float(qa[i])!r} vs {float(ra[i])!r})"
    return None


def _finite_where(r, q, where: str = "output") -> str | None:
    import numpy as np

    d = _structure_diff(r, q, where)
    if d:
        return d
    if isinstance(r, Raw):
        r, q = r.decode(), q.decode()
    if isinstance(r, list):
        for i, (x, y) in enumerate(zip(r, q)):
            d = _finite_where(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(r, np.ndarray) and str(r.dtype) in RTOL:
        rf = np.isfinite(r.astype(np.float64))
        qf = np.isfinite(q.astype(np.float64))
        bad = int((rf & ~qf).sum())
        if bad:
            return f"{where}: {bad} non-finite values where the original's are finite"
    return None


_PANIC = re.compile(r"panicked at ([^\n]*)")


def _normalize(msg: str) -> str:
    """A refusal reason: the error message with names and numbers blanked, so
    the same refusal on different models counts once."""
    msg = re.sub(r"`[^`]*`", "`_`", msg)
    msg = re.sub(r"\"[^\"]*\"", '"_"', msg)
    msg = re.sub(r"'[^']*'", "'_'", msg)
    # A path becomes PATH, but a test-data file keeps its kind (input_N.pb, output_N.pb).
    msg = re.sub(r"[\w.~-]*/[\w./~-]+",
                 lambda m: re.sub(r"^.*/((in|out)put_)\d+\.pb$", r"\1N.pb", m.group(0))
                 if re.search(r"/(in|out)put_\d+\.pb$", m.group(0)) else "PATH", msg)
    msg = re.sub(r"\b(test_\w+|\w+_expanded_function_\w+)\b", "NAME", msg)
    msg = re.sub(r"(?<![\w.])-?\d+(\.\d+)?([eE][-+]?\d+)?(?![\w.])", "N", msg)
    msg = re.sub(r"\s+", " ", msg).strip()
    return msg[:200]


def _quench(quench: str, args: list[str], out: pathlib.Path, timeout: float):
    """Runs quench; returns (status, reason, detail) with status ok|refused|failed."""
    if out.exists():
        out.unlink()
    data = out.with_name(out.name + ".data")
    if data.exists():
        data.unlink()
    t0 = time.monotonic()
    try:
        r = subprocess.run([quench, *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "RUST_BACKTRACE": "0"})
    except subprocess.TimeoutExpired:
        return "failed", f"timeout ({timeout:g} s)", "", time.monotonic() - t0
    dt = time.monotonic() - t0
    err = r.stderr.strip()
    if r.returncode == 0:
        if not out.exists():
            return "failed", "exit 0 but nothing written", err[-500:], dt
        return "ok", "", "", dt
    m = _PANIC.search(err)
    if m or r.returncode == 101:
        where = m.group(1).rstrip(":") if m else ""
        msg = ""
        if m:
            rest = err[m.end():].strip().splitlines()
            msg = rest[0] if rest else ""
        return "failed", f"panic at {where}: {msg}"[:300], err[-1500:], dt
    if r.returncode < 0:
        return "failed", f"killed by signal {-r.returncode}", err[-1500:], dt
    if r.returncode != 1:
        return "failed", f"exit {r.returncode}", err[-1500:], dt
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.lower().startswith("error")]
    if not errs:
        return "failed", "exit 1 without an error message", err[-1500:], dt
    if out.exists():
        return "failed", "model left at -o after an error", err[-1500:], dt
    first = errs[0].split(":", 1)[1].strip() if ":" in errs[0] else errs[0]
    return "refused", _normalize(first), err[-1500:], dt


def run_case(case_dir: str, out_root: str, quench: str, timeout: float, stages: list[str]) -> dict:
    import numpy as np  # noqa: F401
    import onnx

    d = pathlib.Path(case_dir)
    name = d.name
    res: dict = {"name": name, "stages": {}}
    model_path = d / "model.onnx"
    sets = d / "test_data_set_0"
    try:
        model = onnx.load(str(model_path))
        inits = {i.name for i in model.graph.initializer}
        inputs = [vi for vi in model.graph.input if vi.name not in inits]
        feeds = {}
        for j, vi in enumerate(inputs):
            p = sets / f"input_{j}.pb"
            if p.exists():
                feeds[vi.name] = _load_value(p, vi)
    except Exception as e:  # noqa: BLE001
        res["skip"] = "cannot read the test: " + _normalize(_first_line(e))
        return res
    try:
        sess = _session(str(model_path))
    except Exception as e:  # noqa: BLE001
        res["skip"] = "ORT load: " + _ort_reason(e)
        return res
    try:
        ref = _run_session(sess, feeds)
    except Exception as e:  # noqa: BLE001
        res["skip"] = "ORT run: " + _ort_reason(e)
        return res
    try:
        onnx.checker.check_model(str(model_path), full_check=True)
        full = True
    except Exception:  # noqa: BLE001
        full = False
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    float_input = any(vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in float_types for vi in inputs)
    nondet: list = []  # filled lazily: [True/False]

    def deterministic() -> bool:
        if not nondet:
            try:
                again = _run(str(model_path), feeds)
                nondet.append(not all(_bitwise_equal(a, b) for a, b in zip(ref, again)))
            except Exception:  # noqa: BLE001
                nondet.append(True)
        return not nondet[0]

    for stage in stages:
        out_dir = pathlib.Path(out_root) / stage
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"{name}.onnx"
        if stage == "convert":
            args = ["convert", str(model_path), "-o", str(out)]
        elif stage == "passes":
            args = ["compile", "--no-quantize", str(model_path), "-o", str(out)]
        elif stage == "weight-only":
            args = ["compile", "--mode", "weight-only", str(model_path), "-o", str(out)]
        else:
            if not float_input:
                continue
            args = ["compile", "-c", str(sets), str(model_path), "-o", str(out)]
        status, reason, detail, dt = _quench(quench, args, out, timeout)
        if status == "ok":
            try:
                onnx.checker.check_model(str(out), full_check=full)
            except Exception as e:  # noqa: BLE001
                status, reason, detail = "failed", "invalid model: " + _normalize(_first_line(e)), _first_line(e)
        if status == "ok":
            try:
                got = _run(str(out), feeds)
            except Exception as e:  # noqa: BLE001
                status, reason, detail = "failed", "ORT cannot run the output: " + _normalize(_first_line(e)), _first_line(e)
        if status == "ok":
            diff = None
            if len(got) != len(ref):
                diff = f"{len(got)} outputs instead of {len(ref)}"
            elif stage == "convert":
                if not all(_bitwise_equal(a, b) for a, b in zip(ref, got)):
                    diff = "outputs not bitwise identical"
            elif stage == "passes":
                for k, (a, b) in enumerate(zip(ref, got)):
                    diff = _tolerance_diff(a, b, f"output {k}")
                    if diff:
                        break
            elif stage == "weight-only":
                for k, (a, b) in enumerate(zip(ref, got)):
                    diff = _finite_where(a, b, f"output {k}")
                    if diff:
                        break
            else:
                for k, (a, b) in enumerate(zip(ref, got)):
                    diff = _structure_diff(a, b, f"output {k}")
                    if diff:
                        break
            if diff and stage in ("convert", "passes") and not deterministic():
                diff = None
                for k, (a, b) in enumerate(zip(ref, got)):
                    diff = _structure_diff(a, b, f"output {k}")
                    if diff:
                        break
            if diff:
                status, reason, detail = "failed", ("mismatch: " + _normalize(diff)), diff
        entry = {"status": status, "reason": reason, "detail": detail, "seconds": round(dt, 3)}
        if stage == "passes" and status == "ok":
            entry["exact"] = all(_bitwise_equal(a, b) for a, b in zip(ref, got))
        res["stages"][stage] = entry
    res["full_check"] = full
    res["random"] = bool(nondet and nondet[0])
    return res


# --------------------------------------------------------------------------
# Self-test: the checks can fail
# --------------------------------------------------------------------------

FAKE_QUENCH = """#!{python}
# A stand-in for quench (node_tests.py --selftest): behaves as QUENCH_FAKE says.
import os, shutil, sys, time
import onnx
args = sys.argv[1:]
out = args[args.index("-o") + 1]
model = [a for i, a in enumerate(args) if a.endswith(".onnx") and args[i - 1] != "-o"][0]
mode = os.environ["QUENCH_FAKE"]
def scaled(factor):
    m = onnx.load(model)
    y = m.graph.output[0].name
    for n in m.graph.node:
        n.output[:] = [y + "_pre" if o == y else o for o in n.output]
    m.graph.initializer.append(onnx.numpy_helper.from_array(__import__("numpy").array(factor, "float32"), "fake_k"))
    m.graph.node.append(onnx.helper.make_node("Mul", [y + "_pre", "fake_k"], [y]))
    onnx.save(m, out)
if mode == "copy":
    shutil.copy(model, out)
elif mode == "panic":
    sys.stderr.write("thread 'main' panicked at src/fake.rs:1:1:\\nindex out of bounds\\n"); sys.exit(101)
elif mode == "abort":
    os.abort()
elif mode == "refuse":
    sys.stderr.write("error: the model's opset 7 predates something\\n"); sys.exit(1)
elif mode == "leave":
    shutil.copy(model, out); sys.stderr.write("error: verification failed\\n"); sys.exit(1)
elif mode == "silent":
    sys.exit(1)
elif mode == "usage":
    sys.exit(2)
elif mode == "garbage":
    open(out, "wb").write(b"not a model")
elif mode == "nothing":
    pass
elif mode == "off1e-3":
    scaled(1.001)
elif mode == "off1e-6":
    scaled(1.000001)
elif mode == "nan":
    scaled(float("nan"))
elif mode == "sleep":
    time.sleep(30)
"""

# mode -> expected status of (convert, passes, weight-only, static)
SELFTEST = {
    "copy": ("ok", "ok", "ok", "ok"),
    "panic": ("failed",) * 4,
    "abort": ("failed",) * 4,
    "refuse": ("refused",) * 4,
    "leave": ("failed",) * 4,
    "silent": ("failed",) * 4,
    "usage": ("failed",) * 4,
    "garbage": ("failed",) * 4,
    "nothing": ("failed",) * 4,
    "off1e-3": ("failed", "failed", "ok", "ok"),
    "off1e-6": ("failed", "ok", "ok", "ok"),
    "nan": ("failed", "failed", "failed", "ok"),
    "sleep": ("failed",) * 4,
}


def selftest(node_dir: pathlib.Path, out_root: pathlib.Path) -> int:
    """Runs run_case on test_abs with a fake quench per mode; every stage's
    status must be the expected one (the harness can fail)."""
    import tempfile

    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        fake = pathlib.Path(tmp) / "fake-quench"
        fake.write_text(FAKE_QUENCH.format(python=sys.executable))
        fake.chmod(0o755)
        for mode, want in SELFTEST.items():
            os.environ["QUENCH_FAKE"] = mode
            r = run_case(str(node_dir / "test_abs"), str(out_root / mode), str(fake), 3.0, list(STAGES))
            got = tuple(r["stages"].get(s, {}).get("status", "absent") for s in STAGES)
            ok = got == want
            bad += not ok
            reasons = "; ".join(f"{s}: {r['stages'][s]['reason']}" for s in STAGES if s in r["stages"] and r["stages"][s]["reason"])
            print(f"{'ok  ' if ok else 'FAIL'} fake quench {mode:<8} -> {', '.join(got)}"
                  + ("" if ok else f" (expected {', '.join(want)})") + (f"  [{reasons[:150]}]" if reasons else ""))
        os.environ.pop("QUENCH_FAKE", None)
    print("self-test " + ("passed" if not bad else f"FAILED ({bad} modes)"))
    return 1 if bad else 0


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quench", help="the quench binary")
    ap.add_argument("--data", default="target/onnx-node-tests", help="where the node tests are generated")
    ap.add_argument("--out", default="target/node-tests", help="where quench writes its models")
    ap.add_argument("--expected", default="scripts/node_tests_expected.json")
    ap.add_argument("--write-expected", action="store_true",
                    help="write the refusals of this run to --expected (review the diff)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=30.0, help="per quench call (the slowest takes about 1.3 s)")
    ap.add_argument("--only", default=None, help="only test names containing this")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--json", default=None, help="write every case's result here")
    ap.add_argument("--selftest", action="store_true",
                    help="only check that the harness classifies a fake quench's failures (no --quench needed)")
    a = ap.parse_args()
    if a.selftest:
        out_root = pathlib.Path(a.out) / "selftest"
        if out_root.exists():
            shutil.rmtree(out_root)
        return selftest(generate(pathlib.Path(a.data)), out_root)
    if not a.quench:
        ap.error("--quench is required")
    t0 = time.monotonic()
    quench = str(pathlib.Path(a.quench).resolve())
    if not os.access(quench, os.X_OK):
        ap.error(f"{a.quench}: not an executable (build quench first)")
    stages = [s for s in a.stages.split(",") if s]
    for s in stages:
        if s not in STAGES:
            ap.error(f"unknown stage {s}")

    node_dir = generate(pathlib.Path(a.data))
    cases = sorted(p for p in node_dir.iterdir() if p.is_dir())
    if a.only:
        cases = [c for c in cases if a.only in c.name]
    out_root = pathlib.Path(a.out)
    if out_root.exists():
        shutil.rmtree(out_root)
    out_root.mkdir(parents=True)
    print(f"{len(cases)} node tests from {node_dir} (generated in {time.monotonic() - t0:.0f} s)", flush=True)

    results = []
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=a.jobs, mp_context=ctx) as ex:
        futs = {ex.submit(run_case, str(c), str(out_root), quench, a.timeout, stages): c.name for c in cases}
        done = 0
        for f in cf.as_completed(futs):
            try:
                results.append(f.result())
            except Exception as e:  # noqa: BLE001  (a worker died: count it as a failure of every stage)
                results.append({"name": futs[f], "stages": {s: {"status": "failed", "reason": f"harness: {e}", "detail": "", "seconds": 0} for s in stages}})
            done += 1
            if done % 200 == 0:
                print(f"  {done}/{len(cases)} ({time.monotonic() - t0:.0f} s)", flush=True)
    results.sort(key=lambda r: r["name"])
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=1))

    skipped = collections.Counter(r["skip"] for r in results if "skip" in r)
    ran = [r for r in results if "skip" not in r]
    print()
    print(f"{len(results)} node tests; ONNX Runtime runs {len(ran)}; skipped {sum(skipped.values())} it refuses:")
    for why, n in skipped.most_common():
        print(f"  {n:5d}  {why}")

    # A case whose worker died has only its stages (every one failed, with
    # the harness's reason): it was not checked, and no figure is missing.
    no_full = [r["name"] for r in ran if not r.get("full_check", True)]
    print(f"  originals failing onnx.checker full_check (quench's outputs get the plain check): "
          f"{len(no_full)} {' '.join(no_full[:5])}")
    print(f"  mismatches explained by a random op (two ORT sessions of the original differ; "
          f"compared by dtype and shape only): {sum(1 for r in ran if r.get('random'))}")
    passes_ok = [r["stages"]["passes"] for r in ran if r["stages"].get("passes", {}).get("status") == "ok"]
    if passes_ok:
        print(f"  passes: {sum(1 for x in passes_ok if x.get('exact'))} of {len(passes_ok)} passing models "
              f"give outputs bitwise identical to the original's")

    expected = {}
    exp_path = pathlib.Path(a.expected)
    if exp_path.is_file() and exp_path.read_text().strip():
        expected = json.loads(exp_path.read_text())
    bad = 0
    new_expected: dict = {}
    print()
    print(f"{'stage':<12}{'cases':>7}{'ok':>7}{'refused':>9}{'failed':>8}{'seconds':>9}")
    for s in stages:
        rs = [(r["name"], r["stages"][s]) for r in ran if s in r["stages"]]
        n_ok = sum(1 for _, x in rs if x["status"] == "ok")
        n_ref = sum(1 for _, x in rs if x["status"] == "refused")
        n_fail = sum(1 for _, x in rs if x["status"] == "failed")
        secs = sum(x["seconds"] for _, x in rs)
        print(f"{s:<12}{len(rs):>7}{n_ok:>7}{n_ref:>9}{n_fail:>8}{secs:>9.0f}")
    for s in stages:
        rs = [(r["name"], r["stages"][s]) for r in ran if s in r["stages"]]
        refused = {n: x["reason"] for n, x in rs if x["status"] == "refused"}
        failed = [(n, x) for n, x in rs if x["status"] == "failed"]
        new_expected[s] = dict(sorted(refused.items()))
        exp = expected.get(s, {})
        if refused:
            print(f"\n[{s}] refused {len(refused)}, by reason:")
            for why, n in collections.Counter(refused.values()).most_common():
                example = next(k for k, v in refused.items() if v == why)
                print(f"  {n:5d}  {why}   (e.g. {example})")
        unexpected = sorted(n for n in refused if n not in exp and not a.write_expected)
        if unexpected:
            bad += len(unexpected)
            print(f"\n[{s}] FAIL {len(unexpected)} refusals not in {exp_path}:")
            for n in unexpected:
                print(f"  {n}: {refused[n]}")
        changed = sorted(n for n in refused if n in exp and exp[n] != refused[n])
        if changed:
            print(f"\n[{s}] {len(changed)} listed refusals now refused for another reason (not a failure):")
            for n in changed:
                print(f"  {n}: {refused[n]} (listed: {exp[n]})")
        improved = sorted(n for n in exp if n not in refused and any(r["name"] == n for r in ran)
                          and any(r["name"] == n and s in r["stages"] and r["stages"][s]["status"] == "ok" for r in ran))
        if improved:
            print(f"\n[{s}] {len(improved)} listed refusals now pass (remove them from {exp_path}):")
            for n in improved:
                print(f"  {n}")
        if failed:
            bad += len(failed)
            print(f"\n[{s}] FAIL {len(failed)} failed:")
            for why, n in collections.Counter(x["reason"] for _, x in failed).most_common():
                names = [k for k, x in failed if x["reason"] == why]
                print(f"  {n:5d}  {why}   ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")
    if a.write_expected:
        if a.only:
            print("\n--write-expected with --only would drop the other tests' entries; not written")
        else:
            exp_path.write_text(json.dumps(new_expected, indent=1, sort_keys=True) + "\n")
            print(f"\nwrote {exp_path}")
    print(f"\n{time.monotonic() - t0:.0f} s in all")
    if not ran:
        print("FAIL no case ran")
        return 1
    if bad:
        print(f"FAIL {bad} problems")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
