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

/// The files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn external(threshold: usize) -> SaveOptions {
    SaveOptions {
        external: ExternalData::External { threshold },
        limit: None,
    }
}

/// Every save with external data writes a data file named after its
/// content (`<model>.<16 hex>.data`) and removes the replaced model's data
/// file, so exactly one data file is left and it is the one the model
/// refers to; the same model saved again gives the same files.
#[test]
fn external_data_is_named_by_content_and_the_old_file_removed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.onnx");
    let a = model_with_weights(3, 1000);
    let b = model_with_weights(3, 1200);
    let ra = save_model(&a, &p, &external(1024)).unwrap();
    let da = ra.data_path.clone().unwrap();
    let name = da.file_name().unwrap().to_string_lossy().into_owned();
    let id = name
        .strip_prefix("m.onnx.")
        .and_then(|r| r.strip_suffix(".data"))
        .unwrap();
    assert_eq!(id.len(), 16, "{name}");
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
    assert_eq!(
        listing(dir.path()),
        vec!["m.onnx".to_string(), name.clone()]
    );
    let again = save_model(&a, &p, &external(1024)).unwrap();
    assert_eq!(again.data_path.as_ref(), Some(&da));
    assert_eq!(
        listing(dir.path()),
        vec!["m.onnx".to_string(), name.clone()]
    );
    assert_eq!(load_model(&p).unwrap().model.graph, a.graph);
    let rb = save_model(&b, &p, &external(1024)).unwrap();
    let db = rb.data_path.unwrap();
    assert_ne!(da, db);
    assert!(!da.exists(), "the replaced model's data file is removed");
    assert_eq!(
        listing(dir.path()),
        vec![
            "m.onnx".to_string(),
            db.file_name().unwrap().to_string_lossy().into_owned()
        ]
    );
    assert_eq!(load_model(&p).unwrap().model.graph, b.graph);
    // Going inline removes the last data file too.
    save_model(&a, &p, &SaveOptions::default()).unwrap();
    assert_eq!(listing(dir.path()), vec!["m.onnx".to_string()]);
    assert_eq!(load_model(&p).unwrap().model.graph, a.graph);
}

/// A data file the model refers to under a name quench does not write
/// (shared by hand, say) is never removed when the model is replaced.
#[test]
fn foreign_data_files_are_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.onnx");
    save_model(&model_with_weights(2, 1000), &p, &external(1024)).unwrap();
    let ours = listing(dir.path())
        .into_iter()
        .find(|n| n.ends_with(".data"))
        .unwrap();
    std::fs::rename(dir.path().join(&ours), dir.path().join("weights.bin")).unwrap();
    let text = std::fs::read(&p).unwrap();
    // Same length as `ours`, so the protobuf stays valid after the swap.
    let foreign = format!("{:width$}", "weights.bin", width = ours.len()).replace(' ', "_");
    std::fs::rename(dir.path().join("weights.bin"), dir.path().join(&foreign)).unwrap();
    let patched: Vec<u8> = replace_bytes(&text, ours.as_bytes(), foreign.as_bytes());
    std::fs::write(&p, patched).unwrap();
    assert_eq!(
        load_model(&p).unwrap().external.files,
        vec![foreign.clone()]
    );
    save_model(&model_with_weights(2, 1000), &p, &external(1024)).unwrap();
    assert!(
        dir.path().join(&foreign).exists(),
        "{:?}",
        listing(dir.path())
    );
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = hay.to_vec();
    let mut i = 0;
    let mut n = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(n > 0);
    out
}

/// Eight threads write different models with external data to one path
/// while a reader loads it: every load that succeeds gives one writer's
/// weights in full (never model A with data B), and at the end exactly one
/// data file is left, the one the final model refers to, with no temporary
/// file.
#[test]
fn concurrent_external_writers_never_mismatch_model_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shared.onnx");
    // Same shapes, different bytes: a mismatched pair would load silently.
    let models: Vec<ModelProto> = (0..8u8)
        .map(|k| {
            let mut m = model_with_weights(4, 40_000);
            // The model part differs too, so model A with data B is neither.
            m.graph.as_mut().unwrap().name = Some(format!("writer {k}"));
            for t in &mut m.graph.as_mut().unwrap().initializer {
                let v: Vec<u8> = t
                    .raw_data
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|b| b ^ (k + 1))
                    .collect();
                t.raw_data = Some(Bytes::from(v));
            }
            m
        })
        .collect();
    save_model(&models[0], &p, &external(1024)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut loads, mut consistent) = (0, 0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A load racing a removal may fail (file gone); one that
                // succeeds must be one writer's model, whole.
                if let Ok(m) = load_model(&p) {
                    seen.0 += 1;
                    if models.iter().any(|x| x.graph == m.model.graph) {
                        seen.1 += 1;
                    }
                }
            }
            seen
        });
        let writers: Vec<_> = models
            .iter()
            .map(|m| {
                s.spawn(|| {
                    for _ in 0..12 {
                        save_model(m, &p, &external(1024)).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (loads, consistent) = reader.join().unwrap();
    });
    eprintln!("{consistent} of {loads} loads consistent");
    assert_eq!(
        loads, consistent,
        "{consistent} of {loads} loads consistent"
    );
    let last = load_model(&p).unwrap();
    assert!(models.iter().any(|x| x.graph == last.model.graph));
    let files = listing(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(last.external.files.len(), 1);
    assert!(files.contains(&last.external.files[0]), "{files:?}");
    no_temp_files(dir.path());
    assert!(quench_onnx::registered_temp_files().is_empty());
}

/// What a save would remove is read only from a regular file: a FIFO at the
/// output path is not opened (that would block until a writer came).
#[test]
fn replaced_data_files_never_opens_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pipe.onnx");
    let st = std::process::Command::new("mkfifo")
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        quench_onnx::replaced_data_files(&f),
        Vec::<std::path::PathBuf>::new()
    );
    // And for a model with external data, exactly its data file.
    let p = dir.path().join("m.onnx");
    let r = save_model(&model_with_weights(2, 1000), &p, &external(1024)).unwrap();
    assert_eq!(
        quench_onnx::replaced_data_files(&p),
        vec![r.data_path.unwrap()]
    );
}
