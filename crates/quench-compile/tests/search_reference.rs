//! `--method auto`'s FP32 references come from the calibration run
//! (`calibrate::collect_keeping` on `search::search_groups`): they must be
//! what FP32 computes on the search's batches, and the statistics must be
//! those of a calibration run without the groups.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use quench_compile::{calibrate, data::DataPlan, search, Options, Silent};
use quench_ir::Model;
use quench_passes::quantize::{plan, QuantizeConfig};
use quench_verify::Runners;

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(p)
}

/// Relative tolerance between FP32 outputs computed by two tract plans of
/// the same function (the calibration copy exposes every activation, so
/// tract fuses less): float rounding only.
const REL_TOL: f32 = 1e-5;

fn max_abs(xs: &[f32]) -> f32 {
    xs.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

#[test]
fn kept_calibration_outputs_are_the_fp32_outputs_of_the_search_batches() {
    let loaded = quench_onnx::load_model(&testdata("digits_cnn.onnx")).unwrap();
    let original = loaded.model.clone();
    let mut m = Model::from_onnx(original.clone()).unwrap();
    quench_compile::run_pipeline(&mut m, &None, &[]).unwrap();
    let pl = plan(&m.graph, &QuantizeConfig::default()).unwrap();
    let tensors = pl.tensors_to_observe(&m.graph);
    let opts = Options {
        calibration: Some(testdata("digits/calib")),
        verify: false,
        ..Options::default()
    };
    let data = DataPlan::new(&opts, &original).unwrap();
    let cal = data.calibration.unwrap();
    let n = cal.data.samples();
    assert!(n >= 32, "the fixture has {n} calibration samples");

    let (fit, judge) = search::search_groups(&cal);
    let judge = judge.expect("32 samples or more: judged on other rows");
    let keep: Vec<Vec<usize>> = fit.iter().chain(&judge).cloned().collect();
    // 16 fitting and 16 judging rows, none twice, all in range.
    let mut all: Vec<usize> = keep.iter().flatten().copied().collect();
    assert_eq!(all.len(), 32);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 32, "a row is in two batches");
    assert!(all.iter().all(|&r| r < n));
    assert!(keep.len() >= 2, "at least one batch per thread");

    let proto = m.to_onnx();
    let with =
        calibrate::collect_keeping(&proto, &cal.data, cal.feed, &tensors, true, &keep, &Silent)
            .unwrap();
    assert_eq!(with.kept.len(), keep.len());

    // The kept outputs against FP32 (the input model) on the same batches.
    let fp = Runners::new(&original, vec![]);
    let names = quench_verify::input_names(&original);
    for (rows, kept) in keep.iter().zip(&with.kept) {
        let inputs = cal.data.pick(rows).feed(cal.feed, 0..rows.len()).unwrap();
        let want = fp.run(&names, &inputs).unwrap();
        assert_eq!(kept.len(), want.len(), "graph outputs of batch {rows:?}");
        for (k, w) in kept.iter().zip(&want) {
            assert_eq!(k.shape(), w.shape(), "batch {rows:?}");
            let (k, w) = (
                k.to_f32().into_raw_vec_and_offset().0,
                w.to_f32().into_raw_vec_and_offset().0,
            );
            let tol = REL_TOL * max_abs(&w).max(1e-6);
            let worst = k
                .iter()
                .zip(w.iter())
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst <= tol,
                "batch {rows:?}: off by {worst} (tolerance {tol})"
            );
        }
    }

    // The statistics of the run without groups: same counts, same ranges
    // up to float rounding (other batch sizes).
    let (without, _) =
        calibrate::collect(&proto, &cal.data, cal.feed, &tensors, true, &Silent).unwrap();
    assert_eq!(with.stats.len(), without.len());
    for (name, a) in &with.stats {
        let b = &without[name];
        assert_eq!(a.count, b.count, "{name}");
        let (amin, amax) = (a.min, a.max);
        let (bmin, bmax) = (b.min, b.max);
        let tol = REL_TOL * amin.abs().max(amax.abs()).max(1e-6);
        assert!(
            (amin - bmin).abs() <= tol && (amax - bmax).abs() <= tol,
            "{name}: [{amin}, {amax}] against [{bmin}, {bmax}]"
        );
    }
}
