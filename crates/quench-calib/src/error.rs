//! Error type of the crate.

use crate::histogram::{MAX_BINS, MIN_BINS};

/// Everything that can go wrong in calibration math.
///
/// Every error comes from caller-supplied values (a bit width, a range, a
/// percentile, deserialized statistics); none signals an internal bug.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibError {
    /// A [`QuantTarget`](crate::QuantTarget) bit width outside `4..=16`.
    #[error("quantization bit width {0} is outside the supported range 4..=16")]
    InvalidBits(u8),
    /// A [`QuantFormat`](crate::QuantFormat) integer width outside `2..=16`.
    #[error("integer format width {0} is outside the supported range 2..=16")]
    InvalidFormatBits(u8),
    /// A [`QuantFormat`](crate::QuantFormat) whose parts do not fit together.
    #[error("invalid number format: {0}")]
    InvalidFormat(String),
    /// A range method that needs evenly spaced levels, asked for a float format.
    #[error("range method {method} assumes evenly spaced integer levels and cannot search for the float format {format}")]
    UnsupportedForFormat {
        /// The range method's name.
        method: &'static str,
        /// The format, as `Debug` prints it.
        format: String,
    },
    /// A range with an infinite or NaN end.
    #[error("range [{min}, {max}] is not finite")]
    NonFiniteRange {
        /// Lower end as given.
        min: f32,
        /// Upper end as given.
        max: f32,
    },
    /// A range whose lower end is above its upper end.
    #[error("range [{min}, {max}] has min > max")]
    InvertedRange {
        /// Lower end as given.
        min: f32,
        /// Upper end as given.
        max: f32,
    },
    /// A [`RangeMethod::Percentile`](crate::RangeMethod::Percentile) outside `(0, 100]` (or NaN).
    #[error("percentile {0} is outside (0, 100]")]
    InvalidPercentile(f64),
    /// A moving-average constant outside `(0, 1]` (or NaN).
    #[error("averaging constant {0} is outside (0, 1]")]
    InvalidAveragingConstant(f32),
    /// A histogram bin count that is not a power of two in the supported range.
    #[error("histogram bin count {0} must be a power of two in {MIN_BINS}..={MAX_BINS}")]
    InvalidBinCount(usize),
    /// The range method needs a histogram but the statistics carry none.
    #[error("range method {0} needs a histogram but the statistics have none")]
    MissingHistogram(&'static str),
    /// Deserialized or hand-built [`TensorStats`](crate::TensorStats) that contradict themselves.
    #[error("inconsistent tensor statistics: {0}")]
    InvalidStats(String),
}
