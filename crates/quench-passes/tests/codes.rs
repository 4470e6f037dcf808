//! `codes`: which scale each element uses (`Layout`) against a brute-force
//! multi-index computation of ONNX `DequantizeLinear`'s layouts (per axis:
//! the index along `axis`; blocked: the element's index in the scale
//! tensor of the blocked shape, `idx[axis] / size` along `axis`), for every
//! axis of several shapes; and `decode` of int4/uint4 codes stored packed in
//! `int32_data` (ONNX: two nibbles per entry, low nibble first) and of
//! malformed data. (Mutation testing found the non-leading-axis block
//! layouts and typed int4 storage unchecked; see
//! benches/results/mutants_2026-11-27.md.)

use quench_calib::{ElemType, Granularity};
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::TensorProto;
use quench_passes::codes::{decode, encode, Layout};

/// Row-major flat index of `idx` in `dims`.
fn flat(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (i, d)| acc * d + i)
}

/// Multi-index of flat element `i` in `dims`.
fn unflat(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for k in (0..dims.len()).rev() {
        idx[k] = i % dims[k];
        i /= dims[k];
    }
    idx
}

#[test]
fn layouts_match_a_multi_index_reference() {
    let shapes: [&[usize]; 4] = [&[6], &[3, 5], &[2, 3, 4], &[2, 5, 3, 2]];
    let mut checked = 0;
    for dims in shapes {
        let n: usize = dims.iter().product();
        let di: Vec<i64> = dims.iter().map(|d| *d as i64).collect();
        // Per tensor: one scale.
        let l = Layout::new(&di, Granularity::PerTensor).expect("per-tensor layout");
        assert_eq!((l.groups, l.scale_dims.clone()), (1, vec![]));
        assert!((0..n).all(|i| l.group(i) == 0));
        for axis in 0..dims.len() {
            let l = Layout::new(&di, Granularity::PerAxis { axis }).expect("per-axis layout");
            assert_eq!(l.groups, dims[axis]);
            assert_eq!(l.scale_dims, vec![dims[axis] as i64]);
            for i in 0..n {
                assert_eq!(
                    l.group(i),
                    unflat(i, dims)[axis],
                    "{dims:?} axis {axis} i {i}"
                );
            }
            for size in 1..=dims[axis] + 1 {
                let l = Layout::new(&di, Granularity::Block { axis, size }).expect("block layout");
                let mut sdims = dims.to_vec();
                sdims[axis] = dims[axis].div_ceil(size);
                assert_eq!(l.groups, sdims.iter().product::<usize>());
                let sd: Vec<i64> = sdims.iter().map(|d| *d as i64).collect();
                assert_eq!(l.scale_dims, sd);
                for i in 0..n {
                    let mut idx = unflat(i, dims);
                    idx[axis] /= size;
                    assert_eq!(
                        l.group(i),
                        flat(&idx, &sdims),
                        "{dims:?} axis {axis} block {size} i {i}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
    // An axis beyond the rank, a block of 0, a negative dim: no layout.
    assert!(Layout::new(&[2, 3], Granularity::PerAxis { axis: 2 }).is_none());
    assert!(Layout::new(&[2, 3], Granularity::Block { axis: 0, size: 0 }).is_none());
    assert!(Layout::new(&[2, -3], Granularity::PerTensor).is_none());
}

fn typed(elem: DataType, dims: &[i64], int32_data: Vec<i32>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(elem as i32),
        int32_data,
        ..Default::default()
    }
}

#[test]
fn decode_typed_and_malformed_storage() {
    // 0xF8: low nibble 8, high nibble 15; 0x71: 1, 7; then one low nibble 0xE.
    let packed = vec![0xF8, 0x71, 0x0E];
    assert_eq!(
        decode(&typed(DataType::Int4, &[5], packed.clone())),
        Some((ElemType::Int4, vec![-8, -1, 1, 7, -2]))
    );
    assert_eq!(
        decode(&typed(DataType::Uint4, &[5], packed.clone())),
        Some((ElemType::Uint4, vec![8, 15, 1, 7, 14]))
    );
    // Five nibbles need three entries.
    assert_eq!(decode(&typed(DataType::Int4, &[5], vec![0xF8, 0x71])), None);
    // Other types: one value per entry.
    assert_eq!(
        decode(&typed(DataType::Int8, &[2], vec![-128, 127])),
        Some((ElemType::Int8, vec![-128, 127]))
    );
    assert_eq!(decode(&typed(DataType::Uint16, &[3], vec![1, 2])), None);
    // Raw data of the wrong length, per width.
    for (elem, dims, len) in [
        (ElemType::Int4, 5, 2),
        (ElemType::Int8, 3, 2),
        (ElemType::Uint8, 3, 4),
        (ElemType::Int16, 2, 3),
        (ElemType::Uint16, 2, 5),
    ] {
        let mut t = encode(elem, &[dims], &vec![1; dims as usize]);
        t.raw_data = Some(vec![0u8; len].into());
        assert_eq!(decode(&t), None, "{elem:?}");
    }
    // Not a code type.
    assert_eq!(decode(&typed(DataType::Float, &[1], vec![1])), None);
    // Raw int4 round trip with an odd count, signed and unsigned.
    for (elem, codes) in [
        (ElemType::Int4, vec![-8, 7, -1]),
        (ElemType::Uint4, vec![0, 15, 9]),
        (ElemType::Int16, vec![-32768, 32767, -1]),
        (ElemType::Uint16, vec![0, 65535, 1]),
    ] {
        assert_eq!(decode(&encode(elem, &[3], &codes)), Some((elem, codes)));
    }
}
