//! Tensor sizes and types are validated on load (issue 12, defects 5 and
//! 6): each malformed tensor is an error naming the file and the tensor,
//! never a panic and never an accepted model. Before, all of these loaded
//! (and `[4, 2^60+1]` f32 with 16 bytes passed the size check, then aborted
//! allocating 4.6e18 bytes downstream).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::Bytes;
use prost::Message;
use quench_onnx::proto::tensor_proto::{DataLocation, DataType};
use quench_onnx::proto::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};
use quench_onnx::{load_model, load_model_from_bytes, OnnxError};

fn model_with(t: TensorProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        graph: Some(GraphProto {
            name: Some("g".into()),
            initializer: vec![t],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn raw(name: &str, dt: i32, dims: &[i64], bytes: usize) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dt),
        dims: dims.to_vec(),
        raw_data: Some(Bytes::from(vec![0u8; bytes])),
        ..Default::default()
    }
}

fn load_err(t: TensorProto) -> String {
    let bytes = Bytes::from(model_with(t).encode_to_vec());
    match load_model_from_bytes(bytes, Path::new("m.onnx")) {
        Ok(_) => panic!("loaded"),
        Err(e) => {
            assert!(matches!(e, OnnxError::TensorData { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn inline_tensors_are_checked() {
    let f = DataType::Float as i32;
    let cases: Vec<(TensorProto, &str)> = vec![
        (
            raw("huge", f, &[4, (1 << 60) + 1], 16),
            "m.onnx: tensor `huge`: shape [4, 1152921504606846977] of f32 needs more bytes than fit in 64 bits",
        ),
        (
            raw("short", f, &[2, 2], 12),
            "m.onnx: tensor `short`: raw_data has 12 bytes, but f32 [2, 2] needs 16",
        ),
        (
            raw("long", f, &[2, 2], 20),
            "m.onnx: tensor `long`: raw_data has 20 bytes, but f32 [2, 2] needs 16",
        ),
        (
            raw("neg", f, &[-1, 4], 16),
            "m.onnx: tensor `neg`: negative dimension -1 in shape [-1, 4]",
        ),
        (
            raw("zero_type", 0, &[4], 16),
            "m.onnx: tensor `zero_type`: unknown data type 0",
        ),
        (
            raw("odd_type", 999, &[4], 16),
            "m.onnx: tensor `odd_type`: unknown data type 999",
        ),
        (
            raw("text", DataType::String as i32, &[2], 4),
            "m.onnx: tensor `text`: STRING data stored as raw_data (strings must be in string_data)",
        ),
        (
            raw("wraps", f, &[1 << 32, 1 << 32], 0),
            "m.onnx: tensor `wraps`: shape [4294967296, 4294967296] has more elements than fit in 64 bits",
        ),
        (
            TensorProto {
                name: Some("typed".into()),
                data_type: Some(f),
                dims: vec![3],
                float_data: vec![1.0],
                ..Default::default()
            },
            "m.onnx: tensor `typed`: holds 1 values, but f32 [3] needs 3",
        ),
    ];
    for (t, want) in cases {
        assert_eq!(load_err(t), want);
    }
    // A well-formed tensor of each kind still loads.
    for t in [
        raw("ok", f, &[2, 2], 16),
        raw("empty", f, &[0, 5], 0),
        raw("scalar", DataType::Int64 as i32, &[], 8),
        raw("nibbles", DataType::Int4 as i32, &[3], 2),
    ] {
        let bytes = Bytes::from(model_with(t).encode_to_vec());
        load_model_from_bytes(bytes, Path::new("m.onnx")).unwrap();
    }
}

fn external(name: &str, dims: &[i64], location: &str, length: Option<u64>) -> TensorProto {
    let mut entries = vec![StringStringEntryProto {
        key: Some("location".into()),
        value: Some(location.into()),
    }];
    if let Some(l) = length {
        entries.push(StringStringEntryProto {
            key: Some("length".into()),
            value: Some(l.to_string()),
        });
    }
    TensorProto {
        name: Some(name.into()),
        data_type: Some(DataType::Float as i32),
        dims: dims.to_vec(),
        data_location: Some(DataLocation::External as i32),
        external_data: entries,
        ..Default::default()
    }
}

fn write_model(dir: &Path, t: TensorProto) -> std::path::PathBuf {
    let p = dir.join("m.onnx");
    std::fs::write(&p, model_with(t).encode_to_vec()).unwrap();
    p
}

#[test]
fn external_lengths_are_checked_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), [0u8; 16]).unwrap();
    // [2^31, 2^31] f32 needs 2^64 bytes: it was reported as needing 0.
    let p = write_model(
        dir.path(),
        external("big", &[1 << 31, 1 << 31], "w.bin", Some(0)),
    );
    let e = load_model(&p).unwrap_err().to_string();
    assert!(
        e.contains("tensor `big`") && e.contains("does not fit in 64 bits"),
        "{e}"
    );
    let p = write_model(dir.path(), external("w", &[3], "w.bin", None));
    let e = load_model(&p).unwrap_err().to_string();
    assert!(
        e.contains("holds 16 bytes but the tensor's type and shape need 12"),
        "{e}"
    );
    let p = write_model(dir.path(), external("w", &[2, 2], "w.bin", None));
    load_model(&p).unwrap();
}

#[cfg(unix)]
#[test]
fn external_data_through_a_symlink_leaving_the_directory_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.bin");
    std::fs::write(&secret, [7u8; 16]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&secret, dir.path().join("w.bin")).unwrap();
    let p = write_model(dir.path(), external("w", &[4], "w.bin", None));
    let e = load_model(&p).unwrap_err();
    assert!(matches!(e, OnnxError::ExternalInvalid { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("tensor `w`") && msg.contains("outside the model's directory"),
        "{msg}"
    );
    // A link that stays inside the directory is fine.
    std::fs::write(dir.path().join("real.bin"), [1u8; 16]).unwrap();
    std::fs::remove_file(dir.path().join("w.bin")).unwrap();
    std::os::unix::fs::symlink("real.bin", dir.path().join("w.bin")).unwrap();
    let m = load_model(&p).unwrap();
    let t = &m.model.graph.unwrap().initializer[0];
    assert_eq!(t.raw_data.as_deref(), Some(&[1u8; 16][..]));
}

#[test]
fn sparse_initializers_are_checked() {
    use quench_onnx::proto::SparseTensorProto;
    let sparse = |idx: Vec<i64>| ModelProto {
        ir_version: Some(8),
        graph: Some(GraphProto {
            name: Some("g".into()),
            sparse_initializer: vec![SparseTensorProto {
                values: Some(TensorProto {
                    name: Some("sp".into()),
                    data_type: Some(DataType::Float as i32),
                    dims: vec![2],
                    float_data: vec![1.0, 2.0],
                    ..Default::default()
                }),
                indices: Some(TensorProto {
                    data_type: Some(DataType::Int64 as i32),
                    dims: vec![2],
                    int64_data: idx,
                    ..Default::default()
                }),
                dims: vec![3, 4],
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let load =
        |m: ModelProto| load_model_from_bytes(Bytes::from(m.encode_to_vec()), Path::new("m.onnx"));
    load(sparse(vec![0, 11])).unwrap();
    let e = load(sparse(vec![0, 12])).unwrap_err().to_string();
    assert_eq!(
        e,
        "m.onnx: tensor `sp`: sparse index 12 (entry 1) is outside dims [3, 4]"
    );
}
