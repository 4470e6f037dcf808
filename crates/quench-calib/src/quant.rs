//! Integer targets, affine quantization parameters and the ONNX
//! `QuantizeLinear` / `DequantizeLinear` arithmetic.
//!
//! # Conventions
//!
//! * Integer ranges are the full ONNX ones: an unsigned `b`-bit target is
//!   `[0, 2^b - 1]` (u8: `[0, 255]`), a signed one `[-2^(b-1), 2^(b-1) - 1]`
//!   (s8: `[-128, 127]`). Symmetric targets do **not** drop the most negative
//!   code.
//! * Asymmetric parameters for a range `[lo, hi]`:
//!   `scale = (hi - lo) / (qmax - qmin)`,
//!   `zero_point = clamp(round_half_even(qmin - lo / scale), qmin, qmax)`.
//! * Symmetric parameters use `a = max(|lo|, |hi|)` and are exactly the
//!   asymmetric formula applied to `[-a, a]`: `scale = 2a / (qmax - qmin)`
//!   (s8 and u8: `a / 127.5`), `zero_point = (qmax + qmin + 1) / 2`
//!   (0 for signed targets, `2^(b-1)` for unsigned ones, e.g. 128 for u8).
//!   With this choice, in exact arithmetic, `-a` quantizes to `qmin`
//!   (`-127.5` rounds half-even to `-128`) and `+a` to `qmax` after
//!   saturation (`127.5 -> 128 -> 127`), so the whole range is covered with
//!   the same `scale / 2` error bound as any interior value and the full
//!   integer range is used. (When `scale` is not exact in f32, `±a / scale`
//!   lands a hair off the tie and an end may map to the neighbouring code;
//!   the `scale / 2` bound still holds.)
//!
//! Invariant: the range handed to [`QuantParams::from_range`] is first
//! extended to contain 0, and the zero point is an integer inside
//! `[qmin, qmax]`, so 0.0 is always exactly representable (padding and ReLU
//! zeros survive quantization exactly).
//!
//! Invariant: every finite `x` inside the (zero-extended, symmetrized) range
//! quantizes and dequantizes back with error at most `scale / 2` (up to f32
//! rounding of the scale itself).
//!
//! Invariant: `scale` is always finite and `>= f32::MIN_POSITIVE`. A range
//! too small to give a normal scale (in particular `[0, 0]`) yields scale 1.0
//! and a zero point that maps 0.0 to itself; huge finite ranges such as
//! `[-3.4e38, 0]` are computed in f64 and give a large but finite scale.

use serde::{Deserialize, Serialize};

use crate::CalibError;

/// Integer type that a tensor is quantized to.
///
/// The fields are private so that every value is valid (`bits` in
/// `4..=16`); deserialization goes through the same check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "QuantTargetRepr", into = "QuantTargetRepr")]
pub struct QuantTarget {
    bits: u8,
    signed: bool,
    symmetric: bool,
}

/// Unchecked serde mirror of [`QuantTarget`].
#[derive(Serialize, Deserialize)]
struct QuantTargetRepr {
    bits: u8,
    signed: bool,
    symmetric: bool,
}

impl TryFrom<QuantTargetRepr> for QuantTarget {
    type Error = CalibError;
    fn try_from(r: QuantTargetRepr) -> Result<Self, CalibError> {
        QuantTarget::new(r.bits, r.signed, r.symmetric)
    }
}

impl From<QuantTarget> for QuantTargetRepr {
    fn from(t: QuantTarget) -> Self {
        QuantTargetRepr {
            bits: t.bits,
            signed: t.signed,
            symmetric: t.symmetric,
        }
    }
}

impl QuantTarget {
    /// Smallest supported bit width.
    pub const MIN_BITS: u8 = 4;
    /// Largest supported bit width.
    pub const MAX_BITS: u8 = 16;
    /// ONNX `uint8`, asymmetric (the usual activation target).
    pub const U8: QuantTarget = QuantTarget {
        bits: 8,
        signed: false,
        symmetric: false,
    };
    /// ONNX `int8`, asymmetric.
    pub const I8: QuantTarget = QuantTarget {
        bits: 8,
        signed: true,
        symmetric: false,
    };
    /// ONNX `int8`, symmetric (zero point 0).
    pub const I8_SYMMETRIC: QuantTarget = QuantTarget {
        bits: 8,
        signed: true,
        symmetric: true,
    };
    /// ONNX `uint16`, asymmetric.
    pub const U16: QuantTarget = QuantTarget {
        bits: 16,
        signed: false,
        symmetric: false,
    };
    /// ONNX `int16`, symmetric.
    pub const I16_SYMMETRIC: QuantTarget = QuantTarget {
        bits: 16,
        signed: true,
        symmetric: true,
    };

    /// A target of `bits` bits (`4..=16`).
    pub fn new(bits: u8, signed: bool, symmetric: bool) -> Result<Self, CalibError> {
        if !(Self::MIN_BITS..=Self::MAX_BITS).contains(&bits) {
            return Err(CalibError::InvalidBits(bits));
        }
        Ok(QuantTarget {
            bits,
            signed,
            symmetric,
        })
    }

    /// Bit width.
    pub fn bits(self) -> u8 {
        self.bits
    }

    /// Whether the integer type is signed.
    pub fn signed(self) -> bool {
        self.signed
    }

    /// Whether the range is symmetric around zero (zero point fixed at the
    /// middle of the integer range).
    pub fn symmetric(self) -> bool {
        self.symmetric
    }

    /// Smallest integer code: `-2^(bits-1)` or 0.
    pub fn qmin(self) -> i32 {
        if self.signed {
            -(1i32 << (self.bits - 1))
        } else {
            0
        }
    }

    /// Largest integer code: `2^(bits-1) - 1` or `2^bits - 1`.
    pub fn qmax(self) -> i32 {
        if self.signed {
            (1i32 << (self.bits - 1)) - 1
        } else {
            (1i32 << self.bits) - 1
        }
    }

    /// Number of quantization steps across the integer range, `qmax - qmin`
    /// (255 for 8 bits).
    pub fn steps(self) -> i32 {
        self.qmax() - self.qmin()
    }

    /// Zero point used by symmetric targets: `(qmax + qmin + 1) / 2`, i.e. 0
    /// for signed and `2^(bits-1)` for unsigned targets.
    pub fn symmetric_zero_point(self) -> i32 {
        (self.qmax() + self.qmin() + 1).div_euclid(2)
    }
}

/// Affine quantization parameters: `real = (q - zero_point) * scale`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantParams {
    /// Step size; always finite and positive when built by [`QuantParams::from_range`].
    pub scale: f32,
    /// Integer code of 0.0; inside `[qmin, qmax]` of the target.
    pub zero_point: i32,
}

impl QuantParams {
    /// Parameters covering `[min, max]` (extended to include 0) for `target`;
    /// see the module documentation for the formulas.
    ///
    /// Errors if an end is NaN/infinite or `min > max`.
    pub fn from_range(min: f32, max: f32, target: QuantTarget) -> Result<Self, CalibError> {
        params_on_grid(
            min,
            max,
            target.qmin(),
            target.qmax(),
            target.symmetric,
            target.symmetric_zero_point(),
        )
    }

    /// [`quantize_f32`] with these parameters and the target's integer range.
    pub fn quantize(&self, x: f32, target: QuantTarget) -> i32 {
        quantize_f32(x, self.scale, self.zero_point, target.qmin(), target.qmax())
    }

    /// [`dequantize_f32`] with these parameters.
    pub fn dequantize(&self, q: i32) -> f32 {
        dequantize_f32(q, self.scale, self.zero_point)
    }
}

/// Errors unless `[min, max]` is finite and not inverted.
pub(crate) fn check_range(min: f32, max: f32) -> Result<(), CalibError> {
    if !min.is_finite() || !max.is_finite() {
        return Err(CalibError::NonFiniteRange { min, max });
    }
    if min > max {
        return Err(CalibError::InvertedRange { min, max });
    }
    Ok(())
}

/// [`QuantParams::from_range`] on the integer grid `[qmin, qmax]` (see the
/// module docs); `sym_zp` is the zero point of symmetric grids.
pub(crate) fn params_on_grid(
    min: f32,
    max: f32,
    qmin: i32,
    qmax: i32,
    symmetric: bool,
    sym_zp: i32,
) -> Result<QuantParams, CalibError> {
    check_range(min, max)?;
    let lo = f64::from(min.min(0.0));
    let hi = f64::from(max.max(0.0));
    let (lo, hi) = if symmetric {
        let a = hi.max(-lo);
        (-a, a)
    } else {
        (lo, hi)
    };
    // In f64: `hi - lo` may exceed f32::MAX (e.g. [-3e38, 3e38]).
    let scale = ((hi - lo) / f64::from(qmax - qmin)) as f32;
    if !(scale.is_finite() && scale >= f32::MIN_POSITIVE) {
        // Degenerate (all-zero or sub-normal) range: any zero point in
        // range represents 0 exactly; the scale is irrelevant but must be
        // usable.
        let zero_point = if symmetric { sym_zp } else { 0 };
        return Ok(QuantParams {
            scale: 1.0,
            zero_point,
        });
    }
    let zero_point = if symmetric {
        sym_zp
    } else {
        let zp = (f64::from(qmin) - lo / f64::from(scale)).round_ties_even();
        // `zp` is finite and within a rounding error of [qmin, qmax].
        zp.clamp(f64::from(qmin), f64::from(qmax)) as i32
    };
    Ok(QuantParams { scale, zero_point })
}

/// ONNX `QuantizeLinear` for one value:
/// `saturate(round_half_even(x / scale) + zero_point)` into `[qmin, qmax]`.
///
/// The division is done in f32 as ONNX specifies; the addition and the
/// saturation are done in f64 so that huge quotients saturate instead of
/// overflowing. `±inf` saturate to `qmax`/`qmin`. NaN (or a NaN quotient
/// such as `0/0`) is left unspecified by ONNX; here it maps to the zero point
/// (the code of 0.0), saturated. Never panics, even for `qmin > qmax`
/// (the result is then `qmax`).
pub fn quantize_f32(x: f32, scale: f32, zero_point: i32, qmin: i32, qmax: i32) -> i32 {
    let q = x / scale;
    let v = if q.is_nan() {
        f64::from(zero_point)
    } else {
        f64::from(q.round_ties_even()) + f64::from(zero_point)
    };
    // max-then-min rather than clamp: clamp panics on qmin > qmax.
    v.max(f64::from(qmin)).min(f64::from(qmax)) as i32
}

/// ONNX `DequantizeLinear` for one value: `(q - zero_point) * scale`, the
/// difference taken exactly (in i64) before conversion to f32.
pub fn dequantize_f32(q: i32, scale: f32, zero_point: i32) -> f32 {
    (i64::from(q) - i64::from(zero_point)) as f32 * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Lcg;

    #[test]
    fn integer_ranges() -> Result<(), CalibError> {
        assert_eq!((QuantTarget::U8.qmin(), QuantTarget::U8.qmax()), (0, 255));
        assert_eq!(
            (QuantTarget::I8.qmin(), QuantTarget::I8.qmax()),
            (-128, 127)
        );
        let t = QuantTarget::new(4, true, false)?;
        assert_eq!((t.qmin(), t.qmax()), (-8, 7));
        let t = QuantTarget::new(4, false, true)?;
        assert_eq!((t.qmin(), t.qmax(), t.symmetric_zero_point()), (0, 15, 8));
        assert_eq!(
            (QuantTarget::U16.qmin(), QuantTarget::U16.qmax()),
            (0, 65535)
        );
        let t = QuantTarget::I16_SYMMETRIC;
        assert_eq!(
            (t.qmin(), t.qmax(), t.symmetric_zero_point()),
            (-32768, 32767, 0)
        );
        assert_eq!(QuantTarget::U8.symmetric_zero_point(), 128);
        assert_eq!(QuantTarget::I8.symmetric_zero_point(), 0);
        // Steps across the range: 2^bits - 1 whatever the sign.
        assert_eq!(
            (QuantTarget::U8.steps(), QuantTarget::I8.steps()),
            (255, 255)
        );
        assert_eq!(QuantTarget::new(4, true, true)?.steps(), 15);
        assert_eq!(QuantTarget::I16_SYMMETRIC.steps(), 65535);
        assert_eq!(
            QuantTarget::new(3, true, true),
            Err(CalibError::InvalidBits(3))
        );
        assert_eq!(
            QuantTarget::new(17, false, true),
            Err(CalibError::InvalidBits(17))
        );
        Ok(())
    }

    #[test]
    fn target_serde_validates() {
        let json = r#"{"bits":8,"signed":true,"symmetric":true}"#;
        let t: Result<QuantTarget, _> = serde_json::from_str(json);
        assert_eq!(t.ok(), Some(QuantTarget::I8_SYMMETRIC));
        assert_eq!(
            serde_json::to_string(&QuantTarget::I8_SYMMETRIC)
                .ok()
                .as_deref(),
            Some(json)
        );
        let bad: Result<QuantTarget, _> =
            serde_json::from_str(r#"{"bits":32,"signed":true,"symmetric":true}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn quantize_ties_round_half_to_even() {
        let q = |x: f32| quantize_f32(x, 1.0, 0, -128, 127);
        assert_eq!(q(0.5), 0);
        assert_eq!(q(1.5), 2);
        assert_eq!(q(2.5), 2);
        assert_eq!(q(3.5), 4);
        assert_eq!(q(-0.5), 0);
        assert_eq!(q(-1.5), -2);
        assert_eq!(q(-2.5), -2);
        assert_eq!(q(0.49999997), 0);
        assert_eq!(q(0.50000006), 1);
        // Ties are decided on x / scale, before adding the zero point.
        assert_eq!(quantize_f32(1.25, 0.5, 3, 0, 255), 5); // 2.5 -> 2, + 3
        assert_eq!(quantize_f32(-0.75, 0.5, 128, 0, 255), 126); // -1.5 -> -2, + 128
    }

    #[test]
    fn quantize_saturates() {
        assert_eq!(quantize_f32(1000.0, 1.0, 0, -128, 127), 127);
        assert_eq!(quantize_f32(-1000.0, 1.0, 0, -128, 127), -128);
        assert_eq!(quantize_f32(127.5, 1.0, 0, -128, 127), 127);
        assert_eq!(quantize_f32(-128.5, 1.0, 0, -128, 127), -128);
        assert_eq!(quantize_f32(200.0, 1.0, 100, 0, 255), 255);
        assert_eq!(quantize_f32(-1.0, 1.0, 0, 0, 255), 0);
        assert_eq!(quantize_f32(f32::INFINITY, 0.1, 0, -8, 7), 7);
        assert_eq!(quantize_f32(f32::NEG_INFINITY, 0.1, 0, -8, 7), -8);
        assert_eq!(quantize_f32(f32::MAX, 1e-30, 0, 0, 65535), 65535);
        assert_eq!(quantize_f32(f32::NAN, 0.1, 128, 0, 255), 128);
        assert_eq!(quantize_f32(0.0, 0.0, 3, 0, 255), 3);
        // Nonsense inputs do not panic.
        assert_eq!(quantize_f32(1.0, 1.0, 0, 10, -10), -10);
    }

    #[test]
    fn dequantize_matches_onnx() {
        assert_eq!(dequantize_f32(0, 0.5, 128), -64.0);
        assert_eq!(dequantize_f32(255, 1.0, 0), 255.0);
        assert_eq!(
            dequantize_f32(i32::MIN, 1.0, i32::MAX),
            -(2f32.powi(32)) + 1.0
        );
    }

    #[test]
    fn params_for_known_ranges() -> Result<(), CalibError> {
        let p = QuantParams::from_range(0.0, 255.0, QuantTarget::U8)?;
        assert_eq!(
            p,
            QuantParams {
                scale: 1.0,
                zero_point: 0
            }
        );
        let p = QuantParams::from_range(-128.0, 127.0, QuantTarget::I8)?;
        assert_eq!(
            p,
            QuantParams {
                scale: 1.0,
                zero_point: 0
            }
        );
        let p = QuantParams::from_range(-1.0, 1.0, QuantTarget::I8_SYMMETRIC)?;
        assert_eq!(
            p,
            QuantParams {
                scale: 1.0 / 127.5,
                zero_point: 0
            }
        );
        // With an exactly representable scale the ends hit the extreme codes:
        // -127.5 rounds half-even to -128, +127.5 to 128 and saturates to 127.
        let p1 = QuantParams::from_range(-127.5, 127.5, QuantTarget::I8_SYMMETRIC)?;
        assert_eq!(
            p1,
            QuantParams {
                scale: 1.0,
                zero_point: 0
            }
        );
        assert_eq!(p1.quantize(127.5, QuantTarget::I8_SYMMETRIC), 127);
        assert_eq!(p1.quantize(-127.5, QuantTarget::I8_SYMMETRIC), -128);
        // Symmetric uses max(|min|, |max|).
        let p2 = QuantParams::from_range(-0.25, 1.0, QuantTarget::I8_SYMMETRIC)?;
        assert_eq!(p2, p);
        let u8s = QuantTarget::new(8, false, true)?;
        let p = QuantParams::from_range(-2.0, 1.0, u8s)?;
        assert_eq!(
            p,
            QuantParams {
                scale: 2.0 / 127.5,
                zero_point: 128
            }
        );
        // Range extended to include zero.
        let p = QuantParams::from_range(10.0, 265.0, QuantTarget::U8)?;
        assert_eq!(p.zero_point, 0);
        assert!((p.scale - 265.0 / 255.0).abs() < 1e-6);
        let p = QuantParams::from_range(-265.0, -10.0, QuantTarget::U8)?;
        assert_eq!(p.zero_point, 255);
        // Zero point rounding: [-1, 2] on u8: scale 3/255, zp = 85.
        let p = QuantParams::from_range(-1.0, 2.0, QuantTarget::U8)?;
        assert_eq!(p.zero_point, 85);
        assert_eq!(p.quantize(0.0, QuantTarget::U8), 85);
        Ok(())
    }

    #[test]
    fn params_4_and_16_bits() -> Result<(), CalibError> {
        let u4 = QuantTarget::new(4, false, false)?;
        assert_eq!(
            QuantParams::from_range(0.0, 15.0, u4)?,
            QuantParams {
                scale: 1.0,
                zero_point: 0
            }
        );
        let s4 = QuantTarget::new(4, true, true)?;
        assert_eq!(
            QuantParams::from_range(-7.5, 3.0, s4)?,
            QuantParams {
                scale: 1.0,
                zero_point: 0
            }
        );
        let p = QuantParams::from_range(-2.0, 2.0, s4)?;
        assert_eq!(
            p,
            QuantParams {
                scale: 2.0 / 7.5,
                zero_point: 0
            }
        );
        assert_eq!(p.quantize(0.6, s4), 2); // 0.6 * 3.75 = 2.25
        let p = QuantParams::from_range(-7.5, 7.5, s4)?;
        assert_eq!((p.quantize(7.5, s4), p.quantize(-7.5, s4)), (7, -8));
        let p = QuantParams::from_range(0.0, 65535.0, QuantTarget::U16)?;
        assert_eq!(
            p,
            QuantParams {
                scale: 1.0,
                zero_point: 0
            }
        );
        let p = QuantParams::from_range(-1.0, 1.0, QuantTarget::I16_SYMMETRIC)?;
        assert_eq!(
            p,
            QuantParams {
                scale: 1.0 / 32767.5,
                zero_point: 0
            }
        );
        assert_eq!(p.quantize(1.0, QuantTarget::I16_SYMMETRIC), 32767);
        assert!(
            (p.dequantize(p.quantize(-1.0, QuantTarget::I16_SYMMETRIC)) + 1.0).abs()
                <= p.scale * 0.5
        );
        let p = QuantParams::from_range(-32767.5, 32767.5, QuantTarget::I16_SYMMETRIC)?;
        assert_eq!(p.scale, 1.0);
        assert_eq!(p.quantize(-32767.5, QuantTarget::I16_SYMMETRIC), -32768);
        Ok(())
    }

    #[test]
    fn degenerate_and_nonfinite_ranges() -> Result<(), CalibError> {
        for target in [
            QuantTarget::U8,
            QuantTarget::I8,
            QuantTarget::I8_SYMMETRIC,
            QuantTarget::new(8, false, true)?,
        ] {
            let p = QuantParams::from_range(0.0, 0.0, target)?;
            assert_eq!(p.scale, 1.0);
            assert_eq!(p.dequantize(p.quantize(0.0, target)), 0.0);
            // A sub-normal range is degenerate too.
            let p = QuantParams::from_range(-1e-44, 1e-44, target)?;
            assert_eq!(p.scale, 1.0);
            assert_eq!(p.dequantize(p.quantize(0.0, target)), 0.0);
            // Huge magnitudes (attention masks) stay finite.
            for (lo, hi) in [(-3.4e38, 0.0), (-f32::MAX, f32::MAX), (0.0, f32::MAX)] {
                let p = QuantParams::from_range(lo, hi, target)?;
                assert!(p.scale.is_finite() && p.scale > 0.0, "{p:?}");
                assert!((target.qmin()..=target.qmax()).contains(&p.zero_point));
                assert_eq!(p.dequantize(p.quantize(0.0, target)), 0.0);
            }
        }
        let t = QuantTarget::U8;
        assert!(matches!(
            QuantParams::from_range(f32::NAN, 1.0, t),
            Err(CalibError::NonFiniteRange { .. })
        ));
        assert!(matches!(
            QuantParams::from_range(0.0, f32::INFINITY, t),
            Err(CalibError::NonFiniteRange { .. })
        ));
        assert!(matches!(
            QuantParams::from_range(2.0, 1.0, t),
            Err(CalibError::InvertedRange { .. })
        ));
        Ok(())
    }

    /// Invariant check: zero is exact and every value of the range round-trips
    /// within scale / 2, for random ranges and all kinds of targets.
    #[test]
    fn range_is_covered_within_half_a_step() -> Result<(), CalibError> {
        let mut rng = Lcg::new(7);
        for bits in [4u8, 8, 12, 16] {
            for signed in [false, true] {
                for symmetric in [false, true] {
                    let target = QuantTarget::new(bits, signed, symmetric)?;
                    for _ in 0..200 {
                        let mag = 10f64.powf(rng.uniform() * 8.0 - 4.0);
                        let a = ((rng.uniform() - 0.7) * mag) as f32;
                        let b = ((rng.uniform() - 0.3) * mag) as f32;
                        let (lo, hi) = (a.min(b), a.max(b));
                        let p = QuantParams::from_range(lo, hi, target)?;
                        assert!((target.qmin()..=target.qmax()).contains(&p.zero_point));
                        assert_eq!(p.dequantize(p.quantize(0.0, target)), 0.0);
                        let (elo, ehi) = if symmetric {
                            let m = lo.abs().max(hi.abs());
                            (-m, m)
                        } else {
                            (lo.min(0.0), hi.max(0.0))
                        };
                        for k in 0..=64 {
                            let x = elo + (ehi - elo) * (k as f32 / 64.0);
                            let err = (p.dequantize(p.quantize(x, target)) - x).abs();
                            // Half a step, plus f32 rounding of x / scale (a few ulps of
                            // a quotient up to `steps`) and of the dequantized value.
                            let bound =
                                p.scale * (0.5 + target.steps() as f32 * 3e-7) + x.abs() * 1e-6;
                            assert!(
                                err <= bound,
                                "{target:?} [{lo}, {hi}] x={x} err={err} {p:?}"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
