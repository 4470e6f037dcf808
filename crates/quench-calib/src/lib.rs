//! Calibration math for quench: turns observed float activations into
//! quantization ranges and ONNX `QuantizeLinear` parameters.
//!
//! Pure math: no I/O, no ONNX or tract types. The pipeline is
//!
//! 1. an [`Observer`] ([`MinMax`], [`MovingAverageMinMax`] or
//!    [`Histogram`]) sees every calibration batch of a tensor
//!    (`observe`), possibly in parallel shards combined with `merge` or
//!    [`observe_parallel`];
//! 2. [`Observer::stats`] yields a serializable [`TensorStats`] record
//!    (min, max, count, non-finite counts, optional histogram);
//! 3. [`choose_range_for`] picks a `(lo, hi)` range with a [`RangeMethod`]
//!    (min/max, percentile, TensorRT entropy, MSE) for a [`QuantFormat`]
//!    ([`choose_range`] for the older integer-only [`QuantTarget`]);
//! 4. [`QuantFormat::params`] (or [`QuantParams::from_range`]) turns it
//!    into scale and zero point ([`calibrate_for`] / [`calibrate`] do 3 and
//!    4), and [`QuantFormat::quantize`] / [`QuantFormat::dequantize`]
//!    ([`quantize_f32`] / [`dequantize_f32`] for integer grids) reproduce
//!    the ONNX arithmetic.
//!
//! [`QuantFormat`] is the one description of a number format: integer
//! grids of 2–16 bits or float8/float16/bfloat16, with a granularity (per
//! tensor, per axis, blocks); see [`mod@format`].
//!
//! ```
//! use quench_calib::{calibrate, observe_parallel, Histogram, Observer, QuantTarget, RangeMethod};
//!
//! let batches: Vec<Vec<f32>> = (0..8)
//!     .map(|b| (0..1000).map(|i| ((i * 37 + b * 11) % 200) as f32 / 50.0 - 2.0).collect())
//!     .collect();
//! let hist: Histogram = observe_parallel(&batches, Histogram::new);
//! let stats = hist.stats(); // serializable record, e.g. to JSON
//! assert!(!stats.has_nonfinite());
//! let params = calibrate(&stats, RangeMethod::Percentile(99.99), QuantTarget::U8)?;
//! assert!(params.scale > 0.0 && (0..=255).contains(&params.zero_point));
//! assert_eq!(params.quantize(0.0, QuantTarget::U8), params.zero_point);
//! # Ok::<(), quench_calib::CalibError>(())
//! ```
//!
//! # Invariants
//!
//! Invariant: zero is exactly representable. Ranges are extended to contain
//! 0 and zero points are integers inside the target range.
//!
//! Invariant: no NaN or infinite scale, ever. Observers drop NaN and ±inf
//! from min/max and histograms and count them in [`NonFiniteCounts`]
//! ([`TensorStats::has_nonfinite`] lets the caller keep such a tensor
//! float); huge finite values are handled in f64 and give huge but finite
//! scales; degenerate ranges give scale 1.0.
//!
//! Invariant: [`MinMax`] and [`Histogram`] are [`OrderInvariant`]: their
//! statistics are bit-identical regardless of value order, batch split,
//! merge order and parallelism. [`MovingAverageMinMax`] is documented as
//! order dependent. See [`histogram`] for how exact merging is achieved
//! (power-of-two ranges and bin widths, growth by integer bin merging).
//!
//! Invariant: ranges chosen by [`choose_range`] lie inside the observed
//! `[min, max]`.

pub mod error;
pub mod format;
pub mod histogram;
pub mod observer;
pub mod quant;
pub mod range;
pub mod stats;

#[cfg(test)]
mod invariance_tests;
#[cfg(test)]
mod testutil;

pub use error::CalibError;
pub use format::{ElemType, FloatKind, FloatSpec, Granularity, IntFormat, QuantFormat, Scheme};
pub use histogram::{Histogram, HistogramData, DEFAULT_BINS};
pub use observer::{
    observe_parallel, MinMax, MovingAverageMinMax, NonFiniteCounts, Observer, OrderInvariant,
};
pub use quant::{dequantize_f32, quantize_f32, QuantParams, QuantTarget};
pub use range::{
    calibrate, calibrate_for, choose_range, choose_range_for, entropy_range_guarded,
    entropy_range_guarded_for, expected_sq_error, expected_sq_error_for, RangeMethod,
    ENTROPY_GUARD_RATIO,
};
pub use stats::TensorStats;
