//! [`ArrayData`]: an owned tensor value of one of the supported element types.

use std::ops::Range;

use bytes::Bytes;
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use quench_onnx::proto::tensor_proto::{DataLocation, DataType};
use quench_onnx::proto::TensorProto;
use tract_onnx::prelude::tract_data::half::{bf16, f16};
use tract_onnx::prelude::{DatumType, Tensor};

use super::{DataError, NarrowType};

/// The element types an [`ArrayData`] can hold, for messages.
pub(crate) const SUPPORTED: &str =
    "f32, f64, f16, bf16, i64, i32, i16, i8, u64, u32, u16, u8, bool, float8, float4, int4, uint4, int2, uint2";

/// An owned n-dimensional array; the variant is the element type (for
/// `Narrow`, the variant and its [`NarrowType`]). `F16` is tract's (the
/// `half` crate's) IEEE half; `BF16` is `half::bf16`; `Narrow` holds float8,
/// float4, int4/uint4 and int2/uint2 values one per byte (bit patterns, or
/// the low bits of the integer). tract runs neither bf16 nor the narrow
/// types (see [`ArrayData::to_tensor`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    F16(ArrayD<f16>),
    BF16(ArrayD<bf16>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    I16(ArrayD<i16>),
    I8(ArrayD<i8>),
    U64(ArrayD<u64>),
    U32(ArrayD<u32>),
    U16(ArrayD<u16>),
    U8(ArrayD<u8>),
    Bool(ArrayD<bool>),
    Narrow(NarrowType, ArrayD<u8>),
}

/// Applies `$e` to the array inside any variant.
macro_rules! each {
    ($v:expr, $a:ident => $e:expr) => {
        match $v {
            ArrayData::F32($a) => $e,
            ArrayData::F64($a) => $e,
            ArrayData::F16($a) => $e,
            ArrayData::BF16($a) => $e,
            ArrayData::I64($a) => $e,
            ArrayData::I32($a) => $e,
            ArrayData::I16($a) => $e,
            ArrayData::I8($a) => $e,
            ArrayData::U64($a) => $e,
            ArrayData::U32($a) => $e,
            ArrayData::U16($a) => $e,
            ArrayData::U8($a) => $e,
            ArrayData::Bool($a) => $e,
            ArrayData::Narrow(_, $a) => $e,
        }
    };
}

/// Applies `$e` to the array inside any variant and wraps the result in the
/// same variant.
macro_rules! map_each {
    ($v:expr, $a:ident => $e:expr) => {
        match $v {
            ArrayData::F32($a) => ArrayData::F32($e),
            ArrayData::F64($a) => ArrayData::F64($e),
            ArrayData::F16($a) => ArrayData::F16($e),
            ArrayData::BF16($a) => ArrayData::BF16($e),
            ArrayData::I64($a) => ArrayData::I64($e),
            ArrayData::I32($a) => ArrayData::I32($e),
            ArrayData::I16($a) => ArrayData::I16($e),
            ArrayData::I8($a) => ArrayData::I8($e),
            ArrayData::U64($a) => ArrayData::U64($e),
            ArrayData::U32($a) => ArrayData::U32($e),
            ArrayData::U16($a) => ArrayData::U16($e),
            ArrayData::U8($a) => ArrayData::U8($e),
            ArrayData::Bool($a) => ArrayData::Bool($e),
            ArrayData::Narrow(t, $a) => ArrayData::Narrow(*t, $e),
        }
    };
}

/// Little-endian element encoding, for `TensorProto.raw_data`.
trait LeElem: Copy {
    const SIZE: usize;
    fn read_le(b: &[u8]) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
}

macro_rules! le_num {
    ($($t:ty),*) => {$(
        impl LeElem for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read_le(b: &[u8]) -> Self {
                let mut buf = [0u8; std::mem::size_of::<$t>()];
                buf.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_le_bytes(buf)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_num!(f32, f64, i64, i32, i16, i8, u64, u32, u16, u8);

macro_rules! le_half {
    ($($t:ty),*) => {$(
        impl LeElem for $t {
            const SIZE: usize = 2;
            fn read_le(b: &[u8]) -> Self {
                <$t>::from_bits(u16::from_le_bytes([b[0], b[1]]))
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_bits().to_le_bytes());
            }
        }
    )*};
}
le_half!(f16, bf16);

impl LeElem for bool {
    const SIZE: usize = 1;
    fn read_le(b: &[u8]) -> Self {
        b[0] != 0
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

impl ArrayData {
    /// The ONNX element type code (`TensorProto.DataType`).
    pub fn elem_type(&self) -> i32 {
        let dt = match self {
            ArrayData::F32(_) => DataType::Float,
            ArrayData::F64(_) => DataType::Double,
            ArrayData::F16(_) => DataType::Float16,
            ArrayData::BF16(_) => DataType::Bfloat16,
            ArrayData::I64(_) => DataType::Int64,
            ArrayData::I32(_) => DataType::Int32,
            ArrayData::I16(_) => DataType::Int16,
            ArrayData::I8(_) => DataType::Int8,
            ArrayData::U64(_) => DataType::Uint64,
            ArrayData::U32(_) => DataType::Uint32,
            ArrayData::U16(_) => DataType::Uint16,
            ArrayData::U8(_) => DataType::Uint8,
            ArrayData::Bool(_) => DataType::Bool,
            ArrayData::Narrow(t, _) => return t.code(),
        };
        dt as i32
    }

    /// Short name of the element type (`f32`, `i64`, `bool`, ...), as
    /// [`quench_onnx::dtype::elem_name`] prints it.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            ArrayData::F32(_) => "f32",
            ArrayData::F64(_) => "f64",
            ArrayData::F16(_) => "f16",
            ArrayData::BF16(_) => "bf16",
            ArrayData::I64(_) => "i64",
            ArrayData::I32(_) => "i32",
            ArrayData::I16(_) => "i16",
            ArrayData::I8(_) => "i8",
            ArrayData::U64(_) => "u64",
            ArrayData::U32(_) => "u32",
            ArrayData::U16(_) => "u16",
            ArrayData::U8(_) => "u8",
            ArrayData::Bool(_) => "bool",
            ArrayData::Narrow(t, _) => t.name(),
        }
    }

    pub fn shape(&self) -> &[usize] {
        each!(self, a => a.shape())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row along axis 0 (the sample, for a stacked batch) holding the
    /// first NaN or infinity, for floating-point arrays; `None` when every
    /// value is finite or the type is an integer type.
    pub fn first_non_finite_row(&self) -> Option<usize> {
        let row = |flat: usize, shape: &[usize]| {
            let per_row: usize = shape.iter().skip(1).product();
            flat / per_row.max(1)
        };
        match self {
            ArrayData::F32(a) => a
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| row(i, a.shape())),
            ArrayData::F64(a) => a
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| row(i, a.shape())),
            ArrayData::F16(a) => a
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| row(i, a.shape())),
            ArrayData::BF16(a) => a
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| row(i, a.shape())),
            ArrayData::I64(_)
            | ArrayData::I32(_)
            | ArrayData::I16(_)
            | ArrayData::I8(_)
            | ArrayData::U64(_)
            | ArrayData::U32(_)
            | ArrayData::U16(_)
            | ArrayData::U8(_)
            | ArrayData::Bool(_) => None,
            ArrayData::Narrow(t, a) => a
                .iter()
                .position(|b| !t.decode(*b).is_finite())
                .map(|i| row(i, a.shape())),
        }
    }

    /// The values converted to f32 (bool as 0/1), for metrics.
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            ArrayData::F32(a) => a.clone(),
            ArrayData::F64(a) => a.mapv(|v| v as f32),
            ArrayData::F16(a) => a.mapv(f32::from),
            ArrayData::BF16(a) => a.mapv(f32::from),
            ArrayData::I64(a) => a.mapv(|v| v as f32),
            ArrayData::I32(a) => a.mapv(|v| v as f32),
            ArrayData::I16(a) => a.mapv(f32::from),
            ArrayData::I8(a) => a.mapv(f32::from),
            ArrayData::U64(a) => a.mapv(|v| v as f32),
            ArrayData::U32(a) => a.mapv(|v| v as f32),
            ArrayData::U16(a) => a.mapv(f32::from),
            ArrayData::U8(a) => a.mapv(f32::from),
            ArrayData::Bool(a) => a.mapv(|v| f32::from(u8::from(v))),
            ArrayData::Narrow(t, a) => a.mapv(|b| t.decode(b)),
        }
    }

    /// Element `i` of the leading axis, that axis removed; `None` when the
    /// array has rank 0 or `i` is out of range.
    pub fn index_axis0(&self, i: usize) -> Option<ArrayData> {
        if self.shape().first().is_none_or(|&n| i >= n) {
            return None;
        }
        Some(map_each!(self, a => a.index_axis(Axis(0), i).to_owned()))
    }

    /// Elements `range` of the leading axis, that axis kept; `None` when the
    /// array has rank 0 or the range does not fit.
    pub fn slice_axis0(&self, range: Range<usize>) -> Option<ArrayData> {
        let n = *self.shape().first()?;
        if range.start > range.end || range.end > n {
            return None;
        }
        let s = Slice::from(range);
        Some(map_each!(self, a => a.slice_axis(Axis(0), s).to_owned()))
    }

    /// Stacks arrays of one element type and one shape along a new leading
    /// axis. The error says what differs.
    pub(crate) fn stack(parts: &[&ArrayData]) -> Result<ArrayData, String> {
        let Some(first) = parts.first() else {
            return Err("nothing to stack".into());
        };
        for p in parts {
            if p.elem_type() != first.elem_type() {
                return Err(format!(
                    "element types differ ({} and {})",
                    first.dtype_name(),
                    p.dtype_name()
                ));
            }
            if p.shape() != first.shape() {
                return Err(format!(
                    "shapes differ ({:?} and {:?})",
                    first.shape(),
                    p.shape()
                ));
            }
        }
        macro_rules! stack_as {
            ($variant:ident) => {{
                let views: Vec<_> = parts
                    .iter()
                    .filter_map(|p| match p {
                        ArrayData::$variant(a) => Some(a.view()),
                        _ => None,
                    })
                    .collect();
                ndarray::stack(Axis(0), &views)
                    .map(ArrayData::$variant)
                    .map_err(|e| e.to_string())
            }};
        }
        match first {
            ArrayData::F32(_) => stack_as!(F32),
            ArrayData::F64(_) => stack_as!(F64),
            ArrayData::F16(_) => stack_as!(F16),
            ArrayData::BF16(_) => stack_as!(BF16),
            ArrayData::I64(_) => stack_as!(I64),
            ArrayData::I32(_) => stack_as!(I32),
            ArrayData::I16(_) => stack_as!(I16),
            ArrayData::I8(_) => stack_as!(I8),
            ArrayData::U64(_) => stack_as!(U64),
            ArrayData::U32(_) => stack_as!(U32),
            ArrayData::U16(_) => stack_as!(U16),
            ArrayData::U8(_) => stack_as!(U8),
            ArrayData::Bool(_) => stack_as!(Bool),
            ArrayData::Narrow(t, _) => {
                let views: Vec<_> = parts
                    .iter()
                    .filter_map(|p| match p {
                        ArrayData::Narrow(_, a) => Some(a.view()),
                        _ => None,
                    })
                    .collect();
                ndarray::stack(Axis(0), &views)
                    .map(|a| ArrayData::Narrow(*t, a))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Reads a `TensorProto`: `raw_data` (little-endian) or the typed field
    /// for its element type (`float_data`, `double_data`, `int64_data`,
    /// `uint64_data` for u32/u64, `int32_data` for i32/i16/i8/u16/u8/bool
    /// and for the bit patterns of f16/bf16). External data must have been
    /// resolved before (as `quench_onnx::load_model` does).
    pub fn from_tensor_proto(t: &TensorProto) -> Result<ArrayData, DataError> {
        let name = t.name().to_string();
        let err = |reason: String| DataError::Tensor {
            name: name.clone(),
            reason,
        };
        if t.data_location == Some(DataLocation::External as i32) {
            return Err(err("data is stored externally and was not resolved".into()));
        }
        let mut shape = Vec::with_capacity(t.dims.len());
        let mut numel: usize = 1;
        for &d in &t.dims {
            let d = usize::try_from(d)
                .map_err(|_| err(format!("negative dimension in {:?}", t.dims)))?;
            numel = numel
                .checked_mul(d)
                .ok_or_else(|| err(format!("dims {:?} overflow", t.dims)))?;
            shape.push(d);
        }
        let code = t.data_type();
        let raw = t.raw_data.as_ref();
        fn from_raw<T: LeElem>(raw: &[u8], numel: usize) -> Result<Vec<T>, String> {
            // Checked: dims of 2^62 elements must not wrap to a small size.
            if Some(raw.len()) != numel.checked_mul(T::SIZE) {
                return Err(format!(
                    "raw_data has {} bytes, {} elements need {}",
                    raw.len(),
                    numel,
                    (numel as u128) * (T::SIZE as u128)
                ));
            }
            Ok(raw.chunks_exact(T::SIZE).map(T::read_le).collect())
        }
        fn typed<S: Copy, T>(
            field: &[S],
            numel: usize,
            what: &str,
            f: impl Fn(S) -> T,
        ) -> Result<Vec<T>, String> {
            if field.len() != numel {
                return Err(format!(
                    "{what} has {} values, the dims need {numel}",
                    field.len()
                ));
            }
            Ok(field.iter().copied().map(f).collect())
        }
        let shape = IxDyn(&shape);
        macro_rules! build {
            ($variant:ident, $t:ty, $field:ident, $conv:expr) => {{
                let v: Vec<$t> = match raw {
                    Some(r) => from_raw::<$t>(r, numel),
                    None => typed(&t.$field, numel, stringify!($field), $conv),
                }
                .map_err(err)?;
                ArrayD::from_shape_vec(shape, v)
                    .map(ArrayData::$variant)
                    .map_err(|e| err(e.to_string()))
            }};
        }
        if let Some(nt) = NarrowType::of(code) {
            // Packed in raw_data (2 or 4 per byte below 8 bits); in
            // int32_data one packed byte per value.
            let packed: Vec<u8> = match raw {
                Some(r) => r.to_vec(),
                None => t.int32_data.iter().map(|v| *v as u8).collect(),
            };
            let what = if raw.is_some() {
                "raw_data"
            } else {
                "int32_data"
            };
            let per = 8 / nt.bits();
            let v = nt.unpack(&packed, numel).ok_or_else(|| {
                err(format!(
                    "{what} has {} bytes, {numel} {} elements need {}",
                    packed.len(),
                    nt.name(),
                    numel.div_ceil(per)
                ))
            })?;
            return ArrayD::from_shape_vec(shape, v)
                .map(|a| ArrayData::Narrow(nt, a))
                .map_err(|e| err(e.to_string()));
        }
        match DataType::try_from(code) {
            Ok(DataType::Float) => build!(F32, f32, float_data, |v| v),
            Ok(DataType::Double) => build!(F64, f64, double_data, |v| v),
            Ok(DataType::Int64) => build!(I64, i64, int64_data, |v| v),
            Ok(DataType::Int32) => build!(I32, i32, int32_data, |v| v),
            Ok(DataType::Int16) => build!(I16, i16, int32_data, |v: i32| v as i16),
            Ok(DataType::Int8) => build!(I8, i8, int32_data, |v: i32| v as i8),
            Ok(DataType::Uint64) => build!(U64, u64, uint64_data, |v| v),
            Ok(DataType::Uint32) => build!(U32, u32, uint64_data, |v: u64| v as u32),
            Ok(DataType::Uint16) => build!(U16, u16, int32_data, |v: i32| v as u16),
            Ok(DataType::Uint8) => build!(U8, u8, int32_data, |v: i32| v as u8),
            Ok(DataType::Bool) => build!(Bool, bool, int32_data, |v: i32| v != 0),
            Ok(DataType::Float16) => {
                build!(F16, f16, int32_data, |v: i32| f16::from_bits(v as u16))
            }
            Ok(DataType::Bfloat16) => {
                build!(BF16, bf16, int32_data, |v: i32| bf16::from_bits(v as u16))
            }
            _ => Err(err(format!(
                "element type {} is not supported here ({SUPPORTED})",
                quench_onnx::dtype::elem_name(code)
            ))),
        }
    }

    /// Writes a `TensorProto` named `name` with little-endian `raw_data`.
    pub fn to_tensor_proto(&self, name: &str) -> TensorProto {
        let mut raw = Vec::new();
        match self {
            ArrayData::Narrow(t, a) => raw = t.pack(&a.iter().copied().collect::<Vec<_>>()),
            _ => each!(self, a => {
                raw.reserve(a.len() * 8);
                for &v in a.iter() {
                    v.write_le(&mut raw);
                }
            }),
        }
        TensorProto {
            dims: self.shape().iter().map(|&d| d as i64).collect(),
            data_type: Some(self.elem_type()),
            name: Some(name.to_string()),
            raw_data: Some(Bytes::from(raw)),
            ..Default::default()
        }
    }

    /// A tract tensor holding a copy of the values, of the same element
    /// type. tract has no bf16 type: a `BF16` array is an error (the caller
    /// names the input).
    pub fn to_tensor(&self) -> Result<Tensor, String> {
        match self {
            ArrayData::F32(a) => Ok(Tensor::from(a.clone())),
            ArrayData::F64(a) => Ok(Tensor::from(a.clone())),
            ArrayData::F16(a) => Ok(Tensor::from(a.clone())),
            ArrayData::BF16(_) => {
                Err("tract (the runtime quench measures with) has no bf16 element type".into())
            }
            ArrayData::I64(a) => Ok(Tensor::from(a.clone())),
            ArrayData::I32(a) => Ok(Tensor::from(a.clone())),
            ArrayData::I16(a) => Ok(Tensor::from(a.clone())),
            ArrayData::I8(a) => Ok(Tensor::from(a.clone())),
            ArrayData::U64(a) => Ok(Tensor::from(a.clone())),
            ArrayData::U32(a) => Ok(Tensor::from(a.clone())),
            ArrayData::U16(a) => Ok(Tensor::from(a.clone())),
            ArrayData::U8(a) => Ok(Tensor::from(a.clone())),
            ArrayData::Bool(a) => Ok(Tensor::from(a.clone())),
            ArrayData::Narrow(t, _) => Err(format!(
                "tract (the runtime quench measures with) has no {} element type",
                t.name()
            )),
        }
    }

    /// Reads a tract tensor back. Quantized tract types read as their storage
    /// type (u8, i8, i32) and tract's symbolic dimension type as i64; other
    /// element types are an error naming `name`.
    pub fn from_tensor(name: &str, t: &Tensor) -> Result<ArrayData, DataError> {
        let err = |reason: String| DataError::Tensor {
            name: name.to_string(),
            reason,
        };
        let dt = t.datum_type().unquantized();
        macro_rules! read {
            ($variant:ident, $t:ty) => {
                t.to_plain_array_view::<$t>()
                    .map(|v| ArrayData::$variant(v.as_standard_layout().into_owned()))
                    .map_err(|e| err(e.to_string()))
            };
        }
        match dt {
            DatumType::F32 => read!(F32, f32),
            DatumType::F64 => read!(F64, f64),
            DatumType::F16 => read!(F16, f16),
            DatumType::I64 => read!(I64, i64),
            DatumType::I32 => read!(I32, i32),
            DatumType::I16 => read!(I16, i16),
            DatumType::I8 => read!(I8, i8),
            DatumType::U64 => read!(U64, u64),
            DatumType::U32 => read!(U32, u32),
            DatumType::U16 => read!(U16, u16),
            DatumType::U8 => read!(U8, u8),
            DatumType::Bool => read!(Bool, bool),
            DatumType::TDim => {
                let cast = t.cast_to::<i64>().map_err(|e| err(e.to_string()))?;
                read_i64(&cast).map_err(err)
            }
            other => Err(err(format!(
                "tract element type {other:?} is not supported here"
            ))),
        }
    }
}

fn read_i64(t: &Tensor) -> Result<ArrayData, String> {
    t.to_plain_array_view::<i64>()
        .map(|v| ArrayData::I64(v.as_standard_layout().into_owned()))
        .map_err(|e| e.to_string())
}

macro_rules! from_array {
    ($($variant:ident: $t:ty),*) => {$(
        impl From<ArrayD<$t>> for ArrayData {
            fn from(a: ArrayD<$t>) -> ArrayData {
                ArrayData::$variant(a)
            }
        }
    )*};
}
from_array!(F32: f32, F64: f64, F16: f16, BF16: bf16, I64: i64, I32: i32, I16: i16, I8: i8, U64: u64, U32: u32, U16: u16, U8: u8, Bool: bool);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tensor_proto_round_trip_all_types() {
        let arrays = vec![
            ArrayData::F32(
                ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, -2.5, 3.0, f32::MAX]).unwrap(),
            ),
            ArrayData::F64(ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, -2.5, 1e300]).unwrap()),
            ArrayData::I64(ArrayD::from_shape_vec(IxDyn(&[2]), vec![i64::MIN, 7]).unwrap()),
            ArrayData::I32(ArrayD::from_shape_vec(IxDyn(&[]), vec![-9]).unwrap()),
            ArrayData::I8(ArrayD::from_shape_vec(IxDyn(&[2]), vec![-128, 127]).unwrap()),
            ArrayData::U8(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![0, 255]).unwrap()),
            ArrayData::Bool(ArrayD::from_shape_vec(IxDyn(&[3]), vec![true, false, true]).unwrap()),
        ];
        for a in arrays.into_iter().chain(new_type_arrays()) {
            let p = a.to_tensor_proto("t");
            assert_same_bits(&ArrayData::from_tensor_proto(&p).unwrap(), &a);
            assert_same_bits(
                &ArrayData::from_tensor_proto(&typed_fields(&p)).unwrap(),
                &a,
            );
            match a.to_tensor() {
                Ok(t) => {
                    // The tract tensor has the same element type.
                    assert_eq!(
                        datum_code(t.datum_type()),
                        Some(a.elem_type()),
                        "{}",
                        a.dtype_name()
                    );
                    assert_same_bits(&ArrayData::from_tensor("t", &t).unwrap(), &a);
                }
                Err(e) => {
                    assert!(
                        matches!(a, ArrayData::BF16(_) | ArrayData::Narrow(..)),
                        "{}",
                        a.dtype_name()
                    );
                    assert!(e.contains(a.dtype_name()), "{e}");
                }
            }
        }
    }

    /// Same element type, shape and bytes (NaN payloads and signed zeros
    /// included).
    fn assert_same_bits(a: &ArrayData, b: &ArrayData) {
        assert_eq!(a.dtype_name(), b.dtype_name());
        assert_eq!(a.shape(), b.shape());
        assert_eq!(
            a.to_tensor_proto("").raw_data,
            b.to_tensor_proto("").raw_data,
            "{}",
            a.dtype_name()
        );
    }

    /// Arrays of the element types added for FP16 models and the node
    /// tests, with their extreme and special values (NaN payloads, -0,
    /// subnormals), so a round trip must keep every bit.
    fn new_type_arrays() -> Vec<ArrayData> {
        let h = |bits: &[u16]| bits.iter().map(|b| f16::from_bits(*b)).collect::<Vec<_>>();
        let bh = |bits: &[u16]| bits.iter().map(|b| bf16::from_bits(*b)).collect::<Vec<_>>();
        let specials = [
            0x0000, 0x8000, 0x0001, 0x3c00, 0x7bff, 0xfbff, 0x7c00, 0x7e01, 0xfc00,
        ];
        vec![
            ArrayData::F16(ArrayD::from_shape_vec(IxDyn(&[3, 3]), h(&specials)).unwrap()),
            ArrayData::BF16(ArrayD::from_shape_vec(IxDyn(&[9]), bh(&specials)).unwrap()),
            ArrayData::I16(
                ArrayD::from_shape_vec(IxDyn(&[3]), vec![i16::MIN, -1, i16::MAX]).unwrap(),
            ),
            ArrayData::U16(ArrayD::from_shape_vec(IxDyn(&[2]), vec![0, u16::MAX]).unwrap()),
            ArrayData::U32(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![7, u32::MAX]).unwrap()),
            ArrayData::U64(ArrayD::from_shape_vec(IxDyn(&[2]), vec![1 << 63, u64::MAX]).unwrap()),
        ]
        .into_iter()
        .chain(
            [
                NarrowType::F8E4M3FN,
                NarrowType::F8E4M3FNUZ,
                NarrowType::F8E5M2,
                NarrowType::F8E5M2FNUZ,
                NarrowType::F8E8M0,
                NarrowType::F4E2M1,
                NarrowType::I4,
                NarrowType::U4,
                NarrowType::I2,
                NarrowType::U2,
            ]
            .into_iter()
            .map(|t| {
                // Odd counts: the last packed byte is half used.
                let mask = ((1u16 << t.bits()) - 1) as u8;
                let v: Vec<u8> = (0..7u8)
                    .map(|i| i.wrapping_mul(73).wrapping_add(5) & mask)
                    .collect();
                ArrayData::Narrow(t, ArrayD::from_shape_vec(IxDyn(&[7]), v).unwrap())
            }),
        )
        .collect()
    }

    /// `p` with its values in the typed field ONNX uses for its element
    /// type instead of `raw_data`.
    fn typed_fields(p: &TensorProto) -> TensorProto {
        let a = ArrayData::from_tensor_proto(p).unwrap();
        let mut t = TensorProto {
            dims: p.dims.clone(),
            data_type: p.data_type,
            name: p.name.clone(),
            ..Default::default()
        };
        match &a {
            ArrayData::F32(a) => t.float_data = a.iter().copied().collect(),
            ArrayData::F64(a) => t.double_data = a.iter().copied().collect(),
            ArrayData::F16(a) => t.int32_data = a.iter().map(|v| i32::from(v.to_bits())).collect(),
            ArrayData::BF16(a) => t.int32_data = a.iter().map(|v| i32::from(v.to_bits())).collect(),
            ArrayData::I64(a) => t.int64_data = a.iter().copied().collect(),
            ArrayData::I32(a) => t.int32_data = a.iter().copied().collect(),
            ArrayData::I16(a) => t.int32_data = a.iter().map(|v| i32::from(*v)).collect(),
            ArrayData::I8(a) => t.int32_data = a.iter().map(|v| i32::from(*v)).collect(),
            ArrayData::U64(a) => t.uint64_data = a.iter().copied().collect(),
            ArrayData::U32(a) => t.uint64_data = a.iter().map(|v| u64::from(*v)).collect(),
            ArrayData::U16(a) => t.int32_data = a.iter().map(|v| i32::from(*v)).collect(),
            ArrayData::U8(a) => t.int32_data = a.iter().map(|v| i32::from(*v)).collect(),
            ArrayData::Bool(a) => t.int32_data = a.iter().map(|v| i32::from(*v)).collect(),
            ArrayData::Narrow(nt, a) => {
                t.int32_data = nt
                    .pack(&a.iter().copied().collect::<Vec<_>>())
                    .iter()
                    .map(|b| i32::from(*b))
                    .collect()
            }
        }
        t
    }

    fn datum_code(dt: DatumType) -> Option<i32> {
        let d = match dt {
            DatumType::F32 => DataType::Float,
            DatumType::F64 => DataType::Double,
            DatumType::F16 => DataType::Float16,
            DatumType::I64 => DataType::Int64,
            DatumType::I32 => DataType::Int32,
            DatumType::I16 => DataType::Int16,
            DatumType::I8 => DataType::Int8,
            DatumType::U64 => DataType::Uint64,
            DatumType::U32 => DataType::Uint32,
            DatumType::U16 => DataType::Uint16,
            DatumType::U8 => DataType::Uint8,
            DatumType::Bool => DataType::Bool,
            _ => return None,
        };
        Some(d as i32)
    }

    #[test]
    fn wrong_sizes_of_new_types_are_errors() {
        for a in new_type_arrays() {
            let mut p = a.to_tensor_proto("short");
            p.dims.push(2);
            let e = ArrayData::from_tensor_proto(&p).unwrap_err().to_string();
            assert!(e.contains("short") && e.contains("raw_data has"), "{e}");
            let mut t = typed_fields(&a.to_tensor_proto("short"));
            t.dims.push(2);
            let e = ArrayData::from_tensor_proto(&t).unwrap_err().to_string();
            assert!(
                e.contains("short")
                    && (e.contains("values, the dims need") || e.contains("int32_data has")),
                "{e}"
            );
        }
    }

    #[test]
    fn tensor_proto_sizes_do_not_wrap() {
        // [2, 2^62] f32 needs 2^65 bytes, which wrapped to 0: 0 bytes passed.
        let mut p = ArrayData::F32(ArrayD::zeros(IxDyn(&[0]))).to_tensor_proto("w");
        p.dims = vec![2, 1 << 62];
        let e = ArrayData::from_tensor_proto(&p).unwrap_err().to_string();
        assert!(e.contains("raw_data has 0 bytes"), "{e}");
    }

    #[test]
    fn tensor_proto_typed_fields() {
        let p = TensorProto {
            dims: vec![2],
            data_type: Some(DataType::Float as i32),
            float_data: vec![1.5, 2.5],
            ..Default::default()
        };
        assert_eq!(
            ArrayData::from_tensor_proto(&p)
                .unwrap()
                .to_f32()
                .as_slice()
                .unwrap(),
            &[1.5, 2.5]
        );
        let p = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Int8 as i32),
            int32_data: vec![-1, 0, 5],
            ..Default::default()
        };
        assert_eq!(
            ArrayData::from_tensor_proto(&p).unwrap(),
            ArrayData::I8(ArrayD::from_shape_vec(IxDyn(&[3]), vec![-1, 0, 5]).unwrap())
        );
        let p = TensorProto {
            dims: vec![2],
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![1],
            name: Some("short".into()),
            ..Default::default()
        };
        let e = ArrayData::from_tensor_proto(&p).unwrap_err().to_string();
        assert!(
            e.contains("short") && e.contains("int64_data has 1 values"),
            "{e}"
        );
        let p = TensorProto {
            dims: vec![1],
            data_type: Some(DataType::Complex64 as i32),
            name: Some("c".into()),
            ..Default::default()
        };
        let e = ArrayData::from_tensor_proto(&p).unwrap_err().to_string();
        assert!(e.contains("c64") && e.contains("not supported"), "{e}");
    }

    #[test]
    fn slicing_and_stacking() {
        let a = ArrayData::F32(
            ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![0., 1., 2., 3., 4., 5.]).unwrap(),
        );
        let r1 = a.index_axis0(1).unwrap();
        assert_eq!(r1.shape(), &[2]);
        assert_eq!(r1.to_f32().as_slice().unwrap(), &[2., 3.]);
        assert!(a.index_axis0(3).is_none());
        let s = a.slice_axis0(1..3).unwrap();
        assert_eq!(s.shape(), &[2, 2]);
        assert!(a.slice_axis0(2..4).is_none());
        let parts = [a.index_axis0(0).unwrap(), r1];
        let st = ArrayData::stack(&parts.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(st, a.slice_axis0(0..2).unwrap());
    }
}
