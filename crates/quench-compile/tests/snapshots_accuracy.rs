//! Snapshots of what the accuracy steps change in the graph, on the
//! fixture built to show each (`testdata/accuracy/`, real digits data).
//!
//! SmoothQuant changes numbers, not structure: the snapshot states that
//! the IR text is unchanged and lists every constant that changed with
//! its per-channel factor (after / before, 3 significant digits), the
//! normalization output's range before and after, and the strength
//! chosen. The measured gain is asserted by the workspace's
//! `tests/accuracy.rs` (`smooth_quant_moves_normalization_outliers_into_weights`).
#![allow(clippy::unwrap_used)]

use std::fmt::Write;
use std::path::PathBuf;

use quench_compile::{calibrate, data::DataPlan, smooth, Options, Silent};
use quench_ir::{tensor, Model};
use quench_passes::quantize::{plan, QuantizeConfig};

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(p)
}

/// `x` with 3 significant digits.
fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let d = 2 - x.abs().log10().floor() as i32;
    format!("{:.*}", d.max(0) as usize, x)
}

#[test]
fn smooth_quant_changes_on_the_transformer_block() {
    insta::assert_snapshot!(smooth_changes("accuracy/smooth_block.onnx"));
}

/// The normalization also feeds the residual Add: a Mul by 1/s is
/// inserted before the MatMul (new nodes in the IR text), the
/// normalization's output leaves the ranges (it stays float) and the
/// rescale's output gets the exact smoothed range; the second
/// normalization feeds only a MatMul and is folded.
#[test]
fn smooth_quant_inserts_a_rescale_before_the_matmul_of_a_residual_block() {
    insta::assert_snapshot!(smooth_changes("accuracy/residual_block.onnx"));
}

fn smooth_changes(model: &str) -> String {
    let loaded = quench_onnx::load_model(&testdata(model)).unwrap();
    let mut m = Model::from_onnx(loaded.model.clone()).unwrap();
    let opset = m.default_opset().unwrap();
    quench_compile::run_pipeline(&mut m, &None, &[]).unwrap();
    let mut cfg = QuantizeConfig::default();
    let mut pl = plan(&m.graph, &cfg).unwrap();
    let opts = Options {
        calibration: Some(testdata("digits/calib")),
        verify: false,
        ..Options::default()
    };
    let data = DataPlan::new(&opts, &loaded.model).unwrap();
    let cal = data.calibration.unwrap();
    let (stats, _) = calibrate::collect(
        &m.to_onnx(),
        &cal.data,
        cal.feed,
        &pl.tensors_to_observe(&m.graph),
        false,
        &Silent,
    )
    .unwrap();
    let default = cfg.default_activation_format();
    let mut ranges = calibrate::choose_ranges(
        &m.graph,
        &stats,
        quench_calib::RangeMethod::MinMax,
        &|_| default,
        0.0,
        true,
    )
    .ranges;
    let before = m.clone();
    let ranges_before = ranges.clone();
    let r = smooth::smooth(
        &mut m,
        &loaded.model,
        &mut pl,
        &mut ranges,
        &mut cfg,
        opset,
        &cal,
        &smooth::ALPHAS,
    )
    .unwrap()
    .expect("a site");
    let mut s = String::new();
    writeln!(s, "sites: {:?}", r.sites).unwrap();
    writeln!(s, "alpha: {}", r.alpha).unwrap();
    writeln!(s, "IR text unchanged: {}", before.to_text() == m.to_text()).unwrap();
    // Every changed constant, with its factor per channel: along the last
    // axis for the normalization's 1-D scale and bias, per row (first
    // axis) for MatMul weights.
    let g0 = &before.graph;
    let mut changed: Vec<String> = Vec::new();
    for (v, t) in m.graph.initializers() {
        let name = m.graph.value(v).name.clone();
        let Some(old) = g0.value_by_name(&name).and_then(|v| g0.const_tensor(v)) else {
            writeln!(s, "new constant {name}").unwrap();
            continue;
        };
        let (a, b) = (tensor::to_f32(old).unwrap(), tensor::to_f32(t).unwrap());
        if a == b {
            continue;
        }
        let rows = t.dims.first().copied().unwrap_or(1).max(1) as usize;
        let per = a.len() / rows;
        let factors: Vec<String> = (0..rows)
            .map(|i| {
                // The ratio of the row's largest magnitudes: one factor per
                // row when the row is scaled.
                let m0 = a[i * per..(i + 1) * per]
                    .iter()
                    .fold(0f64, |x, v| x.max(f64::from(v.abs())));
                let m1 = b[i * per..(i + 1) * per]
                    .iter()
                    .fold(0f64, |x, v| x.max(f64::from(v.abs())));
                sig3(if m0 == 0.0 { 1.0 } else { m1 / m0 })
            })
            .collect();
        changed.push(format!(
            "changed {name} {:?}: x [{}]",
            t.dims,
            factors.join(", ")
        ));
    }
    changed.sort();
    for c in changed {
        writeln!(s, "{c}").unwrap();
    }
    let names: std::collections::BTreeSet<&String> =
        ranges.keys().chain(ranges_before.keys()).collect();
    let show = |r: Option<&(f32, f32)>| match r {
        Some(r) => format!("[{}, {}]", sig3(f64::from(r.0)), sig3(f64::from(r.1))),
        None => "none (float)".to_string(),
    };
    for name in names {
        let (r0, r1) = (ranges_before.get(name), ranges.get(name));
        if r0 != r1 {
            writeln!(s, "range {name}: {} -> {}", show(r0), show(r1)).unwrap();
        }
    }
    for (node, why) in &cfg.keep_float {
        writeln!(s, "kept float: {node} ({why})").unwrap();
    }
    s.push_str("--- IR after\n");
    s.push_str(&m.to_text());
    s
}
