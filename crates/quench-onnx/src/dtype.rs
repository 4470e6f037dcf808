//! Element types of ONNX tensors: names, sizes and conversions.

use crate::proto::tensor_proto::DataType;

/// Short, stable name of an ONNX element type, as printed in the IR text
/// (`f32`, `u8`, `i4`, `f8e4m3fn`, ...). Unknown codes print as `dt<N>`.
pub fn elem_name(code: i32) -> String {
    let s = match DataType::try_from(code) {
        Ok(DataType::Undefined) => "undef",
        Ok(DataType::Float) => "f32",
        Ok(DataType::Uint8) => "u8",
        Ok(DataType::Int8) => "i8",
        Ok(DataType::Uint16) => "u16",
        Ok(DataType::Int16) => "i16",
        Ok(DataType::Int32) => "i32",
        Ok(DataType::Int64) => "i64",
        Ok(DataType::String) => "str",
        Ok(DataType::Bool) => "bool",
        Ok(DataType::Float16) => "f16",
        Ok(DataType::Double) => "f64",
        Ok(DataType::Uint32) => "u32",
        Ok(DataType::Uint64) => "u64",
        Ok(DataType::Complex64) => "c64",
        Ok(DataType::Complex128) => "c128",
        Ok(DataType::Bfloat16) => "bf16",
        Ok(DataType::Float8e4m3fn) => "f8e4m3fn",
        Ok(DataType::Float8e4m3fnuz) => "f8e4m3fnuz",
        Ok(DataType::Float8e5m2) => "f8e5m2",
        Ok(DataType::Float8e5m2fnuz) => "f8e5m2fnuz",
        Ok(DataType::Uint4) => "u4",
        Ok(DataType::Int4) => "i4",
        Ok(DataType::Float4e2m1) => "f4e2m1",
        Ok(DataType::Float8e8m0) => "f8e8m0",
        Ok(DataType::Uint2) => "u2",
        Ok(DataType::Int2) => "i2",
        Err(_) => return format!("dt{code}"),
    };
    s.to_string()
}

/// Bits per element for fixed-width types; `None` for strings and unknown
/// codes.
pub fn elem_bits(code: i32) -> Option<u64> {
    Some(match DataType::try_from(code).ok()? {
        DataType::Undefined | DataType::String => return None,
        DataType::Bool | DataType::Uint8 | DataType::Int8 => 8,
        DataType::Float8e4m3fn
        | DataType::Float8e4m3fnuz
        | DataType::Float8e5m2
        | DataType::Float8e5m2fnuz
        | DataType::Float8e8m0 => 8,
        DataType::Uint16 | DataType::Int16 | DataType::Float16 | DataType::Bfloat16 => 16,
        DataType::Float | DataType::Int32 | DataType::Uint32 => 32,
        DataType::Double | DataType::Int64 | DataType::Uint64 | DataType::Complex64 => 64,
        DataType::Complex128 => 128,
        DataType::Uint4 | DataType::Int4 | DataType::Float4e2m1 => 4,
        DataType::Uint2 | DataType::Int2 => 2,
    })
}

/// Whether the element type is a floating-point type (what quantization
/// applies to).
pub fn is_float(code: i32) -> bool {
    matches!(
        DataType::try_from(code),
        Ok(DataType::Float | DataType::Float16 | DataType::Double | DataType::Bfloat16)
    )
}

/// Bytes needed to store `numel` elements packed (sub-byte types round up);
/// `None` for strings, unknown codes, and sizes that overflow `u64`.
pub fn packed_bytes(code: i32, numel: u64) -> Option<u64> {
    let bits = elem_bits(code)?;
    Some(numel.checked_mul(bits)?.div_ceil(8))
}
