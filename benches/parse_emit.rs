//! Throughput of the model I/O path, stage by stage, compared with `memcpy`.
//!
//! Stages, each timed on its own (best of several runs, warm page cache):
//!
//! - load: `quench_onnx::load_model` (mmap + protobuf decode + external data
//!   resolution). Tensor bytes are zero-copy views into the map, so this does
//!   not touch weights and can beat memcpy by far.
//! - import: `quench_ir::Model::from_onnx` of the loaded `ModelProto`.
//! - export+encode: `model.to_onnx()` and `encode_to_vec()`: here every
//!   weight byte is copied once.
//! - save: `quench_onnx::save_model` to a file (encode, write, fsync, rename),
//!   with the storage the model came with (inline or external data).
//! - memcpy: `copy_from_slice` of a buffer of the model's size into another
//!   (already mapped) one, measured in the same loop, as the memory-bandwidth
//!   yardstick; the ratio table divides by it.
//! - alloc+memcpy: the same copy into a freshly allocated `Vec`, which pays
//!   the page faults of new memory as `encode_to_vec` does; the fair
//!   reference for export+encode.
//!
//! Throughput is model bytes (the `.onnx` file plus its external data) per
//! second, in MB/s (10^6 bytes).
//!
//! Models: a synthetic MLP built here (`QUENCH_BENCH_SYNTH_MB`, default 256;
//! 0 skips it), stored inline and with external data, plus every `.onnx`
//! named in `QUENCH_BENCH_MODELS` (colon-separated files or directories).
//!
//! `cargo bench --bench parse_emit` runs it (see
//! `scripts/bench_parse_emit.sh`). Under `cargo test --all-targets` (no
//! `--bench` argument) it runs as a quick smoke test on a 4 MB model.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
use quench_onnx::{ExternalData, SaveOptions};

/// A model of roughly `mb` MB: `layers` blocks of MatMul [h,h] + Add + Relu
/// with random f32 weights.
fn synthetic_mlp(mb: usize) -> ModelProto {
    let h: usize = if mb >= 64 { 1024 } else { 256 };
    let layers = ((mb << 20) / (h * h * 4)).max(1);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut random_f32 = |n: usize| -> Vec<u8> {
        let mut v = Vec::with_capacity(n * 4);
        for _ in 0..n {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    };
    let hd = h as i64;
    let io = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(quench_ir::tensor::tensor_type_of(
            DataType::Float as i32,
            &[1, hd],
        )),
        ..Default::default()
    };
    let node = |op: &str, name: String, inputs: Vec<String>, output: String| NodeProto {
        op_type: Some(op.into()),
        name: Some(name),
        input: inputs,
        output: vec![output],
        ..Default::default()
    };
    let mut g = GraphProto {
        name: Some("synthetic_mlp".into()),
        input: vec![io("input")],
        ..Default::default()
    };
    let mut x = "input".to_string();
    for l in 0..layers {
        let (w, b) = (format!("layer{l}.weight"), format!("layer{l}.bias"));
        g.initializer.push(quench_ir::tensor::from_raw(
            &w,
            DataType::Float,
            &[hd, hd],
            random_f32(h * h),
        ));
        g.initializer.push(quench_ir::tensor::from_raw(
            &b,
            DataType::Float,
            &[hd],
            random_f32(h),
        ));
        let (mm, add, relu) = (
            format!("layer{l}.mm"),
            format!("layer{l}.add"),
            format!("layer{l}.relu"),
        );
        g.node
            .push(node("MatMul", mm.clone(), vec![x.clone(), w], mm.clone()));
        g.node
            .push(node("Add", add.clone(), vec![mm, b], add.clone()));
        let out = if l + 1 == layers {
            "output".to_string()
        } else {
            relu.clone()
        };
        g.node.push(node("Relu", relu, vec![add], out.clone()));
        x = out;
    }
    g.output.push(io("output"));
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        producer_name: Some("quench-bench".into()),
        graph: Some(g),
        ..Default::default()
    }
}

/// Best (shortest) duration per stage over the runs.
#[derive(Default)]
struct Best {
    load: Option<Duration>,
    import: Option<Duration>,
    export: Option<Duration>,
    save: Option<Duration>,
    memcpy: Option<Duration>,
    alloc_memcpy: Option<Duration>,
}

fn keep_min(slot: &mut Option<Duration>, d: Duration) {
    *slot = Some(slot.map_or(d, |s| s.min(d)));
}

struct Row {
    name: String,
    bytes: u64,
    best: Best,
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn measure(name: &str, path: &Path, out_dir: &Path, runs: Option<usize>) -> Result<Row, String> {
    let first = quench_onnx::load_model(path).map_err(|e| format!("{e}"))?;
    let bytes = first.file_bytes + first.external.bytes;
    let external = first.external.tensors > 0;
    drop(first);
    let runs = runs.unwrap_or_else(|| (2e9 / bytes.max(1) as f64).clamp(5.0, 50.0) as usize);
    let opts = SaveOptions {
        external: if external {
            ExternalData::External {
                threshold: quench_onnx::DEFAULT_EXTERNAL_THRESHOLD,
            }
        } else {
            ExternalData::Auto
        },
        ..Default::default()
    };
    let out = out_dir.join(format!(
        "{}.out.onnx",
        name.replace(['/', ' ', '(', ')'], "_")
    ));
    let src = vec![0x5au8; bytes as usize];
    // Written once so that its pages are mapped before the first copy.
    let mut dst = vec![1u8; bytes as usize];
    let mut best = Best::default();
    for _ in 0..runs {
        let (_, t) = time(|| dst.copy_from_slice(black_box(&src)));
        black_box(&dst);
        keep_min(&mut best.memcpy, t);
        let (fresh, t) = time(|| {
            let mut v = Vec::<u8>::with_capacity(src.len());
            v.extend_from_slice(black_box(&src));
            v
        });
        black_box(&fresh);
        drop(fresh);
        keep_min(&mut best.alloc_memcpy, t);

        let (loaded, t) = time(|| quench_onnx::load_model(path));
        let loaded = loaded.map_err(|e| format!("{e}"))?;
        keep_min(&mut best.load, t);

        let proto = loaded.model.clone();
        let (model, t) = time(|| quench_ir::Model::from_onnx(proto));
        let model = model.map_err(|e| format!("{e}"))?;
        keep_min(&mut best.import, t);

        let (encoded, t) = time(|| model.to_onnx().encode_to_vec());
        black_box(&encoded);
        keep_min(&mut best.export, t);
        drop(encoded);

        let proto = model.to_onnx();
        let (r, t) = time(|| quench_onnx::save_model(&proto, &out, &opts));
        r.map_err(|e| format!("{e}"))?;
        keep_min(&mut best.save, t);
    }
    Ok(Row {
        name: name.to_string(),
        bytes,
        best,
    })
}

fn mbps(bytes: u64, d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9))
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<44} {:>8} {:>10} {:>12} {:>16} {:>10} {:>12} {:>18}",
        "model",
        "size MB",
        "load MB/s",
        "import MB/s",
        "export+enc MB/s",
        "save MB/s",
        "memcpy MB/s",
        "alloc+memcpy MB/s"
    );
    for r in rows {
        let b = &r.best;
        println!(
            "{:<44} {:>8.1} {:>10.0} {:>12.0} {:>16.0} {:>10.0} {:>12.0} {:>18.0}",
            r.name,
            r.bytes as f64 / 1e6,
            mbps(r.bytes, b.load),
            mbps(r.bytes, b.import),
            mbps(r.bytes, b.export),
            mbps(r.bytes, b.save),
            mbps(r.bytes, b.memcpy),
            mbps(r.bytes, b.alloc_memcpy),
        );
    }
    println!();
    println!("relative to memcpy of the same bytes (1.00 = memory bandwidth)");
    println!(
        "{:<44} {:>8} {:>10} {:>12} {:>16} {:>10} {:>26}",
        "model", "size MB", "load", "import", "export+enc", "save", "export+enc/alloc+memcpy"
    );
    for r in rows {
        let b = &r.best;
        let m = mbps(r.bytes, b.memcpy);
        println!(
            "{:<44} {:>8.1} {:>10.2} {:>12.2} {:>16.2} {:>10.2} {:>26.2}",
            r.name,
            r.bytes as f64 / 1e6,
            mbps(r.bytes, b.load) / m,
            mbps(r.bytes, b.import) / m,
            mbps(r.bytes, b.export) / m,
            mbps(r.bytes, b.save) / m,
            mbps(r.bytes, b.export) / mbps(r.bytes, b.alloc_memcpy),
        );
    }
}

/// The models named in `QUENCH_BENCH_MODELS`: files, or directories whose
/// `.onnx` files are all taken.
fn env_models() -> Vec<PathBuf> {
    let Ok(v) = std::env::var("QUENCH_BENCH_MODELS") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from) {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            files.retain(|f| f.extension().is_some_and(|e| e == "onnx"));
            files.sort();
            out.extend(files);
        } else {
            out.push(p);
        }
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let synth_mb: usize = if full {
        std::env::var("QUENCH_BENCH_SYNTH_MB")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(256)
    } else {
        4
    };
    let runs = if full { None } else { Some(1) };

    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("create target/");
    let tmp = tempfile::Builder::new()
        .prefix("bench-parse-emit-")
        .tempdir_in(&target)
        .expect("temp dir in target/");
    let mut rows = Vec::new();

    if synth_mb > 0 {
        let (model, t) = time(|| synthetic_mlp(synth_mb));
        eprintln!(
            "built synthetic MLP ({} initializers) in {t:.2?}",
            model.graph.as_ref().map_or(0, |g| g.initializer.len())
        );
        for (label, external) in [
            ("inline", ExternalData::Inline),
            ("external data", ExternalData::External { threshold: 1024 }),
        ] {
            let p = tmp
                .path()
                .join(format!("synthetic_{}.onnx", label.replace(' ', "_")));
            let r = quench_onnx::save_model(
                &model,
                &p,
                &SaveOptions {
                    external,
                    ..Default::default()
                },
            )
            .expect("write the synthetic model");
            let name = format!("synthetic-mlp-{synth_mb}MB ({label})");
            eprintln!("measuring {name}: {} bytes", r.total_bytes());
            match measure(&name, &p, tmp.path(), runs) {
                Ok(row) => rows.push(row),
                Err(e) => eprintln!("{name}: {e}"),
            }
            std::fs::remove_file(&p).ok();
            if let Some(d) = r.data_path {
                std::fs::remove_file(d).ok();
            }
        }
    }

    if full {
        for p in env_models() {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            eprintln!("measuring {}", p.display());
            match measure(&name, &p, tmp.path(), runs) {
                Ok(row) => rows.push(row),
                Err(e) => eprintln!("skipping {}: {e}", p.display()),
            }
        }
    }
    print_table(&rows);
    assert!(
        !rows.is_empty() || synth_mb == 0,
        "no model could be measured"
    );
}
