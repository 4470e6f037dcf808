//! Size and type checks of tensor data, run on every tensor when a model is
//! loaded.
//!
//! Invariant: after [`crate::load_model`] or [`crate::load_model_from_bytes`]
//! returns, every tensor in the model has a known element type,
//! non-negative dims whose element count and byte size fit in `u64`
//! (computed with checked arithmetic), and data whose length matches them
//! exactly: `raw_data` of `numel × element size` bytes (packed for sub-byte
//! types; never for STRING), or as many typed values as elements. Code
//! downstream can therefore size buffers from `dims` without overflow and
//! without trusting a length it has not seen.

use crate::dtype::elem_name;
use crate::proto::tensor_proto::DataType;
use crate::proto::{AttributeProto, GraphProto, ModelProto, SparseTensorProto, TensorProto};

/// Element count of `dims`, `None` if a dim is negative or the product
/// overflows `u64`.
pub fn checked_numel(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| {
        u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Checks that `t`'s type, dims and data agree (see the module docs).
/// Returns why not, in words for an error message naming the tensor.
pub fn check_tensor(t: &TensorProto) -> Result<(), String> {
    let code = t.data_type();
    let dt = match DataType::try_from(code) {
        Ok(DataType::Undefined) | Err(_) => {
            return Err(format!("unknown data type {code}"));
        }
        Ok(dt) => dt,
    };
    if let Some(d) = t.dims.iter().find(|d| **d < 0) {
        return Err(format!("negative dimension {d} in shape {:?}", t.dims));
    }
    let numel = checked_numel(&t.dims)
        .ok_or_else(|| format!("shape {:?} has more elements than fit in 64 bits", t.dims))?;
    if let Some(raw) = &t.raw_data {
        if dt == DataType::String {
            return Err("STRING data stored as raw_data (strings must be in string_data)".into());
        }
        let need = crate::dtype::packed_bytes(code, numel).ok_or_else(|| {
            format!(
                "shape {:?} of {} needs more bytes than fit in 64 bits",
                t.dims,
                elem_name(code)
            )
        })?;
        if raw.len() as u64 != need {
            return Err(format!(
                "raw_data has {} bytes, but {} {:?} needs {need}",
                raw.len(),
                elem_name(code),
                t.dims
            ));
        }
        return Ok(());
    }
    // Typed fields: which one holds the values, and how many per element.
    let (have, per) = match dt {
        DataType::Float => (t.float_data.len() as u64, 1),
        DataType::Complex64 => (t.float_data.len() as u64, 2),
        DataType::Double => (t.double_data.len() as u64, 1),
        DataType::Complex128 => (t.double_data.len() as u64, 2),
        DataType::Int64 => (t.int64_data.len() as u64, 1),
        DataType::Uint32 | DataType::Uint64 => (t.uint64_data.len() as u64, 1),
        DataType::String => (t.string_data.len() as u64, 1),
        DataType::Int32
        | DataType::Int16
        | DataType::Int8
        | DataType::Uint16
        | DataType::Uint8
        | DataType::Bool
        | DataType::Float16
        | DataType::Bfloat16
        | DataType::Float8e4m3fn
        | DataType::Float8e4m3fnuz
        | DataType::Float8e5m2
        | DataType::Float8e5m2fnuz
        | DataType::Float8e8m0 => (t.int32_data.len() as u64, 1),
        // Sub-byte types pack several values per int32_data entry; the
        // packing is not checked here.
        DataType::Uint4
        | DataType::Int4
        | DataType::Float4e2m1
        | DataType::Uint2
        | DataType::Int2
        | DataType::Undefined => return Ok(()),
    };
    let need = numel
        .checked_mul(per)
        .ok_or_else(|| format!("shape {:?} is too large", t.dims))?;
    if have != need {
        return Err(format!(
            "holds {have} values, but {} {:?} needs {need}",
            elem_name(code),
            t.dims
        ));
    }
    Ok(())
}

/// Checks a sparse tensor beyond its two dense parts (which
/// [`check_tensor`] checks): non-negative dims with a checked element count,
/// 1-D `values` of NNZ elements, int64 `indices` of shape `[NNZ]` (linear)
/// or `[NNZ, rank]`, every index inside `dims`.
pub fn check_sparse(s: &SparseTensorProto) -> Result<(), String> {
    if let Some(d) = s.dims.iter().find(|d| **d < 0) {
        return Err(format!(
            "sparse dims {:?} have a negative dimension {d}",
            s.dims
        ));
    }
    let numel = checked_numel(&s.dims).ok_or_else(|| {
        format!(
            "sparse dims {:?} have more elements than fit in 64 bits",
            s.dims
        )
    })?;
    let values = s.values.as_ref().ok_or("sparse tensor without values")?;
    let indices = s.indices.as_ref().ok_or("sparse tensor without indices")?;
    let [nnz] = values.dims[..] else {
        return Err(format!(
            "sparse values have shape {:?}, expected [NNZ]",
            values.dims
        ));
    };
    if indices.data_type() != DataType::Int64 as i32 {
        return Err(format!(
            "sparse indices are {}, expected i64",
            elem_name(indices.data_type())
        ));
    }
    let rank = s.dims.len() as i64;
    let per = match indices.dims[..] {
        [n] if n == nnz => 1,
        [n, r] if n == nnz && r == rank => rank as usize,
        _ => {
            return Err(format!(
                "sparse indices have shape {:?}; with {nnz} values and dims {:?} expected [{nnz}] or [{nnz}, {rank}]",
                indices.dims, s.dims
            ))
        }
    };
    let idx: Vec<i64> = match &indices.raw_data {
        Some(raw) => raw
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b)
            })
            .collect(),
        None => indices.int64_data.clone(),
    };
    for (k, i) in idx.iter().enumerate() {
        let bound = if per == 1 {
            numel
        } else {
            s.dims[k % per] as u64
        };
        if u64::try_from(*i).map_or(true, |i| i >= bound) {
            return Err(format!(
                "sparse index {i} (entry {k}) is outside dims {:?}",
                s.dims
            ));
        }
    }
    Ok(())
}

/// Calls `f` on every sparse tensor of the model (graph, subgraphs,
/// functions, training graphs), stopping at the first error.
pub(crate) fn try_for_each_sparse<E>(
    m: &ModelProto,
    f: &mut dyn FnMut(&SparseTensorProto) -> Result<(), E>,
) -> Result<(), E> {
    fn attrs<E>(
        a: &AttributeProto,
        f: &mut dyn FnMut(&SparseTensorProto) -> Result<(), E>,
    ) -> Result<(), E> {
        for s in a.sparse_tensor.iter().chain(&a.sparse_tensors) {
            f(s)?;
        }
        for g in a.g.iter().chain(&a.graphs) {
            graph(g, f)?;
        }
        Ok(())
    }
    fn graph<E>(
        g: &GraphProto,
        f: &mut dyn FnMut(&SparseTensorProto) -> Result<(), E>,
    ) -> Result<(), E> {
        for s in &g.sparse_initializer {
            f(s)?;
        }
        for n in &g.node {
            for a in &n.attribute {
                attrs(a, f)?;
            }
        }
        Ok(())
    }
    if let Some(g) = &m.graph {
        graph(g, f)?;
    }
    for func in &m.functions {
        for n in &func.node {
            for a in &n.attribute {
                attrs(a, f)?;
            }
        }
    }
    for t in &m.training_info {
        for g in t.initialization.iter().chain(&t.algorithm) {
            graph(g, f)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn f32_raw(dims: &[i64], bytes: usize) -> TensorProto {
        TensorProto {
            name: Some("w".into()),
            data_type: Some(DataType::Float as i32),
            dims: dims.to_vec(),
            raw_data: Some(Bytes::from(vec![0u8; bytes])),
            ..Default::default()
        }
    }

    #[test]
    fn sizes_are_checked_without_overflow() {
        assert_eq!(check_tensor(&f32_raw(&[2, 2], 16)), Ok(()));
        assert_eq!(check_tensor(&f32_raw(&[], 4)), Ok(()));
        assert_eq!(check_tensor(&f32_raw(&[0, 7], 0)), Ok(()));
        // [4, 2^60+1] f32: 4 × (2^60+1) × 4 bytes wrapped to 16 before.
        let e = check_tensor(&f32_raw(&[4, (1 << 60) + 1], 16)).unwrap_err();
        assert!(e.contains("more bytes than fit"), "{e}");
        let e = check_tensor(&f32_raw(&[1 << 32, 1 << 32], 0)).unwrap_err();
        assert!(e.contains("more elements than fit"), "{e}");
        for bytes in [12, 20] {
            let e = check_tensor(&f32_raw(&[2, 2], bytes)).unwrap_err();
            assert!(e.contains(&format!("raw_data has {bytes} bytes")), "{e}");
        }
        let e = check_tensor(&f32_raw(&[-4], 0)).unwrap_err();
        assert!(e.contains("negative dimension -4"), "{e}");
    }

    #[test]
    fn types_are_checked() {
        for code in [0, 999, -1] {
            let mut t = f32_raw(&[1], 4);
            t.data_type = Some(code);
            assert_eq!(check_tensor(&t), Err(format!("unknown data type {code}")));
        }
        let mut t = f32_raw(&[1], 4);
        t.data_type = Some(DataType::String as i32);
        assert!(check_tensor(&t).unwrap_err().contains("STRING"));
        let t = TensorProto {
            data_type: Some(DataType::Float as i32),
            dims: vec![3],
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(
            check_tensor(&t),
            Err("holds 2 values, but f32 [3] needs 3".into())
        );
        let t = TensorProto {
            data_type: Some(DataType::String as i32),
            dims: vec![2],
            string_data: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            ..Default::default()
        };
        assert_eq!(check_tensor(&t), Ok(()));
    }

    fn sparse(dims: &[i64], idx_dims: &[i64], idx: &[i64]) -> SparseTensorProto {
        SparseTensorProto {
            values: Some(TensorProto {
                name: Some("s".into()),
                data_type: Some(DataType::Float as i32),
                dims: vec![2],
                float_data: vec![1.0, 2.0],
                ..Default::default()
            }),
            indices: Some(TensorProto {
                data_type: Some(DataType::Int64 as i32),
                dims: idx_dims.to_vec(),
                int64_data: idx.to_vec(),
                ..Default::default()
            }),
            dims: dims.to_vec(),
        }
    }

    #[test]
    fn sparse_tensors_are_checked() {
        assert_eq!(check_sparse(&sparse(&[3, 4], &[2], &[0, 11])), Ok(()));
        assert_eq!(
            check_sparse(&sparse(&[3, 4], &[2, 2], &[0, 1, 2, 3])),
            Ok(())
        );
        let e = check_sparse(&sparse(&[3, 4], &[2], &[0, 12])).unwrap_err();
        assert!(e.contains("sparse index 12"), "{e}");
        let e = check_sparse(&sparse(&[3, 4], &[2, 2], &[0, 1, 3, 0])).unwrap_err();
        assert!(e.contains("sparse index 3 (entry 2)"), "{e}");
        let e = check_sparse(&sparse(&[3, 4], &[2], &[-1, 0])).unwrap_err();
        assert!(e.contains("sparse index -1"), "{e}");
        let e = check_sparse(&sparse(&[3, 4], &[3], &[0, 1, 2])).unwrap_err();
        assert!(e.contains("expected [2] or [2, 2]"), "{e}");
        let e = check_sparse(&sparse(&[-3, 4], &[2], &[0, 1])).unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let e = check_sparse(&sparse(&[1 << 40, 1 << 40], &[2], &[0, 1])).unwrap_err();
        assert!(e.contains("more elements than fit"), "{e}");
    }
}
