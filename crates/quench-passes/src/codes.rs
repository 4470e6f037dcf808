//! Storage of quantized codes in ONNX tensors, for every
//! [`ElemType`]: 8- and 16-bit integers and float8
//! one element per byte / two bytes (little endian), 4-bit integers packed
//! two per byte with the first element in the low nibble (the ONNX layout),
//! float8 codes as their bit patterns.
//!
//! Invariant: [`decode`] inverts [`encode`] for every code inside the
//! element type's range.

use quench_calib::{ElemType, Granularity};
use quench_ir::tensor;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::TensorProto;

/// The ONNX `DataType` of an element type.
pub fn data_type(e: ElemType) -> DataType {
    match e {
        ElemType::Int4 => DataType::Int4,
        ElemType::Uint4 => DataType::Uint4,
        ElemType::Int8 => DataType::Int8,
        ElemType::Uint8 => DataType::Uint8,
        ElemType::Int16 => DataType::Int16,
        ElemType::Uint16 => DataType::Uint16,
        ElemType::F8E4M3FN => DataType::Float8e4m3fn,
        ElemType::F8E5M2 => DataType::Float8e5m2,
        ElemType::F16 => DataType::Float16,
        ElemType::BF16 => DataType::Bfloat16,
    }
}

/// The element type of an ONNX `DataType` code, if it is one.
pub fn elem_type(code: i32) -> Option<ElemType> {
    Some(match DataType::try_from(code).ok()? {
        DataType::Int4 => ElemType::Int4,
        DataType::Uint4 => ElemType::Uint4,
        DataType::Int8 => ElemType::Int8,
        DataType::Uint8 => ElemType::Uint8,
        DataType::Int16 => ElemType::Int16,
        DataType::Uint16 => ElemType::Uint16,
        DataType::Float8e4m3fn => ElemType::F8E4M3FN,
        DataType::Float8e5m2 => ElemType::F8E5M2,
        DataType::Float16 => ElemType::F16,
        DataType::Bfloat16 => ElemType::BF16,
        _ => return None,
    })
}

/// A tensor of `elem` holding `codes` (integer values, or float bit
/// patterns), as raw data. Codes are truncated to the type's width.
pub fn encode(elem: ElemType, dims: &[i64], codes: &[i32]) -> TensorProto {
    let raw: Vec<u8> = match elem {
        ElemType::Int4 | ElemType::Uint4 => codes
            .chunks(2)
            .map(|c| {
                let lo = (c[0] & 0xF) as u8;
                let hi = c.get(1).map_or(0, |v| (v & 0xF) as u8);
                lo | hi << 4
            })
            .collect(),
        ElemType::Int8 | ElemType::Uint8 | ElemType::F8E4M3FN | ElemType::F8E5M2 => {
            codes.iter().map(|c| *c as u8).collect()
        }
        ElemType::Int16 | ElemType::Uint16 | ElemType::F16 | ElemType::BF16 => codes
            .iter()
            .flat_map(|c| (*c as u16).to_le_bytes())
            .collect(),
    };
    tensor::from_raw("", data_type(elem), dims, raw)
}

/// The codes of a tensor of one of the [`ElemType`]s (integers as values,
/// floats as bit patterns); `None` for other types or malformed data.
pub fn decode(t: &TensorProto) -> Option<(ElemType, Vec<i32>)> {
    let elem = elem_type(t.data_type())?;
    let n = tensor::numel(&t.dims)?;
    let Some(raw) = &t.raw_data else {
        // Typed storage: every one of these types lives in int32_data.
        let v: Vec<i32> = t.int32_data.clone();
        return match elem {
            ElemType::Int4 | ElemType::Uint4 => {
                let signed = elem == ElemType::Int4;
                let out: Vec<i32> = (0..n)
                    .map(|i| nibble(v.get(i / 2).copied().unwrap_or(0) as u8, i % 2, signed))
                    .collect();
                (v.len() == n.div_ceil(2)).then_some((elem, out))
            }
            _ => (v.len() == n).then_some((elem, v)),
        };
    };
    let out: Vec<i32> = match elem {
        ElemType::Int4 | ElemType::Uint4 => {
            if raw.len() != n.div_ceil(2) {
                return None;
            }
            let signed = elem == ElemType::Int4;
            (0..n).map(|i| nibble(raw[i / 2], i % 2, signed)).collect()
        }
        ElemType::Int8 => {
            if raw.len() != n {
                return None;
            }
            raw.iter().map(|b| i32::from(*b as i8)).collect()
        }
        ElemType::Uint8 | ElemType::F8E4M3FN | ElemType::F8E5M2 => {
            if raw.len() != n {
                return None;
            }
            raw.iter().map(|b| i32::from(*b)).collect()
        }
        ElemType::Int16 => {
            if raw.len() != 2 * n {
                return None;
            }
            raw.chunks_exact(2)
                .map(|c| i32::from(i16::from_le_bytes([c[0], c[1]])))
                .collect()
        }
        ElemType::Uint16 | ElemType::F16 | ElemType::BF16 => {
            if raw.len() != 2 * n {
                return None;
            }
            raw.chunks_exact(2)
                .map(|c| i32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect()
        }
    };
    Some((elem, out))
}

/// Which scale each element of a tensor uses under a granularity (the
/// ONNX `DequantizeLinear` layouts: one scale, one per index along `axis`,
/// or one per block of `size` along `axis` with scales of the blocked
/// shape).
pub struct Layout {
    /// Number of scales.
    pub groups: usize,
    /// Shape of the scale (and zero point) tensor.
    pub scale_dims: Vec<i64>,
    d: usize,
    inner: usize,
    block: Option<usize>,
    per_axis: bool,
}

impl Layout {
    pub fn new(dims: &[i64], g: Granularity) -> Option<Layout> {
        let ud: Vec<usize> = dims
            .iter()
            .map(|d| usize::try_from(*d).ok())
            .collect::<Option<_>>()?;
        let split = |axis: usize| {
            let d = *ud.get(axis)?;
            let inner: usize = ud[axis + 1..].iter().product();
            let outer: usize = ud[..axis].iter().product();
            Some((outer, d, inner))
        };
        Some(match g {
            Granularity::PerTensor => Layout {
                groups: 1,
                scale_dims: vec![],
                d: 1,
                inner: 1,
                block: None,
                per_axis: false,
            },
            Granularity::PerAxis { axis } => {
                let (_, d, inner) = split(axis)?;
                Layout {
                    groups: d,
                    scale_dims: vec![d as i64],
                    d,
                    inner,
                    block: None,
                    per_axis: true,
                }
            }
            Granularity::Block { axis, size } => {
                let (outer, d, inner) = split(axis)?;
                if size == 0 {
                    return None;
                }
                let nb = d.div_ceil(size);
                let mut scale_dims = dims.to_vec();
                scale_dims[axis] = nb as i64;
                Layout {
                    groups: outer * nb * inner,
                    scale_dims,
                    d,
                    inner,
                    block: Some(size),
                    per_axis: false,
                }
            }
        })
    }

    /// Scale index of flat element `i` (row-major).
    pub fn group(&self, i: usize) -> usize {
        if let Some(size) = self.block {
            let o = i / (self.d * self.inner);
            let a = (i / self.inner) % self.d;
            let r = i % self.inner;
            let nb = self.d.div_ceil(size);
            (o * nb + a / size) * self.inner + r
        } else if self.per_axis {
            (i / self.inner) % self.d
        } else {
            0
        }
    }
}

/// Element `k` (0: low nibble) of a packed byte, sign-extended if `signed`.
fn nibble(b: u8, k: usize, signed: bool) -> i32 {
    let v = if k == 0 { b & 0xF } else { b >> 4 };
    if signed && v >= 8 {
        i32::from(v) - 16
    } else {
        i32::from(v)
    }
}

/// A constant of element type `elem` (f32, f16 or bf16) holding `values`,
/// f16 and bf16 rounded to nearest even.
pub fn float_const(elem: i32, dims: &[i64], values: &[f32]) -> quench_onnx::proto::TensorProto {
    let kind = if elem == quench_onnx::proto::tensor_proto::DataType::Float16 as i32 {
        (
            quench_calib::FloatKind::F16,
            quench_onnx::proto::tensor_proto::DataType::Float16,
        )
    } else if elem == quench_onnx::proto::tensor_proto::DataType::Bfloat16 as i32 {
        (
            quench_calib::FloatKind::BF16,
            quench_onnx::proto::tensor_proto::DataType::Bfloat16,
        )
    } else {
        return quench_ir::tensor::from_f32("", dims, values);
    };
    let raw: Vec<u8> = values
        .iter()
        .flat_map(|v| (kind.0.encode(*v) as u16).to_le_bytes())
        .collect();
    quench_ir::tensor::from_raw("", kind.1, dims, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_type() {
        let cases: [(ElemType, Vec<i32>); 7] = [
            (ElemType::Int4, vec![-8, 7, 0, -1, 3]),
            (ElemType::Uint4, vec![0, 15, 9]),
            (ElemType::Int8, vec![-128, 127, 0]),
            (ElemType::Uint8, vec![0, 255, 17]),
            (ElemType::Int16, vec![-32768, 32767, -2]),
            (ElemType::Uint16, vec![0, 65535, 300]),
            (ElemType::F8E4M3FN, vec![0x7E, 0xFE, 0x01]),
        ];
        for (elem, codes) in cases {
            let t = encode(elem, &[codes.len() as i64], &codes);
            assert_eq!(decode(&t), Some((elem, codes.clone())), "{elem:?}");
        }
        // ONNX layout: first element in the low nibble.
        let t = encode(ElemType::Int4, &[2], &[-8, 7]);
        assert_eq!(t.raw_data.as_deref(), Some(&[0x78u8][..]));
    }
}
