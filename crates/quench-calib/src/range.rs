//! Choosing a quantization range from recorded statistics.
//!
//! All methods return a `(lo, hi)` range; [`QuantParams::from_range`] then
//! extends it to contain 0 and, for symmetric targets, symmetrizes it.
//!
//! Invariant: the returned range is finite, `lo <= hi`, and lies inside the
//! observed `[min, max]`: a method may clip outliers but never widens the
//! range beyond the data (histogram bin edges are clamped to `min`/`max`).
//!
//! Invariant: every method is a deterministic function of the
//! [`TensorStats`] alone, so order-invariant statistics give order-invariant
//! ranges.
//!
//! Histogram methods work on one of two views of the
//! [histogram](crate::histogram):
//!
//! * the `|x|` histogram, obtained by folding the negative half onto the
//!   positive one (bins of width `w` over `[0, R)`); used for symmetric
//!   targets, for [`RangeMethod::Entropy`] always, and the resulting
//!   threshold `T` gives the range `[max(min, -T), min(max, T)]`;
//! * the signed histogram, used by asymmetric targets for
//!   [`RangeMethod::Percentile`] and [`RangeMethod::Mse`].

use serde::{Deserialize, Serialize};

use crate::format::{FloatKind, IntFormat, QuantFormat, Scheme};
use crate::histogram::HistogramData;
use crate::{CalibError, QuantParams, QuantTarget, TensorStats};

/// The entropy search costs `levels` logarithms per candidate threshold;
/// finer `|x|` histograms are coarsened (exactly, by summing neighbours) to
/// this many bins, TensorRT's count (the data then spans 1024 to 2048 of
/// them with the default 8192-bin histograms).
pub const ENTROPY_MAX_BINS: usize = 2048;
/// The asymmetric MSE search is quadratic in the number of bins; finer
/// histograms are coarsened to this many signed bins.
pub const MSE_MAX_BINS: usize = 2048;
/// The float-format MSE search is quadratic in the number of `|x|` bins;
/// finer histograms are coarsened to this many.
pub const MSE_FLOAT_MAX_BINS: usize = 1024;
/// Pseudo-count given to bins where the reference distribution has mass
/// but the quantized one has none (the clipped-outlier bin), as the
/// `smooth_distribution(eps = 1e-4)` of MXNet / ONNX Runtime; without it the
/// divergence would be infinite whenever outliers are clipped.
pub const KL_SMOOTHING: f64 = 1e-4;

/// How to turn statistics into a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeMethod {
    /// Observed `[min, max]`; needs no histogram.
    #[default]
    MinMax,
    /// Clip at a percentile in `(0, 100]`, e.g. 99.99. Symmetric targets:
    /// the given percentile of `|x|`. Asymmetric targets: `(100 - p) / 2`
    /// percent is cut from each tail (ONNX Runtime's convention). Linear
    /// interpolation inside the bin.
    Percentile(f64),
    /// TensorRT's KL-divergence threshold search on the `|x|` histogram.
    /// Number of levels over `[0, T]`: `2^(bits-1)` (128 for 8 bits), or
    /// `2^bits` for asymmetric targets whose data has a single sign. For each
    /// candidate `i` (bins kept) from `levels` to the last non-empty bin:
    /// `P` = first `i` bins with all mass beyond added to the last one;
    /// `Q` = the same `i` bins *without* the outliers, summed into `levels`
    /// groups (group `g` spans bins `g*i/levels .. (g+1)*i/levels`) and each
    /// group's sum spread evenly over the bins of the group where `P` is
    /// non-zero; bins where `P > 0 = Q` get [`KL_SMOOTHING`]. The `i`
    /// minimizing `KL(P || Q)` (smallest on ties) gives `T = i * w`.
    /// Unlike TensorRT, the bin at 0 is left out of `P` and `Q`: a spike of
    /// zeros (ReLU outputs) smeared over its group dominates the divergence
    /// and pulls the threshold down regardless of the tail (see
    /// [`entropy_range_guarded`] for the remaining over-clipping cases).
    /// If the histogram has no more used bins than levels (e.g. 16-bit
    /// targets with default bins) clipping cannot help and `[min, max]` is
    /// returned.
    Entropy,
    /// Minimize the expected squared quantization error for the target:
    /// rounding error `step^2 / 12` for every value inside the range plus
    /// `E[(x - edge)^2]` for every value beyond it (values uniform inside
    /// their bin), with the same `step` as [`QuantParams::from_range`]
    /// (`2T / (qmax - qmin)` symmetric, `(hi - lo) / (qmax - qmin)`
    /// asymmetric). Candidates are the histogram bin edges: every `T` for
    /// symmetric targets, every pair `lo <= 0 <= hi` for asymmetric ones.
    /// Float formats (non-uniform grid): the rounding error of a value `x`
    /// is `step(x)^2 / 12` with `step(x)` the format's spacing around
    /// `x / scale` times `scale` (`scale = T / max_finite`); candidates are
    /// the `|x|` bin edges, the histogram coarsened to
    /// [`MSE_FLOAT_MAX_BINS`] bins.
    Mse,
}

impl RangeMethod {
    fn name(self) -> &'static str {
        match self {
            RangeMethod::MinMax => "min_max",
            RangeMethod::Percentile(_) => "percentile",
            RangeMethod::Entropy => "entropy",
            RangeMethod::Mse => "mse",
        }
    }
}

/// Chooses the `(lo, hi)` range to quantize a tensor with `stats` to
/// `target` using `method`.
///
/// Errors if the statistics are inconsistent, the percentile is outside
/// `(0, 100]`, or a histogram method is asked for statistics without
/// histogram. Statistics of a tensor that never held a finite value give
/// `(0, 0)`.
pub fn choose_range(
    stats: &TensorStats,
    method: RangeMethod,
    target: QuantTarget,
) -> Result<(f32, f32), CalibError> {
    choose_range_for(stats, method, &QuantFormat::from(target))
}

/// [`choose_range`] for any [`QuantFormat`] (its granularity is ignored:
/// the statistics are those of the values that share one scale).
///
/// Min/max, percentile and MSE work for every format (float formats are
/// symmetric); [`RangeMethod::Entropy`] counts evenly spaced levels and
/// errors with [`CalibError::UnsupportedForFormat`] for float formats.
/// Integer formats give exactly the ranges [`choose_range`] gives for the
/// equivalent [`QuantTarget`].
pub fn choose_range_for(
    stats: &TensorStats,
    method: RangeMethod,
    format: &QuantFormat,
) -> Result<(f32, f32), CalibError> {
    stats.validate()?;
    if let (RangeMethod::Entropy, Scheme::Float(_)) = (method, format.scheme) {
        return Err(CalibError::UnsupportedForFormat {
            method: method.name(),
            format: format!("{:?}", format.scheme),
        });
    }
    if let RangeMethod::Percentile(p) = method {
        if !(p > 0.0 && p <= 100.0) {
            return Err(CalibError::InvalidPercentile(p));
        }
    }
    if stats.count == 0 {
        return Ok((0.0, 0.0));
    }
    if method == RangeMethod::MinMax {
        return Ok((stats.min, stats.max));
    }
    let hist = stats
        .histogram
        .as_ref()
        .ok_or(CalibError::MissingHistogram(method.name()))?;
    Ok(match (method, format.scheme) {
        (RangeMethod::MinMax, _) => (stats.min, stats.max),
        (RangeMethod::Percentile(p), _) => percentile_range(stats, hist, p, format.symmetric()),
        (RangeMethod::Entropy, Scheme::Int(i)) => entropy_range(stats, hist, i),
        (RangeMethod::Entropy, Scheme::Float(_)) => (stats.min, stats.max),
        (RangeMethod::Mse, Scheme::Int(i)) => mse_range(stats, hist, i),
        (RangeMethod::Mse, Scheme::Float(k)) => mse_range_float(stats, hist, k),
    })
}

/// Expected squared error per value of quantizing the recorded
/// distribution with the parameters [`QuantParams::from_range`] gives for
/// `(lo, hi)`: `scale^2 / 12` for values inside the representable range,
/// the squared distance to its nearest end beyond it (values uniform inside
/// their histogram bin). `None` without a histogram or values.
pub fn expected_sq_error(
    stats: &TensorStats,
    range: (f32, f32),
    target: QuantTarget,
) -> Option<f64> {
    expected_sq_error_for(stats, range, &QuantFormat::from(target))
}

/// [`expected_sq_error`] for any [`QuantFormat`]; float formats use the
/// rounding error of the format's spacing around each bin centre
/// (`step(x)^2 / 12`, see [`RangeMethod::Mse`]) and clip at `±amax`.
pub fn expected_sq_error_for(
    stats: &TensorStats,
    range: (f32, f32),
    format: &QuantFormat,
) -> Option<f64> {
    let h = stats.histogram.as_ref()?;
    let qp = format.params(range.0, range.1).ok()?;
    let scale = f64::from(qp.scale);
    let (lo, hi) = match format.scheme {
        Scheme::Int(i) => (
            f64::from(i.qmin() - qp.zero_point) * scale,
            f64::from(i.qmax() - qp.zero_point) * scale,
        ),
        Scheme::Float(k) => (-k.max_finite() * scale, k.max_finite() * scale),
    };
    let round_sq = |x: f64| match format.scheme {
        Scheme::Int(_) => scale * scale / 12.0,
        Scheme::Float(k) => {
            let step = k.spec().spacing(x / scale) * scale;
            step * step / 12.0
        }
    };
    let w = h.bin_width();
    let origin = -h.range();
    let (mut err, mut n) = (0.0, 0.0);
    for (j, &c) in h.bins.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let c = c as f64;
        let centre = origin + (j as f64 + 0.5) * w;
        let e = if centre < lo {
            (centre - lo).powi(2) + w * w / 12.0
        } else if centre > hi {
            (centre - hi).powi(2) + w * w / 12.0
        } else {
            round_sq(centre)
        };
        err += c * e;
        n += c;
    }
    (n > 0.0).then_some(err / n)
}

/// Default of [`entropy_range_guarded`]'s `max_ratio`.
pub const ENTROPY_GUARD_RATIO: f64 = 4.0;

/// The [`RangeMethod::Entropy`] range, unless its
/// [expected squared error](expected_sq_error) is more than `max_ratio`
/// times that of the [`RangeMethod::Mse`] range: then the MSE range, and
/// `true`. The KL search over-clips distributions with a dominant mode near
/// zero and a long tail (swish outputs, transformer residual streams): it
/// ignores how far the clipped values lie, so it can cut a range to a
/// fifth at 100–1000x the squared error. `max_ratio <= 0` disables the
/// guard.
pub fn entropy_range_guarded(
    stats: &TensorStats,
    target: QuantTarget,
    max_ratio: f64,
) -> Result<((f32, f32), bool), CalibError> {
    entropy_range_guarded_for(stats, &QuantFormat::from(target), max_ratio)
}

/// [`entropy_range_guarded`] for any [`QuantFormat`] (errors for float
/// formats, as [`RangeMethod::Entropy`] does).
pub fn entropy_range_guarded_for(
    stats: &TensorStats,
    format: &QuantFormat,
    max_ratio: f64,
) -> Result<((f32, f32), bool), CalibError> {
    let entropy = choose_range_for(stats, RangeMethod::Entropy, format)?;
    if max_ratio <= 0.0 {
        return Ok((entropy, false));
    }
    let mse = choose_range_for(stats, RangeMethod::Mse, format)?;
    match (
        expected_sq_error_for(stats, entropy, format),
        expected_sq_error_for(stats, mse, format),
    ) {
        (Some(e), Some(m)) if e > max_ratio * m => Ok((mse, true)),
        _ => Ok((entropy, false)),
    }
}

/// [`choose_range`] followed by [`QuantParams::from_range`].
pub fn calibrate(
    stats: &TensorStats,
    method: RangeMethod,
    target: QuantTarget,
) -> Result<QuantParams, CalibError> {
    let (lo, hi) = choose_range(stats, method, target)?;
    QuantParams::from_range(lo, hi, target)
}

/// [`choose_range_for`] followed by [`QuantFormat::params`].
pub fn calibrate_for(
    stats: &TensorStats,
    method: RangeMethod,
    format: &QuantFormat,
) -> Result<QuantParams, CalibError> {
    let (lo, hi) = choose_range_for(stats, method, format)?;
    format.params(lo, hi)
}

/// `[-t, t]` with both ends clamped into `[min, max]` (for one-signed data
/// `t` may fall short of the data, giving e.g. `[min, min]`).
fn clip_symmetric(stats: &TensorStats, t: f64) -> (f32, f32) {
    // `validate` guarantees finite min <= max, so `clamp` cannot panic.
    // Clamping in f64 first keeps the f32 conversion inside [min, max].
    let lo = (-t).clamp(f64::from(stats.min), f64::from(stats.max)) as f32;
    let hi = t.clamp(f64::from(stats.min), f64::from(stats.max)) as f32;
    (lo, hi)
}

/// `[lo, hi]` clamped into `[min, max]` (validated: finite, `min <= max`).
fn clip_to_data(stats: &TensorStats, lo: f64, hi: f64) -> (f32, f32) {
    let (min, max) = (f64::from(stats.min), f64::from(stats.max));
    (lo.clamp(min, max) as f32, hi.clamp(min, max) as f32)
}

/// Histogram of `|x|`: bin `j` covers `[j w, (j + 1) w)` (the negative
/// values' bins are `(j w, (j + 1) w]`, a difference of measure zero).
fn fold_abs(h: &HistogramData) -> Vec<u64> {
    let half = h.bins.len() / 2;
    (0..half)
        .map(|j| h.bins[half + j].saturating_add(h.bins[half - 1 - j]))
        .collect()
}

/// Sums groups of adjacent bins (a power of two of them) until at most
/// `max_len` remain; returns the bins and the group size. Exact, and keeps
/// the middle of an even-length histogram (zero) on a bin edge.
fn coarsen(bins: &[u64], max_len: usize) -> (Vec<u64>, usize) {
    let mut factor = 1;
    while bins.len() / factor > max_len.max(2) {
        factor *= 2;
    }
    let out = bins
        .chunks(factor)
        .map(|c| c.iter().fold(0u64, |a, &b| a.saturating_add(b)))
        .collect();
    (out, factor)
}

fn total(bins: &[u64]) -> f64 {
    bins.iter().map(|&c| c as f64).sum()
}

/// Position where the cumulative count reaches `target`, bins starting at
/// `origin` with width `w`, interpolating linearly inside the bin.
/// Monotone in `target`.
fn quantile(bins: &[u64], origin: f64, w: f64, target: f64) -> f64 {
    let mut cum = 0.0;
    for (j, &c) in bins.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let c = c as f64;
        if cum + c >= target {
            let frac = ((target - cum) / c).clamp(0.0, 1.0);
            return origin + (j as f64 + frac) * w;
        }
        cum += c;
    }
    origin + bins.len() as f64 * w
}

fn percentile_range(stats: &TensorStats, h: &HistogramData, p: f64, symmetric: bool) -> (f32, f32) {
    let w = h.bin_width();
    if symmetric {
        let fold = fold_abs(h);
        let t = quantile(&fold, 0.0, w, p / 100.0 * total(&fold));
        clip_symmetric(stats, t)
    } else {
        let n = total(&h.bins);
        let tail = (100.0 - p) / 200.0 * n;
        let origin = -h.range();
        let lo = quantile(&h.bins, origin, w, tail);
        let hi = quantile(&h.bins, origin, w, n - tail);
        clip_to_data(stats, lo, hi)
    }
}

fn entropy_range(stats: &TensorStats, h: &HistogramData, target: IntFormat) -> (f32, f32) {
    let one_sided = !target.symmetric() && (stats.min >= 0.0 || stats.max <= 0.0);
    let level_bits = if one_sided {
        target.bits()
    } else {
        target.bits() - 1
    };
    let levels = 1usize << level_bits;
    let (mut fold, factor) = coarsen(&fold_abs(h), ENTROPY_MAX_BINS);
    let w = h.bin_width() * factor as f64;
    // The bin at 0 (ReLU zeros, sparse activations) is left out of the
    // search: a spike there, smeared over its quantization group, dominates
    // the divergence and drives the threshold down whatever the tail costs;
    // its values quantize to the zero point (or one step) at any threshold.
    if let Some(z) = fold.first_mut() {
        *z = 0;
    }
    let t = match kl_threshold(&fold, levels) {
        Some(i) => i as f64 * w,
        None => f64::from(stats.max_abs()),
    };
    clip_symmetric(stats, t)
}

/// Number of `|x|` bins to keep according to the KL search (see
/// [`RangeMethod::Entropy`]); `None` if there is nothing to clip.
///
/// Same candidates and divergence as [`kl_threshold_direct`], computed in
/// `O(levels)` per candidate from prefix sums instead of `O(i)` with a
/// logarithm per bin: inside a group `Q` is constant over the bins where
/// `P > 0`, so with `n_g` such bins, group sum `S_g` (without outliers) and
/// `P_g` (with them),
/// `sum_j p_j ln q_j = sum_g P_g ln(S_g / n_g)`, and `sum_j p_j ln p_j` is a
/// prefix sum plus the last bin. The divergence of the normalized
/// distributions follows:
/// `KL = (sum p ln p - sum p ln q) / psum - ln psum + ln qsum`.
fn kl_threshold(hist: &[u64], levels: usize) -> Option<usize> {
    let used = hist.iter().rposition(|&c| c > 0)? + 1;
    if used <= levels {
        return None;
    }
    let xlnx = |x: f64| if x > 0.0 { x * x.ln() } else { 0.0 };
    // Prefix sums over bins 0..j: counts, non-empty bins, c ln c.
    let mut sum = vec![0f64; used + 1];
    let mut nonzero = vec![0usize; used + 1];
    let mut plogp = vec![0f64; used + 1];
    for j in 0..used {
        let c = hist[j] as f64;
        sum[j + 1] = sum[j] + c;
        nonzero[j + 1] = nonzero[j] + usize::from(hist[j] > 0);
        plogp[j + 1] = plogp[j] + xlnx(c);
    }
    let all = sum[used];
    let mut best: Option<(f64, usize)> = None;
    // A group other than the last is a run of bins `start..start + width`,
    // and its term `S_g ln(S_g / n_g)` depends on nothing else. Widths are
    // `w0 = floor(i / levels)` or `w0 + 1`: each term is computed (one
    // logarithm) the first time it is needed and looked up after that, in
    // one row per width, three rows in turn (`width % 3`): when `w0` grows,
    // the row of the width no longer used is cleared for `w0 + 1`'s.
    // Same values, same summation order as the direct search.
    let mut memo = vec![f64::NAN; 3 * used];
    let mut tier = 0;
    // Group bounds `g * i / levels`; a shift for the usual power of two.
    let shift = levels.is_power_of_two().then(|| levels.trailing_zeros());
    let bound = |x: usize| match shift {
        Some(s) => x >> s,
        None => x / levels,
    };
    for i in levels..=used {
        let w0 = i / levels;
        if w0 != tier {
            // Widths w0 and w0 + 1 are used from here on; the row of
            // w0 + 1 last held w0 - 2 (or nothing).
            if tier != 0 {
                let r = (w0 + 1) % 3;
                memo[r * used..(r + 1) * used].fill(f64::NAN);
            }
            tier = w0;
        }
        let outliers = all - sum[i];
        let last = hist[i - 1] as f64 + outliers;
        let psum = all;
        // sum p ln p: bins before the last as stored, the last with outliers.
        let p_ln_p = plogp[i - 1] + xlnx(last);
        let mut p_ln_q = 0.0;
        let mut start = 0;
        for g in 0..levels - 1 {
            let end = bound((g + 1) * i);
            let (s, e) = (start, end);
            start = end;
            let s_g = sum[e] - sum[s];
            // Not the last group: `n_g > 0` exactly when `S_g > 0`.
            if s_g > 0.0 {
                let slot = &mut memo[((e - s) % 3) * used + s];
                if slot.is_nan() {
                    let n_g = nonzero[e] - nonzero[s];
                    *slot = s_g * (s_g / n_g as f64).ln();
                }
                p_ln_q += *slot;
            }
        }
        // Q's mass before the last group: the groups' sums, integers held
        // exactly in f64, so this equals adding them one by one.
        let mut qsum = sum[start];
        let mut infinite = false;
        // The last group: bins with P > 0, the last counted by P (outliers
        // added).
        let s_g = sum[i] - sum[start];
        let n_g = nonzero[i - 1] - nonzero[start] + usize::from(last > 0.0);
        if start < i && n_g > 0 {
            let p_g = s_g + outliers;
            if s_g > 0.0 {
                p_ln_q += p_g * (s_g / n_g as f64).ln();
                qsum += s_g;
            } else {
                // Only the outliers in the last bin: smoothed Q.
                p_ln_q += p_g * KL_SMOOTHING.ln();
                qsum += KL_SMOOTHING * n_g as f64;
            }
            if !p_ln_q.is_finite() {
                infinite = true;
            }
        }
        // Nothing kept (all mass clipped): reject the candidate.
        if sum[i] <= 0.0 || infinite || psum <= 0.0 {
            continue;
        }
        let kl = (p_ln_p - p_ln_q) / psum - psum.ln() + qsum.ln();
        if best.is_none_or(|(b, _)| kl < b) {
            best = Some((kl, i));
        }
    }
    best.map(|(_, i)| i)
}

/// The KL search written out bin by bin as [`RangeMethod::Entropy`]
/// describes it; the reference for [`kl_threshold`] in tests.
#[cfg(test)]
fn kl_threshold_direct(hist: &[u64], levels: usize) -> Option<usize> {
    let used = hist.iter().rposition(|&c| c > 0)? + 1;
    if used <= levels {
        return None;
    }
    let all: u64 = hist[..used].iter().fold(0u64, |a, &b| a.saturating_add(b));
    let mut kept: u64 = hist[..levels]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b));
    let mut p = vec![0f64; used];
    let mut q = vec![0f64; used];
    let mut best: Option<(f64, usize)> = None;
    for i in levels..=used {
        let outliers = all.saturating_sub(kept);
        for (pj, &c) in p[..i].iter_mut().zip(&hist[..i]) {
            *pj = c as f64;
        }
        p[i - 1] += outliers as f64;
        for g in 0..levels {
            let (start, end) = (g * i / levels, (g + 1) * i / levels);
            let sum: f64 = hist[start..end].iter().map(|&c| c as f64).sum();
            let nonzero = p[start..end].iter().filter(|&&v| v > 0.0).count();
            for (qj, &pj) in q[start..end].iter_mut().zip(&p[start..end]) {
                *qj = if pj > 0.0 { sum / nonzero as f64 } else { 0.0 };
            }
        }
        let kl = kl_divergence(&p[..i], &q[..i]);
        if best.is_none_or(|(b, _)| kl < b) {
            best = Some((kl, i));
        }
        if i < used {
            kept = kept.saturating_add(hist[i]);
        }
    }
    best.map(|(_, i)| i)
}

/// `KL(P || Q)` of two unnormalized count vectors; bins with `P > 0 = Q`
/// get [`KL_SMOOTHING`] counts in `Q`. Infinite if `Q` is empty (every
/// value would be clipped).
#[cfg(test)]
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let psum: f64 = p.iter().sum();
    // Nothing kept (all mass clipped): Q is undefined, reject the candidate.
    if q.iter().sum::<f64>() <= 0.0 {
        return f64::INFINITY;
    }
    let smoothed = |pj: f64, qj: f64| {
        if pj > 0.0 && qj <= 0.0 {
            KL_SMOOTHING
        } else {
            qj
        }
    };
    let qsum: f64 = p.iter().zip(q).map(|(&pj, &qj)| smoothed(pj, qj)).sum();
    if psum <= 0.0 || qsum <= 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(q)
        .filter(|(&pj, _)| pj > 0.0)
        .map(|(&pj, &qj)| {
            let (pn, qn) = (pj / psum, smoothed(pj, qj) / qsum);
            pn * (pn / qn).ln()
        })
        .sum()
}

/// Prefix sums of the count, first and second moment of bins (values
/// uniform inside a bin of width `w`, centres at `origin + (j + 1/2) w`):
/// entry `j` sums bins `0..j`.
struct Moments {
    m0: Vec<f64>,
    m1: Vec<f64>,
    m2: Vec<f64>,
}

impl Moments {
    /// Prefix moments of `bins`, accumulated in the given order.
    fn new(bins: impl Iterator<Item = (f64, u64)>, w: f64) -> Self {
        let (mut m0, mut m1, mut m2) = (vec![0.0], vec![0.0], vec![0.0]);
        let (mut a0, mut a1, mut a2) = (0.0, 0.0, 0.0);
        for (centre, c) in bins {
            let c = c as f64;
            a0 += c;
            a1 += c * centre;
            a2 += c * (centre * centre + w * w / 12.0);
            m0.push(a0);
            m1.push(a1);
            m2.push(a2);
        }
        Moments { m0, m1, m2 }
    }

    /// `sum c E[(x - e)^2]` over the first `k` bins.
    fn sq_err(&self, k: usize, e: f64) -> f64 {
        (self.m2[k] - 2.0 * e * self.m1[k] + e * e * self.m0[k]).max(0.0)
    }
}

fn mse_range(stats: &TensorStats, h: &HistogramData, target: IntFormat) -> (f32, f32) {
    let steps = f64::from(target.steps());
    let round_err = |range: f64| {
        let step = range / steps;
        step * step / 12.0
    };
    if target.symmetric() {
        let fold = fold_abs(h);
        let w = h.bin_width();
        let Some(used) = fold.iter().rposition(|&c| c > 0).map(|u| u + 1) else {
            return (0.0, 0.0);
        };
        // Suffix moments: entry k covers bins used-k..used (from the top).
        let tail = Moments::new((0..used).rev().map(|j| ((j as f64 + 0.5) * w, fold[j])), w);
        let n = tail.m0[used];
        let mut best = (f64::INFINITY, used);
        for k in 1..=used {
            let t = k as f64 * w;
            let beyond = used - k;
            let inside = n - tail.m0[beyond];
            let cost = inside * round_err(2.0 * t) + tail.sq_err(beyond, t);
            if cost < best.0 {
                best = (cost, k);
            }
        }
        clip_symmetric(stats, best.1 as f64 * w)
    } else {
        let (bins, factor) = coarsen(&h.bins, MSE_MAX_BINS);
        let w = h.bin_width() * factor as f64;
        let origin = -h.range();
        let len = bins.len();
        let half = len / 2;
        let edge = |j: usize| origin + j as f64 * w;
        let (Some(first), Some(last)) = (
            bins.iter().position(|&c| c > 0),
            bins.iter().rposition(|&c| c > 0),
        ) else {
            return (0.0, 0.0);
        };
        let (a_min, b_max) = (first.min(half), (last + 1).max(half));
        let centre = |j: usize| origin + (j as f64 + 0.5) * w;
        // Prefix moments from the left (bins below lo) and from the right
        // (bins above hi), each accumulated from its own end for accuracy.
        let below = Moments::new((0..len).map(|j| (centre(j), bins[j])), w);
        let above = Moments::new((0..len).rev().map(|j| (centre(j), bins[j])), w);
        let mut count = vec![0u64; len + 1];
        for j in 0..len {
            count[j + 1] = count[j].saturating_add(bins[j]);
        }
        // Everything that depends on `b` alone, once per `b`: its edge, the
        // clipping cost above it and the count below it (exact in f64).
        // Rounding error `(range / steps)^2 / 12` as `range^2` times this.
        let per_range_sq = 1.0 / (12.0 * steps * steps);
        let his: Vec<f64> = (half..=b_max).map(edge).collect();
        let clip_his: Vec<f64> = (half..=b_max)
            .map(|b| above.sq_err(len - b, edge(b)))
            .collect();
        let below_b: Vec<f64> = (half..=b_max).map(|b| count[b] as f64).collect();
        let mut best = (f64::INFINITY, half, half);
        for a in a_min..=half {
            let lo = edge(a);
            let clip_lo = below.sq_err(a, lo);
            let below_a = count[a] as f64;
            // `b > a`: an empty range (a = b = half) is no candidate.
            let skip = usize::from(a == half);
            for (k, ((&hi, &clip_hi), &below_hi)) in his
                .iter()
                .zip(&clip_his)
                .zip(&below_b)
                .enumerate()
                .skip(skip)
            {
                let inside = (below_hi - below_a).max(0.0);
                let d = hi - lo;
                let cost = inside * (d * d * per_range_sq) + clip_lo + clip_hi;
                if cost < best.0 {
                    best = (cost, a, half + k);
                }
            }
        }
        clip_to_data(stats, edge(best.1), edge(best.2))
    }
}

/// [`RangeMethod::Mse`] for a float format: symmetric threshold search on
/// the coarsened `|x|` histogram; a value at bin centre `x` inside `[0, T]`
/// costs `(s * spacing(x / s))^2 / 12` with `s = T / max_finite`, one
/// beyond it `E[(x - T)^2]`.
fn mse_range_float(stats: &TensorStats, h: &HistogramData, kind: FloatKind) -> (f32, f32) {
    let (fold, factor) = coarsen(&fold_abs(h), MSE_FLOAT_MAX_BINS);
    let w = h.bin_width() * factor as f64;
    let Some(used) = fold.iter().rposition(|&c| c > 0).map(|u| u + 1) else {
        return (0.0, 0.0);
    };
    let spec = kind.spec();
    let max = kind.max_finite();
    let tail = Moments::new((0..used).rev().map(|j| ((j as f64 + 0.5) * w, fold[j])), w);
    let mut best = (f64::INFINITY, used);
    for k in 1..=used {
        let t = k as f64 * w;
        let s = t / max;
        let mut inside = 0.0;
        for (j, &c) in fold[..k].iter().enumerate() {
            if c > 0 {
                let step = spec.spacing((j as f64 + 0.5) * w / s) * s;
                inside += c as f64 * step * step / 12.0;
            }
        }
        let cost = inside + tail.sq_err(used - k, t);
        if cost < best.0 {
            best = (cost, k);
        }
    }
    clip_symmetric(stats, best.1 as f64 * w)
}

#[cfg(test)]
mod tests;
