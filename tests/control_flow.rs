//! Control flow: weights inside `If` bodies (and captured by them) are
//! quantized, on `testdata/control_flow/vad_if.onnx` (a small model shaped
//! like silero VAD, made by `testdata/make_control_flow_fixtures.py`): an
//! `If` on the sample-rate input, Conv weights inside the branches (a
//! Constant node, branch initializers) and captured from the main graph,
//! LSTM weights captured by both branches and sliced per gate.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ndarray::ArrayD;
use ndarray_npy::WriteNpyExt;
use quench_verify::ArrayData;
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

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const H: usize = 32;

/// `n` samples: speech-like noise for `input`, small states, `sr` fixed.
fn samples(n: usize, sr: i64, seed: u64) -> Vec<Vec<ArrayData>> {
    let mut r = Lcg(seed);
    (0..n)
        .map(|_| {
            let x: Vec<f32> = (0..64).map(|_| r.normal()).collect();
            let s: Vec<f32> = (0..2 * H).map(|_| 0.3 * r.normal()).collect();
            vec![
                ArrayData::F32(ArrayD::from_shape_vec(vec![1, 64], x).unwrap()),
                ArrayData::F32(ArrayD::from_shape_vec(vec![2, 1, H], s).unwrap()),
                ArrayData::I64(ArrayD::from_shape_vec(vec![], vec![sr]).unwrap()),
            ]
        })
        .collect()
}

/// Writes the samples as `<input>.npy` calibration files.
fn write_calibration(dir: &Path, s: &[Vec<ArrayData>]) {
    let stack = |k: usize| -> Vec<ArrayData> { s.iter().map(|x| x[k].clone()).collect() };
    let f32s = |v: Vec<ArrayData>, shape: &[usize]| {
        let data: Vec<f32> = v.iter().flat_map(|a| a.to_f32().into_iter()).collect();
        let mut sh = vec![s.len()];
        sh.extend(shape);
        ArrayD::from_shape_vec(sh, data).unwrap()
    };
    f32s(stack(0), &[1, 64])
        .write_npy(std::fs::File::create(dir.join("input.npy")).unwrap())
        .unwrap();
    f32s(stack(1), &[2, 1, H])
        .write_npy(std::fs::File::create(dir.join("state.npy")).unwrap())
        .unwrap();
    ArrayD::from_shape_vec(vec![s.len()], vec![16000i64; s.len()])
        .unwrap()
        .write_npy(std::fs::File::create(dir.join("sr.npy")).unwrap())
        .unwrap();
}

/// SQNR (dB) of `b` against `a`, over all elements.
fn sqnr(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    let n: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    10.0 * (s / n.max(1e-30)).log10()
}

#[test]
fn weights_inside_if_branches_and_captured_by_them_are_int8() {
    let model = testdata("control_flow/vad_if.onnx");
    let fp32 = load(&model);
    let facts = input_facts(&fp32, 1);
    let tmp = tempfile::tempdir().unwrap();
    write_calibration(tmp.path(), &samples(24, 16000, 11));
    let out_dir = interop_dir("control_flow");
    for mode in ["weight-only", "static"] {
        let out = out_dir.join(format!("vad_if.{mode}.onnx"));
        let rep = tmp.path().join(format!("{mode}.json"));
        let (code, stdout, stderr) = quench(&[
            "compile",
            model.to_str().unwrap(),
            "--calibration",
            tmp.path().to_str().unwrap(),
            "--mode",
            mode,
            "-o",
            out.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{mode}:\n{stdout}\n{stderr}");
        let r = report(&rep);
        // Both branches' first Conv (a Constant node, an initializer), the
        // captured and the inner second Conv, the two output MatMuls, and the
        // two captured LSTM tables (W, R); the LSTM bias stays float.
        assert_eq!(
            r["quantization"]["weights_quantized"], 8,
            "{mode}\n{stdout}"
        );
        // 45.1 kB -> 18.7 kB measured: the float LSTM bias, the conv biases,
        // per-channel scales and Slice indices are what is left above 1/4.
        let ratio = std::fs::metadata(&out).unwrap().len() as f64
            / std::fs::metadata(&model).unwrap().len() as f64;
        assert!(ratio < 0.45, "{mode}: size ratio {ratio:.3}\n{stdout}");
        let q = load(&out);
        // Both branches, in tract, against FP32 (measured 37-41 dB).
        for sr in [16000, 8000] {
            let (mut pa, mut pb, mut sa, mut sb) = (vec![], vec![], vec![], vec![]);
            for s in samples(12, sr, 5) {
                let a = run(&fp32, &facts, &s);
                let b = run(&q, &facts, &s);
                pa.extend(a[0].iter().copied());
                pb.extend(b[0].iter().copied());
                sa.extend(a[1].iter().copied());
                sb.extend(b[1].iter().copied());
            }
            let (p, st) = (sqnr(&pa, &pb), sqnr(&sa, &sb));
            assert!(
                p > 30.0 && st > 30.0,
                "{mode} sr {sr}: output {p:.2} dB, state {st:.2} dB"
            );
        }
        if mode == "weight-only" {
            // A node inside a branch can be excluded by name: its weight
            // stays float.
            let out_x = tmp.path().join("excluded.onnx");
            let rep_x = tmp.path().join("excluded.json");
            let (code, stdout, stderr) = quench(&[
                "compile",
                model.to_str().unwrap(),
                "--mode",
                mode,
                "--exclude-nodes",
                "k8_conv2",
                "-o",
                out_x.to_str().unwrap(),
                "--report",
                rep_x.to_str().unwrap(),
            ]);
            assert_eq!(code, 0, "{stdout}\n{stderr}");
            assert_eq!(report(&rep_x)["quantization"]["weights_quantized"], 7);
        }
        if mode == "static" {
            let notes = r["quantization"]["notes"].to_string();
            assert!(
                notes.contains("activations inside them float"),
                "static mode says bodies keep float activations: {notes}"
            );
        }
        // onnx.checker and ONNX Runtime (random inputs: `sr` in 0..4, the
        // 8 kHz branch) against FP32.
        write_interop_pair(
            &out,
            &fp32,
            None,
            &InteropCheck::Quantized {
                min_sqnr_fp32_db: 30.0,
                min_sqnr_twin_db: 40.0,
            },
        );
    }
}

/// A `Loop` whose body multiplies by a captured MatMul weight and a `Scan`
/// whose body holds its own Gemm weight (`testdata/control_flow/
/// loop_scan.onnx`): both weights int8, the file checked with onnx.checker
/// and compared with FP32 in ONNX Runtime.
#[test]
fn weights_inside_loop_and_scan_bodies_are_int8() {
    let model = testdata("control_flow/loop_scan.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Lcg(3);
    let n = 12;
    ArrayD::from_shape_vec(vec![n, 4, 16], (0..n * 64).map(|_| r.normal()).collect())
        .unwrap()
        .write_npy(std::fs::File::create(tmp.path().join("input.npy")).unwrap())
        .unwrap();
    ArrayD::from_shape_vec(vec![n, 1, 16], (0..n * 16).map(|_| r.normal()).collect())
        .unwrap()
        .write_npy(std::fs::File::create(tmp.path().join("h.npy")).unwrap())
        .unwrap();
    let out_dir = interop_dir("control_flow");
    for mode in ["weight-only", "static"] {
        let out = out_dir.join(format!("loop_scan.{mode}.onnx"));
        let rep = tmp.path().join(format!("{mode}.json"));
        let (code, stdout, stderr) = quench(&[
            "compile",
            model.to_str().unwrap(),
            "--calibration",
            tmp.path().to_str().unwrap(),
            "--mode",
            mode,
            "-o",
            out.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{mode}:\n{stdout}\n{stderr}");
        // `loop_w` (captured by the Loop body) and `scan_w` (the Scan's own).
        assert_eq!(
            report(&rep)["quantization"]["weights_quantized"],
            2,
            "{mode}\n{stdout}"
        );
        write_interop_pair(
            &out,
            &load(&model),
            None,
            &InteropCheck::Quantized {
                min_sqnr_fp32_db: 30.0,
                min_sqnr_twin_db: 40.0,
            },
        );
    }
}

/// An `If` on a shape whose branches' outputs differ in rank (silero's
/// decoder has one): tract cannot type it, so verification observes the
/// condition on the evaluation samples and runs the taken branch in its
/// place, and says so; without that the report had no verification.
#[test]
fn verification_runs_the_observed_branch_of_an_if_tract_cannot_type() {
    let model = testdata("control_flow/if_shape.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Lcg(21);
    ArrayD::from_shape_vec(vec![8, 1, 16], (0..128).map(|_| r.normal()).collect())
        .unwrap()
        .write_npy(std::fs::File::create(tmp.path().join("input.npy")).unwrap())
        .unwrap();
    let out = tmp.path().join("if_shape.wo.onnx");
    let rep = tmp.path().join("if_shape.json");
    let (code, stdout, stderr) = quench(&[
        "compile",
        model.to_str().unwrap(),
        "--mode",
        "weight-only",
        "--eval",
        tmp.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = report(&rep);
    let v = &r["verification"];
    assert!(!v.is_null(), "no verification:\n{stdout}");
    let why = v["specialised"].to_string();
    assert!(
        why.contains("`drop_batch` takes its then_branch on every one of 8 samples"),
        "{why}"
    );
    // The head MatMul's int8 weights (its input's type comes from the
    // branches' declared outputs): finite SQNR, 47.2 dB measured on other
    // random inputs.
    assert_eq!(r["quantization"]["weights_quantized"], 1, "{stdout}");
    let sqnr = sqnr_of(&v["outputs"][0]["file"]).unwrap();
    assert!(sqnr > 30.0 && sqnr.is_finite(), "SQNR {sqnr}\n{stdout}");
    // The written model keeps its If.
    assert!(load(&out)
        .graph
        .unwrap()
        .node
        .iter()
        .any(|n| n.op_type() == "If"));
}

/// `quench inspect` counts what the compile quantizes inside the branches.
#[test]
fn inspect_counts_quantizable_nodes_inside_branches() {
    let model = testdata("control_flow/vad_if.onnx");
    let (code, stdout, stderr) = quench(&["inspect", "--json", model.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let j: Value = serde_json::from_str(&stdout).unwrap();
    // Two Convs and the head MatMul per branch, less the then branch's
    // second Conv, whose weight is captured (quantized in the main graph,
    // not a decision of the branch).
    assert_eq!(
        j["quantizable"],
        serde_json::json!({"Conv": 3, "MatMul": 2}),
        "{stdout}"
    );
}

#[test]
fn an_invalid_body_is_refused_and_nothing_is_written() {
    // vad_if.onnx with one name defined twice inside the If's then-branch:
    // the model is invalid ONNX, as a cycle or a duplicate in the main
    // graph is, so the compile refuses it (exit 1, naming the body and the
    // node) instead of passing the body on into a file `onnx.checker`
    // rejects.
    use prost::Message;
    let src = testdata("control_flow/vad_if.onnx");
    let mut m = ModelProtoAlias::decode(std::fs::read(&src).unwrap().as_slice()).unwrap();
    let node = m
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type.as_deref() == Some("If"))
        .expect("an If");
    let body = node
        .attribute
        .iter_mut()
        .find(|a| a.name.as_deref() == Some("then_branch"))
        .and_then(|a| a.g.as_mut())
        .expect("a then-branch");
    // An Identity defining a node's output a second time.
    let first_node = body
        .node
        .iter()
        .find(|n| !n.input.is_empty())
        .expect("a node with inputs")
        .clone();
    let first = first_node.output[0].clone();
    let mut dup = first_node.clone();
    dup.op_type = Some("Identity".into());
    dup.name = Some("dup".into());
    dup.input = vec![first_node.input[0].clone()];
    dup.attribute.clear();
    dup.domain = None;
    body.node.push(dup);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("dup_in_body.onnx");
    std::fs::write(&bad, m.encode_to_vec()).unwrap();
    let out = dir.path().join("q.onnx");
    let (code, stdout, stderr) = quench(&[
        "compile",
        bad.to_str().unwrap(),
        "--mode",
        "weight-only",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("then_branch") && stderr.contains("not a valid graph"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("`{first}` is defined twice")),
        "{stderr}"
    );
    assert!(!out.exists());
}

type ModelProtoAlias = quench_onnx::proto::ModelProto;
