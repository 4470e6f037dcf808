//! Observers: accumulate statistics of a tensor's float values over many
//! calibration batches.
//!
//! Every observer separates finite values from non-finite ones. NaN and ±inf
//! never reach min/max or histograms (they would turn scales into NaN/inf);
//! they are counted in [`NonFiniteCounts`] so that the caller can decide to
//! leave such a tensor in float. Huge finite values (e.g. `-3.4e38` attention
//! masks) are kept: they give huge but finite ranges, and
//! [`TensorStats::max_abs`] exposes them.
//!
//! Invariant: `-0.0` is observed as `+0.0`, so min/max are bit-identical
//! whatever the order in which equal-comparing zeros arrive.
//!
//! Invariant: for [`OrderInvariant`] observers ([`MinMax`],
//! [`Histogram`](crate::Histogram)) the final state depends only on the
//! multiset of observed values: not on their order, on how they are split
//! into batches, or on the shape of the merge tree. [`observe_parallel`]
//! relies on this and is therefore only offered for them.
//! [`MovingAverageMinMax`] is explicitly order dependent.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{CalibError, TensorStats};

/// Accumulates statistics of a float tensor across batches.
pub trait Observer {
    /// Adds one batch of values (any shape, flattened).
    fn observe(&mut self, data: &[f32]);
    /// Adds everything `other` has observed.
    fn merge(&mut self, other: &Self);
    /// Serializable summary of what was observed.
    fn stats(&self) -> TensorStats;
}

/// Marker for observers whose state is a function of the multiset of
/// observed values only: `observe` and `merge` commute and associate exactly
/// (bit-identical results), so batches may be observed in any order, split
/// and merged in any tree, e.g. in parallel.
pub trait OrderInvariant: Observer {}

/// Observes `batches` in parallel with rayon and merges the partial
/// observers; `make` builds an empty observer.
///
/// Because `O` is [`OrderInvariant`] the result is bit-identical to
/// observing the batches one after the other with a single observer.
pub fn observe_parallel<O, B, F>(batches: &[B], make: F) -> O
where
    O: OrderInvariant + Send,
    B: AsRef<[f32]> + Sync,
    F: Fn() -> O + Sync + Send,
{
    batches
        .par_iter()
        .fold(&make, |mut obs, batch| {
            obs.observe(batch.as_ref());
            obs
        })
        .reduce(&make, |mut a, b| {
            a.merge(&b);
            a
        })
}

/// Number of non-finite values seen, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NonFiniteCounts {
    /// NaN values.
    pub nan: u64,
    /// `+inf` values.
    pub pos_inf: u64,
    /// `-inf` values.
    pub neg_inf: u64,
}

impl NonFiniteCounts {
    /// Total number of non-finite values.
    pub fn total(&self) -> u64 {
        self.nan
            .saturating_add(self.pos_inf)
            .saturating_add(self.neg_inf)
    }

    /// Counts `x` if it is not finite; returns whether it was finite.
    fn record(&mut self, x: f32) -> bool {
        if x.is_finite() {
            return true;
        }
        let slot = if x.is_nan() {
            &mut self.nan
        } else if x > 0.0 {
            &mut self.pos_inf
        } else {
            &mut self.neg_inf
        };
        *slot = slot.saturating_add(1);
        false
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &NonFiniteCounts) {
        self.nan = self.nan.saturating_add(other.nan);
        self.pos_inf = self.pos_inf.saturating_add(other.pos_inf);
        self.neg_inf = self.neg_inf.saturating_add(other.neg_inf);
    }
}

/// Maps `-0.0` to `+0.0` (see the module invariant).
#[inline]
pub(crate) fn canonical_zero(x: f32) -> f32 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// Running minimum and maximum of the finite values.
#[derive(Debug, Clone, PartialEq)]
pub struct MinMax {
    /// `+inf` while `count == 0`.
    min: f32,
    /// `-inf` while `count == 0`.
    max: f32,
    count: u64,
    nonfinite: NonFiniteCounts,
}

impl Default for MinMax {
    fn default() -> Self {
        MinMax {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
            nonfinite: NonFiniteCounts::default(),
        }
    }
}

impl MinMax {
    /// An observer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `(min, max)` of the finite values, `None` before any was seen.
    pub fn range(&self) -> Option<(f32, f32)> {
        (self.count > 0).then_some((self.min, self.max))
    }

    /// Number of finite values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Non-finite values seen.
    pub fn nonfinite(&self) -> NonFiniteCounts {
        self.nonfinite
    }

    /// Rebuilds the observer from recorded statistics (any histogram is
    /// ignored), e.g. to continue a calibration run.
    pub fn from_stats(stats: &TensorStats) -> Result<Self, CalibError> {
        stats.validate()?;
        let mut mm = MinMax {
            nonfinite: stats.nonfinite,
            ..MinMax::default()
        };
        if stats.count > 0 {
            mm.min = canonical_zero(stats.min);
            mm.max = canonical_zero(stats.max);
            mm.count = stats.count;
        }
        Ok(mm)
    }
}

impl Observer for MinMax {
    fn observe(&mut self, data: &[f32]) {
        // One branch-free pass over 16 independent lanes (the compiler
        // turns it into vector min/max): min/max of all values and the
        // number of non-finite ones. Non-finite values are rare; only then
        // does a second pass take the min/max of the finite values and sort
        // the others by kind.
        let (mut lo, mut hi, bad) = minmax_lanes(data);
        if bad > 0 {
            (lo, hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &x in data {
                if self.nonfinite.record(x) {
                    lo = if x < lo { x } else { lo };
                    hi = if x > hi { x } else { hi };
                }
            }
        }
        let finite = data.len() - bad;
        if finite > 0 {
            let (lo, hi) = (canonical_zero(lo), canonical_zero(hi));
            if lo < self.min {
                self.min = lo;
            }
            if hi > self.max {
                self.max = hi;
            }
            self.count = self.count.saturating_add(finite as u64);
        }
    }

    fn merge(&mut self, other: &Self) {
        if other.min < self.min {
            self.min = other.min;
        }
        if other.max > self.max {
            self.max = other.max;
        }
        self.count = self.count.saturating_add(other.count);
        self.nonfinite.merge(&other.nonfinite);
    }

    fn stats(&self) -> TensorStats {
        let (min, max) = self.range().unwrap_or((0.0, 0.0));
        TensorStats {
            min,
            max,
            count: self.count,
            nonfinite: self.nonfinite,
            histogram: None,
        }
    }
}

impl OrderInvariant for MinMax {}

/// `(min, max, non-finite count)` of `data`; NaN is ignored by the
/// comparisons, infinities are included (callers recompute when the count
/// is not 0). The sign of a zero extreme depends on the order: callers
/// canonicalize it.
fn minmax_lanes(data: &[f32]) -> (f32, f32, usize) {
    const LANES: usize = 16;
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let mut bad = 0usize;
    // u32 lane counters cannot overflow within a piece of this size.
    for piece in data.chunks(1 << 30) {
        let mut bad_lanes = [0u32; LANES];
        let mut blocks = piece.chunks_exact(LANES);
        for b in &mut blocks {
            for k in 0..LANES {
                let x = b[k];
                lo[k] = if x < lo[k] { x } else { lo[k] };
                hi[k] = if x > hi[k] { x } else { hi[k] };
                bad_lanes[k] += u32::from(!x.is_finite());
            }
        }
        for &x in blocks.remainder() {
            lo[0] = if x < lo[0] { x } else { lo[0] };
            hi[0] = if x > hi[0] { x } else { hi[0] };
            bad_lanes[0] += u32::from(!x.is_finite());
        }
        bad += bad_lanes.iter().map(|&c| c as usize).sum::<usize>();
    }
    let lo = lo
        .iter()
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    let hi = hi
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    (lo, hi, bad)
}

/// Exponential moving average of per-batch min and max (PyTorch's
/// `MovingAverageMinMaxObserver`): the first batch sets the range, every
/// further batch moves it by `c * (batch_min - min)` (same for max).
///
/// Unlike [`MinMax`] and [`Histogram`](crate::Histogram) **the result
/// depends on the order and the split of the batches**: it is not
/// [`OrderInvariant`] and cannot be used with [`observe_parallel`].
/// Batches without any finite value do not move the averages.
///
/// `merge` combines two averages weighted by their number of batches. It is
/// commutative but is not equivalent to observing the other observer's
/// batches after this one's.
///
/// [`Observer::stats`] reports the averaged range as `min`/`max` (always
/// inside the overall min/max) with the overall count and non-finite counts.
#[derive(Debug, Clone, PartialEq)]
pub struct MovingAverageMinMax {
    constant: f64,
    avg_min: f64,
    avg_max: f64,
    /// Batches that contained at least one finite value.
    batches: u64,
    overall: MinMax,
}

impl Default for MovingAverageMinMax {
    /// Averaging constant 0.01, as in PyTorch.
    fn default() -> Self {
        MovingAverageMinMax {
            constant: Self::DEFAULT_CONSTANT,
            avg_min: 0.0,
            avg_max: 0.0,
            batches: 0,
            overall: MinMax::default(),
        }
    }
}

impl MovingAverageMinMax {
    /// Default averaging constant.
    pub const DEFAULT_CONSTANT: f64 = 0.01;

    /// An observer with averaging constant `c` in `(0, 1]` (1 means "last
    /// batch only").
    pub fn new(c: f32) -> Result<Self, CalibError> {
        if !(c > 0.0 && c <= 1.0) {
            return Err(CalibError::InvalidAveragingConstant(c));
        }
        Ok(MovingAverageMinMax {
            constant: f64::from(c),
            ..Self::default()
        })
    }

    /// Averaged `(min, max)`, `None` before any finite value was seen.
    pub fn range(&self) -> Option<(f32, f32)> {
        (self.batches > 0).then_some((self.avg_min as f32, self.avg_max as f32))
    }

    /// Number of batches that moved the averages.
    pub fn batches(&self) -> u64 {
        self.batches
    }
}

impl Observer for MovingAverageMinMax {
    fn observe(&mut self, data: &[f32]) {
        let mut batch = MinMax::new();
        batch.observe(data);
        self.overall.merge(&batch);
        if let Some((lo, hi)) = batch.range() {
            // f64: `lo - avg_min` can exceed f32::MAX for huge values.
            let (lo, hi) = (f64::from(lo), f64::from(hi));
            if self.batches == 0 {
                (self.avg_min, self.avg_max) = (lo, hi);
            } else {
                self.avg_min += self.constant * (lo - self.avg_min);
                self.avg_max += self.constant * (hi - self.avg_max);
            }
            self.batches = self.batches.saturating_add(1);
        }
    }

    fn merge(&mut self, other: &Self) {
        self.overall.merge(&other.overall);
        if other.batches == 0 {
            return;
        }
        if self.batches == 0 {
            (self.avg_min, self.avg_max) = (other.avg_min, other.avg_max);
        } else {
            let (na, nb) = (self.batches as f64, other.batches as f64);
            self.avg_min = (self.avg_min * na + other.avg_min * nb) / (na + nb);
            self.avg_max = (self.avg_max * na + other.avg_max * nb) / (na + nb);
        }
        self.batches = self.batches.saturating_add(other.batches);
    }

    fn stats(&self) -> TensorStats {
        let mut stats = self.overall.stats();
        if let (Some((lo, hi)), Some((omin, omax))) = (self.range(), self.overall.range()) {
            // The averages are convex combinations of observed values; the
            // clamp only guards against f64 -> f32 rounding.
            stats.min = canonical_zero(lo.clamp(omin, omax));
            stats.max = canonical_zero(hi.clamp(omin, omax));
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 16-lane pass against a plain loop: every length around the lane
    /// width, extremes in every position (including the remainder), signed
    /// zeros and NaN.
    #[test]
    fn minmax_lanes_match_a_plain_loop() {
        for len in 0..40usize {
            for pos in 0..len {
                for extreme in [-7.5f32, 9.25, -0.0, f32::NAN] {
                    let mut data: Vec<f32> = (0..len)
                        .map(|i| ((i * 37) % 11) as f32 * 0.25 - 1.0)
                        .collect();
                    data[pos] = extreme;
                    let mut mm = MinMax::new();
                    mm.observe(&data);
                    let finite: Vec<f32> = data.iter().copied().filter(|x| x.is_finite()).collect();
                    let want = (!finite.is_empty()).then(|| {
                        let lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
                        let hi = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        (canonical_zero(lo), canonical_zero(hi))
                    });
                    let got = mm.range();
                    assert_eq!(
                        got.map(|(a, b)| (a.to_bits(), b.to_bits())),
                        want.map(|(a, b)| (a.to_bits(), b.to_bits())),
                        "len {len}, {extreme} at {pos}"
                    );
                    assert_eq!(mm.count(), finite.len() as u64);
                }
            }
        }
    }

    #[test]
    fn minmax_ignores_nonfinite_and_counts_them() {
        let mut mm = MinMax::new();
        assert_eq!(mm.range(), None);
        mm.observe(&[
            1.0,
            f32::NAN,
            -2.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.5,
        ]);
        assert_eq!(mm.range(), Some((-2.0, 1.0)));
        assert_eq!(mm.count(), 3);
        assert_eq!(
            mm.nonfinite(),
            NonFiniteCounts {
                nan: 2,
                pos_inf: 1,
                neg_inf: 1
            }
        );
        assert_eq!(mm.nonfinite().total(), 4);
        let s = mm.stats();
        assert!(s.has_nonfinite());
        assert_eq!((s.min, s.max, s.count), (-2.0, 1.0, 3));
        // A run resumed from the record keeps the non-finite counts and
        // adds to them: 2 + 1 NaN, 1 + 0 +inf, 1 + 1 -inf.
        let mut resumed = MinMax::from_stats(&s).unwrap_or_default();
        assert_eq!(resumed.stats(), s);
        resumed.observe(&[f32::NAN, f32::NEG_INFINITY, 3.0]);
        assert_eq!(
            resumed.nonfinite(),
            NonFiniteCounts {
                nan: 3,
                pos_inf: 1,
                neg_inf: 2
            }
        );
        assert_eq!((resumed.count(), resumed.range()), (4, Some((-2.0, 3.0))));
    }

    #[test]
    fn minmax_only_nonfinite_is_empty() {
        let mut mm = MinMax::new();
        mm.observe(&[f32::NAN, f32::NAN]);
        assert_eq!(mm.range(), None);
        let s = mm.stats();
        assert_eq!((s.min, s.max, s.count, s.nonfinite.nan), (0.0, 0.0, 0, 2));
    }

    #[test]
    fn minmax_negative_zero_is_canonical() {
        let mut a = MinMax::new();
        a.observe(&[-0.0, 0.0]);
        let mut b = MinMax::new();
        b.observe(&[0.0, -0.0]);
        let (ra, rb) = (a.range(), b.range());
        assert_eq!(ra.map(|(l, h)| (l.to_bits(), h.to_bits())), Some((0, 0)));
        assert_eq!(rb.map(|(l, h)| (l.to_bits(), h.to_bits())), Some((0, 0)));
    }

    #[test]
    fn minmax_merge_matches_sequential() {
        let mut all = MinMax::new();
        all.observe(&[3.0, -1.0, 7.0, f32::NAN]);
        all.observe(&[2.0, -4.0]);
        let mut a = MinMax::new();
        a.observe(&[2.0, -4.0]);
        let mut b = MinMax::new();
        b.observe(&[3.0, -1.0, 7.0, f32::NAN]);
        a.merge(&b);
        assert_eq!(a, all);
        let mut empty = MinMax::new();
        empty.merge(&all);
        assert_eq!(empty, all);
    }

    #[test]
    fn moving_average_depends_on_batch_order() -> Result<(), CalibError> {
        let (small, large) = ([-1.0, 1.0], [-3.0, 5.0]);
        let mut a = MovingAverageMinMax::new(0.5)?;
        // No range before a finite value, also after a NaN-only batch.
        assert_eq!((a.range(), a.batches()), (None, 0));
        let mut only_nan = MovingAverageMinMax::new(0.5)?;
        only_nan.observe(&[f32::NAN, f32::INFINITY]);
        assert_eq!((only_nan.range(), only_nan.batches()), (None, 0));
        for batch in [small, small, large] {
            a.observe(&batch);
        }
        let mut b = MovingAverageMinMax::new(0.5)?;
        for batch in [small, large, small] {
            b.observe(&batch);
        }
        // Same multiset of batches, different order, different result.
        assert_eq!(a.range(), Some((-2.0, 3.0)));
        assert_eq!(b.range(), Some((-1.5, 2.0)));
        // The overall count is order independent; the reported range is the average.
        let s = a.stats();
        assert_eq!((s.min, s.max, s.count), (-2.0, 3.0, 6));
        // NaN-only batches do not move the averages.
        a.observe(&[f32::NAN]);
        assert_eq!(a.range(), Some((-2.0, 3.0)));
        assert_eq!(a.stats().nonfinite.nan, 1);
        assert_eq!(a.batches(), 3);
        Ok(())
    }

    #[test]
    fn moving_average_merge_is_batch_weighted() -> Result<(), CalibError> {
        let mut a = MovingAverageMinMax::new(1.0)?;
        a.observe(&[-1.0, 1.0]);
        let mut b = MovingAverageMinMax::new(1.0)?;
        b.observe(&[-4.0, 4.0]);
        b.observe(&[-4.0, 4.0]);
        b.observe(&[-4.0, 4.0]);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab.range(), Some((-3.25, 3.25)));
        assert_eq!(ab.range(), ba.range());
        assert!(MovingAverageMinMax::new(0.0).is_err());
        assert!(MovingAverageMinMax::new(f32::NAN).is_err());
        Ok(())
    }

    #[test]
    fn moving_average_survives_huge_values() {
        let mut m = MovingAverageMinMax::default();
        m.observe(&[-f32::MAX, 1.0]);
        m.observe(&[-1.0, f32::MAX]);
        let s = m.stats();
        assert!(s.min.is_finite() && s.max.is_finite());
        assert!(s.min <= s.max);
    }
}
