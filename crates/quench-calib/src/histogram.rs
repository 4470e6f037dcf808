//! Exactly mergeable histogram of finite values.
//!
//! # Layout
//!
//! A histogram has `N = 2^n` bins (default [`DEFAULT_BINS`] = 8192) over the
//! symmetric half-open range `[-R, R)` with `R = 2^e` (`e` = `range_log2`).
//! The bin width `w = 2R / N = 2^(e + 1 - n)` is a power of two, and value
//! `x` falls into bin `floor(x / w) + N/2`: bins `N/2..N` hold `[0, R)`,
//! bins `0..N/2` hold `[-R, 0)`, and 0 is always a bin edge. A symmetric
//! range (rather than `[min, max]`) keeps 0 on an edge, which is what the
//! symmetric range methods need (they fold the histogram into a histogram
//! of `|x|`), and lets the range be described by one integer.
//!
//! Invariant: `R` is the smallest power of two strictly above every
//! observed `|x|` (at least [`MIN_RANGE_LOG2`]), so `R` is a function of the
//! largest magnitude seen only: e.g. values up to 0.9 give `R = 1`, values
//! up to 1.0 give `R = 2` (the range is half-open). Only half of the bins
//! may be in use, and for one-signed data (ReLU outputs) only the bins of
//! that sign.
//!
//! # Exact growth and merging
//!
//! When a batch holds a value beyond `R`, the range is doubled as many times
//! as needed and old bins are combined `2^k : 1` into new ones. Because `w`
//! is a power of two, `x * 2^(n - 1 - e)` is computed exactly in f64 and
//! `floor(x / 2w) = floor(floor(x / w) / 2)`: the coarsened counts are
//! exactly the counts that binning the original values on the wider grid
//! would give, so no count ever moves across a true bin boundary.
//!
//! Merging two histograms re-grids both onto the widest range and the
//! smaller bin count (both coarser than or equal to each input grid, so
//! again exact) and adds the counts.
//!
//! Invariant: the final bins, range and min/max are bit-identical whatever
//! the order of the values, their split into batches and the order or tree
//! shape of merges (hence [`OrderInvariant`]). All counts are integers, no
//! floating-point accumulation is involved.

use serde::{Deserialize, Serialize};

use crate::observer::{MinMax, NonFiniteCounts, Observer, OrderInvariant};
use crate::{CalibError, TensorStats};

/// Default number of bins over `[-R, R)`: 8192, so that the `|x|` histogram
/// the entropy search works on has 2048 to 4096 bins over the data (TensorRT
/// uses 2048 over `[0, max|x|]`). With only 512 to 1024 (a 2048-bin default)
/// the search cannot see rounding error: a bin is as wide as a quantization
/// step at the smallest candidate threshold, which then wins whenever little
/// mass lies beyond it (a ReLU output of PP-OCRv4 rec was cut from 14.7 to
/// 4.0, with 5000x the squared error of the MSE-optimal range).
pub const DEFAULT_BINS: usize = 8192;
/// Smallest allowed number of bins.
pub const MIN_BINS: usize = 16;
/// Largest allowed number of bins.
pub const MAX_BINS: usize = 1 << 20;
/// `log2` of the range of a histogram that has seen no non-zero value; below
/// the smallest positive f32 (`2^-149`), so any non-zero value grows it.
pub const MIN_RANGE_LOG2: i32 = -150;
/// `log2` of the largest possible range; `f32::MAX < 2^128`.
pub const MAX_RANGE_LOG2: i32 = 128;

/// Serializable histogram: `bins.len()` counts over `[-2^range_log2,
/// 2^range_log2)`, see the [module documentation](self) for the layout.
///
/// On the wire (JSON calibration tables) only the span from the first to
/// the last non-empty bin is written, with its `offset` and the total bin
/// count `num_bins`; both are optional when reading (a full `bins` array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HistogramWire", into = "HistogramWire")]
pub struct HistogramData {
    /// `log2` of the half range `R`.
    pub range_log2: i32,
    /// Counts; bin `i` holds `[-R + i w, -R + (i + 1) w)`.
    pub bins: Vec<u64>,
}

/// The wire form of [`HistogramData`].
#[derive(Serialize, Deserialize)]
struct HistogramWire {
    range_log2: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    num_bins: Option<usize>,
    #[serde(default)]
    offset: usize,
    bins: Vec<u64>,
}

impl From<HistogramData> for HistogramWire {
    fn from(h: HistogramData) -> Self {
        let n = h.bins.len();
        let first = h.bins.iter().position(|&c| c > 0).unwrap_or(n);
        let last = h.bins.iter().rposition(|&c| c > 0).map_or(first, |l| l + 1);
        HistogramWire {
            range_log2: h.range_log2,
            num_bins: Some(n),
            offset: first,
            bins: h.bins[first..last].to_vec(),
        }
    }
}

impl From<HistogramWire> for HistogramData {
    /// A span that does not fit `num_bins` gives no bins at all, which
    /// [`HistogramData::validate`] rejects.
    fn from(w: HistogramWire) -> Self {
        let n = w.num_bins.unwrap_or(w.bins.len());
        match w.offset.checked_add(w.bins.len()).filter(|&end| end <= n) {
            Some(end) => {
                let mut bins = vec![0u64; n];
                bins[w.offset..end].copy_from_slice(&w.bins);
                HistogramData {
                    range_log2: w.range_log2,
                    bins,
                }
            }
            None => HistogramData {
                range_log2: w.range_log2,
                bins: Vec::new(),
            },
        }
    }
}

impl HistogramData {
    /// Half range `R = 2^range_log2`.
    pub fn range(&self) -> f64 {
        pow2(self.range_log2)
    }

    /// Bin width `2R / bins.len()`.
    pub fn bin_width(&self) -> f64 {
        2.0 * self.range() / self.bins.len() as f64
    }

    /// Checks the bin count and range bounds; returns the sum of the bins.
    pub fn validate(&self) -> Result<u64, CalibError> {
        log2_bins(self.bins.len())?;
        if !(MIN_RANGE_LOG2..=MAX_RANGE_LOG2).contains(&self.range_log2) {
            return Err(CalibError::InvalidStats(format!(
                "histogram range_log2 {} outside {MIN_RANGE_LOG2}..={MAX_RANGE_LOG2}",
                self.range_log2
            )));
        }
        self.bins
            .iter()
            .try_fold(0u64, |acc, &c| acc.checked_add(c))
            .ok_or_else(|| CalibError::InvalidStats("histogram counts overflow u64".to_string()))
    }
}

/// Histogram observer; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bins_log2: u32,
    range_log2: i32,
    bins: Vec<u64>,
    minmax: MinMax,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram with [`DEFAULT_BINS`] bins.
    pub fn new() -> Self {
        Histogram {
            bins_log2: DEFAULT_BINS.trailing_zeros(),
            range_log2: MIN_RANGE_LOG2,
            bins: vec![0; DEFAULT_BINS],
            minmax: MinMax::new(),
        }
    }

    /// An empty histogram with `bins` bins: a power of two in
    /// [`MIN_BINS`]`..=`[`MAX_BINS`]. Histograms with different bin counts
    /// can be merged; the result has the smaller count.
    pub fn with_bins(bins: usize) -> Result<Self, CalibError> {
        let bins_log2 = log2_bins(bins)?;
        Ok(Histogram {
            bins_log2,
            range_log2: MIN_RANGE_LOG2,
            bins: vec![0; bins],
            minmax: MinMax::new(),
        })
    }

    /// Rebuilds the observer from recorded statistics (e.g. to continue a
    /// calibration run or to merge runs); errors if they carry no histogram
    /// or are inconsistent.
    pub fn from_stats(stats: &TensorStats) -> Result<Self, CalibError> {
        let data = stats
            .histogram
            .as_ref()
            .ok_or(CalibError::MissingHistogram("Histogram::from_stats"))?;
        // Checks bin count, range, sum of bins == count and min/max inside the range.
        stats.validate()?;
        Ok(Histogram {
            bins_log2: log2_bins(data.bins.len())?,
            range_log2: data.range_log2,
            bins: data.bins.clone(),
            minmax: MinMax::from_stats(stats)?,
        })
    }

    /// Number of bins.
    pub fn num_bins(&self) -> usize {
        self.bins.len()
    }

    /// `log2` of the half range `R`.
    pub fn range_log2(&self) -> i32 {
        self.range_log2
    }

    /// The bin counts.
    pub fn bins(&self) -> &[u64] {
        &self.bins
    }

    /// `(min, max)` of the finite values, `None` before any was seen.
    pub fn range(&self) -> Option<(f32, f32)> {
        self.minmax.range()
    }

    /// Number of finite (binned) values.
    pub fn count(&self) -> u64 {
        self.minmax.count()
    }

    /// Non-finite values seen (not binned).
    pub fn nonfinite(&self) -> NonFiniteCounts {
        self.minmax.nonfinite()
    }

    /// Serializable copy of the bins.
    pub fn data(&self) -> HistogramData {
        HistogramData {
            range_log2: self.range_log2,
            bins: self.bins.clone(),
        }
    }

    /// Moves the counts onto the grid with `2^bins_log2` bins and range
    /// `2^range_log2`, which must be at least as coarse as the current one.
    fn regrid(&mut self, bins_log2: u32, range_log2: i32) {
        if bins_log2 == self.bins_log2 && range_log2 == self.range_log2 {
            return;
        }
        let mut bins = vec![0u64; 1usize << bins_log2];
        accumulate(
            &self.bins,
            self.bins_log2,
            self.range_log2,
            &mut bins,
            bins_log2,
            range_log2,
        );
        self.bins = bins;
        self.bins_log2 = bins_log2;
        self.range_log2 = range_log2;
    }
}

impl Observer for Histogram {
    fn observe(&mut self, data: &[f32]) {
        // Min/max first: the range must cover the largest magnitude before
        // anything is binned. Whether this batch held a non-finite value
        // follows from the non-finite count, without another pass.
        let nonfinite_before = self.minmax.nonfinite().total();
        self.minmax.observe(data);
        let Some((lo, hi)) = self.minmax.range() else {
            return;
        };
        let needed = range_log2_for(lo.abs().max(hi.abs())).max(self.range_log2);
        self.regrid(self.bins_log2, needed);
        let all_finite = self.minmax.nonfinite().total() == nonfinite_before;
        bin_values(
            &mut self.bins,
            self.bins_log2,
            self.range_log2,
            data,
            all_finite,
        );
    }

    fn merge(&mut self, other: &Self) {
        let bins_log2 = self.bins_log2.min(other.bins_log2);
        let range_log2 = self.range_log2.max(other.range_log2);
        self.regrid(bins_log2, range_log2);
        accumulate(
            &other.bins,
            other.bins_log2,
            other.range_log2,
            &mut self.bins,
            bins_log2,
            range_log2,
        );
        self.minmax.merge(&other.minmax);
    }

    fn stats(&self) -> TensorStats {
        TensorStats {
            histogram: Some(self.data()),
            ..self.minmax.stats()
        }
    }
}

impl OrderInvariant for Histogram {}

/// Values per chunk counted in `u32` lanes before they are added to the
/// `u64` bins (no lane can overflow).
const CHUNK: usize = 1 << 24;
/// Interleaved partial histograms: consecutive values go to different
/// copies, so runs of equal values (the zeros after a ReLU) do not wait on
/// the previous increment of the same counter.
const LANES: usize = 4;

/// Adds the finite values of `data` to `bins` (`2^bins_log2` bins over
/// `[-2^range_log2, 2^range_log2)`, a range that covers every value).
///
/// The bin of `x` is `floor(x * 2^(bins_log2 - 1 - range_log2)) + N/2`. The
/// product is exact whenever it is computed in a format where the factor
/// is representable and the product cannot underflow: in f32 when the factor
/// is at least 1 (the usual case: ranges up to `2^(bins_log2 - 1)`), in f64
/// otherwise.
///
/// In the f32 case the floor takes no float-to-integer conversion (Rust's
/// saturating `as` keeps such a loop scalar): `v = x * 2^e` lies in
/// `(-N/2, N/2)` with `N/2 <= 2^19`, so adding `1.5 * 2^23` rounds it to the
/// nearest integer, which is read from the bits, minus one where that
/// rounded up. Every step is exact, and the loop vectorizes: in the widest
/// vectors the CPU has (AVX-512F or AVX2, checked at run time; the binary
/// targets baseline x86-64), each variant computing the same indices
/// ([`every_variant_bins_alike`](tests)). The index loop was most of
/// `observe`'s time, a twentieth of a PP-OCRv4 det compile.
fn bin_values(bins: &mut [u64], bins_log2: u32, range_log2: i32, data: &[f32], all_finite: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, the only feature the function
            // is compiled for beyond the baseline (checked just above).
            #[allow(unsafe_code)]
            unsafe {
                bin_values_avx512(bins, bins_log2, range_log2, data, all_finite)
            };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            #[allow(unsafe_code)]
            unsafe {
                bin_values_avx2(bins, bins_log2, range_log2, data, all_finite)
            };
            return;
        }
    }
    bin_values_loop(bins, bins_log2, range_log2, data, all_finite);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn bin_values_avx512(
    bins: &mut [u64],
    bins_log2: u32,
    range_log2: i32,
    data: &[f32],
    all_finite: bool,
) {
    bin_values_loop(bins, bins_log2, range_log2, data, all_finite);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn bin_values_avx2(
    bins: &mut [u64],
    bins_log2: u32,
    range_log2: i32,
    data: &[f32],
    all_finite: bool,
) {
    bin_values_loop(bins, bins_log2, range_log2, data, all_finite);
}

/// [`bin_values`]' body, inlined into each variant so that it vectorizes
/// for the variant's features.
#[inline(always)]
fn bin_values_loop(
    bins: &mut [u64],
    bins_log2: u32,
    range_log2: i32,
    data: &[f32],
    all_finite: bool,
) {
    let n = bins.len();
    let half = 1i64 << (bins_log2 - 1);
    let last = (n - 1) as i64;
    let exp = bins_log2 as i32 - 1 - range_log2;
    if !((0..=127).contains(&exp) && all_finite) {
        let factor = pow2(exp);
        for &x in data.iter().filter(|x| x.is_finite()) {
            let v = f64::from(x) * factor;
            let t = v as i64;
            let fl = t - i64::from((t as f64) > v);
            let bin = &mut bins[(fl + half).clamp(0, last) as usize];
            *bin = bin.saturating_add(1);
        }
        return;
    }
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let factor = pow2(exp) as f32;
    // Clamping into [-N/2, N/2 - 1/4] moves no value to another bin; it
    // keeps every index in range whatever the data.
    let (lo, hi) = (-(half as f32), half as f32 - 0.25);
    let h = half as i32;
    let index = |x: f32| -> u32 {
        let v = (x * factor).max(lo).min(hi);
        let r = v + MAGIC;
        let nearest = r.to_bits() as i32 - MAGIC.to_bits() as i32;
        (nearest - i32::from(r - MAGIC > v) + h) as u32
    };
    // Bin indices are computed for a block at a time (the loop that
    // vectorizes), then counted.
    const BLOCK: usize = 256;
    let mut idx = [0u32; BLOCK];
    if data.len() < n * 16 {
        // Small tensors: not worth clearing and folding the lanes.
        for block in data.chunks(BLOCK) {
            for (slot, &x) in idx.iter_mut().zip(block) {
                *slot = index(x);
            }
            for &i in &idx[..block.len()] {
                let bin = &mut bins[i as usize];
                *bin = bin.saturating_add(1);
            }
        }
        return;
    }
    let mut lanes = vec![0u32; n * LANES];
    for chunk in data.chunks(CHUNK) {
        for block in chunk.chunks(BLOCK) {
            for (slot, &x) in idx.iter_mut().zip(block) {
                *slot = index(x);
            }
            let mut quads = idx[..block.len()].chunks_exact(LANES);
            for q in &mut quads {
                for (lane, &i) in q.iter().enumerate() {
                    lanes[lane * n + i as usize] += 1;
                }
            }
            for &i in quads.remainder() {
                lanes[i as usize] += 1;
            }
        }
        for (i, bin) in bins.iter_mut().enumerate() {
            let c: u64 = (0..LANES).map(|l| u64::from(lanes[l * n + i])).sum();
            *bin = bin.saturating_add(c);
        }
        lanes.fill(0);
    }
}

/// Adds `src` (grid `src_log2` bins, range `src_range`) into `dst` (a grid
/// at least as coarse: more range, no more bins).
///
/// With `k` the width exponent `range_log2 + 1 - bins_log2`, the signed bin
/// index `floor(x / 2^k)` on the coarse grid is the fine one shifted right
/// (floor division) by `k_dst - k_src`.
fn accumulate(
    src: &[u64],
    src_log2: u32,
    src_range: i32,
    dst: &mut [u64],
    dst_log2: u32,
    dst_range: i32,
) {
    let src_k = src_range + 1 - src_log2 as i32;
    let dst_k = dst_range + 1 - dst_log2 as i32;
    let shift = (dst_k - src_k).max(0) as u32;
    let src_half = 1i64 << (src_log2 - 1);
    let dst_half = 1i64 << (dst_log2 - 1);
    let last = (dst.len() - 1) as i64;
    for (i, &c) in src.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let v = i as i64 - src_half;
        // Arithmetic shift is floor division; beyond 63 bits only the sign remains.
        let v = if shift >= 63 {
            v.signum().min(0)
        } else {
            v >> shift
        };
        let j = (v + dst_half).clamp(0, last) as usize;
        dst[j] = dst[j].saturating_add(c);
    }
}

/// Smallest `e >= MIN_RANGE_LOG2` with `max_abs < 2^e`, read exactly from
/// the f64 exponent (f32 -> f64 is exact and normal, even for subnormals).
pub(crate) fn range_log2_for(max_abs: f32) -> i32 {
    if max_abs.is_nan() || max_abs <= 0.0 {
        return MIN_RANGE_LOG2;
    }
    let biased = ((f64::from(max_abs).to_bits() >> 52) & 0x7ff) as i32;
    // max_abs in [2^(biased - 1023), 2^(biased - 1022)).
    (biased - 1022).clamp(MIN_RANGE_LOG2, MAX_RANGE_LOG2)
}

/// `2^k` as an exact f64, for `k` within the normal f64 exponent range
/// (always the case here: |k| < 300).
pub(crate) fn pow2(k: i32) -> f64 {
    let k = k.clamp(-1022, 1023);
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// `log2(bins)` if `bins` is an allowed bin count.
fn log2_bins(bins: usize) -> Result<u32, CalibError> {
    if bins.is_power_of_two() && (MIN_BINS..=MAX_BINS).contains(&bins) {
        Ok(bins.trailing_zeros())
    } else {
        Err(CalibError::InvalidBinCount(bins))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{bit_identical, Lcg};

    /// Every variant of the binning loop counts each value in the bin the
    /// scalar definition gives it (`floor(x * 2^e) + N/2`, in f64), on the
    /// vectorized path (small and large tensors) and on the f64 one.
    #[test]
    fn every_variant_bins_alike() {
        let mut rng = Lcg::new(99);
        let mut data: Vec<f32> = (0..40_000)
            .map(|i| {
                let u = rng.uniform() as f32;
                match i % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => (u - 0.5) * 7.9,
                    3 => (u * 64.0).round() / 16.0 - 2.0, // on bin edges
                    _ => (u - 0.5) * 1e-3,
                }
            })
            .collect();
        data.push(7.999_999);
        data.push(-8.0);
        let (bins_log2, range_log2) = (11u32, 3i32);
        let n = 1usize << bins_log2;
        let want = |data: &[f32]| {
            let mut b = vec![0u64; n];
            let e = bins_log2 as i32 - 1 - range_log2;
            for &x in data {
                let fl = (f64::from(x) * 2f64.powi(e)).floor() as i64 + (n as i64) / 2;
                b[fl.clamp(0, n as i64 - 1) as usize] += 1;
            }
            b
        };
        // Small (under 16 values per bin) and large tensors take two paths.
        for len in [0usize, 1, 17, 300, 2_000, data.len()] {
            let d = &data[..len];
            let w = want(d);
            let mut got = vec![0u64; n];
            bin_values(&mut got, bins_log2, range_log2, d, true);
            assert_eq!(got, w, "dispatched, {len} values");
            let mut got = vec![0u64; n];
            bin_values_loop(&mut got, bins_log2, range_log2, d, true);
            assert_eq!(got, w, "baseline, {len} values");
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut got = vec![0u64; n];
                    // SAFETY: AVX2 checked just above.
                    #[allow(unsafe_code)]
                    unsafe {
                        bin_values_avx2(&mut got, bins_log2, range_log2, d, true)
                    };
                    assert_eq!(got, w, "avx2, {len} values");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    let mut got = vec![0u64; n];
                    // SAFETY: AVX-512F checked just above.
                    #[allow(unsafe_code)]
                    unsafe {
                        bin_values_avx512(&mut got, bins_log2, range_log2, d, true)
                    };
                    assert_eq!(got, w, "avx512, {len} values");
                }
            }
        }
    }

    #[test]
    fn range_exponent_is_exact() {
        assert_eq!(range_log2_for(0.0), MIN_RANGE_LOG2);
        assert_eq!(range_log2_for(0.9), 0);
        assert_eq!(range_log2_for(1.0), 1);
        assert_eq!(range_log2_for(1.5), 1);
        assert_eq!(range_log2_for(2.0), 2);
        assert_eq!(range_log2_for(f32::MAX), 128);
        assert_eq!(range_log2_for(f32::from_bits(1)), -148); // 2^-149
        assert_eq!(range_log2_for(f32::MIN_POSITIVE), -125);
        assert_eq!(pow2(-3), 0.125);
        assert_eq!(pow2(128), 2f64.powi(128));
    }

    #[test]
    fn binning_layout() -> Result<(), CalibError> {
        let mut h = Histogram::with_bins(16)?;
        h.observe(&[0.0, -0.0, 0.9, -0.9, 0.1, -0.1, 0.125, -0.125]);
        assert_eq!(h.range_log2(), 0); // R = 1, w = 1/8
        let mut expect = [0u64; 16];
        expect[8] += 2; // zeros
        expect[15] += 1; // 0.9
        expect[0] += 1; // -0.9
        expect[8] += 1; // 0.1
        expect[7] += 1; // -0.1
        expect[9] += 1; // 0.125 is a lower edge
        expect[7] += 1; // -0.125 is in [-0.125, 0)
        assert_eq!(h.bins(), &expect[..]);
        Ok(())
    }

    /// The f32 path for large batches (lanes), the small-batch path
    /// and the f64 path (after a non-finite value) all give the bins of the
    /// defining formula `floor(x / w) + N/2`, computed here with libm.
    #[test]
    fn every_binning_path_matches_the_formula() -> Result<(), CalibError> {
        let mut rng = Lcg::new(3);
        let mut data: Vec<f32> = (0..50_000).map(|_| rng.normal() as f32 * 2.0).collect();
        // Exact bin edges, zeros of both signs, runs of equal values.
        data.extend((-64..64).map(|k| k as f32 / 8.0));
        data.extend(std::iter::repeat_n(0.0f32, 3000));
        data.extend(std::iter::repeat_n(-0.0f32, 7));
        data.push(f32::from_bits(1));
        data.push(-f32::from_bits(1));
        let reference = |data: &[f32], range_log2: i32, bins: usize| -> Vec<u64> {
            let w = 2.0 * pow2(range_log2) / bins as f64;
            let mut out = vec![0u64; bins];
            for &x in data.iter().filter(|x| x.is_finite()) {
                let i = (f64::from(x) / w).floor() as i64 + bins as i64 / 2;
                out[i.clamp(0, bins as i64 - 1) as usize] += 1;
            }
            out
        };
        // Large batch: lanes.
        let mut big = Histogram::with_bins(256)?;
        big.observe(&data);
        assert_eq!(big.bins(), &reference(&data, big.range_log2(), 256)[..]);
        // Small batches: direct.
        let mut small = Histogram::with_bins(256)?;
        for c in data.chunks(100) {
            small.observe(c);
        }
        assert!(bit_identical(&small.stats(), &big.stats()));
        // A NaN forces the f64 path.
        let mut slow = Histogram::with_bins(256)?;
        let mut with_nan = data.clone();
        with_nan.push(f32::NAN);
        slow.observe(&with_nan);
        assert_eq!(slow.bins(), big.bins());
        assert_eq!(slow.nonfinite().nan, 1);
        // The most bins (the rounding trick at its widest), values at the
        // range's edges and one step inside them.
        let mut edges = data.clone();
        let top = 2f32.powi(big.range_log2());
        edges.extend([
            -top,
            top.next_down(),
            (-top).next_up(),
            top * 0.5,
            -top * 0.5,
        ]);
        for bins in [MIN_BINS, MAX_BINS] {
            let mut h = Histogram::with_bins(bins)?;
            h.observe(&edges);
            assert_eq!(h.bins(), &reference(&edges, h.range_log2(), bins)[..]);
        }
        Ok(())
    }

    #[test]
    fn growth_merges_bins_exactly() -> Result<(), CalibError> {
        let mut rng = Lcg::new(1);
        let small: Vec<f32> = (0..5000).map(|_| rng.normal() as f32 * 0.3).collect();
        let large: Vec<f32> = (0..50).map(|_| rng.normal() as f32 * 40.0).collect();
        let mut grown = Histogram::with_bins(64)?;
        grown.observe(&small);
        let before = grown.range_log2();
        grown.observe(&large);
        assert!(grown.range_log2() > before);
        assert_eq!(grown.bins().iter().sum::<u64>(), 5050);
        let mut direct = Histogram::with_bins(64)?;
        direct.observe(&large);
        direct.observe(&small);
        assert!(bit_identical(&grown.stats(), &direct.stats()));
        Ok(())
    }

    #[test]
    fn nonfinite_and_huge_values() -> Result<(), CalibError> {
        let mut h = Histogram::new();
        h.observe(&[
            1.0,
            f32::NAN,
            -3.4e38,
            f32::INFINITY,
            2.0,
            f32::NEG_INFINITY,
            0.0,
        ]);
        assert_eq!(h.count(), 4);
        assert_eq!(h.nonfinite().total(), 3);
        assert_eq!(h.range_log2(), 128);
        assert_eq!(h.bins().iter().sum::<u64>(), 4);
        assert_eq!(h.range(), Some((-3.4e38, 2.0)));
        // Subnormals grow the range from its minimum and are binned.
        let mut h = Histogram::new();
        h.observe(&[f32::from_bits(1), -f32::from_bits(3)]);
        assert_eq!(h.range_log2(), -147);
        assert_eq!(h.bins().iter().sum::<u64>(), 2);
        Ok(())
    }

    #[test]
    fn merge_with_different_bin_counts() -> Result<(), CalibError> {
        let mut rng = Lcg::new(5);
        let a: Vec<f32> = (0..3000).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..3000).map(|_| rng.normal() as f32 * 3.0).collect();
        let mut fine = Histogram::with_bins(1024)?;
        fine.observe(&a);
        let mut coarse = Histogram::with_bins(64)?;
        coarse.observe(&b);
        let mut x = fine.clone();
        x.merge(&coarse);
        let mut y = coarse.clone();
        y.merge(&fine);
        assert_eq!(x.num_bins(), 64);
        assert!(bit_identical(&x.stats(), &y.stats()));
        // Same as observing everything with the coarse grid.
        let mut direct = Histogram::with_bins(64)?;
        direct.observe(&b);
        direct.observe(&a);
        assert!(bit_identical(&x.stats(), &direct.stats()));
        Ok(())
    }

    /// Same range, different bin counts: the finer side is moved onto the
    /// coarser grid even though the range does not change (each coarse bin
    /// is the sum of 16 fine ones, counted here by hand).
    #[test]
    fn merge_with_equal_ranges_regrids_the_finer_side() -> Result<(), CalibError> {
        let mut rng = Lcg::new(9);
        let a: Vec<f32> = (0..2000)
            .map(|_| (rng.uniform() * 1.98 - 0.99) as f32)
            .collect();
        let b: Vec<f32> = (0..2000)
            .map(|_| (rng.uniform() * 1.98 - 0.99) as f32)
            .collect();
        let mut fine = Histogram::with_bins(1024)?;
        fine.observe(&a);
        let mut coarse = Histogram::with_bins(64)?;
        coarse.observe(&b);
        assert_eq!(fine.range_log2(), coarse.range_log2());
        let by_hand: Vec<u64> = coarse
            .bins()
            .iter()
            .zip(fine.bins().chunks(16))
            .map(|(c, f)| c + f.iter().sum::<u64>())
            .collect();
        let mut x = fine.clone();
        x.merge(&coarse);
        assert_eq!(x.num_bins(), 64);
        assert_eq!(x.bins(), by_hand.as_slice());
        assert_eq!(x.count(), 4000);
        Ok(())
    }

    /// Tables store only the non-empty span; full arrays (older tables)
    /// read too; a span beyond the bin count is rejected.
    #[test]
    fn wire_form_is_trimmed_and_backward_compatible() -> Result<(), CalibError> {
        let mut h = Histogram::with_bins(64)?;
        h.observe(&[0.5, 0.75, 0.9]);
        let json =
            serde_json::to_value(h.data()).map_err(|e| CalibError::InvalidStats(e.to_string()))?;
        let stored = json["bins"].as_array().map_or(0, Vec::len);
        assert!(stored < 64 && stored > 0, "{json}");
        assert_eq!(json["num_bins"], 64);
        let back: HistogramData =
            serde_json::from_value(json).map_err(|e| CalibError::InvalidStats(e.to_string()))?;
        assert_eq!(back, h.data());
        let full = serde_json::json!({"range_log2": 0, "bins": h.bins()});
        let old: HistogramData =
            serde_json::from_value(full).map_err(|e| CalibError::InvalidStats(e.to_string()))?;
        assert_eq!(old, h.data());
        let bad = serde_json::json!({"range_log2": 0, "num_bins": 16, "offset": 10, "bins": [1, 2, 3, 4, 5, 6, 7]});
        let bad: HistogramData =
            serde_json::from_value(bad).map_err(|e| CalibError::InvalidStats(e.to_string()))?;
        assert!(bad.validate().is_err());
        Ok(())
    }

    #[test]
    fn bin_count_validation() {
        assert!(Histogram::with_bins(2048).is_ok());
        for bad in [0, 8, 100, MAX_BINS * 2] {
            assert_eq!(
                Histogram::with_bins(bad),
                Err(CalibError::InvalidBinCount(bad))
            );
        }
    }

    #[test]
    fn stats_roundtrip() -> Result<(), CalibError> {
        let mut rng = Lcg::new(9);
        let data: Vec<f32> = (0..1000).map(|_| rng.normal() as f32).collect();
        let mut h = Histogram::new();
        h.observe(&data[..500]);
        let json = serde_json::to_string(&h.stats())
            .map_err(|e| CalibError::InvalidStats(e.to_string()))?;
        let stats: TensorStats =
            serde_json::from_str(&json).map_err(|e| CalibError::InvalidStats(e.to_string()))?;
        let mut resumed = Histogram::from_stats(&stats)?;
        resumed.observe(&data[500..]);
        h.observe(&data[500..]);
        assert_eq!(resumed, h);
        assert!(matches!(
            Histogram::from_stats(&MinMax::new().stats()),
            Err(CalibError::MissingHistogram(_))
        ));
        Ok(())
    }
}
