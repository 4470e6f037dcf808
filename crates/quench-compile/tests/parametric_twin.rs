//! The parametric twin `--method auto` searches on: with each pair's
//! parameters fed as inputs it computes exactly (bitwise, in tract) what
//! the float twin with those parameters as constants computes; switched
//! off, a pair passes its tensor through unchanged.

use std::path::PathBuf;

use quench_compile::{compile, Options, Silent};
use quench_ir::{tensor, Model};
use quench_passes::simulate::{float_twin_pairs, parametric_twin, ParamPair};
use quench_verify::{ArrayData, Feed, Runners};

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(p)
}

/// The HardSwish stem quantized statically (no Relu/Clip absorbed, so the
/// bypass needs no clamp), and 8 held-back digits as one batch.
fn quantized_stem() -> (Model, Vec<String>, Vec<ArrayData>) {
    let loaded = quench_onnx::load_model(&testdata("accuracy/hardswish_stem.onnx")).unwrap();
    let opts = Options {
        calibration: Some(testdata("digits/calib")),
        verify: false,
        bias_correction: false,
        // The parametric twin is built from quantize_phase's graph, never
        // from a lowered HardSwish.
        lower_hard_swish: false,
        ..Options::default()
    };
    let out = compile(&loaded, &opts, &Silent).unwrap();
    let q = Model::from_onnx(out.model).unwrap();
    let (data, feed) =
        quench_compile::data::load_data(&testdata("digits/eval"), &loaded.model).unwrap();
    assert_eq!(feed, Feed::Batch { fixed: None });
    let names = quench_verify::input_names(&loaded.model);
    let batch = data.feed(feed, 0..8).unwrap();
    (q, names, batch)
}

fn run(m: &Model, names: &[String], inputs: &[ArrayData]) -> Vec<ndarray::ArrayD<f32>> {
    Runners::new(&m.to_onnx(), vec![])
        .run(names, inputs)
        .unwrap()
        .iter()
        .map(ArrayData::to_f32)
        .collect()
}

/// Runs the parametric twin with `set[i] = (scale, zero point, on)` per pair.
fn run_param(
    m: &Model,
    names: &[String],
    inputs: &[ArrayData],
    pairs: &[ParamPair],
    set: &[(f32, f32, bool)],
) -> Vec<ndarray::ArrayD<f32>> {
    let mut names = names.to_vec();
    let mut inputs = inputs.to_vec();
    for (p, &(s, z, on)) in pairs.iter().zip(set) {
        names.extend([p.scale.clone(), p.low.clone(), p.high.clone()]);
        let v = if on { p.on(s, z, None) } else { p.off() };
        inputs.extend(v.map(|x| ArrayData::F32(ndarray::arr0(x).into_dyn())));
    }
    run(m, &names, &inputs)
}

#[test]
fn fed_parameters_compute_what_the_constant_twin_computes() {
    let (q, names, batch) = quantized_stem();
    let mut twin = q.clone();
    let (twin_pairs, _) = float_twin_pairs(&mut twin.graph, 17);
    let mut param = q.clone();
    let (pairs, report) = parametric_twin(&mut param.graph, 17, &|_| None);
    param.set_opset(quench_passes::simulate::TWIN_DOMAIN, 1);
    assert!(report.declined.is_empty(), "{:?}", report.declined);
    assert_eq!(pairs.len(), twin_pairs.len());
    assert!(pairs.len() >= 3, "{pairs:?}");
    param.graph.verify().unwrap();

    // Every pair on with its own parameters: the twin, bit for bit.
    let initial: Vec<_> = pairs
        .iter()
        .map(|p| (p.initial_scale, p.initial_zero_point, true))
        .collect();
    let want = run(&twin, &names, &batch);
    let got = run_param(&param, &names, &batch, &pairs, &initial);
    assert_eq!(got, want);

    // One pair's scale doubled and zero point moved: the constant twin
    // with the same edit.
    let p0 = &pairs[0];
    let (s, z) = (
        p0.initial_scale * 2.0,
        (p0.initial_zero_point + 7.0).min(p0.qmax),
    );
    let mut edited = twin.clone();
    for (suffix, v) in [("_sim_scale", s), ("_sim_zero_point", z)] {
        let id = edited
            .graph
            .value_by_name(&format!("{}{suffix}", p0.tensor))
            .unwrap();
        edited
            .graph
            .replace_const(id, tensor::from_f32("", &[], &[v]));
    }
    let mut set = initial.clone();
    set[0] = (s, z, true);
    let want = run(&edited, &names, &batch);
    assert_ne!(want, run(&twin, &names, &batch), "the edit must matter");
    assert_eq!(run_param(&param, &names, &batch, &pairs, &set), want);

    // Every pair off: each Q/DQ pair bypassed (its DQ output replaced by
    // the tensor it quantized). Off is a scale of 2^-40: exact for
    // |x| >= 2^-17 and within 2^-41 below, so the outputs agree to a few
    // ulps (here at most 1e-5 relative to the output's largest value; a
    // pair still on would differ by its quantization step, ~1e-2).
    let mut bypassed = twin.clone();
    for (x, y) in &twin_pairs {
        let (xv, yv) = (
            bypassed.graph.value_by_name(x).unwrap(),
            bypassed.graph.value_by_name(y).unwrap(),
        );
        bypassed.graph.replace_all_uses(yv, xv);
    }
    let off: Vec<_> = initial.iter().map(|&(s, z, _)| (s, z, false)).collect();
    let want = run(&bypassed, &names, &batch);
    assert_ne!(want, run(&twin, &names, &batch), "bypassing must matter");
    let got = run_param(&param, &names, &batch, &pairs, &off);
    for (g, w) in got.iter().zip(&want) {
        let peak = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = g
            .iter()
            .zip(w.iter())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-5 * peak, "off differs by {worst} (peak {peak})");
    }
    // With one pair on again, the difference is that pair's rounding.
    let mut one_on = off.clone();
    one_on[0].2 = true;
    let back = run_param(&param, &names, &batch, &pairs, &one_on);
    let moved = back
        .iter()
        .zip(&want)
        .flat_map(|(g, w)| g.iter().zip(w.iter()).map(|(a, b)| (a - b).abs()))
        .fold(0f32, f32::max);
    assert!(
        moved > 1e-4,
        "one pair on must change the outputs ({moved})"
    );
}
