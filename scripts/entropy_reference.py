#!/usr/bin/env python3
"""Independent reference for quench's entropy (KL) calibration.

NVIDIA's own reading of the procedure (pytorch-quantization's
`_compute_amax_entropy`) is what is implemented; see kl_search.

    .venv/bin/python scripts/entropy_reference.py [OUT.json]
    (default OUT: testdata/reference/entropy_trt.json)

Implements, separately from quench (numpy only, written from the published
description, not from quench's code), the KL-divergence threshold search
TensorRT published (Migacz, "8-bit Inference with TensorRT", GTC 2017):

    for i in levels .. last non-empty bin + 1:
        P = bins[0:i]; P[i-1] += sum(bins[i:])          (outliers clipped)
        Q: bins[0:i] (without outliers) merged into `levels` groups
           (linspace(0, i, levels + 1) edges), each group's sum spread
           evenly over its non-empty bins, 0 elsewhere
        divergence[i] = KL(P || Q) of the normalized distributions
    threshold = i* x bin width for the i* with the smallest divergence

on the |x| histogram (2048 bins over [0, R), as TensorRT uses 2048 bins).

Samples are drawn from several distributions (two-sided, skewed, spiky,
heavy-tailed, one-sided); each case stores the signed histogram in quench's
layout (4096 bins over [-R, R), R = 2^e the smallest power of two above
max|x|, bin j holds [-R + j w, -R + (j+1) w)), min/max/count, the target
(int8: 128 levels; uint8 on one-signed data: 256 levels) and the reference
threshold. crates/quench-calib/tests/entropy_reference.rs compares quench's
`RangeMethod::Entropy` with it.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np

NBINS = 4096  # signed bins; the |x| fold has 2048, TensorRT's count


def signed_histogram(x: np.ndarray):
    m = float(np.max(np.abs(x)))
    e = math.floor(math.log2(m)) + 1  # 2^e strictly above max|x|
    r = 2.0 ** e
    w = 2 * r / NBINS
    idx = np.floor(x.astype(np.float64) / w).astype(np.int64) + NBINS // 2
    bins = np.bincount(idx, minlength=NBINS)
    assert bins.size == NBINS and bins.sum() == x.size
    return e, bins, w


def fold_abs(bins: np.ndarray) -> np.ndarray:
    half = bins.size // 2
    return bins[half:] + bins[:half][::-1]


def kl_search(hist: np.ndarray, levels: int, floor_bounds: bool = False, skip_zero_bin: bool = False):
    """Returns (bins kept, divergences) by NVIDIA's procedure.

    Follows `_compute_amax_entropy` of NVIDIA's pytorch-quantization
    (calib/histogram.py, the TensorRT team's open implementation of the
    GTC 2017 method), with stride 1 and start bin = levels:
      - Q: bins 0..i grouped by `digitize(range(i), linspace(0, i, levels+1)) - 1`,
        bins empty in the histogram excluded; each group's sum spread
        evenly over its non-empty bins;
      - P: bins 0..i with the outliers (sum of bins i..) added to bin i-1;
      - divergence: scipy.stats.entropy(P, Q) (normalized, no smoothing: a
        bin with P > 0 = Q makes it infinite, so such candidates never win);
      - the last minimum wins; amax = upper edge of bin i-1 = i * w.

    `floor_bounds=True, skip_zero_bin=True` is the variant quench documents
    (RangeMethod::Entropy): group g is bins floor(g*i/levels) ..
    floor((g+1)*i/levels), so a bin straddling a fractional group boundary
    joins the upper group instead of the lower one; a group's sum is spread
    over its bins where P (with the outliers) is non-zero, so an empty last
    bin that receives the outliers shares its group's mass; bins with
    P > 0 = Q get 1e-4 counts instead of making the candidate infinite; the
    bin at 0 is left out; the first minimum wins.
    """
    if skip_zero_bin:
        hist = hist.copy()
        hist[0] = 0
    total = float(hist.sum())
    used = int(np.nonzero(hist)[0][-1]) + 1
    divs = {}
    for i in range(levels, used + 1):
        if floor_bounds:
            digitized = np.empty(i, dtype=np.int64)
            for g in range(levels):
                digitized[g * i // levels:(g + 1) * i // levels] = g
        else:
            space = np.linspace(0, i, num=levels + 1)
            digitized = np.digitize(np.arange(i), space) - 1
        p = hist[:i].astype(np.float64)
        p[-1] += total - p.sum()
        digitized[(p if floor_bounds else hist[:i]) == 0] = -1
        counts = np.zeros(levels)
        members = np.zeros(levels)
        keep = digitized != -1
        np.add.at(counts, digitized[keep], hist[:i][keep].astype(np.float64))
        np.add.at(members, digitized[keep], 1.0)
        per_bin = np.divide(counts, members, out=np.zeros(levels), where=members > 0)
        q = np.where(keep, per_bin[np.maximum(digitized, 0)], 0.0)
        if round(q.sum() + hist[i:].sum()) != round(total) or round(p.sum()) != round(total):
            raise AssertionError("counts lost")
        if floor_bounds:
            q[(p > 0) & (q <= 0)] = 1e-4
        p /= p.sum()
        q /= q.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p / q), 0.0)
        d = float(np.sum(terms)) if np.all(q[p > 0] > 0) else float("inf")
        divs[i] = d
    finite = {i: d for i, d in divs.items() if np.isfinite(d)}
    dmin = min(finite.values())
    ties = [i for i, d in finite.items() if d == dmin]
    best = min(ties) if floor_bounds else max(ties)
    return best, finite


def cases():
    rng = np.random.default_rng(20261127)
    n = 200_000
    out = []

    def add(name, x, target):
        out.append((name, x.astype(np.float32), target))

    add("gaussian", rng.standard_normal(n), "i8")
    add("laplace", rng.laplace(0.0, 1.0, n), "i8")
    add("student_t3_heavy_tail", rng.standard_t(3, n), "i8")
    # Skewed, two-sided: log-normal shifted so a fifth of the mass is negative.
    add("lognormal_skewed", rng.lognormal(0.0, 0.8, n) - 0.5, "i8")
    # Mostly positive with a thin negative tail (a GELU/SiLU output).
    g = rng.standard_normal(n) * 2.0
    add("silu_like_skewed", g / (1.0 + np.exp(-g)), "i8")
    # Spiky: Gaussian plus spikes of repeated values away from zero.
    s = rng.standard_normal(n)
    k = n // 10
    s[:k] = 2.5
    s[k:k + k // 2] = -1.25
    s[k + k // 2:k + k // 2 + 50] = 9.0
    add("gaussian_with_spikes", s, "i8")
    # Bimodal two-sided.
    b = np.concatenate([rng.normal(-3, 0.5, n // 2), rng.normal(2, 1.0, n - n // 2)])
    add("bimodal", b, "i8")
    # One-sided without a zero spike: uint8, 256 levels.
    add("exponential_one_sided_u8", rng.exponential(1.0, n), "u8")
    return out


def main():
    out_path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                            pathlib.Path(__file__).resolve().parent.parent / "testdata/reference/entropy_trt.json")
    result = {
        "about": "TensorRT's KL threshold search (as NVIDIA's pytorch-quantization implements it), written by "
                 "scripts/entropy_reference.py; compared with quench in "
                 "crates/quench-calib/tests/entropy_reference.rs",
        "numpy": np.__version__,
        "cases": [],
    }
    for name, x, target in cases():
        e, bins, w = signed_histogram(x)
        one_sided = target == "u8" and (x.min() >= 0 or x.max() <= 0)
        levels = 256 if one_sided else 128
        hist = fold_abs(bins)
        i, divs = kl_search(hist, levels)
        t = i * w
        i_var, _ = kl_search(hist, levels, floor_bounds=True, skip_zero_bin=True)
        # How flat the divergence is near the minimum: candidates within 1%.
        dmin = divs[i]
        near = sorted(j for j, d in divs.items() if d <= dmin * 1.01 + 1e-12)
        first = int(np.nonzero(bins)[0][0])
        last = int(np.nonzero(bins)[0][-1]) + 1
        result["cases"].append({
            "name": name,
            "target": target,
            "levels": levels,
            "min": float(x.min()),
            "max": float(x.max()),
            "count": int(x.size),
            "histogram": {"range_log2": e, "num_bins": NBINS, "offset": first,
                          "bins": [int(c) for c in bins[first:last]]},
            "bin_width": w,
            "threshold": t,
            "bins_kept": i,
            "threshold_floor_bounds": i_var * w,
            "near_optimal_bins": [near[0], near[-1]],
        })
        print(f"{name:28s} {target}: T = {t:.5g}, floor-bounds variant {i_var * w:.5g} ({i} of {int(np.nonzero(hist)[0][-1]) + 1} bins, "
              f"w = {w:.3g}); within 1% of the minimum: bins {near[0]}..{near[-1]}; max|x| = {np.abs(x).max():.4g}")
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
