#!/usr/bin/env python3
"""Round trip of every fixture through `quench convert`, checked in onnxruntime.

    roundtrip_check.py --quench PATH/TO/quench --out DIR --expect N MODEL_DIR...

For each .onnx in MODEL_DIR (not recursive; bad/ is skipped): converts it with
quench (inline, and with --external-data), then runs the original and both
copies in onnxruntime CPU on the same random inputs and requires bitwise-identical
outputs. Models with custom-domain ops are converted and checked with
onnx.checker only. Exits non-zero on any failure, and when the number of
models checked is zero or differs from --expect (a moved or emptied fixture
directory is a failure, not "all identical").
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8, "tensor(float16)": np.float16,
}


def feeds(sess: ort.InferenceSession, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 2 for d in i.shape]
        dt = DTYPES.get(i.type, np.float32)
        if dt == np.bool_:
            out[i.name] = rng.random(shape) > 0.5
        elif np.issubdtype(dt, np.integer):
            out[i.name] = rng.integers(0, 4, shape).astype(dt)
        else:
            out[i.name] = rng.standard_normal(shape).astype(dt)
    return out


def custom_domain(path: pathlib.Path) -> bool:
    m = onnx.load(str(path), load_external_data=False)
    return any(o.domain not in ("", "ai.onnx", "ai.onnx.ml") for o in m.opset_import)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quench", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--expect", type=int, required=True, help="number of models MODEL_DIRs must hold")
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    checked = 0
    for d in a.dirs:
        for src in sorted(pathlib.Path(d).glob("*.onnx")):
            checked += 1
            results = []
            for variant, flags in (("inline", ["--inline"]), ("external", ["--external-data"])):
                dst = out / f"{src.stem}.{variant}.onnx"
                r = subprocess.run([a.quench, "convert", str(src), "-o", str(dst), *flags], capture_output=True, text=True)
                if r.returncode != 0:
                    results.append(f"{variant}: convert failed: {r.stderr.strip()}")
                    continue
                try:
                    onnx.checker.check_model(str(dst), full_check=True)
                except Exception as e:  # noqa: BLE001
                    results.append(f"{variant}: checker: {e}")
                    continue
                if custom_domain(src):
                    continue
                s0 = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
                s1 = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
                f = feeds(s0)
                o0 = s0.run(None, f)
                o1 = s1.run(None, f)
                same = len(o0) == len(o1) and len(o0) > 0 and all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(o0, o1))
                if not same:
                    results.append(f"{variant}: outputs differ")
            status = "OK  " if not results else "FAIL"
            failures += bool(results)
            note = " (checker only: custom domain)" if custom_domain(src) and not results else ""
            print(f"{status} {src.name}{note}" + ("" if not results else ": " + "; ".join(results)))
    if checked == 0 or checked != a.expect:
        print(f"FAIL {checked} models checked, expected {a.expect}")
        return 1
    print(f"{'all ' + str(checked) + ' round trips bitwise identical' if failures == 0 else f'{failures} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
