//! Saving: inline, external, the automatic switch above the size limit,
//! atomicity, and loading back what was written.

use std::path::Path;

use bytes::Bytes;
use quench_onnx::proto::{GraphProto, ModelProto, TensorProto};
use quench_onnx::{load_model, save_model, ExternalData, SaveOptions};

fn model_with_weights(n: usize, floats: usize) -> ModelProto {
    let init = (0..n)
        .map(|i| TensorProto {
            name: Some(format!("w{i}")),
            dims: vec![floats as i64],
            data_type: Some(1),
            raw_data: Some(Bytes::from(
                (0..floats * 4)
                    .map(|b| (b * 7 + i) as u8)
                    .collect::<Vec<u8>>(),
            )),
            ..Default::default()
        })
        .collect();
    ModelProto {
        ir_version: Some(8),
        graph: Some(GraphProto {
            name: Some("g".into()),
            initializer: init,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains("quench-tmp"),
            "temporary file left behind: {name}"
        );
    }
}

#[test]
fn auto_switches_to_external_data_above_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let m = model_with_weights(4, 4096); // 64 KiB of weights
    let p = dir.path().join("big.onnx");
    // Pretend the protobuf limit is 10 kB: Auto must go external.
    let r = save_model(
        &m,
        &p,
        &SaveOptions {
            external: ExternalData::Auto,
            limit: Some(10_000),
        },
    )
    .unwrap();
    assert_eq!(r.external_tensors, 4);
    assert!(r.model_bytes < 10_000, "{}", r.model_bytes);
    assert_eq!(r.data_bytes, 4 * 4096 * 4);
    let back = load_model(&p).unwrap();
    assert_eq!(back.external.tensors, 4);
    assert_eq!(
        back.model.graph.unwrap().initializer,
        m.graph.clone().unwrap().initializer
    );
    // Inline refuses with a clear error naming the file, and writes nothing.
    let q = dir.path().join("inline.onnx");
    let e = save_model(
        &m,
        &q,
        &SaveOptions {
            external: ExternalData::Inline,
            limit: Some(10_000),
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("inline.onnx") && e.to_string().contains("external data"),
        "{e}"
    );
    assert!(!q.exists());
    no_temp_files(dir.path());
}

#[test]
fn under_the_limit_auto_stays_inline_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let m = model_with_weights(2, 300);
    let p = dir.path().join("small.onnx");
    let r = save_model(&m, &p, &SaveOptions::default()).unwrap();
    assert!(r.data_path.is_none());
    assert_eq!(load_model(&p).unwrap().model, m);
    // Overwriting an existing file replaces it atomically.
    save_model(&m, &p, &SaveOptions::default()).unwrap();
    no_temp_files(dir.path());
}

#[test]
fn external_threshold_keeps_small_tensors_inline() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model_with_weights(2, 4096);
    m.graph.as_mut().unwrap().initializer.push(TensorProto {
        name: Some("tiny".into()),
        dims: vec![2],
        data_type: Some(1),
        raw_data: Some(Bytes::from(vec![0u8; 8])),
        ..Default::default()
    });
    let p = dir.path().join("m.onnx");
    let r = save_model(
        &m,
        &p,
        &SaveOptions {
            external: ExternalData::External { threshold: 1024 },
            limit: None,
        },
    )
    .unwrap();
    assert_eq!(r.external_tensors, 2);
    let back = load_model(&p).unwrap();
    assert_eq!(
        back.model.graph.unwrap().initializer,
        m.graph.unwrap().initializer
    );
}
