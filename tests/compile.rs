//! End-to-end `quench compile`: accuracy of the trained fixture, every
//! fixture in every mode (written for the CI interop check), exact ONNX
//! quantization arithmetic, and errors.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ndarray::ArrayD;
use ndarray_npy::WriteNpyExt;
use serde_json::Value;

fn quench(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_quench"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `quench ARGS` that must succeed; its stdout.
fn quench_ok(args: &[&str]) -> String {
    let (code, out, err) = quench(args);
    assert_eq!(code, 0, "quench {args:?}\n{out}\n{err}");
    out
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn trained_digits_model_keeps_its_accuracy() {
    let out = interop_dir("compile").join("digits_cnn.int8.onnx");
    let rep = interop_dir("compile").join("digits_cnn.report.json");
    let (code, stdout, stderr) = quench(&[
        "compile",
        testdata("digits_cnn.onnx").to_str().unwrap(),
        "--calibration",
        testdata("digits/calib").to_str().unwrap(),
        "--eval",
        testdata("digits/eval").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--min-sqnr",
        "30",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = report(&rep);
    let acc = &r["verification"]["accuracy"];
    let (fp, q) = (
        acc["fp32"].as_f64().unwrap(),
        acc["quantized"].as_f64().unwrap(),
    );
    assert!((fp - 0.9736).abs() < 0.002, "fp32 accuracy {fp}");
    assert!(fp - q <= 0.01, "accuracy dropped from {fp} to {q}");
    let o = &r["verification"]["outputs"][0];
    assert!(o["reference"]["sqnr_db"].as_f64().unwrap() > 30.0);
    assert!(o["reference"]["top1"]["fraction"].as_f64().unwrap() >= 0.99);
    // Every Conv/Gemm got int8 weights and int32 biases; BN was folded first.
    assert_eq!(r["quantization"]["weights_quantized"], 3);
    assert_eq!(r["quantization"]["biases_quantized"], 3);
    assert_eq!(r["pass_stats"]["fold_batchnorm.folded"], 2);
    // About 4x smaller weights: the file is well under half the FP32 size.
    assert!(r["size_after"].as_u64().unwrap() * 2 < r["size_before"].as_u64().unwrap());
    // The twin and the file agree for this model in tract.
    assert_eq!(o["runtime_discrepancy"], false);
    // ONNX Runtime compares the quantized model with its twin and FP32 on
    // 64 real digit images (scripts/interop_check.py).
    let inputs = digits_eval_inputs(64);
    write_interop_pair(
        &out,
        &load(&testdata("digits_cnn.onnx")),
        Some(&inputs),
        &InteropCheck::Quantized {
            min_sqnr_fp32_db: 25.0,
            min_sqnr_twin_db: 60.0,
        },
    );
}

#[test]
fn thresholds_fail_with_exit_status_3_and_write_nothing_at_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.onnx");
    let kept = dir.path().join("rejected.onnx");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "compile",
            testdata("digits_cnn.onnx").to_str().unwrap(),
            "--calibration",
            testdata("digits/calib").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--min-sqnr",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |a: Vec<String>| quench(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, _, stderr) = run(args(&[]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("--min-sqnr"), "{stderr}");
    assert!(!out.exists(), "the rejected model must not be left at -o");
    // An existing output is left as it was.
    std::fs::write(&out, b"previous").unwrap();
    let (code, _, _) = run(args(&[]));
    assert_eq!(code, 3);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    // --keep-rejected writes it elsewhere, and it loads.
    let (code, _, stderr) = run(args(&["--keep-rejected", kept.to_str().unwrap()]));
    assert_eq!(code, 3, "{stderr}");
    assert!(quench_onnx::load_model(&kept).is_ok());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    // Usage errors keep status 2.
    let (code, _, _) = quench(&["compile", "--no-such-flag"]);
    assert_eq!(code, 2);
}

/// Writes `n` random samples for every input of a fixture as `.npy` files.
fn random_calibration(model: &Path, dir: &Path, n: usize) {
    let m = load(model);
    for (k, f) in input_facts(&m, 1).iter().enumerate() {
        let mut shape = vec![n];
        shape.extend(&f.shape);
        let mut r = Lcg(7 + k as u64);
        let len: usize = shape.iter().product();
        let a = ArrayD::from_shape_vec(shape, (0..len).map(|_| r.normal()).collect::<Vec<f32>>())
            .unwrap();
        a.write_npy(std::fs::File::create(dir.join(format!("{}.npy", f.name))).unwrap())
            .unwrap();
    }
}

#[test]
fn every_fixture_compiles_in_every_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = interop_dir("compile");
    for f in [
        "cnn_bn",
        "mlp",
        "residual",
        "transformer",
        "if_subgraph",
        "external_data",
        "constant_weights",
        "bn_depthwise",
        "bn_nobias",
        "bn_convtranspose",
        "bn_gemm",
        "bn_matmul",
        "bn_shared",
        "resnet_tiny",
        "mobilenet_tiny",
        "silu_cnn",
        "affine_fold",
    ] {
        let model = testdata(&format!("{f}.onnx"));
        let cal = tmp.path().join(f);
        std::fs::create_dir_all(&cal).unwrap();
        random_calibration(&model, &cal, 10);
        for mode in ["static", "weight-only", "dynamic"] {
            let out = out_dir.join(format!("{f}.{mode}.onnx"));
            let rep = tmp.path().join(format!("{f}.{mode}.json"));
            // Min/max ranges: this test is about modes. (With the default
            // auto ranges on 10 random samples, ONNX Runtime's x86 u8s8
            // kernel ran mobilenet_tiny 4 quantization steps away from the
            // twin at one depthwise output, the interop check's limit being
            // 1; suspected, not verified: int16 saturation in that kernel.)
            let (code, stdout, stderr) = quench(&[
                "compile",
                model.to_str().unwrap(),
                "--calibration",
                cal.to_str().unwrap(),
                "--mode",
                mode,
                "--method",
                "minmax",
                "-o",
                out.to_str().unwrap(),
                "--report",
                rep.to_str().unwrap(),
            ]);
            assert_eq!(code, 0, "{f} {mode}:\n{stdout}\n{stderr}");
            let r = report(&rep);
            let v = &r["verification"]["outputs"];
            for o in v.as_array().unwrap() {
                let m = if o["reference"].is_null() {
                    &o["file"]
                } else {
                    &o["reference"]
                };
                // NaN (null) fails; +inf only for identical outputs (dynamic
                // mode on a model with nothing it quantizes).
                let sqnr = sqnr_of(m).unwrap_or_else(|e| panic!("{f} {mode}: {e}\n{stdout}"));
                // Random inputs through random weights: loose but meaningful.
                assert!(sqnr > 12.0, "{f} {mode}: SQNR {sqnr}\n{stdout}");
            }
            if mode != "static" {
                assert_eq!(r["quantization"]["activations_quantized"], 0);
            }
            // ONNX Runtime compares the model with its twin and FP32
            // (measured: 27.9-51.9 dB vs FP32, 43.9 dB to exact vs twin).
            write_interop_pair(
                &out,
                &load(&model),
                None,
                &InteropCheck::Quantized {
                    min_sqnr_fp32_db: 20.0,
                    min_sqnr_twin_db: 40.0,
                },
            );
        }
    }
}

/// SiLU's Sigmoid and Mul sit between quantized convs and become integer
/// ops (ONNX Runtime fuses them into QLinearSigmoid/QLinearMul); the Mul
/// of a written-out hard-swish feeds a float Div and stays float; a Relu
/// after a residual Add is absorbed like one after a Conv.
#[test]
fn silu_is_quantized_hard_swish_is_not_and_relu_after_add_is_absorbed() {
    let tmp = tempfile::tempdir().unwrap();
    let decisions = |model: &str| -> Vec<(String, bool)> {
        let m = testdata(model);
        let cal = tmp.path().join(model);
        std::fs::create_dir_all(&cal).unwrap();
        random_calibration(&m, &cal, 8);
        let rep = tmp.path().join(format!("{model}.json"));
        let (code, stdout, stderr) = quench(&[
            "compile",
            m.to_str().unwrap(),
            "-c",
            cal.to_str().unwrap(),
            "-o",
            tmp.path().join(format!("{model}.q.onnx")).to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        report(&rep)["quantization"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["node"].as_str().unwrap().to_string(),
                    n["quantized"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let q = |d: &[(String, bool)], name: &str| d.iter().find(|(n, _)| n == name).unwrap().1;
    let d = decisions("silu_cnn.onnx");
    assert!(q(&d, "silu_sigmoid") && q(&d, "silu_mul"), "{d:?}");
    assert!(q(&d, "leaky"), "{d:?}");
    assert!(!q(&d, "hswish_mul") && !q(&d, "hswish_div"), "{d:?}");
    let d = decisions("residual.onnx");
    assert!(q(&d, "skip_add") && q(&d, "relu3"), "{d:?}");
}

#[test]
fn transformer_leaves_mask_and_softmax_float() {
    let tmp = tempfile::tempdir().unwrap();
    let model = testdata("transformer.onnx");
    random_calibration(&model, tmp.path(), 8);
    let out = tmp.path().join("t.onnx");
    let rep = tmp.path().join("t.json");
    let (code, stdout, stderr) = quench(&[
        "compile",
        model.to_str().unwrap(),
        "-c",
        tmp.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let r = report(&rep);
    let nodes = r["quantization"]["nodes"].as_array().unwrap();
    let q = |name: &str| {
        nodes
            .iter()
            .find(|n| n["node"] == name)
            .map(|n| n["quantized"].as_bool().unwrap())
            .unwrap()
    };
    assert!(!q("mask_add"), "the -3.4e38 mask Add must stay float");
    assert!(!q("softmax"));
    assert!(
        !q("ln1_mean") && !q("ln1_div"),
        "written-out LayerNorm stays float"
    );
    assert!(q("q_proj") && q("ff1"));
    // Quantized tensors never include the Softmax input.
    let text = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_quench"))
            .args(["inspect", "--graph", out.to_str().unwrap()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!text.contains("scores_masked_QuantizeLinear"), "{text}");
}

/// tract cannot run a model with a custom op, so static calibration is
/// impossible: compile falls back to weight-only and says why (naming the
/// op); `--no-fallback` makes it an error, and a requested threshold that
/// cannot be verified fails with status 2.
#[test]
fn custom_op_model_falls_back_to_weight_only_and_names_the_op() {
    let tmp = tempfile::tempdir().unwrap();
    let model = testdata("custom_domain.onnx");
    random_calibration(&model, tmp.path(), 4);
    let out = interop_dir("compile").join("custom_domain.fallback.onnx");
    let rep = tmp.path().join("c.json");
    let (code, stdout, stderr) = quench(&[
        "compile",
        model.to_str().unwrap(),
        "-c",
        tmp.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("MyOp") && stderr.contains("fell back to weight-only"),
        "{stderr}"
    );
    assert!(stdout.contains("custom domain stays float"), "{stdout}");
    let r = report(&rep);
    assert_eq!(r["mode"], "weight-only");
    assert_eq!(r["quantization"]["weights_quantized"], 1);
    assert_eq!(r["quantization"]["activations_quantized"], 0);

    let strict = tmp.path().join("strict.onnx");
    let (code, _, stderr) = quench(&[
        "compile",
        model.to_str().unwrap(),
        "-c",
        tmp.path().to_str().unwrap(),
        "-o",
        strict.to_str().unwrap(),
        "--no-fallback",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("MyOp") && stderr.contains("weight-only"),
        "{stderr}"
    );
    assert!(!strict.exists(), "no output on failure");

    let (code, _, stderr) = quench(&[
        "compile",
        model.to_str().unwrap(),
        "-c",
        tmp.path().to_str().unwrap(),
        "-o",
        tmp.path().join("t.onnx").to_str().unwrap(),
        "--min-sqnr",
        "20",
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("verification did not run"), "{stderr}");
    assert!(
        !tmp.path().join("t.onnx").exists(),
        "a rejected model is not written"
    );
}

#[test]
fn no_calibration_data_means_weight_only_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.onnx");
    let (code, stdout, stderr) = quench(&[
        "compile",
        testdata("mlp.onnx").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("weight-only"), "{stderr}");
    assert!(stdout.contains("verification   skipped"), "{stdout}");
}

#[test]
fn bad_calibration_data_names_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let a = ArrayD::<f32>::zeros(vec![4, 3]);
    a.write_npy(std::fs::File::create(tmp.path().join("not_the_input.npy")).unwrap())
        .unwrap();
    let out = tmp.path().join("m.onnx");
    let (code, _, stderr) = quench(&[
        "compile",
        testdata("mlp.onnx").to_str().unwrap(),
        "-c",
        tmp.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("input"), "{stderr}");
    assert!(!stderr.contains("panicked"));
    assert!(!out.exists());
}

/// The emitted Q/DQ arithmetic equals ONNX's definition exactly: run a
/// quantized model's float twin and the file in tract on inputs placed on
/// rounding ties and beyond saturation, against quench-calib's reference.
#[test]
fn quantize_arithmetic_matches_onnx_definition() {
    use quench_calib::{dequantize_f32, quantize_f32};
    // Ties at scale 0.5: x/scale = k + 0.5 exactly; and saturation.
    let scale = 0.5f32;
    let zp = 3;
    let xs: Vec<f32> = vec![
        0.25, 0.75, 1.25, -0.25, -0.75, -1.25, 200.0, -200.0, 63.75, 0.0,
    ];
    let expect: Vec<f32> = xs
        .iter()
        .map(|x| dequantize_f32(quantize_f32(*x, scale, zp, 0, 255), scale, zp))
        .collect();
    // Ties round half to even: 0.25/0.5 = 0.5 -> 0; 0.75/0.5 = 1.5 -> 2.
    assert_eq!(expect[0], 0.0);
    assert_eq!(expect[1], 1.0);
    assert_eq!(expect[6], (255 - zp) as f32 * scale);
    assert_eq!(expect[7], -(zp as f32) * scale);
    // Build Q -> DQ as ONNX and run the file and its twin in tract.
    use quench_ir::{tensor, Graph, Model, Node};
    let mut g = Graph::new("qdq");
    let ty = tensor::tensor_type_of(1, &[xs.len() as i64]);
    let x = g.add_input("x", Some(ty.clone()));
    let s = g.add_const("s", tensor::from_f32("", &[], &[scale]));
    let z = g.add_const("z", tensor::from_u8("", &[], &[zp as u8]));
    let (_, q) = g.add_op(Node::new("QuantizeLinear", "q"), &[x, s, z], &["xq"]);
    let (_, y) = g.add_op(Node::new("DequantizeLinear", "dq"), &[q[0], s, z], &["y"]);
    g.value_mut(y[0]).ty = Some(ty);
    g.add_output(y[0]);
    let header = quench_onnx::proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![quench_onnx::proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        ..Default::default()
    };
    let model = Model { header, graph: g };
    let mut twin = model.clone();
    assert_eq!(
        quench_passes::simulate::float_twin(&mut twin.graph, 13).0,
        1
    );
    let facts = vec![quench_verify::InputFact {
        name: "x".into(),
        elem_type: 1,
        shape: vec![xs.len()],
    }];
    let input = vec![quench_verify::ArrayData::F32(
        ArrayD::from_shape_vec(vec![xs.len()], xs.clone()).unwrap(),
    )];
    let file = run(&model.to_onnx(), &facts, &input);
    let sim = run(&twin.to_onnx(), &facts, &input);
    assert_eq!(
        file[0].iter().copied().collect::<Vec<_>>(),
        expect,
        "tract's QDQ"
    );
    assert_eq!(
        sim[0].iter().copied().collect::<Vec<_>>(),
        expect,
        "float twin"
    );
    quench_onnx::save_model(
        &model.to_onnx(),
        &interop_dir("compile").join("qdq_ties.onnx"),
        &Default::default(),
    )
    .unwrap();
}

/// Calibration data that never makes a tensor positive (here: all-zero
/// inputs) gives ranges ending at 0; compile warns and names the tensor.
#[test]
fn ranges_ending_at_zero_are_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let zeros = ArrayD::<f32>::zeros(vec![8, 32]);
    zeros
        .write_npy(std::fs::File::create(tmp.path().join("input.npy")).unwrap())
        .unwrap();
    let rep = tmp.path().join("r.json");
    let (code, stdout, stderr) = quench(&[
        "compile",
        testdata("mlp.onnx").to_str().unwrap(),
        "-c",
        tmp.path().to_str().unwrap(),
        "-o",
        tmp.path().join("m.onnx").to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("never held a positive value") && stderr.contains("`input`"),
        "{stderr}"
    );
    let notes = report(&rep)["notes"].to_string();
    assert!(notes.contains("never held a positive value"), "{notes}");
}

/// `--method minmax` observes min/max only (no histograms); the model it
/// writes must be the one written from a full `quench calibrate` table of
/// the same samples (under `--no-verify` every sample calibrates).
#[test]
fn minmax_without_histograms_equals_the_calibration_table_path() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (testdata("digits_cnn.onnx"), testdata("digits/calib"));
    let table = dir.path().join("table.json");
    let (direct, via_table) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    let (m, d, t) = (
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        table.to_str().unwrap(),
    );
    quench_ok(&["calibrate", m, "-c", d, "-o", t]);
    // (Bias correction and the saturation guard need samples, which the
    // table path does not have.)
    quench_ok(&[
        "compile",
        m,
        "-c",
        d,
        "--no-verify",
        "--no-bias-correction",
        "--no-saturation-guard",
        "--method",
        "minmax",
        "-o",
        direct.to_str().unwrap(),
    ]);
    quench_ok(&[
        "compile",
        m,
        "--calibration-table",
        t,
        "--no-verify",
        "--method",
        "minmax",
        "-o",
        via_table.to_str().unwrap(),
    ]);
    let (a, b) = (
        std::fs::read(&direct).unwrap(),
        std::fs::read(&via_table).unwrap(),
    );
    assert!(a.len() > 1000);
    assert!(a == b, "the two paths wrote different models");
}

/// `--explain` names the tensor whose range was ruined: in a calibration
/// table `relu1_out`'s max is raised 40x (its histogram dropped: minmax
/// needs none), so its step is 40x coarser. It must be the tensor adding
/// the most error, far below the others, and the error arriving at it from
/// upstream must stay small.
#[test]
fn explain_names_the_tensor_with_a_stretched_range() {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("digits_cnn.onnx");
    let table = dir.path().join("table.json");
    quench_ok(&[
        "calibrate",
        model.to_str().unwrap(),
        "-c",
        testdata("digits/calib").to_str().unwrap(),
        "-o",
        table.to_str().unwrap(),
    ]);
    let mut t = report(&table);
    let s = &mut t["tensors"]["relu1_out"];
    let max = s["max"].as_f64().unwrap();
    s["max"] = (max * 40.0).into();
    s["histogram"] = Value::Null;
    std::fs::write(&table, serde_json::to_string(&t).unwrap()).unwrap();
    let (out, rep) = (dir.path().join("m.onnx"), dir.path().join("r.json"));
    let stdout = quench_ok(&[
        "compile",
        model.to_str().unwrap(),
        "--calibration-table",
        table.to_str().unwrap(),
        "--eval",
        testdata("digits/eval").to_str().unwrap(),
        "--explain",
        "-o",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert!(stdout.contains("cost by tensor"), "{stdout}");
    let tensors = report(&rep)["verification"]["tensors"]
        .as_array()
        .unwrap()
        .clone();
    let get = |name: &str, key: &str| {
        let t = tensors.iter().find(|t| t["tensor"] == name).unwrap();
        t[key].as_f64().unwrap_or(f64::INFINITY)
    };
    let bad = get("relu1_out", "added_db");
    assert!(bad < 25.0, "relu1_out adds {bad} dB");
    assert!(get("relu1_out", "sqnr_in_db") > 40.0);
    for other in ["input", "relu2_out"] {
        let a = get(other, "added_db");
        assert!(a > bad + 20.0, "{other} adds {a} dB, relu1_out {bad}");
    }
    // Leaving it float gains the most at the output, by far.
    let gain = get("relu1_out", "float_gain_db");
    assert!(gain > 10.0, "relu1_out float gain {gain} dB");
    for other in ["input", "relu2_out"] {
        let g = get(other, "float_gain_db");
        assert!(g < gain - 10.0, "{other} gains {g} dB, relu1_out {gain}");
    }
    // The most costly tensor is listed first in the printed summary.
    let first = stdout
        .lines()
        .skip_while(|l| !l.contains("cost by tensor"))
        .nth(1)
        .unwrap_or_default();
    assert!(first.contains("`relu1_out`"), "{stdout}");
}

/// Static mode quantizes an embedding table (`Gather` of a constant 2-D
/// table) as a weight, like weight-only mode: tokens are the real digits'
/// pixel values (0..16), each row of 64 a sample.
#[test]
fn static_mode_quantizes_embedding_tables() {
    use quench_ir::{tensor, Graph, Model, Node};
    let tmp = tempfile::tempdir().unwrap();
    let mut g = Graph::new("embed");
    let ids = g.add_input("ids", Some(tensor::tensor_type_of(7, &[-1, 64])));
    let mut rng = Lcg(7);
    let table: Vec<f32> = (0..17 * 16).map(|_| rng.normal()).collect();
    let w: Vec<f32> = (0..16 * 4).map(|_| rng.normal() * 0.25).collect();
    let t = g.add_const("table", tensor::from_f32("table", &[17, 16], &table));
    let wv = g.add_const("w", tensor::from_f32("w", &[16, 4], &w));
    let (_, e) = g.add_op(Node::new("Gather", "embed"), &[t, ids], &["e"]);
    let (_, y) = g.add_op(Node::new("MatMul", "proj"), &[e[0], wv], &["y"]);
    g.value_mut(y[0]).ty = Some(tensor::tensor_type_of(1, &[-1, 64, 4]));
    g.add_output(y[0]);
    let header = quench_onnx::proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![quench_onnx::proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        ..Default::default()
    };
    let model = tmp.path().join("embed.onnx");
    quench_onnx::save_model(
        &Model { header, graph: g }.to_onnx(),
        &model,
        &Default::default(),
    )
    .unwrap();
    let digits: ArrayD<f32> = ndarray_npy::read_npy(testdata("digits/calib/input.npy")).unwrap();
    let n = digits.shape()[0];
    let data = tmp.path().join("calib");
    std::fs::create_dir(&data).unwrap();
    digits
        .mapv(|v| v.round() as i64)
        .into_shape_with_order((n, 64))
        .unwrap()
        .write_npy(std::fs::File::create(data.join("ids.npy")).unwrap())
        .unwrap();
    let out = tmp.path().join("q.onnx");
    let rep = tmp.path().join("r.json");
    let (code, _, stderr) = quench(&[
        "compile",
        model.to_str().unwrap(),
        "-c",
        data.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(r["mode"], "static", "{r}");
    // Both the table and the projection weight are int8.
    assert_eq!(
        r["quantization"]["weights_quantized"], 2,
        "{}",
        r["quantization"]
    );
    let q = load(&out);
    let gq = q.graph.as_ref().unwrap();
    let gather = gq.node.iter().find(|n| n.op_type() == "Gather").unwrap();
    let dq = gq
        .node
        .iter()
        .find(|n| n.output.first() == gather.input.first())
        .expect("the Gather reads a DequantizeLinear");
    assert_eq!(dq.op_type(), "DequantizeLinear");
    // Per-row int8 of a normal table: the output stays within 30 dB.
    let sqnr = sqnr_of(&r["verification"]["outputs"][0]["reference"]).unwrap();
    assert!(sqnr > 30.0, "{sqnr}");
}

/// `quench compile MODEL -c CAL --eval EVAL -o OUT`: its stdout and its
/// report.
fn compile_verified(m: &Path, cal: &Path, eval: &Path, out: &Path) -> (String, Value) {
    let rep = out.with_extension("json");
    let stdout = quench_ok(&[
        "compile",
        m.to_str().unwrap(),
        "-c",
        cal.to_str().unwrap(),
        "--eval",
        eval.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    (stdout, report(&rep))
}

/// The tensors a verified output's parts are named by.
fn part_names(output: &Value) -> Vec<String> {
    output["parts"]
        .as_array()
        .expect("the output's parts")
        .iter()
        .map(|p| p["tensor"].as_str().unwrap().to_string())
        .collect()
}

/// A detector head's one output concatenates boxes (times 32) and two
/// sigmoid scores, reshaped with a shape computed from the batch and
/// transposed to [N, anchors, 6]. Verification measures each part on its
/// own: the report's figures equal the SQNR of those columns computed
/// here from tract runs of FP32 and the written file on the same
/// evaluation samples, the whole output's figure likewise, and the text
/// names them.
#[test]
fn a_concatenated_output_is_measured_by_part() {
    let tmp = tempfile::tempdir().unwrap();
    let m = testdata("detector_head.onnx");
    let (cal, ev) = (tmp.path().join("cal"), tmp.path().join("eval"));
    std::fs::create_dir_all(&cal).unwrap();
    std::fs::create_dir_all(&ev).unwrap();
    random_calibration(&m, &cal, 8);
    let n = 6;
    let mut r = Lcg(1234);
    let samples: Vec<Vec<f32>> = (0..n)
        .map(|_| (0..3 * 16 * 16).map(|_| r.normal()).collect())
        .collect();
    ArrayD::from_shape_vec(vec![n, 1, 3, 16, 16], samples.concat())
        .unwrap()
        .write_npy(std::fs::File::create(ev.join("input.npy")).unwrap())
        .unwrap();
    let q = tmp.path().join("q.onnx");
    let (out, rep) = compile_verified(&m, &cal, &ev, &q);
    let o = &rep["verification"]["outputs"][0];
    let parts = o["parts"].as_array().expect("the output's parts");
    let names = part_names(o);
    assert_eq!(names, ["boxes", "scores"], "{o}");
    // Independently: per column group, FP32's power over the error's.
    let (fp, qm) = (load(&m), load(&q));
    let inputs = quench_verify::input_names(&fp);
    let (rf, rq) = (
        quench_verify::Runners::new(&fp, vec![]),
        quench_verify::Runners::new(&qm, vec![]),
    );
    let mut sums = [[0f64; 2]; 3]; // boxes, scores, whole: signal, error
    for s in &samples {
        let x = vec![quench_verify::ArrayData::F32(
            ArrayD::from_shape_vec(vec![1, 3, 16, 16], s.clone()).unwrap(),
        )];
        let (a, b) = (
            rf.run(&inputs, &x).unwrap()[0].to_f32(),
            rq.run(&inputs, &x).unwrap()[0].to_f32(),
        );
        assert_eq!(a.shape(), [1, 256, 6]);
        for (i, (u, v)) in a.iter().zip(b.iter()).enumerate() {
            let (u, v) = (f64::from(*u), f64::from(*v));
            let part = if i % 6 < 4 { 0 } else { 1 };
            for k in [part, 2] {
                sums[k][0] += u * u;
                sums[k][1] += (u - v) * (u - v);
            }
        }
    }
    let db = |k: usize| 10.0 * (sums[k][0] / sums[k][1]).log10();
    for (k, p) in parts.iter().enumerate() {
        let got = sqnr_of(&p["file"]).unwrap();
        assert!(
            p["file"]["top1"].is_null(),
            "a part is no class scores: {p}"
        );
        assert!(
            (got - db(k)).abs() < 0.01,
            "{}: {got} vs {}",
            names[k],
            db(k)
        );
    }
    let whole = sqnr_of(&o["file"]).unwrap();
    assert!((whole - db(2)).abs() < 0.01, "{whole} vs {}", db(2));
    // The boxes decide the whole output's figure (32x the scale).
    assert!((whole - db(0)).abs() < 1.0, "{whole} vs boxes {}", db(0));
    assert!(
        out.contains("output by part (the tensors concatenated into it, emitted file): `boxes`"),
        "{out}"
    );
}

/// Parts stay with their own output: an integer output (ArgMax and
/// ArgMin concatenated, which gets no parts) before a float one made of
/// two tensors. The float output's parts were printed under the integer
/// output's name when the integer one came first (found by review).
#[test]
fn parts_stay_with_their_output_after_an_integer_output() {
    use prost::Message;
    let tmp = tempfile::tempdir().unwrap();
    let model = quench_ir::parse_model(
        "# ir_version 8; opset ai.onnx 17
graph int_first(%x: f32[1,8]) -> (%3, %6)
  %w0 = const f32[1] [2]  # two
  %0 = Relu(%x) : ?  # r: a
  %1 = ArgMax(%x) {axis=1, keepdims=1} : ?  # am: i0
  %2 = ArgMin(%x) {axis=1, keepdims=1} : ?  # an: i1
  %3 = Concat(%1, %2) {axis=1} : i64[1,2]  # cat_i: idx
  %4 = Sigmoid(%x) : ?  # s: sg
  %5 = Mul(%4, %w0) : ?  # m: b
  %6 = Concat(%0, %5) {axis=1} : f32[1,16]  # cat: out
",
    )
    .unwrap();
    let m = tmp.path().join("int_first.onnx");
    std::fs::write(&m, model.to_onnx().encode_to_vec()).unwrap();
    let cal = tmp.path().join("cal");
    std::fs::create_dir_all(&cal).unwrap();
    random_calibration(&m, &cal, 8);
    let (out, rep) = compile_verified(&m, &cal, &cal, &tmp.path().join("q.onnx"));
    let outs = &rep["verification"]["outputs"];
    assert_eq!(outs[0]["output"], "idx");
    assert!(outs[0]["parts"].is_null(), "{}", outs[0]);
    assert_eq!(part_names(&outs[1]), ["a", "b"]);
    assert!(
        out.contains("out by part") && !out.contains("idx by part"),
        "{out}"
    );
}
