//! [`QuantFormat`]: one type for every number format a tensor can be
//! quantized to.
//!
//! A format is a [`Scheme`] (an integer grid or a small float type) plus a
//! [`Granularity`] (one scale per tensor, per slice along an axis, or per
//! block of `N` elements along an axis). It owns everything that depends on
//! the number format: the ONNX element type ([`ElemType`]), the minimum
//! default-domain opset that can express it in `QuantizeLinear` /
//! `DequantizeLinear`, its representable values, scale / zero-point
//! computation from a range ([`QuantFormat::params`]) and the exact ONNX
//! arithmetic for one value ([`QuantFormat::quantize`],
//! [`QuantFormat::dequantize`]).
//!
//! # Integer schemes
//!
//! [`IntFormat`]: 2 to 16 bits, signed or not, symmetric or not, and for
//! signed symmetric formats optionally *narrow* (the most negative code is
//! dropped: int8 weights in `[-127, 127]`, scale `amax / 127`). The
//! arithmetic is [`QuantParams::from_range`]'s (see [`crate::quant`]) with
//! `qmin` raised by one for narrow formats. Widths without an ONNX type of
//! their own (2, 3, 5–7, 9–15 bits) are stored in the next wider ONNX type;
//! [`QuantFormat::native`] tells whether a `QuantizeLinear` of the storage
//! type saturates to the format's range (only then may the format be used
//! for activations, which are quantized at run time).
//!
//! # Float schemes
//!
//! [`FloatKind`]: `FLOAT8E4M3FN`, `FLOAT8E5M2`, `FLOAT16`, `BFLOAT16`
//! (FP4 `E2M1` fits the same [`FloatSpec`] description and is one variant
//! away). Float formats are symmetric with zero point 0 and
//! `scale = amax / max_finite` (f64, rounded to f32; degenerate ranges give
//! scale 1). Quantizing divides in f32 as ONNX does and converts the
//! quotient to the float type rounding to nearest, ties to even. The
//! float8 types saturate as `QuantizeLinear`'s default `saturate=1` does:
//! finite values and infinities beyond the largest finite value become
//! `±max` (E4M3FN has no infinity at all), NaN stays NaN. `FLOAT16` and
//! `BFLOAT16` are IEEE conversions (overflow gives `±inf`); ONNX has no
//! `QuantizeLinear` for them (they are a `Cast`).
//!
//! The quantized "code" of a float format is the raw bit pattern of the
//! float type in the low bits of an `i32` (e.g. `0x7E` for E4M3FN 448).
//!
//! Invariant: every `QuantFormat` value is valid (private fields, checked
//! constructors, serde through the same checks).
//!
//! Invariant: 0.0 is exactly representable in every format: integer zero
//! points are integers in range, float zero is a code.

use serde::{Deserialize, Serialize};

use crate::quant::{dequantize_f32, quantize_f32, QuantParams, QuantTarget};
use crate::CalibError;

/// An ONNX tensor element type that quantized data is stored in.
///
/// Our own enum so that this crate stays free of ONNX types;
/// [`ElemType::onnx_code`] gives the `TensorProto.DataType` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    /// `INT4` (21).
    Int4,
    /// `UINT4` (22).
    Uint4,
    /// `INT8` (3).
    Int8,
    /// `UINT8` (2).
    Uint8,
    /// `INT16` (5).
    Int16,
    /// `UINT16` (4).
    Uint16,
    /// `FLOAT8E4M3FN` (17).
    F8E4M3FN,
    /// `FLOAT8E5M2` (19).
    F8E5M2,
    /// `FLOAT16` (10).
    F16,
    /// `BFLOAT16` (16).
    BF16,
}

impl ElemType {
    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        match self {
            ElemType::Int4 => 22,
            ElemType::Uint4 => 21,
            ElemType::Int8 => 3,
            ElemType::Uint8 => 2,
            ElemType::Int16 => 5,
            ElemType::Uint16 => 4,
            ElemType::F8E4M3FN => 17,
            ElemType::F8E5M2 => 19,
            ElemType::F16 => 10,
            ElemType::BF16 => 16,
        }
    }

    /// Bits per element.
    pub fn bits(self) -> u8 {
        match self {
            ElemType::Int4 | ElemType::Uint4 => 4,
            ElemType::Int8 | ElemType::Uint8 | ElemType::F8E4M3FN | ElemType::F8E5M2 => 8,
            ElemType::Int16 | ElemType::Uint16 | ElemType::F16 | ElemType::BF16 => 16,
        }
    }

    /// First default-domain opset whose `QuantizeLinear` /
    /// `DequantizeLinear` accept this type; `None` if none does (FLOAT16
    /// and BFLOAT16 are converted with `Cast`).
    pub fn qdq_opset(self) -> Option<i64> {
        match self {
            ElemType::Int8 | ElemType::Uint8 => Some(10),
            ElemType::F8E4M3FN | ElemType::F8E5M2 => Some(19),
            ElemType::Int4 | ElemType::Uint4 | ElemType::Int16 | ElemType::Uint16 => Some(21),
            ElemType::F16 | ElemType::BF16 => None,
        }
    }
}

/// A small binary floating-point type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatKind {
    /// 1 sign, 4 exponent, 3 mantissa bits, bias 7; no infinity, one NaN
    /// pattern per sign (`S.1111.111`); max 448.
    F8E4M3FN,
    /// 1 sign, 5 exponent, 2 mantissa bits, bias 15; IEEE-like with
    /// infinities and NaNs; max 57344.
    F8E5M2,
    /// IEEE binary16; max 65504.
    F16,
    /// bfloat16 (f32 with 7 mantissa bits); max about 3.39e38.
    BF16,
}

/// The parameters that define a [`FloatKind`]'s values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloatSpec {
    /// Exponent field width.
    pub exp_bits: u32,
    /// Mantissa (fraction) field width.
    pub man_bits: u32,
    /// Exponent bias.
    pub bias: i32,
    /// Whether the all-ones exponent encodes infinities and NaNs (IEEE); if
    /// not, only the all-ones pattern is NaN and the rest are finite
    /// (E4M3FN).
    pub ieee_special: bool,
}

impl FloatSpec {
    /// Exponent of the smallest normal number, `1 - bias`.
    pub fn min_exp(self) -> i32 {
        1 - self.bias
    }

    /// Largest finite value.
    pub fn max_finite(self) -> f64 {
        let top = (1i32 << self.exp_bits) - 1;
        // IEEE: the largest exponent field is special; E4M3FN: the largest
        // field is finite except the all-ones mantissa.
        let (e, m) = if self.ieee_special {
            (top - 1 - self.bias, (1u64 << self.man_bits) - 1)
        } else {
            (top - self.bias, (1u64 << self.man_bits) - 2)
        };
        (1.0 + m as f64 / (1u64 << self.man_bits) as f64) * 2f64.powi(e)
    }

    /// Smallest positive (subnormal) value.
    pub fn min_subnormal(self) -> f64 {
        2f64.powi(self.min_exp() - self.man_bits as i32)
    }

    /// Distance between the representable values around `|x|` (the
    /// subnormal spacing below the smallest normal).
    pub fn spacing(self, x: f64) -> f64 {
        let a = x.abs();
        let e = if a > 0.0 {
            (a.log2().floor() as i32).max(self.min_exp())
        } else {
            self.min_exp()
        };
        2f64.powi(e - self.man_bits as i32)
    }

    fn sign_bit(self) -> u32 {
        1 << (self.exp_bits + self.man_bits)
    }

    /// Bits of `x` rounded to nearest, ties to even. With `saturate`,
    /// values (and infinities) beyond the largest finite value become
    /// `±max`; without, they become `±inf` (IEEE types) or NaN. NaN gives
    /// the quiet NaN pattern with the input's sign (as ONNX's reference).
    pub fn encode(self, x: f32, saturate: bool) -> u32 {
        let nan = if self.ieee_special {
            // Exponent all ones, top mantissa bit set.
            ((1u32 << self.exp_bits) - 1) << self.man_bits | 1 << (self.man_bits - 1)
        } else {
            (1u32 << (self.exp_bits + self.man_bits)) - 1
        };
        let sign = if x.is_sign_negative() {
            self.sign_bit()
        } else {
            0
        };
        if x.is_nan() {
            return sign | nan;
        }
        let max = self.max_finite();
        let a = f64::from(x.abs());
        let overflow = || {
            if saturate {
                sign | self.encode_magnitude(max)
            } else if self.ieee_special {
                sign | ((1u32 << self.exp_bits) - 1) << self.man_bits
            } else {
                sign | nan
            }
        };
        if a.is_infinite() {
            return overflow();
        }
        // Exact in f64: `a` has 24 significant bits and `step` is a power
        // of two, so `a / step` and its rounding are exact.
        let step = self.spacing(a);
        let r = (a / step).round_ties_even() * step;
        if r > max {
            return overflow();
        }
        sign | self.encode_magnitude(r)
    }

    /// Bits of a non-negative representable magnitude.
    fn encode_magnitude(self, r: f64) -> u32 {
        let min_normal = 2f64.powi(self.min_exp());
        if r < min_normal {
            // Subnormal (or zero): exponent field 0.
            return (r / self.min_subnormal()) as u32;
        }
        let e = r.log2().floor() as i32;
        let frac = r / 2f64.powi(e) - 1.0;
        let m = (frac * (1u64 << self.man_bits) as f64) as u32;
        ((e + self.bias) as u32) << self.man_bits | m
    }

    /// Value of the bit pattern `bits` (low `1 + exp_bits + man_bits` bits).
    pub fn decode(self, bits: u32) -> f32 {
        let man_mask = (1u32 << self.man_bits) - 1;
        let exp_top = (1u32 << self.exp_bits) - 1;
        let neg = bits & self.sign_bit() != 0;
        let ef = (bits >> self.man_bits) & exp_top;
        let m = bits & man_mask;
        let mag = if self.ieee_special && ef == exp_top {
            if m == 0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        } else if !self.ieee_special && ef == exp_top && m == man_mask {
            f64::NAN
        } else if ef == 0 {
            f64::from(m) * self.min_subnormal()
        } else {
            (1.0 + f64::from(m) / f64::from(man_mask + 1)) * 2f64.powi(ef as i32 - self.bias)
        };
        // Every value of these types is exact in f32.
        let v = mag as f32;
        if neg {
            -v
        } else {
            v
        }
    }
}

impl FloatKind {
    /// The defining parameters.
    pub fn spec(self) -> FloatSpec {
        let (exp_bits, man_bits, ieee_special) = match self {
            FloatKind::F8E4M3FN => (4, 3, false),
            FloatKind::F8E5M2 => (5, 2, true),
            FloatKind::F16 => (5, 10, true),
            FloatKind::BF16 => (8, 7, true),
        };
        FloatSpec {
            exp_bits,
            man_bits,
            bias: (1 << (exp_bits - 1)) - 1,
            ieee_special,
        }
    }

    /// Storage element type.
    pub fn elem(self) -> ElemType {
        match self {
            FloatKind::F8E4M3FN => ElemType::F8E4M3FN,
            FloatKind::F8E5M2 => ElemType::F8E5M2,
            FloatKind::F16 => ElemType::F16,
            FloatKind::BF16 => ElemType::BF16,
        }
    }

    /// Largest finite value (448, 57344, 65504, ~3.39e38).
    pub fn max_finite(self) -> f64 {
        self.spec().max_finite()
    }

    /// Whether conversion saturates (ONNX `QuantizeLinear`'s `saturate=1`
    /// for float8) rather than overflowing to infinity (IEEE casts).
    pub fn saturates(self) -> bool {
        match self {
            FloatKind::F8E4M3FN | FloatKind::F8E5M2 => true,
            FloatKind::F16 | FloatKind::BF16 => false,
        }
    }

    /// Bits of `x` in this type, as ONNX converts it (see the module docs).
    pub fn encode(self, x: f32) -> u32 {
        self.spec().encode(x, self.saturates())
    }

    /// Value of the bit pattern.
    pub fn decode(self, bits: u32) -> f32 {
        self.spec().decode(bits)
    }
}

/// An integer grid: `bits` wide, signed or not, symmetric or not; narrow
/// (signed symmetric only) drops the most negative code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "IntFormatRepr", into = "IntFormatRepr")]
pub struct IntFormat {
    bits: u8,
    signed: bool,
    symmetric: bool,
    narrow: bool,
}

#[derive(Serialize, Deserialize)]
struct IntFormatRepr {
    bits: u8,
    signed: bool,
    symmetric: bool,
    #[serde(default)]
    narrow: bool,
}

impl TryFrom<IntFormatRepr> for IntFormat {
    type Error = CalibError;
    fn try_from(r: IntFormatRepr) -> Result<Self, CalibError> {
        IntFormat::new(r.bits, r.signed, r.symmetric, r.narrow)
    }
}

impl From<IntFormat> for IntFormatRepr {
    fn from(f: IntFormat) -> Self {
        IntFormatRepr {
            bits: f.bits,
            signed: f.signed,
            symmetric: f.symmetric,
            narrow: f.narrow,
        }
    }
}

impl IntFormat {
    /// Smallest supported width.
    pub const MIN_BITS: u8 = 2;
    /// Largest supported width.
    pub const MAX_BITS: u8 = 16;

    /// A grid of `bits` (`2..=16`); `narrow` needs `signed && symmetric`.
    pub fn new(bits: u8, signed: bool, symmetric: bool, narrow: bool) -> Result<Self, CalibError> {
        if !(Self::MIN_BITS..=Self::MAX_BITS).contains(&bits) {
            return Err(CalibError::InvalidFormatBits(bits));
        }
        if narrow && !(signed && symmetric) {
            return Err(CalibError::InvalidFormat(
                "a narrow integer range needs a signed symmetric format".into(),
            ));
        }
        Ok(IntFormat {
            bits,
            signed,
            symmetric,
            narrow,
        })
    }

    /// Bit width.
    pub fn bits(self) -> u8 {
        self.bits
    }
    /// Signed codes.
    pub fn signed(self) -> bool {
        self.signed
    }
    /// Zero point fixed in the middle of the range.
    pub fn symmetric(self) -> bool {
        self.symmetric
    }
    /// Most negative code dropped (`[-127, 127]` for 8 bits).
    pub fn narrow(self) -> bool {
        self.narrow
    }

    /// Smallest code.
    pub fn qmin(self) -> i32 {
        match (self.signed, self.narrow) {
            (true, false) => -(1i32 << (self.bits - 1)),
            (true, true) => -(1i32 << (self.bits - 1)) + 1,
            (false, _) => 0,
        }
    }

    /// Largest code.
    pub fn qmax(self) -> i32 {
        if self.signed {
            (1i32 << (self.bits - 1)) - 1
        } else {
            (1i32 << self.bits) - 1
        }
    }

    /// `qmax - qmin`.
    pub fn steps(self) -> i32 {
        self.qmax() - self.qmin()
    }

    /// Zero point of symmetric formats: `(qmax + qmin + 1) / 2` rounded
    /// down (0 signed, `2^(bits-1)` unsigned).
    pub fn symmetric_zero_point(self) -> i32 {
        (self.qmax() + self.qmin() + 1).div_euclid(2)
    }

    /// Storage element type: the narrowest ONNX integer type holding it.
    pub fn elem(self) -> ElemType {
        match (self.bits, self.signed) {
            (0..=4, true) => ElemType::Int4,
            (0..=4, false) => ElemType::Uint4,
            (5..=8, true) => ElemType::Int8,
            (5..=8, false) => ElemType::Uint8,
            (_, true) => ElemType::Int16,
            (_, false) => ElemType::Uint16,
        }
    }

    /// Whether `QuantizeLinear` to [`IntFormat::elem`] saturates exactly to
    /// `[qmin, qmax]` (4, 8 or 16 bits, not narrow).
    pub fn native(self) -> bool {
        matches!(self.bits, 4 | 8 | 16) && !self.narrow
    }

    /// [`QuantParams::from_range`] on this grid.
    pub fn params(self, min: f32, max: f32) -> Result<QuantParams, CalibError> {
        crate::quant::params_on_grid(
            min,
            max,
            self.qmin(),
            self.qmax(),
            self.symmetric,
            self.symmetric_zero_point(),
        )
    }
}

impl From<QuantTarget> for IntFormat {
    fn from(t: QuantTarget) -> Self {
        IntFormat {
            bits: t.bits(),
            signed: t.signed(),
            symmetric: t.symmetric(),
            narrow: false,
        }
    }
}

/// Integer grid or float type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Evenly spaced integer levels.
    Int(IntFormat),
    /// A small float type (non-uniform grid).
    Float(FloatKind),
}

/// Which elements share one scale (and zero point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One scale for the whole tensor.
    #[default]
    PerTensor,
    /// One scale per index along `axis` (ONNX `axis`, opset 13).
    PerAxis {
        /// Tensor axis (non-negative).
        axis: usize,
    },
    /// One scale per `size` consecutive elements along `axis` (ONNX
    /// `block_size`, opset 21); scales have the tensor's shape with
    /// `dims[axis]` replaced by `ceil(dims[axis] / size)`.
    Block {
        /// Tensor axis the blocks run along.
        axis: usize,
        /// Elements per block (`>= 1`).
        size: usize,
    },
}

/// A complete number format: scheme plus granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuantFormat {
    /// Integer grid or float type.
    pub scheme: Scheme,
    /// Which elements share a scale.
    #[serde(default)]
    pub granularity: Granularity,
}

impl From<QuantTarget> for QuantFormat {
    fn from(t: QuantTarget) -> Self {
        QuantFormat::int(IntFormat::from(t))
    }
}

impl QuantFormat {
    /// uint8 asymmetric, per tensor (the usual activation format).
    pub const U8: QuantFormat = QuantFormat::int(IntFormat {
        bits: 8,
        signed: false,
        symmetric: false,
        narrow: false,
    });
    /// int8 symmetric, per tensor.
    pub const I8: QuantFormat = QuantFormat::int(IntFormat {
        bits: 8,
        signed: true,
        symmetric: true,
        narrow: false,
    });
    /// uint16 asymmetric, per tensor.
    pub const U16: QuantFormat = QuantFormat::int(IntFormat {
        bits: 16,
        signed: false,
        symmetric: false,
        narrow: false,
    });
    /// int16 symmetric, per tensor.
    pub const I16: QuantFormat = QuantFormat::int(IntFormat {
        bits: 16,
        signed: true,
        symmetric: true,
        narrow: false,
    });
    /// int8 weights: symmetric in `[-127, 127]`, per tensor.
    pub const I8_WEIGHT: QuantFormat = QuantFormat::int(IntFormat {
        bits: 8,
        signed: true,
        symmetric: true,
        narrow: true,
    });
    /// 7-bit weights in int8 storage: symmetric in `[-63, 63]`, per
    /// tensor (ONNX Runtime's `reduce_range`).
    pub const I7_WEIGHT: QuantFormat = QuantFormat::int(IntFormat {
        bits: 7,
        signed: true,
        symmetric: true,
        narrow: true,
    });
    /// uint8 weights: asymmetric, per tensor.
    pub const U8_WEIGHT: QuantFormat = QuantFormat::U8;
    /// int4 weights: symmetric in `[-7, 7]`, per tensor.
    pub const I4_WEIGHT: QuantFormat = QuantFormat::int(IntFormat {
        bits: 4,
        signed: true,
        symmetric: true,
        narrow: true,
    });
    /// FLOAT8E4M3FN, per tensor.
    pub const F8E4M3FN: QuantFormat = QuantFormat::float(FloatKind::F8E4M3FN);
    /// FLOAT8E5M2, per tensor.
    pub const F8E5M2: QuantFormat = QuantFormat::float(FloatKind::F8E5M2);

    /// An integer format, per tensor.
    pub const fn int(f: IntFormat) -> QuantFormat {
        QuantFormat {
            scheme: Scheme::Int(f),
            granularity: Granularity::PerTensor,
        }
    }

    /// A float format, per tensor.
    pub const fn float(k: FloatKind) -> QuantFormat {
        QuantFormat {
            scheme: Scheme::Float(k),
            granularity: Granularity::PerTensor,
        }
    }

    /// The same scheme with granularity `g`; errors on a block size of 0.
    pub fn with_granularity(self, g: Granularity) -> Result<QuantFormat, CalibError> {
        if let Granularity::Block { size: 0, .. } = g {
            return Err(CalibError::InvalidFormat("block size 0".into()));
        }
        Ok(QuantFormat {
            granularity: g,
            ..self
        })
    }

    /// The same scheme per tensor.
    pub fn per_tensor(self) -> QuantFormat {
        QuantFormat {
            granularity: Granularity::PerTensor,
            ..self
        }
    }

    /// Storage element type.
    pub fn elem(&self) -> ElemType {
        match self.scheme {
            Scheme::Int(i) => i.elem(),
            Scheme::Float(k) => k.elem(),
        }
    }

    /// The integer grid, if any.
    pub fn int_format(&self) -> Option<IntFormat> {
        match self.scheme {
            Scheme::Int(i) => Some(i),
            Scheme::Float(_) => None,
        }
    }

    /// The [`QuantTarget`] of an integer format of 4 to 16 bits that is not
    /// narrow (what the older API speaks).
    pub fn target(&self) -> Option<QuantTarget> {
        let i = self.int_format().filter(|i| !i.narrow)?;
        QuantTarget::new(i.bits, i.signed, i.symmetric).ok()
    }

    /// Whether the range is symmetric around zero (float formats always).
    pub fn symmetric(&self) -> bool {
        match self.scheme {
            Scheme::Int(i) => i.symmetric,
            Scheme::Float(_) => true,
        }
    }

    /// Whether the representable values are evenly spaced (integer grids).
    pub fn even_grid(&self) -> bool {
        matches!(self.scheme, Scheme::Int(_))
    }

    /// Whether `QuantizeLinear` to [`QuantFormat::elem`] computes exactly
    /// [`QuantFormat::quantize`], so the format can be used for tensors
    /// quantized at run time: integer formats of 4, 8 or 16 bits (not
    /// narrow) and float8.
    pub fn native(&self) -> bool {
        match self.scheme {
            Scheme::Int(i) => i.native(),
            Scheme::Float(k) => k.saturates(),
        }
    }

    /// First default-domain opset whose `QuantizeLinear` /
    /// `DequantizeLinear` express this format: int8/uint8 per tensor 10,
    /// per axis 13, float8 19, int4/uint4/int16/uint16 and blocks 21.
    /// `None` for FLOAT16/BFLOAT16, which are not Q/DQ types.
    pub fn min_opset(&self) -> Option<i64> {
        let elem = self.elem().qdq_opset()?;
        let gran = match self.granularity {
            Granularity::PerTensor => 10,
            Granularity::PerAxis { .. } => 13,
            Granularity::Block { .. } => 21,
        };
        Some(elem.max(gran))
    }

    /// Scale and zero point covering `[min, max]` (extended to contain 0).
    /// Integers: [`QuantParams::from_range`]'s formulas on this grid.
    /// Floats: `scale = max(|min|, |max|) / max_finite`, zero point 0
    /// (scale 1 for a degenerate range). Errors on non-finite or inverted
    /// ranges.
    pub fn params(&self, min: f32, max: f32) -> Result<QuantParams, CalibError> {
        match self.scheme {
            Scheme::Int(i) => i.params(min, max),
            Scheme::Float(k) => {
                crate::quant::check_range(min, max)?;
                let a = f64::from(min.abs().max(max.abs()));
                let scale = (a / k.max_finite()) as f32;
                let scale = if scale.is_finite() && scale >= f32::MIN_POSITIVE {
                    scale
                } else {
                    1.0
                };
                Ok(QuantParams {
                    scale,
                    zero_point: 0,
                })
            }
        }
    }

    /// ONNX `QuantizeLinear` of one value: the integer code, or the float
    /// type's bit pattern (see the module docs). Integer zero points are
    /// used as given; float formats ignore the zero point (ONNX requires
    /// it to be 0).
    pub fn quantize(&self, x: f32, p: &QuantParams) -> i32 {
        match self.scheme {
            Scheme::Int(i) => quantize_f32(x, p.scale, p.zero_point, i.qmin(), i.qmax()),
            Scheme::Float(k) => k.encode(x / p.scale) as i32,
        }
    }

    /// ONNX `DequantizeLinear` of one code.
    pub fn dequantize(&self, code: i32, p: &QuantParams) -> f32 {
        match self.scheme {
            Scheme::Int(_) => dequantize_f32(code, p.scale, p.zero_point),
            Scheme::Float(k) => k.decode(code as u32) * p.scale,
        }
    }

    /// `dequantize(quantize(x))`: the value the quantized model sees.
    pub fn fake_quantize(&self, x: f32, p: &QuantParams) -> f32 {
        self.dequantize(self.quantize(x, p), p)
    }
}

#[cfg(test)]
mod tests;
