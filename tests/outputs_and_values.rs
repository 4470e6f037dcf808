//! Never a wrong file: outputs that would replace an input or another
//! output are refused before anything is computed, special files are not
//! replaced, and option and data values are validated with errors naming
//! what is wrong. Each case was accepted (exit 0, an input clobbered or a
//! bad value used) before the checks existed.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::WriteNpyExt;

fn quench(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_quench"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A copy of the digits model and its data in a fresh directory.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(testdata("digits_cnn.onnx"), dir.path().join("m.onnx")).unwrap();
        for sub in ["calib", "eval"] {
            let d = dir.path().join(sub);
            std::fs::create_dir(&d).unwrap();
            for f in std::fs::read_dir(testdata(&format!("digits/{sub}"))).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
            }
        }
        Work { dir }
    }
    fn p(&self, rel: &str) -> String {
        self.dir.path().join(rel).to_str().unwrap().to_string()
    }
    fn bytes(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(rel)).unwrap()
    }
}

/// `quench ARGS` must fail with status 1, mention every word of `words`,
/// and leave every input byte-identical.
fn refused(w: &Work, args: &[&str], words: &[&str]) {
    let before: Vec<(String, Vec<u8>)> = [
        "m.onnx",
        "calib/input.npy",
        "eval/input.npy",
        "eval/labels.npy",
    ]
    .iter()
    .map(|f| (f.to_string(), w.bytes(f)))
    .collect();
    let (code, out) = quench(args);
    assert_eq!(code, 1, "quench {args:?} should fail:\n{out}");
    for word in words {
        assert!(
            out.contains(word),
            "quench {args:?}: `{word}` missing from:\n{out}"
        );
    }
    for (f, b) in before {
        assert_eq!(w.bytes(&f), b, "quench {args:?} changed {f}");
    }
}

#[test]
fn outputs_never_replace_inputs_or_each_other() {
    let w = Work::new();
    let (m, cal, ev) = (w.p("m.onnx"), w.p("calib"), w.p("eval"));
    let out = w.p("out.onnx");
    // calibrate -o MODEL used to replace the model with JSON.
    refused(
        &w,
        &["calibrate", &m, "-c", &cal, "-o", &m],
        &["overwrite", "input model"],
    );
    // --report MODEL.
    refused(
        &w,
        &["compile", &m, "-c", &cal, "-o", &out, "--report", &m],
        &["overwrite"],
    );
    // --report equal to -o lost the model.
    refused(
        &w,
        &["compile", &m, "-c", &cal, "-o", &out, "--report", &out],
        &["two outputs"],
    );
    // -o inside the calibration data.
    refused(
        &w,
        &["compile", &m, "-c", &cal, "-o", &w.p("calib/input.npy")],
        &["overwrite"],
    );
    // -o onto the evaluation data.
    refused(
        &w,
        &[
            "compile",
            &m,
            "-c",
            &cal,
            "--eval",
            &ev,
            "-o",
            &w.p("eval/labels.npy"),
        ],
        &["overwrite"],
    );
    // A relative spelling through `..`.
    let sneaky = format!("{}/../m.onnx", cal);
    refused(
        &w,
        &["compile", &m, "-c", &cal, "-o", &sneaky],
        &["overwrite"],
    );
    assert!(!Path::new(&out).exists(), "nothing written by refused runs");
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_as_outputs() {
    let w = Work::new();
    let fifo = w.p("pipe");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    refused(
        &w,
        &["compile", &w.p("m.onnx"), "-c", &w.p("calib"), "-o", &fifo],
        &["not a regular file"],
    );
    refused(
        &w,
        &["compile", &w.p("m.onnx"), "-o", &w.p("calib")],
        &["not a regular file"],
    );
    // The FIFO is still a FIFO.
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn option_values_are_validated() {
    let w = Work::new();
    let (m, cal, out) = (w.p("m.onnx"), w.p("calib"), w.p("o.onnx"));
    let base = [
        "compile",
        m.as_str(),
        "-c",
        cal.as_str(),
        "-o",
        out.as_str(),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    for (extra, word) in [
        (
            &["--method", "percentile", "--percentile", "150"][..],
            "--percentile",
        ),
        (&["--percentile=-1"], "--percentile"),
        (&["--percentile", "NaN"], "--percentile"),
        (&["--min-sqnr", "NaN"], "--min-sqnr"),
        (&["--min-top1", "NaN"], "--min-top1"),
        (&["--min-top1", "1.5"], "--min-top1"),
        (&["--entropy-guard=-1"], "--entropy-guard"),
        (&["--exclude-nodes", "no_such_node"], "no_such_node"),
        (&["--dump-after", "no_such_pass"], "no_such_pass"),
    ] {
        let args = with(extra);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&w, &a, &[word]);
        assert!(!Path::new(&out).exists(), "{extra:?} wrote an output");
    }
}

#[test]
fn an_unknown_node_name_suggests_the_nearest() {
    let w = Work::new();
    let g = quench_ir::Model::from_onnx(load(&testdata("digits_cnn.onnx"))).unwrap();
    let real = g
        .graph
        .node_ids()
        .into_iter()
        .map(|n| g.graph.node(n).name().to_string())
        .find(|n| n.len() > 2)
        .unwrap();
    let typo = format!("{real}x");
    let (code, out) = quench(&[
        "compile",
        &w.p("m.onnx"),
        "-c",
        &w.p("calib"),
        "-o",
        &w.p("o.onnx"),
        "--exclude-nodes",
        &typo,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("`{real}`")), "{out}");
}

#[test]
fn labels_must_match_the_samples() {
    let w = Work::new();
    let labels = ArrayD::<i64>::zeros(IxDyn(&[10]));
    let f = std::fs::File::create(w.dir.path().join("eval/labels.npy")).unwrap();
    labels.write_npy(f).unwrap();
    let (code, out) = quench(&[
        "compile",
        &w.p("m.onnx"),
        "-c",
        &w.p("calib"),
        "--eval",
        &w.p("eval"),
        "-o",
        &w.p("o.onnx"),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("labels") && out.contains("10 rows"), "{out}");
    assert!(!w.dir.path().join("o.onnx").exists());
}

#[test]
fn non_finite_calibration_data_is_an_error_naming_input_and_sample() {
    let w = Work::new();
    let mut x: ArrayD<f32> = ndarray_npy::read_npy(w.dir.path().join("calib/input.npy")).unwrap();
    let n = x.shape()[0];
    assert!(n > 5);
    x.index_axis_mut(ndarray::Axis(0), 3).fill(f32::NAN);
    x.write_npy(std::fs::File::create(w.dir.path().join("calib/input.npy")).unwrap())
        .unwrap();
    let (code, out) = quench(&[
        "compile",
        &w.p("m.onnx"),
        "-c",
        &w.p("calib"),
        "-o",
        &w.p("o.onnx"),
        "--no-verify",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`input`") && out.contains("sample 3") && out.contains("NaN"),
        "{out}"
    );
    assert!(!w.dir.path().join("o.onnx").exists());
}

#[test]
fn old_opset_models_compile_in_every_weight_mode() {
    // Opsets 7-12 (robustness fixtures): weight-only (per channel and per
    // tensor) and --no-quantize succeed; the outputs go to the interop
    // check (onnx.checker full check and ONNX Runtime).
    let dir = interop_dir("old_opsets");
    let mut n = 0;
    for e in std::fs::read_dir(testdata("opset")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("onnx") {
            continue;
        }
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        for (tag, extra) in [
            ("wo", &["--mode", "weight-only"][..]),
            ("wo_pt", &["--mode", "weight-only", "--per-tensor"][..]),
            ("passes", &["--no-quantize"][..]),
        ] {
            let out = dir.join(format!("{stem}.{tag}.onnx"));
            let mut args = vec!["compile", p.to_str().unwrap(), "-o", out.to_str().unwrap()];
            args.extend(extra);
            let (code, text) = quench(&args);
            assert_eq!(code, 0, "{stem} {tag}:\n{text}");
            assert!(quench_onnx::load_model(&out).is_ok(), "{stem} {tag}");
            n += 1;
        }
    }
    assert!(n >= 30, "{n} compiles");
}

/// Defects an adversarial review found in the driver's first version.
#[test]
fn review_regressions_outputs_thresholds_and_fallbacks() {
    let w = Work::new();
    let (m, cal) = (w.p("m.onnx"), w.p("calib"));
    // --keep-rejected may not write over the input's external data (every
    // model output's `.data` is checked, not only -o's).
    let d = w.dir.path().join("ext");
    std::fs::create_dir(&d).unwrap();
    std::fs::copy(testdata("external_data.onnx"), d.join("e.onnx")).unwrap();
    std::fs::copy(
        testdata("external_data.onnx.data"),
        d.join("external_data.onnx.data"),
    )
    .unwrap();
    let data_before = std::fs::read(d.join("external_data.onnx.data")).unwrap();
    let (code, out) = quench(&[
        "compile",
        d.join("e.onnx").to_str().unwrap(),
        "-o",
        &w.p("o1.onnx"),
        "--min-sqnr",
        "200",
        "--keep-rejected",
        d.join("external_data.onnx").to_str().unwrap(),
    ]);
    // (Data files are named by their content and only those of the model a
    // save replaces are removed, so the input's data stays as it was.)
    assert!(code == 1 || code == 3, "{out}");
    assert_eq!(
        std::fs::read(d.join("external_data.onnx.data")).unwrap(),
        data_before
    );
    assert!(quench_onnx::load_model(&d.join("e.onnx")).is_ok());
    // A report in a directory that does not exist is refused before the
    // compile: no model left behind.
    let (code, out) = quench(&[
        "compile",
        &m,
        "-c",
        &cal,
        "-o",
        &w.p("o2.onnx"),
        "--report",
        "/nonexistent-dir/r.json",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not exist"), "{out}");
    assert!(!w.dir.path().join("o2.onnx").exists());
    // --min-top1 on an output without class scores cannot pass silently.
    std::fs::copy(
        testdata("accuracy/hardswish_stem.onnx"),
        w.dir.path().join("hs.onnx"),
    )
    .unwrap();
    let (code, out) = quench(&[
        "compile",
        &w.p("hs.onnx"),
        "-c",
        &cal,
        "-o",
        &w.p("o3.onnx"),
        "--min-top1",
        "0.5",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("cannot be checked"), "{out}");
    // Bias correction (on by default) never turns tract's weight-only
    // fallback into an error: bn_nonconst cannot run in tract.
    let dir = tempfile::tempdir().unwrap();
    let facts = input_facts(&load(&testdata("bn_nonconst.onnx")), 1);
    for f in &facts {
        let mut shape = vec![8usize];
        shape.extend(&f.shape);
        let n: usize = shape.iter().product();
        let a = ArrayD::from_shape_vec(
            IxDyn(&shape),
            (0..n).map(|i| (i % 7) as f32 / 7.0).collect(),
        )
        .unwrap();
        a.write_npy(std::fs::File::create(dir.path().join(format!("{}.npy", f.name))).unwrap())
            .unwrap();
    }
    let (code, out) = quench(&[
        "compile",
        testdata("bn_nonconst.onnx").to_str().unwrap(),
        "-c",
        dir.path().to_str().unwrap(),
        "-o",
        &w.p("o4.onnx"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("weight-only"), "{out}");
}

#[test]
fn explain_measures_roots_of_shared_tensors_with_their_members() {
    // relu2_out feeds Flatten (shared parameters): leaving it float must
    // also drop the Flatten output's identical Q/DQ, or its gain reads 0.
    let w = Work::new();
    let rep = w.p("r.json");
    let (code, out) = quench(&[
        "compile",
        &w.p("m.onnx"),
        "-c",
        &w.p("calib"),
        "--eval",
        &w.p("eval"),
        "-o",
        &w.p("o.onnx"),
        "--explain",
        "--no-bias-correction",
        "--report",
        &rep,
    ]);
    assert_eq!(code, 0, "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let t = r["verification"]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tensor"] == "relu2_out")
        .unwrap()
        .clone();
    // Measured +1.0 dB (it read +0.00 before).
    assert!(t["float_gain_db"].as_f64().unwrap() > 0.3, "{t}");
}
