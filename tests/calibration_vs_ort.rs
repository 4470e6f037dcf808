//! `quench calibrate` against ONNX Runtime's calibrators, and the
//! invariance of calibration tables under batching, order, file format and
//! thread count.
//!
//! The reference is `testdata/reference/ort_calibration.json`, written by
//! `scripts/ort_calibration_reference.py` (ONNX Runtime's `create_calibrator`
//! on `testdata/digits_cnn.onnx` with the same 256 calibration samples; the
//! script documents the settings). quench runs with `--passes none` so that
//! tensor names are the original model's.
//!
//! What is compared, and why the tolerances are what they are:
//!
//! * MinMax is exact in both tools, so the only difference is the float
//!   arithmetic of tract vs ONNX Runtime computing the activations:
//!   1e-6 relative.
//! * Percentile 99.999 (uint8, asymmetric: 0.0005% cut from each tail).
//!   ONNX Runtime (`symmetric=False`) bins the signed values into 2048 bins
//!   over `[-max|x|, max|x|]` and returns the *lower edge* of the bin where
//!   the cumulative count crosses the cut; quench bins into 8192 bins over
//!   `[-2^e, 2^e)` (`2^e` the power of two above `max|x|`, so its bins are
//!   1/4 to 1/2 as wide) and interpolates linearly inside the crossing
//!   bin. Both
//!   estimates lie in a bin that holds the true quantile, hence
//!   `|quench - ort| <= w_quench + w_ort` (plus the activation noise above).
//!   Both are clamped to `[min, max]`.
//! * Entropy is not the same algorithm: ONNX Runtime searches symmetric
//!   windows of a signed histogram with 128 quantized bins, quench runs
//!   TensorRT's search on the `|x|` histogram (128 levels, 256 for
//!   one-signed tensors). Asserted: wherever ONNX Runtime's search (2048
//!   bins) clips a tensor, quench's clips it too; ONNX Runtime's default
//!   settings (128 bins) give exactly MinMax. And on a tensor with outliers
//!   (a small model built here) entropy keeps less than half the MinMax
//!   range.
//!
//! Invariance (exact equality of every tensor's statistics, histogram
//! included): the same samples as a directory of `.npy` or as an `.npz`, in
//! another sample order, with one rayon thread or all of them, and with
//! batches of 16 (short last batch) or of 1.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ndarray::{Array2, ArrayD, Axis};
use ndarray_npy::{NpzWriter, ReadNpyExt, WriteNpyExt};
use prost::Message;
use quench_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use quench_onnx::proto::{
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use serde_json::Value;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// Runs `quench calibrate MODEL -c DATA --passes none` (with extra
/// environment variables) and returns the table.
fn calibrate(model: &Path, data: &Path, env: &[(&str, &str)]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("table.json");
    let o = Command::new(env!("CARGO_BIN_EXE_quench"))
        .arg("calibrate")
        .arg(model)
        .arg("--calibration")
        .arg(data)
        .args(["--passes", "none", "-o"])
        .arg(&out)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "quench calibrate {} -c {}: {}\n{}",
        model.display(),
        data.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// quench's table for the digits CNN on its calibration directory (computed once).
fn digits_table() -> &'static Value {
    static T: OnceLock<Value> = OnceLock::new();
    T.get_or_init(|| calibrate(&testdata("digits_cnn.onnx"), &testdata("digits/calib"), &[]))
}

/// The ONNX Runtime reference; see the module documentation.
fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        let p = testdata("reference/ort_calibration.json");
        let s = std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with scripts/ort_calibration_reference.py",
                p.display()
            )
        });
        serde_json::from_str(&s).unwrap()
    })
}

/// A `[lo, hi]` JSON pair as the f32 values both tools computed.
fn pair(v: &Value) -> (f64, f64) {
    let f = |x: &Value| f64::from(x.as_f64().unwrap() as f32);
    (f(&v[0]), f(&v[1]))
}

/// Names quench observed, checked against the reference's.
fn tensor_names() -> Vec<String> {
    let q: Vec<String> = digits_table()["tensors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let r: Vec<String> = reference()["tensors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        q, r,
        "quench observes other tensors than the reference was made for; regenerate it"
    );
    assert!(q.len() >= 4, "{q:?}");
    q
}

/// Width of one bin of quench's histogram of `name`.
fn quench_bin_width(table: &Value, name: &str) -> f64 {
    let h = &table["tensors"][name]["histogram"];
    let range_log2 = h["range_log2"].as_i64().unwrap() as i32;
    // Tables store the non-empty span of the bins; `num_bins` is the total.
    let n = h["num_bins"]
        .as_u64()
        .unwrap_or_else(|| h["bins"].as_array().unwrap().len() as u64);
    2f64.powi(range_log2 + 1) / n as f64
}

#[test]
fn reference_was_made_with_the_pinned_onnxruntime() {
    let r = reference();
    let pinned = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/requirements.txt"),
    )
    .unwrap();
    let version = r["onnxruntime"].as_str().unwrap();
    assert!(
        pinned.contains(&format!("onnxruntime=={version}")),
        "reference made with onnxruntime {version}"
    );
    assert_eq!(r["samples"], digits_table()["samples"]);
    assert_eq!(
        r["settings"]["percentile"]["extra_options"]["symmetric"],
        false
    );
}

#[test]
fn minmax_equals_onnx_runtime() {
    for name in tensor_names() {
        let q = pair(&digits_table()["ranges"][&name]["minmax"]);
        let o = pair(&reference()["tensors"][&name]["minmax"]);
        // The table's `tensors` record holds the same min/max.
        let t = &digits_table()["tensors"][&name];
        assert_eq!(
            (q.0, q.1),
            pair(&Value::Array(vec![t["min"].clone(), t["max"].clone()]))
        );
        for (a, b, end) in [(q.0, o.0, "lo"), (q.1, o.1, "hi")] {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(b.abs()),
                "{name} minmax {end}: quench {a} vs onnxruntime {b}"
            );
        }
    }
}

#[test]
fn percentile_matches_onnx_runtime_within_a_bin_of_each() {
    for name in tensor_names() {
        let q = pair(&digits_table()["ranges"][&name]["percentile_99.999"]);
        let o = pair(&reference()["tensors"][&name]["percentile"]);
        let (min, max) = pair(&reference()["tensors"][&name]["minmax"]);
        let max_abs = min.abs().max(max.abs());
        let w_ort = 2.0 * max_abs / 2048.0;
        let w_quench = quench_bin_width(digits_table(), &name);
        assert!(
            w_quench <= 0.5 * w_ort + 1e-12 && w_quench > 0.25 * w_ort,
            "{name}: bins {w_quench} vs {w_ort}"
        );
        let tol = w_quench + w_ort + 1e-6 * max_abs;
        for (a, b, end) in [(q.0, o.0, "lo"), (q.1, o.1, "hi")] {
            assert!(
                (a - b).abs() <= tol,
                "{name} percentile {end}: quench {a} vs onnxruntime {b}, tolerance {tol} \
                 (bins: quench {w_quench}, onnxruntime {w_ort})"
            );
        }
        // Both stay inside the data.
        assert!(
            q.0 >= min - 1e-6 * max_abs && q.1 <= max + 1e-6 * max_abs,
            "{name} {q:?}"
        );
    }
}

#[test]
fn entropy_clips_wherever_onnx_runtime_clips() {
    let mut clipped = 0;
    for name in tensor_names() {
        let r = &reference()["tensors"][&name];
        let minmax = pair(&r["minmax"]);
        // ONNX Runtime's default entropy settings leave one candidate: MinMax.
        assert_eq!(pair(&r["entropy_default"]), minmax, "{name}");
        let width = |(lo, hi): (f64, f64)| hi - lo;
        let ort = pair(&r["entropy"]);
        let ours = pair(&digits_table()["ranges"][&name]["entropy"]);
        assert!(
            width(ours) <= width(minmax) * (1.0 + 1e-6),
            "{name}: {ours:?} vs {minmax:?}"
        );
        if width(ort) < width(minmax) * (1.0 - 1e-3) {
            clipped += 1;
            assert!(
                width(ours) < width(minmax) * (1.0 - 1e-3),
                "{name}: onnxruntime's entropy clips to {ort:?}, quench keeps {ours:?} (minmax {minmax:?})"
            );
        }
    }
    assert!(
        clipped >= 2,
        "onnxruntime's entropy clipped only {clipped} tensors"
    );
}

// ------------------------------------------------------------------------
// A tiny model whose input has outliers: y = x W, x [N, 64] (or [1, 64]).

const FEATURES: usize = 64;

struct Lcg(u64);
impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Approximately N(0, 1) (sum of 12 uniforms).
    fn normal(&mut self) -> f32 {
        ((0..12).map(|_| self.uniform()).sum::<f64>() - 6.0) as f32
    }
}

fn tensor_type(dims: &[Option<i64>]) -> Option<TypeProto> {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: None,
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("N".into()),
            }),
        })
        .collect();
    Some(TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(1),
            shape: Some(TensorShapeProto { dim }),
        })),
        ..Default::default()
    })
}

/// `y = MatMul(x, w)` with `x: f32[batch, 64]` (`None`: symbolic `N`).
fn matmul_model(batch: Option<i64>) -> ModelProto {
    let mut r = Lcg(11);
    let w = TensorProto {
        name: Some("w".into()),
        data_type: Some(1),
        dims: vec![FEATURES as i64, 4],
        float_data: (0..FEATURES * 4).map(|_| r.normal() * 0.1).collect(),
        ..Default::default()
    };
    let graph = GraphProto {
        name: Some("outliers".into()),
        node: vec![NodeProto {
            name: Some("matmul".into()),
            op_type: Some("MatMul".into()),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        initializer: vec![w],
        input: vec![ValueInfoProto {
            name: Some("x".into()),
            r#type: tensor_type(&[batch, Some(FEATURES as i64)]),
            ..Default::default()
        }],
        output: vec![ValueInfoProto {
            name: Some("y".into()),
            r#type: tensor_type(&[batch, Some(4)]),
            ..Default::default()
        }],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("quench-tests".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// `samples` rows of N(0, 1) where one value in 2000 is +-100 (0.05%).
///
/// Why so few: the KL search weighs the clipped mass (which lands in a bin
/// where the candidate distribution has only the smoothing pseudo-count)
/// against how coarsely 128 levels describe the bulk. With 64000 values,
/// keeping +-100 costs about 0.024 (the N(0, 1) bulk described by groups of
/// ~6 bins of 1/8); clipping 0.2% outliers costs 0.002 ln(0.002 * 64000 /
/// 1e-4) ~ 0.026, so the search keeps those, while clipping 0.05% costs
/// ~ 0.006 and wins.
fn outlier_data(samples: usize) -> Array2<f32> {
    let mut r = Lcg(3);
    let mut k = 0usize;
    Array2::from_shape_fn((samples, FEATURES), |_| {
        k += 1;
        match k % 4000 {
            0 => 100.0,
            2000 => -100.0,
            _ => r.normal(),
        }
    })
}

fn write_npy(dir: &Path, name: &str, a: &ArrayD<f32>) {
    std::fs::create_dir_all(dir).unwrap();
    a.write_npy(std::fs::File::create(dir.join(format!("{name}.npy"))).unwrap())
        .unwrap();
}

#[test]
fn entropy_clips_outliers_that_minmax_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("matmul.onnx");
    std::fs::write(&model, matmul_model(None).encode_to_vec()).unwrap();
    write_npy(&dir.path().join("cal"), "x", &outlier_data(1000).into_dyn());
    let t = calibrate(&model, &dir.path().join("cal"), &[]);
    let ranges = &t["ranges"]["x"];
    let minmax = pair(&ranges["minmax"]);
    assert_eq!(minmax, (-100.0, 100.0));
    let entropy = pair(&ranges["entropy"]);
    let width = |(lo, hi): (f64, f64)| hi - lo;
    assert!(
        width(entropy) < 0.5 * width(minmax),
        "entropy {entropy:?} vs minmax {minmax:?}"
    );
    // It clips the outliers, not the N(0, 1) bulk.
    assert!(entropy.0 < -3.0 && entropy.1 > 3.0, "entropy {entropy:?}");
    // Percentile 99.999 cuts 0.0005% (0.32 values) from each tail: the
    // outliers (0.05% of the values) stay, up to the interpolation inside
    // the bin [-100, -99.875) that holds the 16 at -100.
    let (lo, hi) = pair(&ranges["percentile_99.999"]);
    assert!(lo < -99.875 && hi > 99.875, "percentile ({lo}, {hi})");
}

#[test]
fn batch_size_does_not_change_the_table() {
    let dir = tempfile::tempdir().unwrap();
    // 1000 samples: batches of 16 with a short last batch of 8, or of 1.
    write_npy(&dir.path().join("cal"), "x", &outlier_data(1000).into_dyn());
    let mut tables = Vec::new();
    for (file, batch) in [("n.onnx", None), ("one.onnx", Some(1))] {
        let model = dir.path().join(file);
        std::fs::write(&model, matmul_model(batch).encode_to_vec()).unwrap();
        tables.push(calibrate(&model, &dir.path().join("cal"), &[]));
    }
    assert_eq!(tables[0]["tensors"]["x"]["count"], 64000);
    assert_eq!(tables[0]["tensors"], tables[1]["tensors"]);
    assert_eq!(tables[0]["ranges"], tables[1]["ranges"]);
}

#[test]
fn file_format_sample_order_and_threads_do_not_change_the_table() {
    let model = testdata("digits_cnn.onnx");
    let base = digits_table();
    let input: ArrayD<f32> =
        ArrayD::read_npy(std::fs::File::open(testdata("digits/calib/input.npy")).unwrap()).unwrap();
    let n = input.shape()[0];
    assert_eq!(n, 256);
    let dir = tempfile::tempdir().unwrap();

    // The same samples as an .npz.
    let npz = dir.path().join("calib.npz");
    let mut w = NpzWriter::new(std::fs::File::create(&npz).unwrap());
    w.add_array("input", &input).unwrap();
    w.finish().unwrap();

    // In another order: i -> 97 i + 31 (mod 256) is a permutation, and it
    // puts samples of every original batch of 16 into different batches.
    let order: Vec<usize> = (0..n).map(|i| (97 * i + 31) % n).collect();
    let mut seen = order.clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
    let permuted = input.select(Axis(0), &order);
    write_npy(&dir.path().join("permuted"), "input", &permuted);

    let runs = [
        ("npz", calibrate(&model, &npz, &[])),
        (
            "permuted",
            calibrate(&model, &dir.path().join("permuted"), &[]),
        ),
        (
            "one thread",
            calibrate(
                &model,
                &testdata("digits/calib"),
                &[("RAYON_NUM_THREADS", "1")],
            ),
        ),
        ("permuted npz, two threads", {
            let npz2 = dir.path().join("permuted.npz");
            let mut w = NpzWriter::new_compressed(std::fs::File::create(&npz2).unwrap());
            w.add_array("input", &permuted).unwrap();
            w.finish().unwrap();
            calibrate(&model, &npz2, &[("RAYON_NUM_THREADS", "2")])
        }),
    ];
    for (what, t) in &runs {
        assert_eq!(t["samples"], base["samples"], "{what}");
        // Exact: min, max, counts and every histogram bin.
        assert_eq!(t["tensors"], base["tensors"], "{what}: statistics differ");
        assert_eq!(t["ranges"], base["ranges"], "{what}: ranges differ");
    }
}
