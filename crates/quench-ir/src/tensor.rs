//! Reading and building constant tensors (`TensorProto`).

use bytes::Bytes;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::tensor_shape_proto::{dimension::Value as DimValue, Dimension};
use quench_onnx::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use quench_onnx::proto::{TensorProto, TensorShapeProto, TypeProto};

/// The ONNX type of a constant tensor.
pub fn tensor_type(t: &TensorProto) -> TypeProto {
    tensor_type_of(t.data_type(), &t.dims)
}

/// A tensor type with a static shape.
pub fn tensor_type_of(elem: i32, dims: &[i64]) -> TypeProto {
    TypeProto {
        denotation: None,
        value: Some(TypeValue::TensorType(TensorType {
            elem_type: Some(elem),
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| Dimension {
                        value: Some(DimValue::DimValue(*d)),
                        denotation: None,
                    })
                    .collect(),
            }),
        })),
    }
}

/// Number of elements (1 for a scalar); `None` if a dim is negative or the
/// product overflows.
pub fn numel(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Why tensor data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor `{name}`: {reason}")]
pub struct TensorError {
    pub name: String,
    pub reason: String,
}

fn err(t: &TensorProto, reason: impl Into<String>) -> TensorError {
    TensorError {
        name: t.name().to_string(),
        reason: reason.into(),
    }
}

/// Reads a float-like or integer tensor as `f32` (f32, f64, f16, bf16, and
/// 8/16/32/64-bit integers).
pub fn to_f32(t: &TensorProto) -> Result<Vec<f32>, TensorError> {
    Ok(to_f64(t)?.into_iter().map(|x| x as f32).collect())
}

/// Reads a numeric tensor as `f64` (exact for f32 and integers up to 2^53).
pub fn to_f64(t: &TensorProto) -> Result<Vec<f64>, TensorError> {
    let n = numel(&t.dims).ok_or_else(|| err(t, "invalid dims"))?;
    let dt = DataType::try_from(t.data_type())
        .map_err(|_| err(t, format!("unknown data type {}", t.data_type())))?;
    let out: Vec<f64> = if let Some(raw) = &t.raw_data {
        let width = match dt {
            DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
            DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
            DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
            DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
            _ => {
                return Err(err(
                    t,
                    format!(
                        "cannot read {} data as numbers",
                        quench_onnx::dtype::elem_name(t.data_type())
                    ),
                ))
            }
        };
        let need = n
            .checked_mul(width)
            .ok_or_else(|| err(t, format!("shape {:?} is too large", t.dims)))?;
        if raw.len() != need {
            return Err(err(
                t,
                format!("raw data has {} bytes, expected {need}", raw.len()),
            ));
        }
        raw.chunks_exact(width)
            .map(|c| match dt {
                DataType::Float => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DataType::Int32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DataType::Uint32 => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DataType::Double => {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                }
                DataType::Int64 => {
                    i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64
                }
                DataType::Uint64 => {
                    u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64
                }
                DataType::Float16 => f16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64,
                DataType::Bfloat16 => {
                    f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64
                }
                DataType::Int16 => i16::from_le_bytes([c[0], c[1]]) as f64,
                DataType::Uint16 => u16::from_le_bytes([c[0], c[1]]) as f64,
                DataType::Int8 => c[0] as i8 as f64,
                _ => c[0] as f64,
            })
            .collect()
    } else {
        let v: Vec<f64> = match dt {
            DataType::Float => t.float_data.iter().map(|x| *x as f64).collect(),
            DataType::Double => t.double_data.clone(),
            DataType::Int64 => t.int64_data.iter().map(|x| *x as f64).collect(),
            DataType::Uint64 | DataType::Uint32 => {
                t.uint64_data.iter().map(|x| *x as f64).collect()
            }
            DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::Uint16
            | DataType::Uint8
            | DataType::Bool => t.int32_data.iter().map(|x| *x as f64).collect(),
            DataType::Float16 => t
                .int32_data
                .iter()
                .map(|x| f16_to_f32(*x as u16) as f64)
                .collect(),
            DataType::Bfloat16 => t
                .int32_data
                .iter()
                .map(|x| f32::from_bits((*x as u32) << 16) as f64)
                .collect(),
            _ => {
                return Err(err(
                    t,
                    format!(
                        "cannot read {} data as numbers",
                        quench_onnx::dtype::elem_name(t.data_type())
                    ),
                ))
            }
        };
        if v.len() != n {
            return Err(err(
                t,
                format!("holds {} values, its shape needs {n}", v.len()),
            ));
        }
        v
    };
    Ok(out)
}

/// Reads an integer tensor as `i64`.
pub fn to_i64(t: &TensorProto) -> Result<Vec<i64>, TensorError> {
    if t.data_type() == DataType::Int64 as i32 {
        if let Some(raw) = &t.raw_data {
            let n = numel(&t.dims).ok_or_else(|| err(t, "invalid dims"))?;
            if Some(raw.len()) != n.checked_mul(8) {
                return Err(err(t, "raw data length does not match its shape"));
            }
            return Ok(raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect());
        }
        let n = numel(&t.dims).ok_or_else(|| err(t, "invalid dims"))?;
        if t.int64_data.len() != n {
            return Err(err(
                t,
                format!("holds {} values, its shape needs {n}", t.int64_data.len()),
            ));
        }
        return Ok(t.int64_data.clone());
    }
    Ok(to_f64(t)?.into_iter().map(|x| x as i64).collect())
}

/// IEEE half to single precision.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if frac == 0 {
            sign
        } else {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (frac << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (frac << 13)
    };
    f32::from_bits(bits)
}

/// A tensor of any element type from little-endian bytes.
pub fn from_raw(name: &str, elem: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    build(name, elem, dims, raw)
}

fn build(name: &str, elem: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(elem as i32),
        name: Some(name.to_string()),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// An f32 tensor.
pub fn from_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    build(
        name,
        DataType::Float,
        dims,
        data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// An i64 tensor.
pub fn from_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    build(
        name,
        DataType::Int64,
        dims,
        data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// An i32 tensor.
pub fn from_i32(name: &str, dims: &[i64], data: &[i32]) -> TensorProto {
    build(
        name,
        DataType::Int32,
        dims,
        data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// An i8 tensor.
pub fn from_i8(name: &str, dims: &[i64], data: &[i8]) -> TensorProto {
    build(
        name,
        DataType::Int8,
        dims,
        data.iter().map(|x| *x as u8).collect(),
    )
}

/// A u8 tensor.
pub fn from_u8(name: &str, dims: &[i64], data: &[u8]) -> TensorProto {
    build(name, DataType::Uint8, dims, data.to_vec())
}

/// Bytes of data a tensor holds in memory (raw or typed fields).
pub fn data_bytes(t: &TensorProto) -> u64 {
    if let Some(r) = &t.raw_data {
        return r.len() as u64;
    }
    (t.float_data.len() * 4
        + t.int32_data.len() * 4
        + t.int64_data.len() * 8
        + t.double_data.len() * 8
        + t.uint64_data.len() * 8
        + t.string_data.iter().map(|s| s.len()).sum::<usize>()) as u64
}
