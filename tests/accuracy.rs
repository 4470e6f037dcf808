//! Accuracy mechanisms measured at the model output on real data (the
//! digits in `testdata/digits`), each against the same compile without it.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// Output SQNR (reference semantics) of `quench compile MODEL ARGS`.
fn output_sqnr(model: &str, extra: &[&str]) -> (f64, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let mut args = vec![
        "compile".to_string(),
        testdata(model).to_str().unwrap().to_string(),
        "-c".into(),
        testdata("digits/calib").to_str().unwrap().to_string(),
        "--eval".into(),
        testdata("digits/eval").to_str().unwrap().to_string(),
        "-o".into(),
        out.to_str().unwrap().to_string(),
        "--report".into(),
        rep.to_str().unwrap().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(env!("CARGO_BIN_EXE_quench"))
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let sqnr = r["verification"]["outputs"][0]["reference"]["sqnr_db"]
        .as_f64()
        .expect("a finite SQNR");
    assert!(sqnr.is_finite());
    (sqnr, r)
}

#[test]
fn ranges_clamped_where_consumers_are_flat_gain_at_the_output() {
    // A stem reaching -58 feeding only a HardSwish (flat below -3).
    let (clamped, r) = output_sqnr("accuracy/hardswish_stem.onnx", &[]);
    let (plain, _) = output_sqnr("accuracy/hardswish_stem.onnx", &["--no-consumer-ranges"]);
    // Measured: 38.5 dB against 23.7 dB (the stem's step is 19x finer).
    assert!(
        clamped >= plain + 10.0,
        "clamped {clamped:.2} dB vs plain {plain:.2} dB"
    );
    let notes = r["notes"].to_string();
    assert!(
        notes.contains("clamped where every consumer is flat"),
        "{notes}"
    );
    // Every other method gains too (the clamp runs after any method).
    for m in ["percentile", "mse"] {
        let (c, _) = output_sqnr("accuracy/hardswish_stem.onnx", &["--method", m]);
        let (p, _) = output_sqnr(
            "accuracy/hardswish_stem.onnx",
            &["--method", m, "--no-consumer-ranges"],
        );
        assert!(c >= p - 0.5, "{m}: clamped {c:.2} dB vs plain {p:.2} dB");
    }
}

#[test]
fn the_clamp_changes_nothing_where_no_consumer_is_flat() {
    // digits_cnn: Conv -> Relu is absorbed, the rest feeds Gemm/pooling.
    let (a, _) = output_sqnr("digits_cnn.onnx", &[]);
    let (b, _) = output_sqnr("digits_cnn.onnx", &["--no-consumer-ranges"]);
    assert!((a - b).abs() < 1e-9, "{a} vs {b}");
}

#[test]
fn explain_ranks_tensors_by_what_leaving_them_float_gains_at_the_output() {
    // Without the consumer clamp the stem's range is 19x too wide: leaving
    // it float must be the top gain (measured +21 dB), and measured at the
    // output rather than guessed from its local error.
    let (sqnr, r) = output_sqnr(
        "accuracy/hardswish_stem.onnx",
        &["--explain", "--no-consumer-ranges"],
    );
    let tensors = r["verification"]["tensors"].as_array().unwrap();
    assert!(tensors.len() >= 2);
    let gain = |t: &Value| t["float_gain_db"].as_f64().expect("a measured gain");
    let best = tensors
        .iter()
        .max_by(|a, b| gain(a).total_cmp(&gain(b)))
        .unwrap();
    assert_eq!(best["tensor"], "stem", "{tensors:?}");
    assert!(gain(best) > 10.0, "{best}");
    // The gain is what the output really gains: the clamped compile (the
    // same tensor made nearly lossless) lands near sqnr + gain.
    let (clamped, _) = output_sqnr("accuracy/hardswish_stem.onnx", &[]);
    assert!(clamped > sqnr + 10.0, "{clamped} vs {sqnr}");
    for t in tensors {
        if t["tensor"] != "stem" {
            assert!(gain(t) < 1.0, "{t}");
        }
    }
}

#[test]
fn target_sqnr_leaves_the_fewest_costly_tensors_float_until_it_holds() {
    // Without the consumer clamp the stem costs ~21 dB: one change reaches
    // 35 dB (measured 23.7 -> 44.8 dB on the held-back digits).
    let (sqnr, r) = output_sqnr(
        "accuracy/hardswish_stem.onnx",
        &["--no-consumer-ranges", "--target-sqnr", "35"],
    );
    let m = &r["mixed_precision"];
    assert_eq!(m["reached"], true, "{m}");
    let float = m["float"].as_array().unwrap();
    assert_eq!(float.len(), 1, "{m}");
    assert_eq!(float[0]["tensor"], "stem");
    assert!(m["initial_db"].as_f64().unwrap() < 30.0, "{m}");
    // The verification of the written model agrees with the scan.
    assert!(sqnr >= 35.0, "{sqnr}");
    assert!(
        (sqnr - m["final_db"].as_f64().unwrap()).abs() < 0.5,
        "{sqnr} vs {m}"
    );
    // A target already met changes nothing.
    let (_, r) = output_sqnr("accuracy/hardswish_stem.onnx", &["--target-sqnr", "30"]);
    assert_eq!(r["mixed_precision"]["float"].as_array().unwrap().len(), 0);
    assert_eq!(r["mixed_precision"]["reached"], true);
}

#[test]
fn target_sqnr_on_the_trained_model_only_keeps_changes_that_help() {
    // digits: the activations cost little (weights dominate); a target a
    // little above the all-quantized figure is reached, and every tensor
    // left float raised the measured SQNR.
    let (base, _) = output_sqnr("digits_cnn.onnx", &[]);
    let (_, r) = output_sqnr(
        "digits_cnn.onnx",
        &["--target-sqnr", &format!("{}", base + 0.2)],
    );
    let m = &r["mixed_precision"];
    let float = m["float"].as_array().unwrap();
    let mut prev = m["initial_db"].as_f64().unwrap();
    for f in float {
        let after = f["sqnr_after_db"].as_f64().unwrap();
        assert!(after > prev, "{m}");
        prev = after;
    }
    assert_eq!(m["reached"], true, "{m}");
    assert!(float.len() <= 3, "{m}");
}
