//! The driver as a library call: a recipe (JSON) fills `Options`, `compile`
//! returns the model and a report without printing or writing, and
//! `Outcome::save` writes it.

use std::path::PathBuf;

use quench_compile::{compile, Method, Options, Silent};
use quench_passes::quantize::Mode;

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(p)
}

#[test]
fn a_recipe_fills_options_and_unknown_fields_are_refused() {
    let recipe = format!(
        r#"{{"calibration": "{}", "method": "entropy", "activations": "u8", "min_sqnr": 25.0}}"#,
        testdata("digits/calib").display()
    );
    let o: Options = serde_json::from_str(&recipe).unwrap();
    assert_eq!(o.method, Method::Entropy);
    assert_eq!(o.min_sqnr, Some(25.0));
    // Everything not given is the command line's default.
    let d = Options::default();
    assert_eq!(
        (o.mode, o.per_channel, o.verify),
        (d.mode, d.per_channel, d.verify)
    );
    // A round trip keeps every field.
    let back: Options = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
    assert_eq!(back, o);
    assert!(serde_json::from_str::<Options>(r#"{"methd": "mse"}"#).is_err());
}

#[test]
fn compile_is_a_library_call_that_writes_nothing_until_saved() {
    let loaded = quench_onnx::load_model(&testdata("digits_cnn.onnx")).unwrap();
    let opts = Options {
        calibration: Some(testdata("digits/calib")),
        eval: Some(testdata("digits/eval")),
        ..Options::default()
    };
    let mut out = compile(&loaded, &opts, &Silent).unwrap();
    let r = &out.report;
    assert_eq!(r.mode, Mode::Static);
    assert_eq!(r.size_after, 0, "nothing written yet");
    assert_eq!(r.quantization.weights_quantized, 3);
    // Quantization's counters reach the report with the passes' ones.
    assert_eq!(r.pass_stats.get("fold_batchnorm.folded"), Some(&2));
    let v = r.verification.as_ref().unwrap();
    let m = v.outputs[0].reference.as_ref().unwrap();
    assert!(m.sqnr_db > 30.0 && m.sqnr_db.is_finite(), "{}", m.sqnr_db);
    let acc = v.accuracy.as_ref().unwrap();
    assert!(acc.fp32 - acc.quantized <= 0.01, "{acc:?}");
    assert!(r.threshold_failure.is_none());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.onnx");
    let saved = out
        .save(&loaded, &path, &quench_onnx::SaveOptions::default())
        .unwrap();
    assert_eq!(out.report.size_after, saved.total_bytes());
    assert!(out.report.size_after * 2 < out.report.size_before);
    assert!(quench_onnx::load_model(&path).is_ok());
}

#[test]
fn a_failed_threshold_is_data_in_the_report() {
    let loaded = quench_onnx::load_model(&testdata("digits_cnn.onnx")).unwrap();
    let opts = Options {
        calibration: Some(testdata("digits/calib")),
        min_sqnr: Some(200.0),
        ..Options::default()
    };
    let out = compile(&loaded, &opts, &Silent).unwrap();
    let why = out.report.threshold_failure.as_deref().unwrap_or("");
    assert!(why.contains("--min-sqnr 200"), "{why}");
}

#[test]
fn the_held_back_split_is_stated_and_disjoint_from_calibration() {
    let loaded = quench_onnx::load_model(&testdata("digits_cnn.onnx")).unwrap();
    let opts = Options {
        calibration: Some(testdata("digits/calib")),
        ..Options::default()
    };
    let plan = quench_compile::DataPlan::new(&opts, &loaded.model).unwrap();
    let (c, e) = (plan.calibration.unwrap(), plan.eval.unwrap());
    let n = c.data.samples() + e.data.samples();
    assert_eq!(e.data.samples(), n / 5);
    assert!(
        e.label.contains("held back") && e.label.contains("at random"),
        "{}",
        e.label
    );
    // Seeded: the same every time; spread over the set, not the last files;
    // disjoint and complete.
    let (cal_rows, eval_rows) = quench_compile::data::held_back(n);
    assert_eq!(
        quench_compile::data::held_back(n),
        (cal_rows.clone(), eval_rows.clone())
    );
    assert!(eval_rows.iter().any(|&r| r < n / 2) && eval_rows.iter().any(|&r| r >= n / 2));
    assert_ne!(eval_rows, ((n - n / 5)..n).collect::<Vec<_>>());
    let mut all: Vec<usize> = cal_rows.iter().chain(&eval_rows).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    // The evaluation samples are exactly those rows of the data.
    let (full, feed) =
        quench_compile::data::load_data(&testdata("digits/calib"), &loaded.model).unwrap();
    let picked = e.data.feed(feed, 0..e.data.samples()).unwrap();
    let direct: Vec<quench_verify::ArrayData> = eval_rows
        .iter()
        .map(|&r| full.feed(feed, r..r + 1).unwrap().remove(0))
        .collect();
    for (i, d) in direct.iter().enumerate() {
        let p = picked[0].to_f32();
        let row = p.index_axis(ndarray::Axis(0), i);
        let d = d.to_f32();
        assert_eq!(row, d.index_axis(ndarray::Axis(0), 0));
    }
    // Under --no-verify every sample calibrates.
    let opts = Options {
        verify: false,
        ..opts
    };
    let plan = quench_compile::DataPlan::new(&opts, &loaded.model).unwrap();
    assert_eq!(plan.calibration.unwrap().data.samples(), n);
    assert!(plan.eval.is_none());
}

#[test]
fn an_inserted_rescale_keeps_the_fp32_function() {
    // residual_block (named and with every node name cleared): `ln` feeds
    // fc1 and the residual Add (a Mul by 1/s is inserted before fc1, the
    // unnamed normalization renamed), `ln2` only `head` (folded). Any
    // positive scales leave the outputs unchanged in tract on real digits.
    for model in [
        "accuracy/residual_block.onnx",
        "accuracy/residual_unnamed.onnx",
    ] {
        let loaded = quench_onnx::load_model(&testdata(model)).unwrap();
        let mut m = quench_ir::Model::from_onnx(loaded.model.clone()).unwrap();
        let ranges: quench_passes::quantize::Ranges =
            [("ln", (-1.0f32, 1.0f32)), ("ln2", (-1.0, 1.0))]
                .into_iter()
                .map(|(k, r)| (k.to_string(), r))
                .collect();
        let sites = quench_compile::smooth::sites(&m, &ranges);
        assert_eq!(sites.len(), 2, "{model}");
        // The rescaled one is kept float by name: never an empty one.
        assert!(!sites[0].norm.is_empty(), "{model}");
        assert_ne!(sites[0].norm, sites[1].norm, "{model}");
        for site in &sites {
            let s: Vec<f64> = (0..16)
                .map(|j| 0.05 + 3.0 * (j as f64 * 0.37).sin().abs())
                .collect();
            quench_compile::smooth::apply(&mut m, site, &s);
        }
        m.graph.verify().unwrap();
        let after = m.to_onnx();
        let (data, feed) =
            quench_compile::data::load_data(&testdata("digits/eval"), &loaded.model).unwrap();
        let eval =
            quench_verify::Evaluator::new(&data, feed, quench_verify::input_names(&loaded.model));
        let (a, b) = (
            quench_verify::Runners::new(&loaded.model, vec![]),
            quench_verify::Runners::new(&after, vec![]),
        );
        let f = eval
            .compare(
                &[
                    quench_verify::Subject::Required(&a, "original"),
                    quench_verify::Subject::Required(&b, "smoothed"),
                ],
                &[(0, 1)],
                1,
            )
            .unwrap()
            .remove(0);
        let o = f.outputs.unwrap();
        assert!(o[0].sqnr_db > 100.0, "{model}: {}", o[0].sqnr_db);
        // The rescale is there: one node more.
        assert_eq!(
            after.graph.as_ref().unwrap().node.len(),
            loaded.model.graph.as_ref().unwrap().node.len() + 1,
            "{model}"
        );
    }
}

#[test]
fn smoothing_scales_keep_the_fp32_function() {
    // Any positive per-channel scales folded into the normalization and
    // the weight rows leave the outputs unchanged (in tract, real digits).
    let loaded = quench_onnx::load_model(&testdata("accuracy/smooth_block.onnx")).unwrap();
    let mut m = quench_ir::Model::from_onnx(loaded.model.clone()).unwrap();
    let ranges: quench_passes::quantize::Ranges = [("ln".to_string(), (-1.0f32, 1.0f32))]
        .into_iter()
        .collect();
    let sites = quench_compile::smooth::sites(&m, &ranges);
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0].norm, "norm");
    let s: Vec<f64> = (0..16)
        .map(|j| 0.05 + 3.0 * (j as f64 * 0.37).sin().abs())
        .collect();
    quench_compile::smooth::apply(&mut m, &sites[0], &s);
    let after = m.to_onnx();
    let (data, feed) =
        quench_compile::data::load_data(&testdata("digits/eval"), &loaded.model).unwrap();
    let eval =
        quench_verify::Evaluator::new(&data, feed, quench_verify::input_names(&loaded.model));
    let (a, b) = (
        quench_verify::Runners::new(&loaded.model, vec![]),
        quench_verify::Runners::new(&after, vec![]),
    );
    let f = eval
        .compare(
            &[
                quench_verify::Subject::Required(&a, "original"),
                quench_verify::Subject::Required(&b, "smoothed"),
            ],
            &[(0, 1)],
            1,
        )
        .unwrap()
        .remove(0);
    let m = f.outputs.unwrap();
    // 100 dB: relative error about 1e-5, f32 rounding of the rescaled
    // weights.
    assert!(m[0].sqnr_db > 100.0, "{}", m[0].sqnr_db);
    // The weights did change.
    assert_ne!(after, loaded.model);
}
