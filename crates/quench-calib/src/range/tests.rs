//! Closed-form checks of every range method on synthetic distributions.
//!
//! Sample sizes are 10^6 so that empirical quantiles are within a few
//! hundredths of their theoretical values; tolerances below are stated
//! next to each check.

use super::*;
use crate::testutil::{
    argmin, gaussian_mse, laplace_mse, normal_abs_quantile, normal_two_sided_tail, Lcg, TestResult,
};
use crate::{Histogram, MinMax, Observer};

const N: usize = 1_000_000;

fn hist_stats(data: &[f32]) -> TensorStats {
    let mut h = Histogram::new();
    h.observe(data);
    h.stats()
}

fn uniform(a: f64, seed: u64) -> Vec<f32> {
    let mut rng = Lcg::new(seed);
    (0..N)
        .map(|_| ((2.0 * rng.uniform() - 1.0) * a) as f32)
        .collect()
}

fn gaussian(seed: u64) -> Vec<f32> {
    let mut rng = Lcg::new(seed);
    (0..N).map(|_| rng.normal() as f32).collect()
}

fn laplace(seed: u64) -> Vec<f32> {
    let mut rng = Lcg::new(seed);
    (0..N).map(|_| rng.laplace(1.0) as f32).collect()
}

/// N(0, 1) where every `every`-th sample is replaced by +100 or -100 in turn.
fn mixture(every: usize, seed: u64) -> Vec<f32> {
    let mut data = gaussian(seed);
    for (k, x) in data.iter_mut().step_by(every).enumerate() {
        *x = if k % 2 == 0 { 100.0 } else { -100.0 };
    }
    data
}

/// Symmetric threshold of a range.
fn thr((lo, hi): (f32, f32)) -> f64 {
    f64::from(lo.abs().max(hi.abs()))
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, expected {want} ± {tol}"
    );
}

const S8: QuantTarget = QuantTarget::I8_SYMMETRIC;
const U8: QuantTarget = QuantTarget::U8;

#[test]
fn uniform_distribution() -> TestResult {
    let a = 3.0;
    let s = hist_stats(&uniform(a, 1));
    // R = 4, w = 1/256.
    let w = 1.0 / 256.0;
    let (lo, hi) = choose_range(&s, RangeMethod::MinMax, S8)?;
    close(f64::from(lo), -a, 1e-4, "minmax lo");
    close(f64::from(hi), a, 1e-4, "minmax hi");
    // |x| is U(0, a): the 99th percentile is 0.99 a (sampling sd ~ 3e-4).
    close(
        thr(choose_range(&s, RangeMethod::Percentile(99.0), S8)?),
        0.99 * a,
        0.005,
        "percentile 99 |x|",
    );
    // Asymmetric: 0.5% cut from each tail.
    let (lo, hi) = choose_range(&s, RangeMethod::Percentile(99.0), U8)?;
    close(f64::from(lo), -0.99 * a, 0.005, "percentile 99 lo");
    close(f64::from(hi), 0.99 * a, 0.005, "percentile 99 hi");
    // MSE: J(T) = (T/a) (2T/255)^2/12 + (a - T)^3 / (3a); J'(T) = 0 at
    // a - T = T/255, i.e. T = 255 a / 256. Within two bins.
    let t_mse = 255.0 * a / 256.0;
    close(
        thr(choose_range(&s, RangeMethod::Mse, S8)?),
        t_mse,
        2.0 * w,
        "mse s8",
    );
    // Asymmetric u8 on symmetric data: same step count over [lo, hi], same optimum per side.
    let (lo, hi) = choose_range(&s, RangeMethod::Mse, U8)?;
    close(f64::from(lo), -t_mse, 2.0 * w, "mse u8 lo");
    close(f64::from(hi), t_mse, 2.0 * w, "mse u8 hi");
    // Entropy: clipping a flat density piles mass into the last bin, so the
    // search keeps (almost) the whole range.
    let t = thr(choose_range(&s, RangeMethod::Entropy, S8)?);
    assert!(t > 0.95 * a && t <= a, "entropy uniform {t}");
    Ok(())
}

#[test]
fn gaussian_distribution() -> TestResult {
    let s = hist_stats(&gaussian(2));
    let max_abs = f64::from(s.max_abs());
    assert!(
        (4.4..5.6).contains(&max_abs),
        "max |x| of 1e6 normals: {max_abs}"
    );
    assert_eq!(choose_range(&s, RangeMethod::MinMax, S8)?, (s.min, s.max));

    // P(|Z| > t) = 1e-4 at t = 3.8906; the sampling sd of the empirical
    // quantile is sqrt(1e-4 / 1e6) / (2 phi(t)) ~ 0.054, tolerance 3 sd.
    let want = normal_abs_quantile(1e-4);
    close(want, 3.8906, 1e-3, "reference quantile");
    close(
        thr(choose_range(&s, RangeMethod::Percentile(99.99), S8)?),
        want,
        0.16,
        "percentile 99.99",
    );
    // 99%: t = 2.5758, sd ~ 0.007.
    close(
        thr(choose_range(&s, RangeMethod::Percentile(99.0), S8)?),
        2.5758,
        0.03,
        "percentile 99",
    );

    // MSE optimum of N(0,1) from theory (see `gaussian_mse`): 3.92 for 8
    // bits (ACIQ's ~4 sigma), 2.51 for 4 bits. The cost is flat near the
    // optimum and the tail beyond 3.9 holds ~100 samples; across seeds the
    // empirical optimum stays within 0.05 of theory, allow 0.15 / 0.1.
    let t8 = argmin(|t| gaussian_mse(t, 255.0), 8.0, 8000);
    close(t8, 3.922, 0.002, "theoretical 8-bit optimum");
    let got8 = thr(choose_range(&s, RangeMethod::Mse, S8)?);
    close(got8, t8, 0.15, "mse 8 bit");
    let s4 = QuantTarget::new(4, true, true)?;
    let t4 = argmin(|t| gaussian_mse(t, 15.0), 8.0, 8000);
    close(t4, 2.514, 0.002, "theoretical 4-bit optimum");
    close(
        thr(choose_range(&s, RangeMethod::Mse, s4)?),
        t4,
        0.1,
        "mse 4 bit",
    );
    // The histogram estimate of the cost at the chosen threshold is close
    // to the theoretical minimum: the choice is near-optimal, not just near.
    assert!(gaussian_mse(got8, 255.0) < 1.05 * gaussian_mse(t8, 255.0));

    // Entropy clips the Gaussian somewhere in its tail: below the maximum,
    // above the bulk.
    let te = thr(choose_range(&s, RangeMethod::Entropy, S8)?);
    assert!(te > 2.5 && te < max_abs, "entropy gaussian {te}");
    // 16 bits: 32768 levels exceed the 4096 |x| bins, entropy keeps min/max;
    // MSE never clips (the theoretical optimum is far beyond the data).
    let s16 = QuantTarget::I16_SYMMETRIC;
    assert_eq!(choose_range(&s, RangeMethod::Entropy, s16)?, (s.min, s.max));
    assert!(argmin(|t| gaussian_mse(t, 65535.0), 10.0, 10000) > max_abs);
    // Candidates are bin edges: the top one may fall short of the single
    // largest value by less than a bin.
    let w = s.histogram.as_ref().map_or(0.0, |h| h.bin_width());
    close(
        thr(choose_range(&s, RangeMethod::Mse, s16)?),
        max_abs,
        w,
        "mse 16 bit",
    );
    Ok(())
}

#[test]
fn laplace_distribution() -> TestResult {
    let s = hist_stats(&laplace(3));
    let max_abs = f64::from(s.max_abs());
    // max of 1e6 Exp(1) is ~ ln(1e6) + 0.58 = 14.4.
    assert!((11.0..20.0).contains(&max_abs), "{max_abs}");
    // Theory: 9.89 for 8 bits. Only ~50 samples lie beyond it, so the
    // empirical optimum wanders more than for the Gaussian (within 0.2
    // across seeds): tolerance 0.5.
    let t8 = argmin(|t| laplace_mse(t, 255.0, 1.0), 20.0, 20000);
    close(t8, 9.89, 0.01, "theoretical laplace optimum");
    let got = thr(choose_range(&s, RangeMethod::Mse, S8)?);
    close(got, t8, 0.5, "mse laplace");
    assert!(got < 0.8 * max_abs, "mse {got} vs max {max_abs}");
    let te = thr(choose_range(&s, RangeMethod::Entropy, S8)?);
    assert!(
        te > 3.0 && te < 0.8 * max_abs,
        "entropy {te} vs max {max_abs}"
    );
    // Percentile of |x| ~ Exp(1): 99.99% at ln(1e4) = 9.21 (sd ~ 0.1).
    close(
        thr(choose_range(&s, RangeMethod::Percentile(99.99), S8)?),
        1e4f64.ln(),
        0.35,
        "percentile",
    );
    Ok(())
}

#[test]
fn heavy_tailed_mixture() -> TestResult {
    // 99.9% N(0,1) + 0.1% at ±100.
    let p_out = 1e-3;
    let s = hist_stats(&mixture(1000, 4));
    assert_eq!(choose_range(&s, RangeMethod::MinMax, S8)?, (-100.0, 100.0));
    let entropy = choose_range(&s, RangeMethod::Entropy, S8)?;
    assert!(
        thr(entropy) < 20.0 && thr(entropy) > 3.0,
        "entropy {entropy:?}"
    );
    assert_ne!(entropy, (-100.0, 100.0));
    // Percentile 99 of |x|: 0.999 P(|Z| > t) + 0.001 = 0.01.
    let want = normal_abs_quantile(0.009 / 0.999);
    close(
        thr(choose_range(&s, RangeMethod::Percentile(99.0), S8)?),
        want,
        0.03,
        "percentile 99",
    );
    // Percentile 99.99 lies inside the outlier mass: it keeps them.
    assert_eq!(
        thr(choose_range(&s, RangeMethod::Percentile(99.99), S8)?),
        100.0
    );

    // MSE keeps these outliers, and rightly so: clipping 0.1% of the mass by
    // ~95 costs 1e-3 * 95^2 ~ 9 per value, far more than the rounding error
    // at T = 100 ((200/255)^2/12 ~ 0.05). Theory puts the optimum at 99.5.
    let mixture_mse = |t: f64, p: f64| {
        let step = 2.0 * t / 255.0;
        let inside =
            (1.0 - p) * (1.0 - normal_two_sided_tail(t)) + if t >= 100.0 { p } else { 0.0 };
        let gauss_clip =
            gaussian_mse(t, 255.0) - (1.0 - normal_two_sided_tail(t)) * step * step / 12.0;
        inside * step * step / 12.0 + (1.0 - p) * gauss_clip + p * (100.0 - t).max(0.0).powi(2)
    };
    let t_theory = argmin(|t| mixture_mse(t, p_out), 110.0, 110_000);
    close(t_theory, 99.49, 0.01, "theoretical mixture optimum");
    close(
        thr(choose_range(&s, RangeMethod::Mse, S8)?),
        t_theory,
        0.3,
        "mse keeps 0.1% outliers",
    );

    // With one outlier per 10^6 values MSE does clip it: theory 16.3.
    let sparse = hist_stats(&mixture(N, 5));
    assert_eq!(sparse.max, 100.0);
    let t_sparse = argmin(|t| mixture_mse(t, 1e-6), 110.0, 110_000);
    close(t_sparse, 16.3, 0.05, "theoretical sparse optimum");
    // The histogram bins are 1/8 wide here (R = 128), hence the tolerance.
    close(
        thr(choose_range(&sparse, RangeMethod::Mse, S8)?),
        t_sparse,
        0.5,
        "mse clips a single outlier",
    );
    Ok(())
}

#[test]
fn one_sided_data_keeps_zero_lower_bound() -> TestResult {
    // ReLU(N(0,1)): half the values are exactly 0.
    let data: Vec<f32> = gaussian(6).into_iter().map(|x| x.max(0.0)).collect();
    let s = hist_stats(&data);
    for method in [
        RangeMethod::MinMax,
        RangeMethod::Percentile(99.9),
        RangeMethod::Entropy,
        RangeMethod::Mse,
    ] {
        let (lo, hi) = choose_range(&s, method, U8)?;
        // Percentile interpolates inside the bin [0, w) that holds the zeros.
        assert!((0.0..1e-3).contains(&lo), "{method:?}: {lo}");
        assert!(hi > 2.0 && hi <= s.max, "{method:?}: {hi}");
        let p = calibrate(&s, method, U8)?;
        assert_eq!(p.zero_point, 0, "{method:?}");
    }
    // Asymmetric percentile on one-sided data: the lower 0.05% tail is all
    // zeros; the upper cut is the 99.95% point of the mixture = the 99.9%
    // point of |Z| = 3.29.
    close(
        f64::from(choose_range(&s, RangeMethod::Percentile(99.9), U8)?.1),
        normal_abs_quantile(1e-3),
        0.05,
        "relu percentile",
    );
    // u8 MSE on one-sided data uses all 255 steps over [0, T]: it clips
    // further out than s8 symmetric, which has only half the codes for x > 0.
    let u8_mse = choose_range(&s, RangeMethod::Mse, U8)?.1;
    let s8_mse = choose_range(&s, RangeMethod::Mse, S8)?.1;
    assert!(u8_mse > s8_mse, "u8 {u8_mse} vs s8 {s8_mse}");
    Ok(())
}

#[test]
fn degenerate_statistics() -> TestResult {
    // No finite value at all: (0, 0) and scale 1.
    let mut h = Histogram::new();
    h.observe(&[f32::NAN, f32::INFINITY]);
    let s = h.stats();
    assert!(s.has_nonfinite());
    for method in [
        RangeMethod::MinMax,
        RangeMethod::Percentile(99.0),
        RangeMethod::Entropy,
        RangeMethod::Mse,
    ] {
        for target in [S8, U8] {
            assert_eq!(choose_range(&s, method, target)?, (0.0, 0.0));
            assert_eq!(calibrate(&s, method, target)?.scale, 1.0);
        }
    }
    // All zeros.
    let s = hist_stats(&[0.0; 100]);
    for method in [
        RangeMethod::MinMax,
        RangeMethod::Percentile(50.0),
        RangeMethod::Entropy,
        RangeMethod::Mse,
    ] {
        for target in [S8, U8] {
            assert_eq!(choose_range(&s, method, target)?, (0.0, 0.0));
        }
    }
    // A constant.
    let s = hist_stats(&[2.5; 100]);
    for method in [
        RangeMethod::MinMax,
        RangeMethod::Percentile(99.0),
        RangeMethod::Entropy,
        RangeMethod::Mse,
    ] {
        let (lo, hi) = choose_range(&s, method, U8)?;
        assert!(lo == 2.5 && hi == 2.5, "{method:?}");
        let p = calibrate(&s, method, U8)?;
        // Range extended to [0, 2.5]: 2.5 is represented exactly by qmax.
        assert_eq!((p.zero_point, p.quantize(2.5, U8)), (0, 255));
    }
    Ok(())
}

#[test]
fn huge_magnitudes_stay_finite() -> TestResult {
    // An attention mask: N(0,1) scores with -3.4e38 fills, plus NaN.
    let mut data = gaussian(7);
    data.truncate(10_000);
    for x in data.iter_mut().step_by(3) {
        *x = -3.4e38;
    }
    data.push(f32::NAN);
    let s = hist_stats(&data);
    assert_eq!(s.nonfinite.nan, 1);
    assert_eq!(s.max_abs(), 3.4e38);
    for method in [
        RangeMethod::MinMax,
        RangeMethod::Percentile(99.0),
        RangeMethod::Entropy,
        RangeMethod::Mse,
    ] {
        for target in [
            S8,
            U8,
            QuantTarget::I16_SYMMETRIC,
            QuantTarget::new(4, false, false)?,
        ] {
            let (lo, hi) = choose_range(&s, method, target)?;
            assert!(
                lo.is_finite() && hi.is_finite() && lo <= hi,
                "{method:?} {target:?}"
            );
            let p = calibrate(&s, method, target)?;
            assert!(
                p.scale.is_finite() && p.scale > 0.0,
                "{method:?} {target:?} {p:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn errors() -> TestResult {
    let s = hist_stats(&[1.0, -1.0]);
    for p in [0.0, -1.0, 100.5, f64::NAN] {
        assert!(matches!(
            choose_range(&s, RangeMethod::Percentile(p), S8),
            Err(CalibError::InvalidPercentile(_))
        ));
    }
    let mut mm = MinMax::new();
    mm.observe(&[1.0, -1.0]);
    let plain = mm.stats();
    assert_eq!(choose_range(&plain, RangeMethod::MinMax, S8)?, (-1.0, 1.0));
    for method in [
        RangeMethod::Percentile(99.0),
        RangeMethod::Entropy,
        RangeMethod::Mse,
    ] {
        assert!(matches!(
            choose_range(&plain, method, S8),
            Err(CalibError::MissingHistogram(_))
        ));
    }
    let broken = TensorStats { count: 3, ..s };
    assert!(matches!(
        choose_range(&broken, RangeMethod::Mse, S8),
        Err(CalibError::InvalidStats(_))
    ));
    Ok(())
}

#[test]
fn coarsened_search_on_fine_histograms() -> TestResult {
    // 65536 bins exceed ENTROPY_MAX_BINS and MSE_MAX_BINS: the searches run
    // on an exactly coarsened copy and agree with the default histogram.
    let data = gaussian(8);
    let mut fine = Histogram::with_bins(1 << 16)?;
    fine.observe(&data);
    let fine = fine.stats();
    let coarse = hist_stats(&data);
    let te = thr(choose_range(&fine, RangeMethod::Entropy, S8)?);
    assert!(te > 2.5 && te < f64::from(fine.max_abs()), "{te}");
    let (lo, hi) = choose_range(&fine, RangeMethod::Mse, U8)?;
    let (clo, chi) = choose_range(&coarse, RangeMethod::Mse, U8)?;
    close(
        f64::from(lo),
        f64::from(clo),
        0.05,
        "fine vs default mse lo",
    );
    close(
        f64::from(hi),
        f64::from(chi),
        0.05,
        "fine vs default mse hi",
    );
    Ok(())
}

#[test]
fn range_method_serde() -> TestResult {
    let methods = [
        RangeMethod::MinMax,
        RangeMethod::Percentile(99.99),
        RangeMethod::Entropy,
        RangeMethod::Mse,
    ];
    let json = serde_json::to_string(&methods)?;
    assert_eq!(json, r#"["min_max",{"percentile":99.99},"entropy","mse"]"#);
    let back: Vec<RangeMethod> = serde_json::from_str(&json)?;
    assert_eq!(back, methods);
    Ok(())
}

#[test]
fn kl_search_unit() {
    // Too few used bins: nothing to clip.
    assert_eq!(kl_threshold(&[5, 5, 5, 0, 0], 4), None);
    assert_eq!(kl_threshold(&[0; 8], 2), None);
    // A bulk plus one far outlier: the outlier is clipped.
    let mut hist = vec![0u64; 1024];
    for (j, c) in hist.iter_mut().take(64).enumerate() {
        *c = 1000 - 10 * j as u64;
    }
    hist[1000] = 1;
    let i = kl_threshold(&hist, 16);
    assert!(i.is_some_and(|i| (16..=200).contains(&i)), "{i:?}");
}

/// The prefix-sum search picks the same threshold as the bin-by-bin one
/// on varied histograms (spikes, gaps, heavy tails, one clipped outlier).
#[test]
fn fast_kl_search_matches_the_direct_one() {
    let mut rng = Lcg::new(77);
    for case in 0..60 {
        let len = 200 + (rng.uniform() * 1800.0) as usize;
        let levels = [8, 12, 16, 128, 256][case % 5];
        let mut hist: Vec<u64> = (0..len)
            .map(|j| {
                let decay = (-(j as f64) / (20.0 + 400.0 * rng.uniform())).exp();
                let gap = rng.uniform() < 0.2 * (case % 4) as f64;
                if gap {
                    0
                } else {
                    (decay * 1e5 * rng.uniform()) as u64
                }
            })
            .collect();
        if case % 5 == 0 {
            hist[0] = 10_000_000; // a spike at zero
        }
        if case % 7 == 0 {
            let last = hist.len() - 1;
            hist[last] = 1; // one far outlier after a gap
            for c in hist.iter_mut().rev().skip(1).take(len / 3) {
                *c = 0;
            }
        }
        assert_eq!(
            kl_threshold(&hist, levels),
            kl_threshold_direct(&hist, levels),
            "case {case}: len {len}, levels {levels}"
        );
    }
}

#[test]
fn expected_error_of_a_uniform_distribution_is_the_rounding_error() -> TestResult {
    let a = 3.0;
    let s = hist_stats(&uniform(a, 21));
    let range = choose_range(&s, RangeMethod::MinMax, U8)?;
    let step = 2.0 * a / 255.0;
    let e = expected_sq_error(&s, range, U8).ok_or("no error estimate")?;
    close(
        e,
        step * step / 12.0,
        0.02 * step * step / 12.0,
        "uniform rounding error",
    );
    // Clipping at a/2 adds E[(|x| - a/2)^2; |x| > a/2] = (a/2)^2 / 6.
    let clipped =
        expected_sq_error(&s, (-a as f32 / 2.0, a as f32 / 2.0), U8).ok_or("no error estimate")?;
    close(
        clipped,
        (a / 2.0).powi(2) / 6.0,
        0.01,
        "uniform clipping error",
    );
    Ok(())
}

/// A dense mode near 0 with a long tail (swish-like): the KL threshold cuts
/// deep into the tail at many times the MSE-optimal error, and the guard
/// replaces it; on a Gaussian the entropy range is kept.
#[test]
fn entropy_guard_replaces_over_clipped_ranges_only() -> TestResult {
    let mut rng = Lcg::new(33);
    let data: Vec<f32> = (0..N)
        .map(|i| {
            if i % 20 == 0 {
                (-(1.0 - rng.uniform()).ln() * 0.7) as f32
            } else {
                (rng.normal() * 0.05) as f32
            }
        })
        .collect();
    let s = hist_stats(&data);
    let entropy = choose_range(&s, RangeMethod::Entropy, U8)?;
    let mse = choose_range(&s, RangeMethod::Mse, U8)?;
    let (e, m) = (
        expected_sq_error(&s, entropy, U8).ok_or("no estimate")?,
        expected_sq_error(&s, mse, U8).ok_or("no estimate")?,
    );
    assert!(
        e > ENTROPY_GUARD_RATIO * m,
        "entropy {entropy:?} {e}, mse {mse:?} {m}"
    );
    let (guarded, replaced) = entropy_range_guarded(&s, U8, ENTROPY_GUARD_RATIO)?;
    assert!(replaced);
    assert_eq!(guarded, mse);
    assert_eq!(entropy_range_guarded(&s, U8, 0.0)?, (entropy, false));

    let g = hist_stats(&gaussian(34));
    let (kept, replaced) = entropy_range_guarded(&g, S8, ENTROPY_GUARD_RATIO)?;
    assert!(!replaced);
    assert_eq!(kept, choose_range(&g, RangeMethod::Entropy, S8)?);
    Ok(())
}

/// The float-format MSE search on N(0, 1) and on a Laplace distribution:
/// its threshold's expected squared error (computed independently by
/// [`expected_sq_error_for`]) is within 1% of the best of 400 thresholds
/// scanned over `(0, max|x|]`, and clearly better than min/max. Entropy
/// refuses float formats with a clear error.
#[test]
fn mse_for_float_formats() -> TestResult {
    for (data, name) in [(gaussian(21), "gaussian"), (laplace(22), "laplace")] {
        let s = hist_stats(&data);
        let max_abs = f64::from(s.max_abs());
        for f in [QuantFormat::F8E4M3FN, QuantFormat::F8E5M2] {
            let (lo, hi) = choose_range_for(&s, RangeMethod::Mse, &f)?;
            assert!(lo >= s.min && hi <= s.max && lo < 0.0 && hi > 0.0);
            let cost = |t: f64| {
                expected_sq_error_for(&s, (-t as f32, t as f32), &f).unwrap_or(f64::INFINITY)
            };
            let got = cost(thr((lo, hi)));
            let best = (1..=400)
                .map(|i| cost(max_abs * i as f64 / 400.0))
                .fold(f64::INFINITY, f64::min);
            assert!(
                got <= best * 1.01,
                "{name} {f:?}: threshold {} costs {got:e}, scan best {best:e}",
                thr((lo, hi))
            );
            assert!(got < cost(max_abs), "{name} {f:?}: no better than min/max");
        }
        // E4M3 has 3 mantissa bits: relative rounding error about 2^-4 / sqrt(3)
        // of each value, so the optimum clips the far tail but keeps the bulk.
        let t = thr(choose_range_for(
            &s,
            RangeMethod::Mse,
            &QuantFormat::F8E4M3FN,
        )?);
        assert!(t > 2.0 && t <= max_abs, "{name}: {t}");
        assert!(matches!(
            choose_range_for(&s, RangeMethod::Entropy, &QuantFormat::F8E4M3FN),
            Err(CalibError::UnsupportedForFormat {
                method: "entropy",
                ..
            })
        ));
        // Percentile and min/max are format-independent for symmetric formats.
        assert_eq!(
            choose_range_for(&s, RangeMethod::Percentile(99.9), &QuantFormat::F8E5M2)?,
            choose_range(&s, RangeMethod::Percentile(99.9), S8)?
        );
    }
    Ok(())
}

/// Integer formats go through the same code as [`QuantTarget`]s: narrow
/// int8 (weights) searches with `2 * 127` steps, which is what its scale
/// `amax / 127` means.
#[test]
fn integer_formats_search_like_targets() -> TestResult {
    let s = hist_stats(&laplace(23));
    for t in [S8, U8, QuantTarget::new(4, true, true)?] {
        for m in [
            RangeMethod::Mse,
            RangeMethod::Entropy,
            RangeMethod::Percentile(99.9),
        ] {
            assert_eq!(
                choose_range_for(&s, m, &QuantFormat::from(t))?,
                choose_range(&s, m, t)?
            );
        }
    }
    let narrow = thr(choose_range_for(
        &s,
        RangeMethod::Mse,
        &QuantFormat::I8_WEIGHT,
    )?);
    let full = thr(choose_range(&s, RangeMethod::Mse, S8)?);
    // 254 vs 255 steps: the optimum moves by well under 1%.
    close(narrow, full, full * 0.01, "narrow int8 mse");
    Ok(())
}

/// `expected_sq_error` on a coarse histogram summed by hand: 256 bins of
/// width w = 1/64 over [-2, 2); 100 values in the bin centred at
/// 0.3046875, 10 in the last bin (centre 1.9921875), 5 in the bin centred
/// at -1.4921875. A value inside the representable range costs
/// `scale^2 / 12`; beyond an end, the squared distance of its bin centre to
/// that end plus `w^2 / 12` (uniform within the bin).
#[test]
fn expected_error_sums_rounding_and_clipping_by_hand() -> TestResult {
    let mut data = vec![0.3f32; 100];
    data.extend([1.99f32; 10]);
    data.extend([-1.5f32; 5]);
    let mut h = Histogram::with_bins(256)?;
    h.observe(&data);
    let s = h.stats();
    let w = 1.0 / 64.0;
    let (c_mid, c_top, c_neg) = (0.3046875f64, 1.9921875f64, -1.4921875f64);
    let hd = s.histogram.as_ref().ok_or("no histogram")?;
    assert_eq!((hd.range(), hd.bin_width()), (2.0, w));

    // [0, 255/128]: scale 1/128 exactly, zero point 0, so the ends are 0
    // and 255/128 = c_top. The top bin is inside (its centre is the end),
    // the negative bin is clipped at 0.
    let scale = 1.0 / 128.0;
    let want = (110.0 * scale * scale / 12.0 + 5.0 * (c_neg.powi(2) + w * w / 12.0)) / 115.0;
    let got = expected_sq_error(&s, (0.0, 255.0 / 128.0), U8).ok_or("no estimate")?;
    close(got, want, want * 1e-12, "u8 [0, 255/128]");

    // [-1, 1]: scale (2/255 in f32), zero point round(1 / scale) = 127,
    // ends -127 * scale and 128 * scale; the top and negative bins are
    // clipped.
    let scale = f64::from((2.0f64 / 255.0) as f32);
    let (lo, hi) = (-127.0 * scale, 128.0 * scale);
    let want = (100.0 * scale * scale / 12.0
        + 10.0 * ((c_top - hi).powi(2) + w * w / 12.0)
        + 5.0 * ((c_neg - lo).powi(2) + w * w / 12.0))
        / 115.0;
    let got = expected_sq_error(&s, (-1.0, 1.0), U8).ok_or("no estimate")?;
    close(got, want, want * 1e-9, "u8 [-1, 1]");
    let _ = c_mid;

    // E4M3 over [-1, 1]: scale 1 / 448, ends +-448 * scale = +-1; inside,
    // the squared spacing of E4M3 at the bin centre over 12.
    let f = QuantFormat::F8E4M3FN;
    let k = FloatKind::F8E4M3FN;
    let fs = f64::from(f.params(-1.0, 1.0)?.scale);
    assert!((fs - 1.0 / 448.0).abs() < 1e-9, "{fs}");
    let step = |x: f64| k.spec().spacing(x / fs) * fs;
    // 0.3046875 / scale = 136.5 lies in the binade [128, 256), where 3
    // mantissa bits space codes 16 apart: a step of 16 * scale.
    assert!((step(c_mid) - 16.0 * fs).abs() < 1e-12);
    let (lo, hi) = (-448.0 * fs, 448.0 * fs);
    let want = (100.0 * step(c_mid).powi(2) / 12.0
        + 10.0 * ((c_top - hi).powi(2) + w * w / 12.0)
        + 5.0 * ((c_neg - lo).powi(2) + w * w / 12.0))
        / 115.0;
    let got = expected_sq_error_for(&s, (-1.0, 1.0), &f).ok_or("no estimate")?;
    close(got, want, want * 1e-9, "e4m3 [-1, 1]");

    // Without a histogram or without values there is no estimate.
    let mut mm = MinMax::new();
    mm.observe(&data);
    assert_eq!(expected_sq_error(&mm.stats(), (-1.0, 1.0), U8), None);
    let empty = Histogram::with_bins(256)?.stats();
    assert_eq!(expected_sq_error(&empty, (-1.0, 1.0), U8), None);
    Ok(())
}

/// `coarsen` sums runs of a power of two of bins until at most `max_len`
/// (at least 2) remain, keeping the total.
#[test]
fn coarsen_sums_power_of_two_runs() {
    let bins: Vec<u64> = (1..=16).collect();
    assert_eq!(coarsen(&bins, 4), (vec![10, 26, 42, 58], 4));
    assert_eq!(coarsen(&bins, 5), (vec![10, 26, 42, 58], 4));
    assert_eq!(coarsen(&bins, 8), ((1..=8).map(|i| 4 * i - 1).collect(), 2));
    assert_eq!(coarsen(&bins, 16), (bins.clone(), 1));
    assert_eq!(coarsen(&bins, 0), (vec![36, 100], 8));
    let fine = vec![3u64; 1 << 16];
    let (c, f) = coarsen(&fine, ENTROPY_MAX_BINS);
    assert!(c.len() <= ENTROPY_MAX_BINS && c.len() * 2 > ENTROPY_MAX_BINS);
    assert_eq!((c.len() * f, c.iter().sum::<u64>()), (1 << 16, 3 << 16));
}

/// Negative-only data (-|Z|) mirrors the positive case (|Z|): the MSE
/// search may end its range at 0 from below, and the range is the
/// positive one negated, to a bin (w = 8 / 1024 here). (Exact zeros are
/// avoided: the histogram puts them in the bin above 0 on either side.)
#[test]
fn negative_only_data_mirrors_the_positive_range() -> TestResult {
    let pos: Vec<f32> = gaussian(6).into_iter().map(f32::abs).collect();
    let neg: Vec<f32> = pos.iter().map(|x| -x).collect();
    let (plo, phi) = choose_range(&hist_stats(&pos), RangeMethod::Mse, U8)?;
    let (nlo, nhi) = choose_range(&hist_stats(&neg), RangeMethod::Mse, U8)?;
    assert!((0.0..1e-3).contains(&plo) && phi > 2.0, "{plo} {phi}");
    assert!(nhi <= 0.0 && nhi > -1e-3, "{nlo} {nhi}");
    close(
        f64::from(nlo),
        -f64::from(phi),
        8.0 / 1024.0,
        "mirrored mse range",
    );
    Ok(())
}
