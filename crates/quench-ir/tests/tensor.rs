//! Reading constant tensors (`quench_ir::tensor`) against values computed
//! independently: IEEE half from its defining formula over all 65,536 bit
//! patterns, every element type from its little-endian bytes and from the
//! typed `*_data` fields ONNX allows for it, and the size and shape checks.
//! (Mutation testing found these paths otherwise unchecked; see
//! benches/results/mutants_2026-11-27.md.)

use bytes::Bytes;
use quench_ir::tensor::{
    data_bytes, f16_to_f32, from_f32, from_i32, from_i64, from_i8, from_raw, from_u8, numel,
    tensor_type, tensor_type_of, to_f32, to_f64, to_i64,
};
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use quench_onnx::proto::type_proto::Value as TypeValue;
use quench_onnx::proto::{TensorProto, TypeProto};

/// IEEE 754 binary16 from its definition: (-1)^s * 2^(e-15) * (1 + f/1024)
/// for normal numbers, 2^-14 * f/1024 for subnormals, inf and NaN for the
/// all-ones exponent.
fn half_reference(h: u16) -> f64 {
    let s = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((h >> 10) & 0x1f);
    let f = f64::from(h & 0x3ff);
    match e {
        0 => s * 2f64.powi(-14) * f / 1024.0,
        31 if f == 0.0 => s * f64::INFINITY,
        31 => f64::NAN,
        _ => s * 2f64.powi(e - 15) * (1.0 + f / 1024.0),
    }
}

#[test]
fn f16_to_f32_matches_the_definition_for_every_bit_pattern() {
    for h in 0..=u16::MAX {
        let got = f16_to_f32(h);
        let want = half_reference(h);
        if want.is_nan() {
            assert!(got.is_nan(), "{h:#06x}: {got} is not NaN");
            // The payload moves to the top of the f32 mantissa (as every
            // hardware conversion does), so quiet/signalling bits survive.
            assert_eq!(
                got.to_bits() & 0x007f_ffff,
                u32::from(h & 0x3ff) << 13,
                "{h:#06x}"
            );
            assert_eq!(got.is_sign_negative(), h & 0x8000 != 0, "{h:#06x}");
        } else {
            // Every half is exact in f32 and in f64: equality, sign of
            // zero included.
            assert_eq!(f64::from(got), want, "{h:#06x}");
            assert_eq!(got.is_sign_negative(), h & 0x8000 != 0, "{h:#06x}");
        }
    }
    // Spot values from the IEEE tables.
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
    assert_eq!(f16_to_f32(0xc000), -2.0);
}

fn raw(elem: DataType, dims: &[i64], bytes: Vec<u8>) -> TensorProto {
    from_raw("t", elem, dims, bytes)
}

/// A tensor without raw data, for the typed `*_data` fields.
fn typed(elem: DataType, dims: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(elem as i32),
        name: Some("t".into()),
        ..Default::default()
    }
}

#[test]
fn raw_data_of_every_numeric_type_reads_exactly() -> Result<(), Box<dyn std::error::Error>> {
    let le = |v: &[&[u8]]| v.concat();
    let cases: Vec<(DataType, Vec<u8>, Vec<f64>)> = vec![
        (
            DataType::Float,
            le(&[&1.5f32.to_le_bytes(), &(-0.25f32).to_le_bytes()]),
            vec![1.5, -0.25],
        ),
        (
            DataType::Double,
            le(&[&0.1f64.to_le_bytes(), &(-3e300f64).to_le_bytes()]),
            vec![0.1, -3e300],
        ),
        (
            DataType::Int32,
            le(&[&i32::MIN.to_le_bytes(), &7i32.to_le_bytes()]),
            vec![-2147483648.0, 7.0],
        ),
        (
            DataType::Uint32,
            le(&[&u32::MAX.to_le_bytes(), &0u32.to_le_bytes()]),
            vec![4294967295.0, 0.0],
        ),
        (
            DataType::Int64,
            le(&[&(-(1i64 << 53)).to_le_bytes(), &5i64.to_le_bytes()]),
            vec![-9007199254740992.0, 5.0],
        ),
        (
            DataType::Uint64,
            le(&[&(1u64 << 60).to_le_bytes(), &3u64.to_le_bytes()]),
            vec![1152921504606846976.0, 3.0],
        ),
        // f16 0x3e00 = 1.5, 0xfbff = -65504.
        (
            DataType::Float16,
            vec![0x00, 0x3e, 0xff, 0xfb],
            vec![1.5, -65504.0],
        ),
        // bf16 is the top half of an f32: 0x3fc0 = 1.5, 0xc2f7 = -123.5.
        (
            DataType::Bfloat16,
            vec![0xc0, 0x3f, 0xf7, 0xc2],
            vec![1.5, -123.5],
        ),
        (
            DataType::Int16,
            le(&[&i16::MIN.to_le_bytes(), &(-2i16).to_le_bytes()]),
            vec![-32768.0, -2.0],
        ),
        (
            DataType::Uint16,
            le(&[&u16::MAX.to_le_bytes(), &2u16.to_le_bytes()]),
            vec![65535.0, 2.0],
        ),
        (DataType::Int8, vec![0x80, 0x7f], vec![-128.0, 127.0]),
        (DataType::Uint8, vec![0xff, 0x01], vec![255.0, 1.0]),
        (DataType::Bool, vec![1, 0], vec![1.0, 0.0]),
    ];
    for (elem, bytes, want) in cases {
        let t = raw(elem, &[2], bytes);
        assert_eq!(to_f64(&t)?, want, "{elem:?}");
        let want32: Vec<f32> = want.iter().map(|x| *x as f32).collect();
        assert_eq!(to_f32(&t)?, want32, "{elem:?}");
    }
    Ok(())
}

#[test]
fn typed_fields_of_every_numeric_type_read_exactly() -> Result<(), Box<dyn std::error::Error>> {
    let mut t = typed(DataType::Float, &[2]);
    t.float_data = vec![2.5, -1.0];
    assert_eq!(to_f64(&t)?, vec![2.5, -1.0]);

    let mut t = typed(DataType::Double, &[2]);
    t.double_data = vec![0.1, 1e300];
    assert_eq!(to_f64(&t)?, vec![0.1, 1e300]);

    let mut t = typed(DataType::Int64, &[2]);
    t.int64_data = vec![i64::from(i32::MIN) - 1, 9];
    assert_eq!(to_f64(&t)?, vec![-2147483649.0, 9.0]);
    assert_eq!(to_i64(&t)?, vec![i64::from(i32::MIN) - 1, 9]);

    for elem in [DataType::Uint64, DataType::Uint32] {
        let mut t = typed(elem, &[2]);
        t.uint64_data = vec![u64::from(u32::MAX), 4];
        assert_eq!(to_f64(&t)?, vec![4294967295.0, 4.0], "{elem:?}");
    }
    for elem in [
        DataType::Int32,
        DataType::Int16,
        DataType::Int8,
        DataType::Uint16,
        DataType::Uint8,
        DataType::Bool,
    ] {
        let mut t = typed(elem, &[3]);
        t.int32_data = vec![-5, 0, 1];
        assert_eq!(to_f64(&t)?, vec![-5.0, 0.0, 1.0], "{elem:?}");
        assert_eq!(to_i64(&t)?, vec![-5, 0, 1], "{elem:?}");
    }
    // f16 and bf16 bit patterns travel in int32_data.
    let mut t = typed(DataType::Float16, &[2]);
    t.int32_data = vec![0x3e00, 0xfbff];
    assert_eq!(to_f64(&t)?, vec![1.5, -65504.0]);
    let mut t = typed(DataType::Bfloat16, &[2]);
    t.int32_data = vec![0x3fc0, 0xc2f7];
    assert_eq!(to_f64(&t)?, vec![1.5, -123.5]);
    Ok(())
}

#[test]
fn sizes_and_types_are_checked() {
    // Raw data one element short, one byte long, or of the wrong width.
    let t = raw(DataType::Float, &[3], vec![0; 8]);
    let e = to_f64(&t).err().map(|e| e.reason);
    assert_eq!(e.as_deref(), Some("raw data has 8 bytes, expected 12"));
    assert!(to_f64(&raw(DataType::Int16, &[2], vec![0; 5])).is_err());
    assert!(to_f64(&raw(DataType::Float, &[2], vec![0; 8])).is_ok());
    // Typed fields that disagree with the shape.
    let mut t = typed(DataType::Float, &[2, 2]);
    t.float_data = vec![1.0; 3];
    let e = to_f64(&t).err().map(|e| e.reason);
    assert_eq!(e.as_deref(), Some("holds 3 values, its shape needs 4"));
    // A negative dim.
    assert!(to_f64(&raw(DataType::Float, &[-1], vec![])).is_err());
    // Strings are not numbers, raw or typed.
    let e = to_f64(&raw(DataType::String, &[1], vec![b'a'])).err();
    assert_eq!(e.map(|e| e.name), Some("t".to_string()));
    assert!(to_f64(&typed(DataType::String, &[0])).is_err());
    // Shape too large for the byte count to be computed.
    assert!(to_f64(&raw(DataType::Double, &[1 << 61], vec![])).is_err());

    // to_i64's own int64 paths.
    let t = from_i64("t", &[2], &[i64::MIN, i64::MAX]);
    assert_eq!(to_i64(&t), Ok(vec![i64::MIN, i64::MAX]));
    assert!(to_i64(&raw(DataType::Int64, &[2], vec![0; 15])).is_err());
    assert!(to_i64(&raw(DataType::Int64, &[-2], vec![])).is_err());
    let mut t = typed(DataType::Int64, &[3]);
    t.int64_data = vec![1, 2];
    assert!(to_i64(&t).is_err());
    let mut t = typed(DataType::Int64, &[-3]);
    t.int64_data = vec![1, 2];
    assert!(to_i64(&t).is_err());
    // Other integer types go through to_f64.
    assert_eq!(to_i64(&from_i32("t", &[2], &[-7, 8])), Ok(vec![-7, 8]));
}

#[test]
fn numel_and_data_bytes() {
    assert_eq!(numel(&[]), Some(1));
    assert_eq!(numel(&[2, 3, 4]), Some(24));
    assert_eq!(numel(&[2, 0, 4]), Some(0));
    assert_eq!(numel(&[2, -1]), None);
    assert_eq!(numel(&[1 << 40, 1 << 40]), None);

    assert_eq!(data_bytes(&from_f32("a", &[3], &[1.0, 2.0, 3.0])), 12);
    assert_eq!(data_bytes(&from_i8("a", &[2], &[-1, 1])), 2);
    assert_eq!(data_bytes(&from_u8("a", &[5], &[0; 5])), 5);
    // Typed fields: 4 + 4 + 8 + 8 + 8 bytes per element, strings by length.
    let t = TensorProto {
        float_data: vec![0.0; 3],
        int32_data: vec![0; 5],
        int64_data: vec![0; 7],
        double_data: vec![0.0; 11],
        uint64_data: vec![0; 13],
        string_data: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")],
        ..Default::default()
    };
    assert_eq!(data_bytes(&t), 3 * 4 + 5 * 4 + 7 * 8 + 11 * 8 + 13 * 8 + 5);

    // The builders' bytes and types read back.
    assert_eq!(
        to_f64(&from_i8("a", &[2], &[-128, 127])),
        Ok(vec![-128.0, 127.0])
    );
    assert_eq!(to_f64(&from_u8("a", &[1], &[200])), Ok(vec![200.0]));
}

fn dims_of(t: &TypeProto) -> Option<(i32, Vec<i64>)> {
    let Some(TypeValue::TensorType(tt)) = &t.value else {
        return None;
    };
    let dims = tt
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(DimValue::DimValue(v)) => v,
            _ => -99,
        })
        .collect();
    Some((tt.elem_type?, dims))
}

#[test]
fn tensor_types_are_static() {
    let t = from_f32("w", &[2, 3], &[0.0; 6]);
    assert_eq!(dims_of(&tensor_type(&t)), Some((1, vec![2, 3])));
    assert_eq!(
        dims_of(&tensor_type_of(DataType::Int8 as i32, &[])),
        Some((3, vec![]))
    );
}
