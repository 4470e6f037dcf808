//! Serializable per-tensor calibration record.

use serde::{Deserialize, Serialize};

use crate::histogram::{range_log2_for, HistogramData};
use crate::observer::NonFiniteCounts;
use crate::CalibError;

/// What calibration learnt about one tensor; produced by
/// [`Observer::stats`](crate::Observer::stats), consumed by
/// [`choose_range`](crate::choose_range).
///
/// Invariant (checked by [`TensorStats::validate`], which every consumer
/// calls): `min`/`max` are finite with `min <= max` (both 0.0 when
/// `count == 0`), `count` is the number of finite values, and when a
/// histogram is present its bins sum to `count` and its range contains
/// `min` and `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorStats {
    /// Smallest finite value seen (0.0 if none).
    pub min: f32,
    /// Largest finite value seen (0.0 if none).
    pub max: f32,
    /// Number of finite values seen.
    pub count: u64,
    /// Number of NaN / ±inf values seen; they are excluded from everything
    /// else. Non-zero counts usually mean the tensor should stay float.
    pub nonfinite: NonFiniteCounts,
    /// Histogram of the finite values, if a [`Histogram`](crate::Histogram)
    /// observer was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<HistogramData>,
}

impl TensorStats {
    /// Whether any NaN or infinity was observed.
    pub fn has_nonfinite(&self) -> bool {
        self.nonfinite.total() > 0
    }

    /// Largest finite magnitude seen, `max(|min|, |max|)`. Values near
    /// `f32::MAX` (e.g. `-3.4e38` attention-mask fills) give valid but
    /// useless ranges; callers may compare this with a threshold to keep
    /// such tensors float.
    pub fn max_abs(&self) -> f32 {
        self.min.abs().max(self.max.abs())
    }

    /// Checks the invariant documented on the type.
    pub fn validate(&self) -> Result<(), CalibError> {
        if !self.min.is_finite() || !self.max.is_finite() {
            return Err(CalibError::InvalidStats(format!(
                "non-finite min/max [{}, {}]",
                self.min, self.max
            )));
        }
        if self.min > self.max {
            return Err(CalibError::InvalidStats(format!(
                "min {} > max {}",
                self.min, self.max
            )));
        }
        if let Some(h) = &self.histogram {
            let total = h.validate()?;
            if total != self.count {
                return Err(CalibError::InvalidStats(format!(
                    "histogram holds {total} values but count is {}",
                    self.count
                )));
            }
            if self.count > 0 && range_log2_for(self.max_abs()) > h.range_log2 {
                return Err(CalibError::InvalidStats(format!(
                    "min/max [{}, {}] outside histogram range 2^{}",
                    self.min, self.max, h.range_log2
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestResult;
    use crate::{Histogram, Observer};

    fn sample() -> Result<TensorStats, CalibError> {
        let mut h = Histogram::with_bins(16)?;
        h.observe(&[-1.0, 0.5, 3.0, f32::NAN]);
        Ok(h.stats())
    }

    #[test]
    fn json_roundtrip_is_exact() -> TestResult {
        let s = sample()?;
        let json = serde_json::to_string(&s)?;
        assert!(
            json.contains(r#""nonfinite":{"nan":1,"pos_inf":0,"neg_inf":0}"#),
            "{json}"
        );
        let back: TensorStats = serde_json::from_str(&json)?;
        assert_eq!(back, s);
        assert_eq!(back.validate(), Ok(()));
        // Without histogram the field is omitted and defaults to None.
        let plain = TensorStats {
            histogram: None,
            ..s
        };
        let json = serde_json::to_string(&plain)?;
        assert!(!json.contains("histogram"));
        assert_eq!(serde_json::from_str::<TensorStats>(&json)?, plain);
        Ok(())
    }

    #[test]
    fn validation_rejects_inconsistent_records() -> TestResult {
        let good = sample()?;
        assert_eq!(good.validate(), Ok(()));
        let bad = [
            TensorStats {
                min: f32::NAN,
                ..good.clone()
            },
            TensorStats {
                max: f32::INFINITY,
                ..good.clone()
            },
            TensorStats {
                min: 5.0,
                ..good.clone()
            },
            TensorStats {
                count: 7,
                ..good.clone()
            },
            TensorStats {
                max: 4.0,
                ..good.clone()
            }, // R = 4 excludes 4.0
            TensorStats {
                histogram: Some(HistogramData {
                    range_log2: 2,
                    bins: vec![0; 17],
                }),
                ..good.clone()
            },
            TensorStats {
                histogram: Some(HistogramData {
                    range_log2: 500,
                    bins: vec![0; 16],
                }),
                ..good.clone()
            },
            TensorStats {
                count: 0,
                histogram: Some(HistogramData {
                    range_log2: 2,
                    bins: vec![u64::MAX; 16],
                }),
                ..good.clone()
            },
        ];
        for s in bad {
            assert!(
                matches!(
                    s.validate(),
                    Err(CalibError::InvalidStats(_) | CalibError::InvalidBinCount(_))
                ),
                "{s:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn max_abs_and_nonfinite() -> TestResult {
        let s = sample()?;
        assert_eq!(s.max_abs(), 3.0);
        assert!(s.has_nonfinite());
        Ok(())
    }
}
