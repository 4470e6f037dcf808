#!/usr/bin/env python3
"""Check ONNX models with the reference tooling (onnx.checker + onnxruntime CPU).

    interop_check.py [options] DIR_OR_FILE...
        For every .onnx file (directories are searched recursively):
          1. onnx.checker.check_model(path, full_check=True)  (by path, so external
             data and >2 GB models work)
          2. unless the model uses an op domain onnxruntime does not know
             (-> "checker only (custom domain)") or its name matches
             --expect-fail-ort: load it in onnxruntime CPU, feed random inputs
             (symbolic dims -> 1, ints -> small non-negative, bool -> random) and run.
          3. every floating-point output is finite (NaN/Inf fail).
          4. when X.check.json sits next to X.onnx (written by the Rust tests,
             see tests/common/mod.rs `write_interop_pair`): X and its reference
             run on the same inputs (X.inputs.npz when given, random otherwise)
             and are compared output by output (count, shape, dtype, finite):
               "exact":     max|x - ref| / max|ref| <= rel_tol;
               "quantized": SQNR(x vs float twin) >= min_sqnr_twin_db and
                            SQNR(x vs FP32) >= min_sqnr_fp32_db; the share of
                            elements within one output quantization step of
                            the twin is printed (and must be >= 0.99 when the
                            output comes from a per-tensor DequantizeLinear);
                            with "min_sqnr_fp32_fused_db", also SQNR vs FP32
                            >= it with ORT's default optimizations (fused
                            integer kernels), on every CPU.
        On an x86-64 CPU with AVX2 but no VNNI, where onnxruntime's fused
        u8 x s8 kernels saturate, the quantized comparisons of step 4 run the
        model with graph optimizations off (its exact QDQ semantics).
        Prints one line per model (OK / FAIL: reason). Exits 1 if any model fails,
        if no model is found, or if fewer models / comparisons than --expect-models /
        --expect-compared were checked.

    interop_check.py --compare A.onnx B.onnx
        Runs both models in onnxruntime on the same random inputs and reports
        whether every output is bitwise identical (exit 1 if not).

Options:
    --exclude GLOB         skip files whose path (relative to the argument) or
                           any directory component matches GLOB (repeatable),
                           e.g. --exclude bad
    --expect-fail-ort NAME only run the checker for models whose file name
                           (or stem) is NAME (repeatable)
    --expect-fail          invert: every model must FAIL the checks (for bad/)
    --expect-models N      fail unless at least N models were checked (default 1)
    --expect-compared N    fail unless at least N .check.json comparisons ran
                           (default 0)
    --seed N               RNG seed for the random inputs (default 0)
    --dim SYM=N            size for the symbolic dimension named SYM (repeatable)
    --default-dim N        size for other symbolic/unknown dims (default 1)
    --shape NAME=D0,D1,..  full shape for the input called NAME, used only where it
                           matches that input's rank and fixed dims (repeatable)
    --value NAME=V         fill the input called NAME with the constant V
                           (repeatable; e.g. --value sr=16000)

Example for real models (see scripts/fetch_real_models.sh):
    interop_check.py --shape input=1,512 --value sr=16000 --shape x=1,3,64,64 \
        --shape images=1,3,320,320 scratch/real_models
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import traceback

import numpy as np
import onnx
import onnx.numpy_helper

# domains onnxruntime's CPU provider implements
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                 "com.microsoft.experimental", "ai.onnx.preview.training", "ai.onnx.training",
                 "com.ms.internal.nhwc"}

ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16, "tensor(int32)": np.int32, "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


def find_models(args, excludes):
    out = []
    for a in args:
        if os.path.isdir(a):
            for root, dirs, files in os.walk(a):
                dirs.sort()
                for f in sorted(files):
                    if f.endswith(".onnx"):
                        p = os.path.join(root, f)
                        if not excluded(os.path.relpath(p, a), excludes):
                            out.append(p)
        else:
            out.append(a)
    return out


def excluded(rel, excludes):
    parts = rel.replace(os.sep, "/").split("/")
    return any(fnmatch.fnmatch(rel, g) or any(fnmatch.fnmatch(p, g) for p in parts) for g in excludes)


def custom_domains(path):
    m = onnx.load(path, load_external_data=False)
    doms = {o.domain for o in m.opset_import}

    def walk(g):
        for n in g.node:
            doms.add(n.domain)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        walk(sg)

    walk(m.graph)
    # functions defined in the model make their domain known
    local = {f.domain for f in m.functions}
    return sorted(d for d in doms if d not in KNOWN_DOMAINS and d not in local)


def ort_saturates():
    """Whether this is an x86-64 CPU with AVX2 but neither AVX-512 VNNI nor
    AVX-VNNI. There onnxruntime runs u8 x s8 layers with VPMADDUBSW, whose sum
    of two products is a saturating int16, so a QDQ model run with its
    default optimizations (fused integer kernels) leaves its exact semantics
    by many quantization steps (benches/results/ort_avx2_saturation_2026-11-28.md)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and "avx512_vnni" not in flags and "avx_vnni" not in flags


# On such a CPU the comparisons of quantized models (with their twin, with
# FP32, step by step) run them with graph optimizations off: every
# DequantizeLinear -> op -> QuantizeLinear in float, the semantics the twin
# and the ONNX spec define. Every model is still loaded and run with the
# default optimizations (step 2), so the fused kernels must accept it.
SATURATES = ort_saturates()


def exact_integer_ops(path):
    """A copy of the model (serialized) in which every MatMulInteger is
    computed as the ONNX spec defines it, in float: Cast to float, minus the
    zero points, MatMul, Cast to int32 (exact while the sums stay below 2^24,
    as in the test models). onnxruntime's own MatMulInteger kernel saturates
    on the CPUs `ort_saturates` names, even unfused; None when the model has
    no MatMulInteger."""
    from onnx import helper, TensorProto
    m = onnx.load(path)
    if not any(n.op_type == "MatMulInteger" for n in m.graph.node):
        return None
    nodes = []
    for k, n in enumerate(m.graph.node):
        if n.op_type != "MatMulInteger":
            nodes.append(n)
            continue
        ins = list(n.input) + [""] * (4 - len(n.input))
        side = []
        for j, (x, zp) in enumerate(((ins[0], ins[2]), (ins[1], ins[3]))):
            f = f"_exact{k}_{j}_f"
            nodes.append(helper.make_node("Cast", [x], [f], to=TensorProto.FLOAT))
            if zp:
                nodes.append(helper.make_node("Cast", [zp], [f + "_zp"], to=TensorProto.FLOAT))
                nodes.append(helper.make_node("Sub", [f, f + "_zp"], [f + "_c"]))
                f = f + "_c"
            side.append(f)
        nodes.append(helper.make_node("MatMul", side, [f"_exact{k}_y"]))
        nodes.append(helper.make_node("Cast", [f"_exact{k}_y"], [n.output[0]], to=TensorProto.INT32))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m.SerializeToString()


def session(path, exact=False):
    import onnxruntime as ort
    ort.set_default_logger_severity(4)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        exact_model = exact_integer_ops(path)
        if exact_model is not None:
            return ort.InferenceSession(exact_model, so, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


# input-generation overrides, set from the command line
OVERRIDES = {"dims": {}, "default_dim": 1, "shapes": {}, "values": {}}


def input_shape(i):
    want = OVERRIDES["shapes"].get(i.name)
    decl = i.shape or []
    # a --shape override is used only where it fits the declared rank and fixed dims
    if want is not None and len(want) == len(decl) and all(
            not (isinstance(d, int) and d >= 0) or d == w for d, w in zip(decl, want)):
        return list(want)
    shape = []
    for d in i.shape or []:
        if isinstance(d, int) and d >= 0:
            shape.append(d)
        elif isinstance(d, str) and d in OVERRIDES["dims"]:
            shape.append(OVERRIDES["dims"][d])
        else:
            shape.append(OVERRIDES["default_dim"])
    return shape


def random_inputs(sess, seed):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        if i.type not in ORT_TYPES:
            raise ValueError(f"input {i.name!r}: unsupported type {i.type}")
        dt = ORT_TYPES[i.type]
        shape = input_shape(i)
        if i.name in OVERRIDES["values"]:
            feeds[i.name] = np.full(shape, OVERRIDES["values"][i.name], dtype=dt)
        elif dt == np.bool_:
            feeds[i.name] = rng.integers(0, 2, shape).astype(np.bool_)
        elif np.issubdtype(dt, np.integer):
            feeds[i.name] = rng.integers(0, 4, shape).astype(dt)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(dt)
    return feeds


def short(e):
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


def check_one(path, skip_ort, seed):
    """Returns (ok, message)."""
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:  # noqa: BLE001
        return False, f"checker: {short(e)}"
    doms = custom_domains(path)
    if doms:
        return True, f"checker only (custom domain: {', '.join(doms)})"
    if skip_ort:
        return True, "checker only (--expect-fail-ort)"
    try:
        sess = session(path)
    except Exception as e:  # noqa: BLE001
        return False, f"onnxruntime load: {short(e)}"
    try:
        outs = sess.run(None, random_inputs(sess, seed))
    except Exception as e:  # noqa: BLE001
        return False, f"onnxruntime run: {short(e)}"
    bad = nonfinite(sess.get_outputs(), outs)
    if bad:
        return False, f"onnxruntime: non-finite outputs: {bad}"
    desc = ", ".join(f"{o.name}{list(v.shape)}" for o, v in zip(sess.get_outputs(), outs))
    msg = f"ran: {desc}"
    spec = os.path.splitext(path)[0] + ".check.json"
    if os.path.exists(spec):
        ok, detail = check_pair(path, spec, seed)
        return ok, f"{msg}; {detail}"
    return True, msg


def nonfinite(outputs, values):
    """Names of floating-point outputs holding NaN or Inf."""
    return [o.name for o, v in zip(outputs, values)
            if np.asarray(v).dtype.kind == "f" and not np.all(np.isfinite(v))]


def sqnr_db(ref, x):
    ref = np.asarray(ref, np.float64)
    err = ref - np.asarray(x, np.float64)
    e = float(np.sum(err * err))
    return float("inf") if e == 0.0 else 10.0 * np.log10(float(np.sum(ref * ref)) / e)


def output_dq_steps(path):
    """{output name: scale} for graph outputs made by a DequantizeLinear
    with a constant scalar scale."""
    m = onnx.load(path, load_external_data=False)
    inits = {t.name: t for t in m.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in m.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    made = {o: n for n in m.graph.node for o in n.output}
    steps = {}
    for o in m.graph.output:
        n = made.get(o.name)
        if n is None or n.op_type != "DequantizeLinear":
            continue
        t = inits.get(n.input[1]) or consts.get(n.input[1])
        if t is None:
            continue
        a = onnx.numpy_helper.to_array(t)
        if a.size == 1:
            steps[o.name] = float(a.reshape(-1)[0])
    return steps


def compare_outputs(names_a, a, b, what):
    """Count, shape, dtype and finiteness of two output lists; None if fine."""
    if len(a) != len(b):
        return f"{what}: {len(a)} outputs vs {len(b)}"
    for n, x, y in zip(names_a, a, b):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"{what}: {n}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}"
        for arr in (x, y):
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                return f"{what}: {n}: non-finite values"
    return None


def with_outputs(path, names):
    """The model at `path` with the tensors `names` added as graph outputs
    (serialized, for an InferenceSession)."""
    m = onnx.load(path)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    return m.SerializeToString()


def check_steps(path, twin_path, steps, feeds):
    """Every quantized activation of the model (the output of the DQ after
    the Q of tensor `q`) against the twin's tensor for it, in ORT: every
    element within one quantization step (the Q's scale). Returns (ok, msg)."""
    m = onnx.load(path, load_external_data=False)
    inits = {t.name: t for t in m.graph.initializer}
    qs = {n.input[0]: n for n in m.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
    model_names, twin_names, scales, labels = [], [], [], []
    for q, t in steps:
        qn = qs.get(q)
        if qn is None or qn.output[0] not in dq_of or qn.input[1] not in inits:
            return False, f"steps: no Q/DQ for {q!r} in the model"
        model_names.append(dq_of[qn.output[0]].output[0])
        twin_names.append(t)
        scales.append(float(onnx.numpy_helper.to_array(inits[qn.input[1]]).reshape(-1)[0]))
        labels.append(q)
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 4
    if SATURATES:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sm = ort.InferenceSession(with_outputs(path, model_names), so, providers=["CPUExecutionProvider"])
    st = ort.InferenceSession(with_outputs(twin_path, twin_names), so, providers=["CPUExecutionProvider"])
    a = sm.run(model_names, feeds)
    b = st.run(twin_names, feeds)
    worst = (0.0, "")
    for lab, x, y, s in zip(labels, a, b, scales):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return False, f"step check {lab}: {x.shape} vs {y.shape} or non-finite"
        # One step, plus a few float32 ulps of the values (the DQ product is
        # rounded to f32 on both sides; that matters for 16-bit steps).
        slack = 8 * float(np.finfo(np.float32).eps) * (float(np.max(np.abs(y))) if y.size else 0.0)
        err = float(np.max(np.abs(x - y))) if x.size else 0.0
        d = err / s
        if d > worst[0]:
            worst = (d, lab)
        if not err <= s * 1.0001 + slack:
            return False, f"{lab}: ORT vs twin differ by {d:.4f} quantization steps (> 1)"
    return True, f"{len(labels)} quantized tensors within one step of the twin (worst {worst[0]:.2f} at {worst[1] or '-'})"


def check_pair(path, spec_path, seed):
    """Runs the comparison a .check.json describes; returns (ok, message)."""
    import json
    with open(spec_path) as f:
        spec = json.load(f)
    d = os.path.dirname(path)
    s_model = session(path, exact=SATURATES and spec["kind"] == "quantized")
    s_ref = session(os.path.join(d, spec["reference"]))
    if "inputs" in spec:
        with np.load(os.path.join(d, spec["inputs"])) as z:
            feeds = {k: z[k] for k in z.files}
    else:
        feeds = random_inputs(s_ref, seed)
    names = [o.name for o in s_model.get_outputs()]
    out = s_model.run(None, feeds)
    ref = s_ref.run(None, feeds)
    err = compare_outputs(names, out, ref, "vs reference")
    if err:
        return False, err
    if spec["kind"] == "exact":
        tol = float(spec["rel_tol"])
        worst = 0.0
        for n, x, r in zip(names, out, ref):
            x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
            scale = max(float(np.max(np.abs(r))) if r.size else 0.0, 1e-6)
            e = float(np.max(np.abs(x - r))) / scale if r.size else 0.0
            worst = max(worst, e)
            if not e <= tol:
                return False, f"{n}: relative error {e:.3g} > {tol:.3g} vs reference"
        return True, f"exact vs reference (max rel err {worst:.2g})"
    if spec["kind"] != "quantized":
        return False, f"unknown check kind {spec['kind']!r}"
    if "twin" in spec:
        twin = session(os.path.join(d, spec["twin"])).run(None, feeds)
        err = compare_outputs(names, out, twin, "vs twin")
        if err:
            return False, err
    else:
        twin = [None] * len(out)  # no Q/DQ in the model: FP32 comparison only
    steps = output_dq_steps(path)
    parts = []
    if spec.get("steps"):
        ok, msg = check_steps(path, os.path.join(d, spec["twin"]), spec["steps"], feeds)
        if not ok:
            return False, msg
        parts.append(msg)
    for n, x, r, t in zip(names, out, ref, twin):
        sf = sqnr_db(r, x)
        if not sf >= spec["min_sqnr_fp32_db"]:
            return False, f"{n}: SQNR vs FP32 {sf:.1f} dB < {spec['min_sqnr_fp32_db']}"
        if t is None:
            parts.append(f"{n}: {sf:.1f} dB vs FP32 (no Q/DQ, no twin)")
            continue
        st = sqnr_db(t, x)
        if not st >= spec["min_sqnr_twin_db"]:
            return False, f"{n}: SQNR vs twin {st:.1f} dB < {spec['min_sqnr_twin_db']}"
        part = f"{n}: {sf:.1f} dB vs FP32, {st:.1f} dB vs twin"
        if n in steps:
            within = float(np.mean(np.abs(np.asarray(x, np.float64) - np.asarray(t, np.float64))
                                   <= steps[n] * 1.0001 + 1e-12))
            part += f", {100 * within:.2f}% within one step ({steps[n]:.3g})"
            if within < 0.99:
                return False, part + " < 99%"
        parts.append(part)
    if "min_sqnr_fp32_fused_db" in spec:
        fused = session(path).run(None, feeds)
        floor = float(spec["min_sqnr_fp32_fused_db"])
        for n, x, r in zip(names, fused, ref):
            sf = sqnr_db(r, x)
            if not sf >= floor:
                return False, f"{n}: SQNR vs FP32 with ORT's fused kernels {sf:.1f} dB < {floor}"
            parts.append(f"{n}: fused {sf:.1f} dB vs FP32")
    return True, "; ".join(parts)


def compare(a, b, seed):
    sa, sb = session(a), session(b)
    ia = [(i.name, i.type, i.shape) for i in sa.get_inputs()]
    ib = [(i.name, i.type, i.shape) for i in sb.get_inputs()]
    if [x[:2] for x in ia] != [x[:2] for x in ib]:
        print(f"FAIL inputs differ: {ia} vs {ib}")
        return 1
    feeds = random_inputs(sa, seed)
    oa, ob = sa.run(None, feeds), sb.run(None, feeds)
    names = [o.name for o in sa.get_outputs()]
    if len(oa) != len(ob):
        print(f"FAIL output count differs: {len(oa)} vs {len(ob)}")
        return 1
    bad = 0
    for n, x, y in zip(names, oa, ob):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes():
            print(f"  {n}: identical {x.dtype}{list(x.shape)}")
            continue
        bad += 1
        if x.shape == y.shape and x.dtype.kind in "fiub" and y.dtype.kind in "fiub":
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            print(f"  {n}: DIFFERENT max_abs_diff={np.nanmax(d):.6g} "
                  f"mismatches={int(np.count_nonzero(x != y))}/{x.size}")
        else:
            print(f"  {n}: DIFFERENT {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
    print("OK bitwise identical" if not bad else f"FAIL {bad} output(s) differ")
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    ap.add_argument("--exclude", action="append", default=[])
    ap.add_argument("--expect-fail-ort", action="append", default=[], metavar="NAME")
    ap.add_argument("--expect-fail", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--expect-models", type=int, default=1)
    ap.add_argument("--expect-compared", type=int, default=0)
    ap.add_argument("--dim", action="append", default=[], metavar="SYM=N")
    ap.add_argument("--default-dim", type=int, default=1)
    ap.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,...")
    ap.add_argument("--value", action="append", default=[], metavar="NAME=V")
    args = ap.parse_args(argv)

    def kv(items, conv):
        out = {}
        for it in items:
            k, sep, v = it.rpartition("=")
            if not sep or not k:
                ap.error(f"expected NAME=VALUE, got {it!r}")
            out[k] = conv(v)
        return out

    OVERRIDES["dims"] = kv(args.dim, int)
    OVERRIDES["default_dim"] = args.default_dim
    OVERRIDES["shapes"] = kv(args.shape, lambda v: [int(x) for x in v.split(",") if x != ""])
    OVERRIDES["values"] = kv(args.value, float)

    if args.compare:
        try:
            return compare(*args.compare, args.seed)
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {short(e)}")
            return 1
    if not args.paths:
        ap.error("no models given")

    models = find_models(args.paths, args.exclude)
    if not models:
        print("no .onnx files found")
        return 1
    if SATURATES:
        print("note: this CPU has AVX2 but no VNNI: onnxruntime's fused u8 x s8 kernels saturate here, so "
              "quantized models are compared with graph optimizations off (exact QDQ semantics); "
              "every model is still loaded and run with them on")
    failures = 0
    compared = 0
    width = max(len(p) for p in models)
    for p in models:
        base = os.path.basename(p)
        skip = base in args.expect_fail_ort or os.path.splitext(base)[0] in args.expect_fail_ort
        try:
            ok, msg = check_one(p, skip, args.seed)
        except Exception as e:  # noqa: BLE001
            ok, msg = False, f"internal error: {short(e)}"
            traceback.print_exc()
        if args.expect_fail:
            status = "OK (failed as expected)" if not ok else "FAIL (unexpectedly passed)"
            ok = not ok
        else:
            status = "OK" if ok else "FAIL"
        failures += not ok
        if ok and not args.expect_fail and os.path.exists(os.path.splitext(p)[0] + ".check.json"):
            compared += 1
        print(f"{status:6s} {p:{width}s}  {msg}")
    print(f"{len(models) - failures} passed, {failures} failed; {compared} compared with a reference")
    short_count = []
    if len(models) < args.expect_models:
        short_count.append(f"{len(models)} models checked, expected at least {args.expect_models}")
    if compared < args.expect_compared:
        short_count.append(f"{compared} comparisons passed, expected at least {args.expect_compared}")
    for m in short_count:
        print(f"FAIL {m}")
    return 1 if failures or short_count else 0


if __name__ == "__main__":
    sys.exit(main())
