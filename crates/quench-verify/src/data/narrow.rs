//! [`NarrowType`]: the ONNX element types narrower than a byte or stored as
//! one-byte bit patterns (float8, float8 E8M0, float4, int4/uint4,
//! int2/uint2), which [`super::ArrayData::Narrow`] holds one byte per
//! element. No runtime quench measures with (tract) has these types; they
//! are read so that a dataset holding them loads, binds to the model and is
//! reported precisely instead of refused at load time.

use quench_onnx::proto::tensor_proto::DataType;

/// A narrow element type; its values are stored one per byte: the bit
/// pattern of a float8/float4 value, the low 4 or 2 bits of an integer
/// (two's complement for the signed ones, upper bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NarrowType {
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    F8E8M0,
    F4E2M1,
    I4,
    U4,
    I2,
    U2,
}

impl NarrowType {
    /// The narrow type of an ONNX element type code, if it is one.
    pub fn of(code: i32) -> Option<NarrowType> {
        Some(match DataType::try_from(code).ok()? {
            DataType::Float8e4m3fn => NarrowType::F8E4M3FN,
            DataType::Float8e4m3fnuz => NarrowType::F8E4M3FNUZ,
            DataType::Float8e5m2 => NarrowType::F8E5M2,
            DataType::Float8e5m2fnuz => NarrowType::F8E5M2FNUZ,
            DataType::Float8e8m0 => NarrowType::F8E8M0,
            DataType::Float4e2m1 => NarrowType::F4E2M1,
            DataType::Int4 => NarrowType::I4,
            DataType::Uint4 => NarrowType::U4,
            DataType::Int2 => NarrowType::I2,
            DataType::Uint2 => NarrowType::U2,
            DataType::Undefined
            | DataType::Float
            | DataType::Uint8
            | DataType::Int8
            | DataType::Uint16
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::String
            | DataType::Bool
            | DataType::Float16
            | DataType::Double
            | DataType::Uint32
            | DataType::Uint64
            | DataType::Complex64
            | DataType::Complex128
            | DataType::Bfloat16 => return None,
        })
    }

    /// The ONNX element type code.
    pub fn code(self) -> i32 {
        let d = match self {
            NarrowType::F8E4M3FN => DataType::Float8e4m3fn,
            NarrowType::F8E4M3FNUZ => DataType::Float8e4m3fnuz,
            NarrowType::F8E5M2 => DataType::Float8e5m2,
            NarrowType::F8E5M2FNUZ => DataType::Float8e5m2fnuz,
            NarrowType::F8E8M0 => DataType::Float8e8m0,
            NarrowType::F4E2M1 => DataType::Float4e2m1,
            NarrowType::I4 => DataType::Int4,
            NarrowType::U4 => DataType::Uint4,
            NarrowType::I2 => DataType::Int2,
            NarrowType::U2 => DataType::Uint2,
        };
        d as i32
    }

    /// Short name, as [`quench_onnx::dtype::elem_name`] prints it.
    pub fn name(self) -> &'static str {
        match self {
            NarrowType::F8E4M3FN => "f8e4m3fn",
            NarrowType::F8E4M3FNUZ => "f8e4m3fnuz",
            NarrowType::F8E5M2 => "f8e5m2",
            NarrowType::F8E5M2FNUZ => "f8e5m2fnuz",
            NarrowType::F8E8M0 => "f8e8m0",
            NarrowType::F4E2M1 => "f4e2m1",
            NarrowType::I4 => "i4",
            NarrowType::U4 => "u4",
            NarrowType::I2 => "i2",
            NarrowType::U2 => "u2",
        }
    }

    /// Bits per element in `raw_data` (8, 4 or 2; 4- and 2-bit elements
    /// are packed low bits first).
    pub fn bits(self) -> usize {
        match self {
            NarrowType::F8E4M3FN
            | NarrowType::F8E4M3FNUZ
            | NarrowType::F8E5M2
            | NarrowType::F8E5M2FNUZ
            | NarrowType::F8E8M0 => 8,
            NarrowType::F4E2M1 | NarrowType::I4 | NarrowType::U4 => 4,
            NarrowType::I2 | NarrowType::U2 => 2,
        }
    }

    /// Whether the type is a floating-point type.
    pub fn is_float(self) -> bool {
        match self {
            NarrowType::F8E4M3FN
            | NarrowType::F8E4M3FNUZ
            | NarrowType::F8E5M2
            | NarrowType::F8E5M2FNUZ
            | NarrowType::F8E8M0
            | NarrowType::F4E2M1 => true,
            NarrowType::I4 | NarrowType::U4 | NarrowType::I2 | NarrowType::U2 => false,
        }
    }

    /// Unpacks `numel` elements from packed bytes (`bits()` per element,
    /// low bits first); `None` unless `packed` has exactly the bytes they
    /// need.
    pub fn unpack(self, packed: &[u8], numel: usize) -> Option<Vec<u8>> {
        let per_byte = 8 / self.bits();
        if packed.len() != numel.div_ceil(per_byte) {
            return None;
        }
        let mask = ((1u16 << self.bits()) - 1) as u8;
        Some(
            (0..numel)
                .map(|i| (packed[i / per_byte] >> ((i % per_byte) * self.bits())) & mask)
                .collect(),
        )
    }

    /// Packs elements (one per byte, as [`NarrowType::unpack`] gives them).
    pub fn pack(self, values: &[u8]) -> Vec<u8> {
        let per_byte = 8 / self.bits();
        let mask = ((1u16 << self.bits()) - 1) as u8;
        let mut out = vec![0u8; values.len().div_ceil(per_byte)];
        for (i, v) in values.iter().enumerate() {
            out[i / per_byte] |= (v & mask) << ((i % per_byte) * self.bits());
        }
        out
    }

    /// The value of one element (NaN for the types' NaN encodings, ±inf
    /// for E5M2's), as ONNX defines the type.
    pub fn decode(self, b: u8) -> f32 {
        let sign = |neg: bool, v: f32| if neg { -v } else { v };
        // (exponent bits, mantissa bits, bias) of a sign-exponent-mantissa
        // byte, subnormals where the exponent field is 0.
        let minifloat = |b: u8, e_bits: u32, m_bits: u32, bias: i32| {
            let neg = b >> (e_bits + m_bits) & 1 == 1;
            let e = i32::from(b >> m_bits) & ((1 << e_bits) - 1);
            let m = f32::from(b & ((1 << m_bits) - 1) as u8);
            let scale = (1u32 << m_bits) as f32;
            let v = if e == 0 {
                m / scale * 2f32.powi(1 - bias)
            } else {
                (1.0 + m / scale) * 2f32.powi(e - bias)
            };
            sign(neg, v)
        };
        match self {
            NarrowType::F8E4M3FN => {
                if b & 0x7f == 0x7f {
                    f32::NAN
                } else {
                    minifloat(b, 4, 3, 7)
                }
            }
            NarrowType::F8E4M3FNUZ => {
                if b == 0x80 {
                    f32::NAN
                } else {
                    minifloat(b, 4, 3, 8)
                }
            }
            NarrowType::F8E5M2 => match b & 0x7f {
                0x7c => sign(b & 0x80 != 0, f32::INFINITY),
                0x7d..=0x7f => f32::NAN,
                _ => minifloat(b, 5, 2, 15),
            },
            NarrowType::F8E5M2FNUZ => {
                if b == 0x80 {
                    f32::NAN
                } else {
                    minifloat(b, 5, 2, 16)
                }
            }
            NarrowType::F8E8M0 => {
                if b == 0xff {
                    f32::NAN
                } else {
                    2f32.powi(i32::from(b) - 127)
                }
            }
            NarrowType::F4E2M1 => minifloat(b & 0x0f, 2, 1, 1),
            NarrowType::I4 => f32::from(((b << 4) as i8) >> 4),
            NarrowType::U4 => f32::from(b & 0x0f),
            NarrowType::I2 => f32::from(((b << 6) as i8) >> 6),
            NarrowType::U2 => f32::from(b & 0x03),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_as_onnx_defines_the_types() {
        use NarrowType::*;
        let cases: &[(NarrowType, u8, f32)] = &[
            (F8E4M3FN, 0x7e, 448.0),
            (F8E4M3FN, 0x01, 2f32.powi(-9)),
            (F8E4M3FN, 0x38, 1.0),
            (F8E4M3FN, 0xb8, -1.0),
            (F8E4M3FNUZ, 0x7f, 240.0),
            (F8E4M3FNUZ, 0x40, 1.0),
            (F8E5M2, 0x7b, 57344.0),
            (F8E5M2, 0x3c, 1.0),
            (F8E5M2, 0xfc, f32::NEG_INFINITY),
            (F8E5M2FNUZ, 0x7f, 57344.0),
            (F8E5M2FNUZ, 0x40, 1.0),
            (F8E8M0, 127, 1.0),
            (F8E8M0, 0, 2f32.powi(-127)),
            (F4E2M1, 0x7, 6.0),
            (F4E2M1, 0x1, 0.5),
            (F4E2M1, 0xa, -1.0),
            (I4, 0x8, -8.0),
            (I4, 0x7, 7.0),
            (U4, 0xf, 15.0),
            (I2, 0x2, -2.0),
            (I2, 0x1, 1.0),
            (U2, 0x3, 3.0),
        ];
        for (t, b, v) in cases {
            assert_eq!(t.decode(*b), *v, "{t:?} {b:#x}");
        }
        for (t, b) in [
            (F8E4M3FN, 0xff),
            (F8E4M3FNUZ, 0x80),
            (F8E5M2, 0x7e),
            (F8E5M2FNUZ, 0x80),
            (F8E8M0, 0xff),
        ] {
            assert!(t.decode(b).is_nan(), "{t:?} {b:#x}");
        }
    }

    #[test]
    fn pack_and_unpack_round_trip() {
        for t in [NarrowType::I4, NarrowType::U2, NarrowType::F8E5M2] {
            let mask = ((1u16 << t.bits()) - 1) as u8;
            let v: Vec<u8> = (0..7u8).map(|i| (i * 37) & mask).collect();
            let p = t.pack(&v);
            assert_eq!(p.len(), 7usize.div_ceil(8 / t.bits()));
            assert_eq!(t.unpack(&p, 7).as_deref(), Some(v.as_slice()));
            assert!(t.unpack(&p[1..], 7).is_none());
        }
    }
}
