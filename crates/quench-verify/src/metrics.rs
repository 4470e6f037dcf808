//! How far a test output is from a reference output.
//!
//! An [`Accumulator`] takes pairs of arrays (reference, test) of one output,
//! sample after sample, and [`finish`](Accumulator::finish)es into
//! [`Metrics`]:
//!
//! - SQNR in dB: `10 log10(Σ ref² / Σ (ref - test)²)`, `+inf` when the
//!   arrays are identical;
//! - cosine similarity of the two arrays seen as one long vector (1 when
//!   both are all zeros, 0 when only one is);
//! - largest and mean absolute error;
//! - top-1 agreement for class-score-like outputs: when the last axis has
//!   2..=10000 entries, every row along it is a class-score vector and the
//!   argmax of reference and test rows are compared (the first maximum wins
//!   ties; a row with NaN never agrees);
//! - the worst sample: the lowest SQNR of one sample alone and which sample
//!   it is, when the updates say where samples begin
//!   ([`Accumulator::update_samples`]). The pooled SQNR can hide one sample
//!   that collapses among many fine ones; this names it.
//! - a 95% interval for the pooled SQNR and top-1 agreement over the
//!   samples (a seeded bootstrap, [`Interval`]), when the updates say where
//!   samples begin: how far the figures would move on another evaluation
//!   set of the same size and kind. A few samples give a wide interval,
//!   and a figure that differs from another by less than its width says
//!   little.
//!
//! Invariant: sums are accumulated in f64 over every element of every update,
//! so the result does not depend on how the samples were batched. Top-1 is
//! reported only if every update had a class-like last axis. NaN anywhere in
//! the data makes the error metrics NaN rather than hiding it.

use ndarray::{ArrayViewD, Axis};
use serde::{Deserialize, Serialize};

/// Smallest and largest number of classes for top-1 agreement.
pub const TOP1_CLASSES: std::ops::RangeInclusive<usize> = 2..=10000;

/// Errors feeding an [`Accumulator`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error("reference has shape {reference:?} but test has shape {test:?}")]
    ShapeMismatch {
        reference: Vec<usize>,
        test: Vec<usize>,
    },
}

/// Running sums for [`Metrics`].
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    elements: u64,
    sum_ref_sq: f64,
    sum_test_sq: f64,
    sum_dot: f64,
    sum_err_sq: f64,
    sum_abs_err: f64,
    max_abs_err: f64,
    top1_rows: u64,
    top1_agree: u64,
    /// Whether every update so far had a class-like last axis.
    top1_ok: bool,
    updates: u64,
    /// Lowest per-sample SQNR and its sample, over every update that said
    /// where its samples are; `samples` counts those samples.
    worst: Option<(usize, f64)>,
    samples: u64,
    /// Whether every update said where its samples are.
    samples_ok: bool,
    /// Each located sample's sums, in update order: what the interval
    /// resamples.
    parts: Vec<SampleParts>,
}

/// One sample's share of the pooled figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct SampleParts {
    ref_sq: f64,
    err_sq: f64,
    top1_agree: u64,
    top1_rows: u64,
}

impl SampleParts {
    fn of(reference: ArrayViewD<'_, f32>, test: ArrayViewD<'_, f32>, top1: bool) -> SampleParts {
        let (mut ref_sq, mut err_sq) = (0f64, 0f64);
        for (&r, &t) in reference.iter().zip(test.iter()) {
            let (r, t) = (f64::from(r), f64::from(t));
            ref_sq += r * r;
            err_sq += (r - t) * (r - t);
        }
        let (top1_agree, top1_rows) = if top1 {
            top1_counts(reference, test)
        } else {
            (0, 0)
        };
        SampleParts {
            ref_sq,
            err_sq,
            top1_agree,
            top1_rows,
        }
    }

    /// The sample's own SQNR; `None` when its reference is all zeros.
    fn sqnr_db(&self) -> Option<f64> {
        let (s, e) = (self.ref_sq, self.err_sq);
        if s == 0.0 {
            None
        } else if e == 0.0 && s.is_finite() {
            Some(f64::INFINITY)
        } else {
            Some(10.0 * (s / e).log10())
        }
    }
}

/// Resamples drawn for an [`Interval`].
pub const INTERVAL_RESAMPLES: usize = 1000;

/// Seed of the resampling: the same samples always give the same interval.
pub const INTERVAL_SEED: u64 = 20_261_129;

/// Fewest samples an [`Interval`] is given for.
pub const MIN_INTERVAL_SAMPLES: usize = 5;

/// A 95% interval for the pooled figures over the samples they came from.
///
/// - SQNR: the 2.5th and 97.5th percentiles of the pooled SQNR recomputed
///   on [`INTERVAL_RESAMPLES`] resamples of the samples drawn with
///   replacement (a percentile bootstrap, seeded with [`INTERVAL_SEED`]);
///   absent when an end is not finite (enough bit-identical samples that
///   some resamples have no error, or NaN/inf in the data). With few
///   samples a percentile bootstrap is too narrow: its coverage, measured
///   by simulation, is about 0.8 at 10 samples, 0.88 at 56 and 0.95 at 341.
/// - top-1 agreement: the wider of the same bootstrap and a Wilson score
///   interval that counts one trial per sample (exact rows for `[N, C]`
///   outputs; for `[N, T, C]` it treats each sample's positions as one
///   trial, which is conservative). A bootstrap alone cannot reach a value
///   it never saw: 20 of 20 agreeing would read 100% to 100%; Wilson gives
///   83.9% to 100%.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower and upper end of the pooled SQNR, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqnr_db: Option<[f64; 2]>,
    /// Lower and upper end of the top-1 agreement fraction, when top-1 is
    /// reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1: Option<[f64; 2]>,
    /// Samples resampled (all of them, including those whose reference is
    /// all zeros, which have no SQNR of their own).
    pub samples: u64,
}

impl Interval {
    /// The interval of `parts` (`None` for fewer than
    /// [`MIN_INTERVAL_SAMPLES`] samples, or when neither figure has one).
    fn bootstrap(parts: &[SampleParts], top1: bool) -> Option<Interval> {
        let n = parts.len();
        if n < MIN_INTERVAL_SAMPLES {
            return None;
        }
        let mut next = resampler();
        let mut sqnr = Vec::with_capacity(INTERVAL_RESAMPLES);
        let mut agree = Vec::with_capacity(INTERVAL_RESAMPLES);
        for _ in 0..INTERVAL_RESAMPLES {
            let mut p = SampleParts::default();
            for _ in 0..n {
                let q = parts[(next() % n as u64) as usize];
                p.ref_sq += q.ref_sq;
                p.err_sq += q.err_sq;
                p.top1_agree += q.top1_agree;
                p.top1_rows += q.top1_rows;
            }
            sqnr.push(pooled_sqnr(p.ref_sq, p.err_sq));
            if p.top1_rows > 0 {
                agree.push(p.top1_agree as f64 / p.top1_rows as f64);
            }
        }
        // NaN sorts last: a NaN end is not finite either.
        let sqnr_db = Some(ends(&mut sqnr)).filter(|e| e.iter().all(|v| v.is_finite()));
        let (agreed, rows) = parts.iter().fold((0u64, 0u64), |(a, r), p| {
            (a + p.top1_agree, r + p.top1_rows)
        });
        let top1 = (top1 && rows > 0 && agree.len() == INTERVAL_RESAMPLES).then(|| {
            let [blo, bhi] = ends(&mut agree);
            let [wlo, whi] = wilson(agreed as f64 / rows as f64, n as f64);
            [blo.min(wlo), bhi.max(whi)]
        });
        (sqnr_db.is_some() || top1.is_some()).then_some(Interval {
            sqnr_db,
            top1,
            samples: n as u64,
        })
    }
}

/// The generator every interval draws from: [`splitmix64`] from
/// [`INTERVAL_SEED`].
fn resampler() -> impl FnMut() -> u64 {
    splitmix64(INTERVAL_SEED)
}

/// splitmix64 from `seed`: quench's one seeded generator (deterministic,
/// no dependency; also the held-back split's shuffle).
pub fn splitmix64(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The 2.5th and 97.5th percentiles of `v` (sorted in place; not empty).
fn ends(v: &mut [f64]) -> [f64; 2] {
    v.sort_by(f64::total_cmp);
    let lo = (v.len() as f64 * 0.025).floor() as usize;
    let hi = ((v.len() as f64 * 0.975).ceil() as usize).clamp(1, v.len()) - 1;
    [v[lo.min(v.len() - 1)], v[hi]]
}

/// The normal quantile of a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Wilson's 95% score interval for a proportion `p` observed in `n`
/// trials (never of zero width: it does not stop at what was observed).
pub fn wilson(p: f64, n: f64) -> [f64; 2] {
    let z2 = Z95 * Z95;
    let d = 1.0 + z2 / n;
    let c = (p + z2 / (2.0 * n)) / d;
    let h = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).max(0.0).sqrt() / d;
    [(c - h).max(0.0), (c + h).min(1.0)]
}

/// 95% interval of the change in accuracy `(second - first) / rows` when
/// two models are scored on the same `rows` labelled samples, of which
/// `both` both get right, `only_first` only the first and `only_second`
/// only the second: Newcombe's hybrid score interval for a difference of
/// paired proportions (his method 10, 1998), built from each model's
/// Wilson interval and the correlation of the two models' outcomes. Unlike
/// a bootstrap of the rows, it does not collapse when no row or one row
/// differs. `None` without rows or with counts that do not fit in them.
pub fn paired_change_interval(
    rows: u64,
    both: u64,
    only_first: u64,
    only_second: u64,
) -> Option<[f64; 2]> {
    if rows == 0 || both + only_first + only_second > rows {
        return None;
    }
    let n = rows as f64;
    let (a, b, c) = (both as f64, only_first as f64, only_second as f64);
    let d = n - a - b - c;
    let (p1, p2) = ((a + b) / n, (a + c) / n);
    let ([l1, u1], [l2, u2]) = (wilson(p1, n), wilson(p2, n));
    // The phi correlation of the two outcomes (0 when a margin is empty).
    let den = ((a + b) * (c + d) * (a + c) * (b + d)).sqrt();
    let phi = if den > 0.0 {
        (a * d - b * c) / den
    } else {
        0.0
    };
    let change = p2 - p1;
    let lo = change
        - ((p2 - l2).powi(2) - 2.0 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1).powi(2))
            .max(0.0)
            .sqrt();
    let hi = change
        + ((u2 - p2).powi(2) - 2.0 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1).powi(2))
            .max(0.0)
            .sqrt();
    Some([lo.max(-1.0), hi.min(1.0)])
}

/// `10 log10(signal / noise)`: `+inf` without noise.
fn pooled_sqnr(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// The SQNR of one sample alone: the lowest of a comparison's samples.
///
/// In JSON a non-finite `sqnr_db` (`inf`: the sample is bit-identical, and
/// so are all others; `nan`: it holds NaN) is `null` with `"non_finite"`
/// naming it, as in [`Metrics`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "SampleSqnrRepr", from = "SampleSqnrRepr")]
pub struct SampleSqnr {
    /// Index of the sample (in the data the comparison ran on; the
    /// evaluator gives its row in the data file as the user gave it).
    pub sample: usize,
    /// Its SQNR in dB.
    pub sqnr_db: f64,
    /// How many samples the lowest was taken over (samples whose reference
    /// is all zeros have no SQNR and are not counted).
    pub of: u64,
}

#[derive(Serialize, Deserialize)]
struct SampleSqnrRepr {
    sample: usize,
    sqnr_db: Option<f64>,
    of: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    non_finite: Option<String>,
}

impl From<SampleSqnr> for SampleSqnrRepr {
    fn from(w: SampleSqnr) -> SampleSqnrRepr {
        let finite = w.sqnr_db.is_finite();
        SampleSqnrRepr {
            sample: w.sample,
            sqnr_db: finite.then_some(w.sqnr_db),
            of: w.of,
            non_finite: (!finite).then(|| non_finite_name(w.sqnr_db).to_string()),
        }
    }
}

impl From<SampleSqnrRepr> for SampleSqnr {
    fn from(r: SampleSqnrRepr) -> SampleSqnr {
        let sqnr_db = r
            .sqnr_db
            .unwrap_or_else(|| non_finite_value(r.non_finite.as_deref()));
        SampleSqnr {
            sample: r.sample,
            sqnr_db,
            of: r.of,
        }
    }
}

/// Top-1 agreement counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Top1 {
    /// Rows whose argmax agrees.
    pub agree: u64,
    /// Rows compared.
    pub rows: u64,
    /// `agree / rows` (1 when there are no rows).
    pub fraction: f64,
}

/// Comparison of a test output with its reference over all samples seen.
///
/// JSON has no non-finite numbers: a non-finite figure serializes as `null`,
/// `"finite"` is `false` whenever any figure is non-finite, and
/// `"non_finite"` names each such figure with its value (`"nan"`, `"inf"` or
/// `"-inf"`; absent when every figure is finite), e.g.
/// `"sqnr_db": null, ..., "finite": false, "non_finite": {"sqnr_db": "inf"}`
/// for identical outputs. A reader that takes the numbers alone sees `null`
/// and cannot mistake it for a passing figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "MetricsRepr", from = "MetricsRepr")]
pub struct Metrics {
    pub sqnr_db: f64,
    pub cosine: f64,
    pub max_abs_err: f64,
    pub mean_abs_err: f64,
    /// Elements compared.
    pub elements: u64,
    /// `None` unless every array had a class-like last axis.
    pub top1: Option<Top1>,
    /// The sample with the lowest SQNR; `None` unless every update said
    /// where its samples are ([`Accumulator::update_samples`]).
    pub worst_sample: Option<SampleSqnr>,
    /// 95% interval of the pooled SQNR and top-1 agreement over the
    /// samples; `None` under the same condition as `worst_sample`, with
    /// fewer than two samples, or when an end is not finite.
    pub interval: Option<Interval>,
}

impl Metrics {
    /// Whether every figure (SQNR, cosine, both errors) is a finite number.
    pub fn is_finite(&self) -> bool {
        [
            self.sqnr_db,
            self.cosine,
            self.max_abs_err,
            self.mean_abs_err,
        ]
        .iter()
        .all(|v| v.is_finite())
    }
}

/// The serialized form of [`Metrics`].
#[derive(Serialize, Deserialize)]
struct MetricsRepr {
    sqnr_db: Option<f64>,
    cosine: Option<f64>,
    max_abs_err: Option<f64>,
    mean_abs_err: Option<f64>,
    elements: u64,
    top1: Option<Top1>,
    #[serde(default = "yes")]
    finite: bool,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    non_finite: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    worst_sample: Option<SampleSqnr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<Interval>,
}

fn yes() -> bool {
    true
}

/// The value [`non_finite_name`] named (NaN for no or an unknown name).
fn non_finite_value(name: Option<&str>) -> f64 {
    match name {
        Some("inf") => f64::INFINITY,
        Some("-inf") => f64::NEG_INFINITY,
        _ => f64::NAN,
    }
}

fn non_finite_name(v: f64) -> &'static str {
    if v.is_nan() {
        "nan"
    } else if v > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

impl From<Metrics> for MetricsRepr {
    fn from(m: Metrics) -> MetricsRepr {
        let mut non_finite = std::collections::BTreeMap::new();
        let mut fig = |name: &str, v: f64| {
            if v.is_finite() {
                Some(v)
            } else {
                non_finite.insert(name.to_string(), non_finite_name(v).to_string());
                None
            }
        };
        let (sqnr_db, cosine, max_abs_err, mean_abs_err) = (
            fig("sqnr_db", m.sqnr_db),
            fig("cosine", m.cosine),
            fig("max_abs_err", m.max_abs_err),
            fig("mean_abs_err", m.mean_abs_err),
        );
        MetricsRepr {
            sqnr_db,
            cosine,
            max_abs_err,
            mean_abs_err,
            elements: m.elements,
            top1: m.top1,
            finite: non_finite.is_empty(),
            non_finite,
            worst_sample: m.worst_sample,
            interval: m.interval,
        }
    }
}

impl From<MetricsRepr> for Metrics {
    /// `null` becomes the value `non_finite` names for it, NaN otherwise.
    fn from(r: MetricsRepr) -> Metrics {
        let fig = |name: &str, v: Option<f64>| match v {
            Some(v) => v,
            None => non_finite_value(r.non_finite.get(name).map(String::as_str)),
        };
        Metrics {
            sqnr_db: fig("sqnr_db", r.sqnr_db),
            cosine: fig("cosine", r.cosine),
            max_abs_err: fig("max_abs_err", r.max_abs_err),
            mean_abs_err: fig("mean_abs_err", r.mean_abs_err),
            elements: r.elements,
            top1: r.top1.clone(),
            worst_sample: r.worst_sample.clone(),
            interval: r.interval.clone(),
        }
    }
}

impl Accumulator {
    pub fn new() -> Accumulator {
        Accumulator {
            top1_ok: true,
            samples_ok: true,
            ..Default::default()
        }
    }

    /// [`update`](Self::update) with the samples located: `samples` names
    /// the sample of each entry along axis 0 of both arrays (a batch), or
    /// with one name, the whole pair is that sample. Each sample's own SQNR
    /// is computed (in f64) and the lowest is kept (the earlier update on
    /// ties); a sample whose reference is all zeros has none and is
    /// skipped. When axis 0 does not match `samples`, the per-sample figure
    /// is dropped for good, as an [`update`](Self::update) does.
    pub fn update_samples(
        &mut self,
        reference: ArrayViewD<'_, f32>,
        test: ArrayViewD<'_, f32>,
        samples: &[usize],
    ) -> Result<(), MetricsError> {
        self.add(reference.view(), test.view())?;
        if !self.samples_ok {
            return Ok(());
        }
        let top1 = self.top1_ok;
        match samples {
            [one] => self.note_sample(*one, SampleParts::of(reference, test, top1)),
            _ if reference.ndim() > 0 && reference.shape()[0] == samples.len() => {
                for ((r, t), &i) in reference
                    .axis_iter(Axis(0))
                    .zip(test.axis_iter(Axis(0)))
                    .zip(samples)
                {
                    self.note_sample(i, SampleParts::of(r, t, top1));
                }
            }
            _ => self.samples_ok = false,
        }
        Ok(())
    }

    fn note_sample(&mut self, sample: usize, parts: SampleParts) {
        self.parts.push(parts);
        let Some(db) = parts.sqnr_db() else { return };
        self.samples += 1;
        self.keep_worse(sample, db);
    }

    /// Keeps `(sample, db)` if it is worse than the worst so far (the
    /// earlier one on ties); NaN is the worst of all (it would hide
    /// nothing).
    fn keep_worse(&mut self, sample: usize, db: f64) {
        let worse = |a: f64, b: f64| a.is_nan() && !b.is_nan() || a < b;
        if self.worst.is_none_or(|(_, w)| worse(db, w)) {
            self.worst = Some((sample, db));
        }
    }

    /// Adds one (reference, test) pair of equal shapes. It does not say
    /// where its samples are, so the figures have no worst sample.
    pub fn update(
        &mut self,
        reference: ArrayViewD<'_, f32>,
        test: ArrayViewD<'_, f32>,
    ) -> Result<(), MetricsError> {
        self.add(reference, test)?;
        self.samples_ok = false;
        Ok(())
    }

    fn add(
        &mut self,
        reference: ArrayViewD<'_, f32>,
        test: ArrayViewD<'_, f32>,
    ) -> Result<(), MetricsError> {
        if reference.shape() != test.shape() {
            return Err(MetricsError::ShapeMismatch {
                reference: reference.shape().to_vec(),
                test: test.shape().to_vec(),
            });
        }
        if self.updates == 0 {
            // Class scores: `[C]`, `[N, C]`, or `[N, T, C]` rows that are
            // probabilities (per-position classifiers such as OCR
            // recognizers). Other shapes (detection maps, embeddings) get no
            // top-1 figure.
            self.top1_ok = match reference.ndim() {
                1 | 2 => true,
                3 => {
                    let last = Axis(2);
                    reference.lanes(last).into_iter().all(|row| {
                        let sum: f32 = row.iter().sum();
                        row.iter().all(|v| *v >= 0.0) && (sum - 1.0).abs() < 1e-3
                    })
                }
                _ => false,
            };
        }
        self.updates += 1;
        for (&r, &t) in reference.iter().zip(test.iter()) {
            let (r, t) = (f64::from(r), f64::from(t));
            let e = r - t;
            self.sum_ref_sq += r * r;
            self.sum_test_sq += t * t;
            self.sum_dot += r * t;
            self.sum_err_sq += e * e;
            let a = e.abs();
            self.sum_abs_err += a;
            // A NaN error replaces the maximum and stays.
            if a.is_nan() || (!self.max_abs_err.is_nan() && a > self.max_abs_err) {
                self.max_abs_err = a;
            }
        }
        self.elements += reference.len() as u64;

        let classes = reference.shape().last().copied().unwrap_or(0);
        if self.top1_ok && TOP1_CLASSES.contains(&classes) {
            let (agree, rows) = top1_counts(reference, test);
            self.top1_agree += agree;
            self.top1_rows += rows;
        } else {
            self.top1_ok = false;
        }
        Ok(())
    }

    /// Adds everything `other` has seen, as if its updates had followed
    /// this one's (the class-axis test holds when it held for both).
    pub fn merge(&mut self, other: &Accumulator) {
        if other.updates == 0 {
            return;
        }
        if self.updates == 0 {
            *self = other.clone();
            return;
        }
        self.elements += other.elements;
        self.sum_ref_sq += other.sum_ref_sq;
        self.sum_test_sq += other.sum_test_sq;
        self.sum_dot += other.sum_dot;
        self.sum_err_sq += other.sum_err_sq;
        self.sum_abs_err += other.sum_abs_err;
        let m = other.max_abs_err;
        if m.is_nan() || (!self.max_abs_err.is_nan() && m > self.max_abs_err) {
            self.max_abs_err = m;
        }
        self.top1_ok &= other.top1_ok;
        self.top1_rows += other.top1_rows;
        self.top1_agree += other.top1_agree;
        self.updates += other.updates;
        self.samples_ok &= other.samples_ok;
        self.samples += other.samples;
        self.parts.extend_from_slice(&other.parts);
        if let Some((i, db)) = other.worst {
            self.keep_worse(i, db);
        }
    }

    /// The metrics over every update so far.
    pub fn finish(&self) -> Metrics {
        let sqnr_db = pooled_sqnr(self.sum_ref_sq, self.sum_err_sq);
        let norms = self.sum_ref_sq.sqrt() * self.sum_test_sq.sqrt();
        let cosine = if self.sum_ref_sq == 0.0 && self.sum_test_sq == 0.0 {
            1.0
        } else if norms == 0.0 {
            0.0
        } else {
            self.sum_dot / norms
        };
        let mean_abs_err = if self.elements == 0 {
            0.0
        } else {
            self.sum_abs_err / self.elements as f64
        };
        let top1 = (self.top1_ok && self.updates > 0).then(|| Top1 {
            agree: self.top1_agree,
            rows: self.top1_rows,
            fraction: if self.top1_rows == 0 {
                1.0
            } else {
                self.top1_agree as f64 / self.top1_rows as f64
            },
        });
        let worst_sample = self
            .worst
            .filter(|_| self.samples_ok)
            .map(|(sample, sqnr_db)| SampleSqnr {
                sample,
                sqnr_db,
                of: self.samples,
            });
        let interval = if self.samples_ok && self.updates > 0 {
            Interval::bootstrap(&self.parts, top1.is_some())
        } else {
            None
        };
        Metrics {
            sqnr_db,
            cosine,
            max_abs_err: self.max_abs_err,
            mean_abs_err,
            elements: self.elements,
            top1,
            worst_sample,
            interval,
        }
    }
}

/// Rows along the last axis whose argmax agrees, and rows compared.
fn top1_counts(reference: ArrayViewD<'_, f32>, test: ArrayViewD<'_, f32>) -> (u64, u64) {
    if reference.ndim() == 0 {
        return (0, 0);
    }
    let last = Axis(reference.ndim() - 1);
    let (mut agree, mut rows) = (0, 0);
    for (rr, tr) in reference.lanes(last).into_iter().zip(test.lanes(last)) {
        rows += 1;
        if let (Some(a), Some(b)) = (argmax(rr.iter().copied()), argmax(tr.iter().copied())) {
            if a == b {
                agree += 1;
            }
        }
    }
    (agree, rows)
}

/// Index of the first maximum; `None` for an empty row or one with NaN.
fn argmax(values: impl Iterator<Item = f32>) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in values.enumerate() {
        if v.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Serializes f64 as a JSON number when finite and as `null` otherwise (JSON
/// has no non-finite numbers; a `null` cannot be read as a passing figure).
/// Reads numbers, `null` (as NaN) and the strings `"inf"`, `"-inf"`,
/// `"nan"` of older reports.
pub mod float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Str(String),
        Null(()),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Null(()) => Ok(f64::NAN),
            Repr::Str(s) => match s.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, null, \"inf\", \"-inf\" or \"nan\", found \"{other}\""
                ))),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Batches accumulated separately and merged give the figures of one
    /// accumulator that saw them all (sums up to rounding, counts exactly).
    #[test]
    fn merged_batches_equal_one_pass() {
        let batches: Vec<(ndarray::ArrayD<f32>, ndarray::ArrayD<f32>)> = (0..5)
            .map(|b| {
                let r = arr2(&[[1.0f32 + b as f32, -2.0, 0.5], [0.1, 0.2, 3.0 - b as f32]]);
                let t = r.mapv(|v| v * 1.01 - 0.02 * b as f32);
                (r.into_dyn(), t.into_dyn())
            })
            .collect();
        let mut one = Accumulator::new();
        for (r, t) in &batches {
            one.update(r.view(), t.view()).unwrap();
        }
        let mut merged = Accumulator::new();
        let mut empty = Accumulator::new();
        for (r, t) in &batches {
            let mut a = Accumulator::new();
            a.update(r.view(), t.view()).unwrap();
            merged.merge(&a);
        }
        merged.merge(&Accumulator::new());
        empty.merge(&merged);
        for m in [merged.finish(), empty.finish()] {
            let o = one.finish();
            assert!(close(m.sqnr_db, o.sqnr_db) && close(m.cosine, o.cosine));
            assert_eq!(m.max_abs_err, o.max_abs_err);
            assert!(close(m.mean_abs_err, o.mean_abs_err));
            assert_eq!((m.elements, m.top1.clone()), (o.elements, o.top1.clone()));
            assert!(m.top1.is_some());
        }
    }

    #[test]
    fn identical_arrays() {
        let mut acc = Accumulator::new();
        let r = arr1(&[1.0f32, -2.0, 3.0]).into_dyn();
        acc.update(r.view(), r.view()).unwrap();
        let m = acc.finish();
        assert_eq!(m.sqnr_db, f64::INFINITY);
        assert!(close(m.cosine, 1.0));
        assert_eq!(m.max_abs_err, 0.0);
        assert_eq!(m.mean_abs_err, 0.0);
        assert_eq!(m.elements, 3);
        assert_eq!(
            m.top1,
            Some(Top1 {
                agree: 1,
                rows: 1,
                fraction: 1.0
            })
        );
    }

    #[test]
    fn closed_form_values() {
        // ref = [3, 4], test = [3, 3]: Σref² = 25, Σerr² = 1 -> SQNR = 10 log10 25.
        let mut acc = Accumulator::new();
        let r = arr1(&[3.0f32, 4.0]).into_dyn();
        let t = arr1(&[3.0f32, 3.0]).into_dyn();
        acc.update(r.view(), t.view()).unwrap();
        let m = acc.finish();
        assert!(close(m.sqnr_db, 10.0 * 25f64.log10()));
        // cos = (9 + 12) / (5 * sqrt 18)
        assert!(close(m.cosine, 21.0 / (5.0 * 18f64.sqrt())));
        assert!(close(m.max_abs_err, 1.0));
        assert!(close(m.mean_abs_err, 0.5));
        // argmax 1 (ref) vs 0 (test: the first of two equal maxima).
        assert_eq!(
            m.top1,
            Some(Top1 {
                agree: 0,
                rows: 1,
                fraction: 0.0
            })
        );
    }

    #[test]
    fn ties_take_first_maximum() {
        assert_eq!(argmax([3.0f32, 3.0].into_iter()), Some(0));
        assert_eq!(argmax([1.0f32, f32::NAN].into_iter()), None);
        assert_eq!(argmax(std::iter::empty()), None);
    }

    #[test]
    fn accumulation_is_batch_independent() {
        let r = arr2(&[[1.0f32, 2.0, 0.5], [0.0, -1.0, 4.0]]).into_dyn();
        let t = arr2(&[[1.5f32, 1.0, 0.5], [0.1, -1.0, 3.0]]).into_dyn();
        let mut whole = Accumulator::new();
        whole.update(r.view(), t.view()).unwrap();
        let mut rows = Accumulator::new();
        for i in 0..2 {
            rows.update(r.index_axis(Axis(0), i), t.index_axis(Axis(0), i))
                .unwrap();
        }
        let (a, b) = (whole.finish(), rows.finish());
        assert!(
            close(a.sqnr_db, b.sqnr_db)
                && close(a.cosine, b.cosine)
                && close(a.mean_abs_err, b.mean_abs_err)
        );
        assert_eq!(a.max_abs_err, b.max_abs_err);
        // Row 0: argmax 1 vs 0 (disagree); row 1: argmax 2 vs 2 (agree).
        assert_eq!(
            a.top1,
            Some(Top1 {
                agree: 1,
                rows: 2,
                fraction: 0.5
            })
        );
        assert_eq!(a.top1, b.top1);
    }

    #[test]
    fn top1_needs_class_axis_on_every_update() {
        let mut acc = Accumulator::new();
        let r = arr2(&[[1.0f32], [2.0]]).into_dyn(); // one "class": not class scores
        acc.update(r.view(), r.view()).unwrap();
        assert_eq!(acc.finish().top1, None);
    }

    #[test]
    fn zero_and_opposite() {
        let z = arr1(&[0.0f32, 0.0]).into_dyn();
        let mut acc = Accumulator::new();
        acc.update(z.view(), z.view()).unwrap();
        let m = acc.finish();
        assert_eq!((m.sqnr_db, m.cosine), (f64::INFINITY, 1.0));

        let r = arr1(&[1.0f32, -1.0]).into_dyn();
        let t = arr1(&[-1.0f32, 1.0]).into_dyn();
        let mut acc = Accumulator::new();
        acc.update(r.view(), t.view()).unwrap();
        let m = acc.finish();
        // Σref² = 2, Σerr² = 8 -> 10 log10(1/4).
        assert!(close(m.sqnr_db, 10.0 * 0.25f64.log10()));
        assert!(close(m.cosine, -1.0));
        assert_eq!(
            m.top1,
            Some(Top1 {
                agree: 0,
                rows: 1,
                fraction: 0.0
            })
        );
    }

    #[test]
    fn nan_is_not_hidden() {
        let r = arr1(&[1.0f32, 2.0]).into_dyn();
        let t = arr1(&[f32::NAN, 2.0]).into_dyn();
        let mut acc = Accumulator::new();
        acc.update(r.view(), t.view()).unwrap();
        let m = acc.finish();
        assert!(m.max_abs_err.is_nan() && m.mean_abs_err.is_nan() && m.sqnr_db.is_nan());
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let r = arr1(&[1.0f32, 2.0]).into_dyn();
        let t = arr1(&[1.0f32]).into_dyn();
        let e = Accumulator::new().update(r.view(), t.view()).unwrap_err();
        assert_eq!(
            e,
            MetricsError::ShapeMismatch {
                reference: vec![2],
                test: vec![1]
            }
        );
    }

    #[test]
    fn serde_round_trip_with_infinity() {
        let r = arr1(&[1.0f32, 2.0]).into_dyn();
        let mut acc = Accumulator::new();
        acc.update(r.view(), r.view()).unwrap();
        let m = acc.finish();
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"sqnr_db\":null"), "{json}");
        assert!(json.contains("\"finite\":false"), "{json}");
        assert!(
            json.contains("\"non_finite\":{\"sqnr_db\":\"inf\"}"),
            "{json}"
        );
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    /// A NaN figure is `null` in JSON (not the string `"nan"`, which readers
    /// taking `as_f64().unwrap_or(INFINITY)` turned into a pass), flagged,
    /// and reads back as NaN.
    #[test]
    fn nan_serializes_as_null_with_flag() {
        let r = arr1(&[1.0f32, 2.0]).into_dyn();
        let t = arr1(&[f32::NAN, 2.0]).into_dyn();
        let mut acc = Accumulator::new();
        acc.update(r.view(), t.view()).unwrap();
        let m = acc.finish();
        assert!(!m.is_finite());
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert!(v["sqnr_db"].is_null(), "{v}");
        assert!(v["max_abs_err"].is_null(), "{v}");
        assert_eq!(v["finite"], false);
        assert_eq!(v["non_finite"]["sqnr_db"], "nan");
        let back: Metrics = serde_json::from_value(v).unwrap();
        assert!(back.sqnr_db.is_nan() && back.max_abs_err.is_nan());
        assert!(back.cosine.is_finite() || back.cosine.is_nan());
    }

    #[test]
    fn finite_metrics_have_numbers_and_the_flag() {
        let r = arr1(&[1.0f32, 2.0]).into_dyn();
        let t = arr1(&[1.1f32, 2.0]).into_dyn();
        let mut acc = Accumulator::new();
        acc.update(r.view(), t.view()).unwrap();
        let m = acc.finish();
        assert!(m.is_finite());
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert!(v["sqnr_db"].as_f64().unwrap().is_finite());
        assert_eq!(v["finite"], true);
        assert!(v.get("non_finite").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<Metrics>(v).unwrap(), m);
    }

    #[test]
    fn float_module_writes_null_and_reads_old_strings() {
        #[derive(Serialize, Deserialize)]
        struct W {
            #[serde(with = "float")]
            x: f64,
        }
        assert_eq!(
            serde_json::to_string(&W { x: f64::NAN }).unwrap(),
            r#"{"x":null}"#
        );
        assert_eq!(
            serde_json::to_string(&W { x: 1.5 }).unwrap(),
            r#"{"x":1.5}"#
        );
        let w: W = serde_json::from_str(r#"{"x":"inf"}"#).unwrap();
        assert_eq!(w.x, f64::INFINITY);
        let w: W = serde_json::from_str(r#"{"x":null}"#).unwrap();
        assert!(w.x.is_nan());
    }

    /// The worst sample is the one whose own SQNR is lowest, named as the
    /// caller named it, whichever way the samples were batched and merged;
    /// the pooled SQNR is never below it (a mediant of the samples' ratios).
    #[test]
    fn worst_sample_is_found_across_batches_and_merges() {
        // Sample k: reference [k+1, 2], test off by 0.1 * (k % 3 + 1) in
        // its first entry; sample 2 (the largest error on the smaller of
        // the two signals that have it) is the worst of 0..6: SQNR
        // 10 log10((9 + 4) / 0.09).
        let pair = |k: usize| {
            let r = arr1(&[k as f32 + 1.0, 2.0]);
            let mut t = r.clone();
            t[0] += 0.1 * (k % 3 + 1) as f32;
            (r, t)
        };
        let own = |k: usize| {
            let (r, t) = pair(k);
            let s: f64 = r.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let e: f64 = r
                .iter()
                .zip(t.iter())
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum();
            10.0 * (s / e).log10()
        };
        let expect = (0..6)
            .map(|k| (k, own(k)))
            .fold((0, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
        assert_eq!(expect.0, 2);
        // Named rows 100 + k; one sample per update, batches of 3, and two
        // accumulators merged.
        let rows: Vec<usize> = (0..6).map(|k| 100 + k).collect();
        let mut one = Accumulator::new();
        for k in 0..6 {
            let (r, t) = pair(k);
            one.update_samples(r.into_dyn().view(), t.into_dyn().view(), &rows[k..=k])
                .unwrap();
        }
        let mut merged = Accumulator::new();
        for b in 0..2 {
            let (rs, ts): (Vec<_>, Vec<_>) = (3 * b..3 * b + 3).map(pair).unzip();
            let r =
                ndarray::stack(Axis(0), &rs.iter().map(|a| a.view()).collect::<Vec<_>>()).unwrap();
            let t =
                ndarray::stack(Axis(0), &ts.iter().map(|a| a.view()).collect::<Vec<_>>()).unwrap();
            let mut a = Accumulator::new();
            a.update_samples(
                r.into_dyn().view(),
                t.into_dyn().view(),
                &rows[3 * b..3 * b + 3],
            )
            .unwrap();
            merged.merge(&a);
        }
        for m in [one.finish(), merged.finish()] {
            let w = m.worst_sample.clone().unwrap();
            assert_eq!((w.sample, w.of), (102, 6), "{m:?}");
            assert!(close(w.sqnr_db, expect.1), "{} vs {}", w.sqnr_db, expect.1);
            assert!(w.sqnr_db <= m.sqnr_db);
        }
    }

    /// An update that does not say where its samples are, or a batch whose
    /// axis 0 does not match its sample names, leaves no worst sample (a
    /// partial minimum would be a wrong one).
    #[test]
    fn worst_sample_needs_every_update_located() {
        let r = arr2(&[[1.0f32, 2.0], [3.0, 4.0]]).into_dyn();
        let t = r.mapv(|v| v + 0.1);
        let mut a = Accumulator::new();
        a.update_samples(r.view(), t.view(), &[0, 1]).unwrap();
        assert_eq!(a.finish().worst_sample.map(|w| w.of), Some(2));
        a.update(r.view(), t.view()).unwrap();
        assert_eq!(a.finish().worst_sample, None);
        let mut b = Accumulator::new();
        b.update_samples(r.view(), t.view(), &[0, 1, 2]).unwrap();
        assert_eq!(b.finish().worst_sample, None);
        // Merging an unlocated accumulator drops it too.
        let mut c = Accumulator::new();
        c.update_samples(r.view(), t.view(), &[4, 5]).unwrap();
        let mut d = Accumulator::new();
        d.update(r.view(), t.view()).unwrap();
        c.merge(&d);
        assert_eq!(c.finish().worst_sample, None);
        // A sample with NaN is the worst; its SQNR serializes as null.
        let mut e = Accumulator::new();
        let nan = arr2(&[[1.0f32, f32::NAN], [3.0, 4.0]]).into_dyn();
        e.update_samples(r.view(), nan.view(), &[7, 8]).unwrap();
        let m = e.finish();
        let w = m.worst_sample.clone().unwrap();
        assert!(w.sample == 7 && w.sqnr_db.is_nan());
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["worst_sample"]["sqnr_db"], serde_json::Value::Null);
        assert_eq!(json["worst_sample"]["non_finite"], "nan");
        assert_eq!(json["worst_sample"]["sample"], 7);
    }

    /// A sample whose reference is all zeros has no SQNR and is skipped;
    /// bit-identical samples give `inf`, which reads back as `inf` (not as
    /// NaN) from the report.
    #[test]
    fn worst_sample_skips_silent_samples_and_round_trips_infinity() {
        let r = arr2(&[[0.0f32, 0.0], [3.0, 4.0]]).into_dyn();
        let t = arr2(&[[0.5f32, 0.0], [3.0, 4.0]]).into_dyn();
        let mut a = Accumulator::new();
        a.update_samples(r.view(), t.view(), &[0, 1]).unwrap();
        let m = a.finish();
        let w = m.worst_sample.clone().unwrap();
        assert_eq!((w.sample, w.of), (1, 1));
        assert_eq!(w.sqnr_db, f64::INFINITY);
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains(
                r#""worst_sample":{"sample":1,"sqnr_db":null,"of":1,"non_finite":"inf"}"#
            ),
            "{json}"
        );
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back.worst_sample, m.worst_sample);
        // Reports written before the field existed still read.
        let old = r#"{"sqnr_db":30.0,"cosine":1.0,"max_abs_err":0.1,"mean_abs_err":0.01,"elements":2,"top1":null}"#;
        assert_eq!(
            serde_json::from_str::<Metrics>(old).unwrap().worst_sample,
            None
        );
    }

    /// `n` class-score samples `[4]`: sample k's error scale comes from a
    /// fixed generator (so a subset's figures vary from sample to sample),
    /// and every seventh sample's test argmax differs.
    fn scored_samples(n: usize, seed: u64) -> Vec<(ndarray::ArrayD<f32>, ndarray::ArrayD<f32>)> {
        let mut state = seed;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|k| {
                let r = arr1(&[3.0f32, 1.0 + (k % 5) as f32, -1.0, 0.5]);
                let noise = (0.01 + 0.3 * uniform()) as f32;
                let mut t = r.mapv(|v| v + noise * (1.0 - 2.0 * (v > 0.0) as i32 as f32));
                if k % 7 == 3 {
                    t[3] = 9.0;
                }
                (r.into_dyn(), t.into_dyn())
            })
            .collect()
    }

    fn located(samples: &[(ndarray::ArrayD<f32>, ndarray::ArrayD<f32>)]) -> Metrics {
        let mut a = Accumulator::new();
        for (k, (r, t)) in samples.iter().enumerate() {
            a.update_samples(r.view(), t.view(), &[k]).unwrap();
        }
        a.finish()
    }

    /// The interval holds the pooled figure, and lies within the samples'
    /// own SQNRs (a pooled SQNR over any multiset of samples is a weighted
    /// mean of theirs in the linear domain, so it cannot leave their
    /// range); the top-1 interval holds the agreement fraction.
    #[test]
    fn interval_holds_the_pooled_figure_within_the_samples() {
        let samples = scored_samples(40, 7);
        let m = located(&samples);
        let iv = m.interval.clone().unwrap();
        assert_eq!(iv.samples, 40);
        let [lo, hi] = iv.sqnr_db.unwrap();
        assert!(lo < m.sqnr_db && m.sqnr_db < hi, "{lo} {} {hi}", m.sqnr_db);
        let own: Vec<f64> = samples
            .iter()
            .map(|(r, t)| {
                SampleParts::of(r.view(), t.view(), false)
                    .sqnr_db()
                    .unwrap()
            })
            .collect();
        let (min, max) = own
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        assert!(min <= lo && hi <= max, "{min} {lo} {hi} {max}");
        assert!(
            hi - lo > 0.1,
            "the samples differ, so resamples do: {lo} {hi}"
        );
        let [tlo, thi] = iv.top1.unwrap();
        let f = m.top1.unwrap().fraction;
        assert!((f - 34.0 / 40.0).abs() < 1e-12, "{f}");
        assert!(tlo < f && f < thi && thi <= 1.0, "{tlo} {f} {thi}");
    }

    /// Sixteen times the samples from the same generator: the interval is
    /// about four times narrower (1 / sqrt of the ratio); at least twice.
    #[test]
    fn interval_narrows_with_more_samples() {
        let width = |n| {
            let [lo, hi] = located(&scored_samples(n, 11))
                .interval
                .unwrap()
                .sqnr_db
                .unwrap();
            hi - lo
        };
        let (few, many) = (width(25), width(400));
        assert!(many < few / 2.0, "25 samples: {few} dB wide, 400: {many}");
    }

    /// One sample at a time, in batches, or merged from two accumulators:
    /// the same samples in the same order give the same interval, bit for
    /// bit.
    #[test]
    fn interval_does_not_depend_on_batching() {
        let samples = scored_samples(12, 3);
        let one = located(&samples).interval.unwrap();
        let mut merged = Accumulator::new();
        for b in 0..3 {
            let chunk = &samples[4 * b..4 * b + 4];
            let r = ndarray::stack(
                Axis(0),
                &chunk.iter().map(|p| p.0.view()).collect::<Vec<_>>(),
            )
            .unwrap();
            let t = ndarray::stack(
                Axis(0),
                &chunk.iter().map(|p| p.1.view()).collect::<Vec<_>>(),
            )
            .unwrap();
            let rows: Vec<usize> = (4 * b..4 * b + 4).collect();
            let mut a = Accumulator::new();
            a.update_samples(r.view(), t.view(), &rows).unwrap();
            merged.merge(&a);
        }
        assert_eq!(merged.finish().interval.unwrap(), one);
    }

    /// No interval from unlocated updates or fewer than
    /// MIN_INTERVAL_SAMPLES samples; no SQNR interval from identical
    /// outputs (an infinite end); it survives a JSON round trip.
    #[test]
    fn interval_needs_located_samples_and_finite_ends() {
        let samples = scored_samples(6, 5);
        let mut a = Accumulator::new();
        for (r, t) in &samples {
            a.update(r.view(), t.view()).unwrap();
        }
        assert_eq!(a.finish().interval, None);
        assert_eq!(located(&samples[..MIN_INTERVAL_SAMPLES - 1]).interval, None);
        assert!(located(&samples[..MIN_INTERVAL_SAMPLES]).interval.is_some());
        // Identical outputs: no SQNR interval (no error anywhere), but
        // top-1 agreement still has one.
        let same: Vec<_> = samples
            .iter()
            .map(|(r, _)| (r.clone(), r.clone()))
            .collect();
        let iv = located(&same).interval.unwrap();
        assert_eq!(iv.sqnr_db, None);
        assert!(iv.top1.unwrap()[0] < 1.0);
        let m = located(&samples);
        assert!(m.interval.as_ref().is_some_and(|i| i.sqnr_db.is_some()));
        let back: Metrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        let (a, b) = (back.interval.unwrap(), m.interval.unwrap());
        assert_eq!(a.samples, b.samples);
        let flat = |i: &Interval| [i.sqnr_db.unwrap(), i.top1.unwrap()].concat();
        for (x, y) in flat(&a).iter().zip(flat(&b)) {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "{x} {y}");
        }
    }

    /// Deterministic uniform numbers in [0, 1) for the simulations below.
    fn lcg(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// The accuracy change's interval holds the measured change, keeps a
    /// width when no row or one row differs (a bootstrap of the rows would
    /// collapse to zero there), and covers the true change in about 95% of
    /// simulated evaluation sets (at least 92% of 400 here, with 100 rows,
    /// 3% only-first and 1% only-second: few discordant rows, where simple
    /// intervals fail).
    #[test]
    fn paired_change_interval_covers_the_true_change() {
        assert_eq!(paired_change_interval(0, 0, 0, 0), None);
        assert_eq!(paired_change_interval(10, 5, 3, 3), None);
        let [lo, hi] = paired_change_interval(100, 90, 0, 0).unwrap();
        assert!(lo < -0.01 && hi > 0.01, "{lo} {hi}");
        let [lo, hi] = paired_change_interval(341, 331, 1, 0).unwrap();
        assert!(lo < -1.0 / 341.0 && hi > 0.0, "{lo} {hi}");
        let [lo, hi] = paired_change_interval(200, 150, 12, 4).unwrap();
        let d = (4.0 - 12.0) / 200.0;
        assert!(lo < d && d < hi && hi < 0.02, "{lo} {d} {hi}");
        let mut u = lcg(17);
        let (n, p_only_first, p_only_second, p_both) = (100, 0.03, 0.01, 0.9);
        let truth = p_only_second - p_only_first;
        let mut covered = 0;
        for _ in 0..400 {
            let (mut a, mut b, mut c) = (0, 0, 0);
            for _ in 0..n {
                let x = u();
                if x < p_only_first {
                    b += 1;
                } else if x < p_only_first + p_only_second {
                    c += 1;
                } else if x < p_only_first + p_only_second + p_both {
                    a += 1;
                }
            }
            let [lo, hi] = paired_change_interval(n, a, b, c).unwrap();
            covered += (lo <= truth && truth <= hi) as u32;
        }
        assert!(covered >= 368, "covered {covered} of 400");
    }

    /// Top-1 agreement of 20 samples that all agree: the interval reaches
    /// well below 100% (Wilson: 83.9%), and it covers a true agreement of
    /// 98% in most simulated sets of 20 samples (a bootstrap alone: about
    /// one in three).
    #[test]
    fn top1_interval_does_not_stop_at_what_was_seen() {
        let agreeing: Vec<_> = (0..20)
            .map(|k| {
                let r = arr1(&[3.0f32, 1.0, -1.0, 0.5 + k as f32 * 0.01]).into_dyn();
                (r.clone(), r.mapv(|v| v * 1.01))
            })
            .collect();
        let [lo, hi] = located(&agreeing).interval.unwrap().top1.unwrap();
        assert!((lo - 0.839).abs() < 0.001 && hi == 1.0, "{lo} {hi}");
        let mut u = lcg(5);
        let mut covered = 0;
        for _ in 0..200 {
            let set: Vec<_> = (0..20)
                .map(|_| {
                    let r = arr1(&[3.0f32, 1.0, -1.0, 0.5]).into_dyn();
                    let mut t = r.mapv(|v| v * 1.01);
                    if u() < 0.02 {
                        t[3] = 9.0;
                    }
                    (r, t)
                })
                .collect();
            let [lo, hi] = located(&set).interval.unwrap().top1.unwrap();
            covered += (lo <= 0.98 && 0.98 <= hi) as u32;
        }
        assert!(covered >= 180, "covered {covered} of 200");
    }
}
