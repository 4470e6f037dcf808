//! Pruning on the fixtures: exact per-layer sparsity for every schedule
//! (insta snapshots of the summary table), the N:M pattern and the
//! magnitude order checked element by element, and the zeros surviving
//! weight quantization.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use quench_ir::{tensor, Model};
use quench_passes::prune::{self, Layer, Norm, PruneConfig, PruneSummary, Schedule};
use quench_passes::quantize::{apply, plan, Mode, QuantizeConfig, Ranges};
use quench_passes::{pipeline, run_passes, Pass, PassCx, RunOptions};

/// A fixture after the default pipeline (as `quench compile` prunes it).
fn model(file: &str) -> Model {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(file);
    let mut m = Model::from_onnx(quench_onnx::load_model(&p).unwrap().model).unwrap();
    let mut cx = PassCx::new(m.default_opset().unwrap());
    run_passes(
        &mut m.graph,
        &pipeline::default_pipeline(),
        &mut cx,
        &RunOptions {
            verify: true,
            dump_after: vec![],
        },
    )
    .unwrap();
    m
}

fn weights(m: &Model, l: &Layer) -> Vec<f32> {
    tensor::to_f32(m.graph.const_tensor(l.value).unwrap()).unwrap()
}

/// Prunes and returns (before, after, layers, summary).
fn run(file: &str, cfg: &PruneConfig, s: &Schedule) -> (Model, Model, Vec<Layer>, PruneSummary) {
    let before = model(file);
    let mut after = before.clone();
    let ls = prune::layers(&after.graph, cfg);
    let summary = prune::prune(&mut after.graph, &ls, s);
    after.graph.verify().unwrap();
    // Shapes and types never change.
    assert_eq!(
        before.to_text(),
        after.to_text(),
        "pruning changed the graph structure"
    );
    (before, after, ls, summary)
}

fn all() -> PruneConfig {
    PruneConfig {
        all_layers: true,
        ..Default::default()
    }
}

/// Every pruned weight had a magnitude no larger than every kept weight of
/// its layer, kept weights are unchanged, and the zero count is the table's.
fn check_magnitude_order(before: &Model, after: &Model, ls: &[Layer], s: &PruneSummary) {
    for (l, r) in ls.iter().zip(&s.layers) {
        let (a, b) = (weights(before, l), weights(after, l));
        assert_eq!(
            b.iter().filter(|x| **x == 0.0).count(),
            r.zeros,
            "{}",
            l.node
        );
        if !r.pruned {
            assert_eq!(a, b, "{} was not to be pruned", l.node);
            continue;
        }
        let mut max_pruned = 0f32;
        let mut min_kept = f32::INFINITY;
        for (x, y) in a.iter().zip(&b) {
            if *y == 0.0 {
                max_pruned = max_pruned.max(x.abs());
            } else {
                assert_eq!(x, y, "{}: a kept weight changed", l.node);
                min_kept = min_kept.min(x.abs());
            }
        }
        assert!(
            max_pruned <= min_kept,
            "{}: {max_pruned} > {min_kept}",
            l.node
        );
    }
}

#[test]
fn layer_uniform_resnet_default_rules() {
    let (b, a, ls, s) = run(
        "resnet_tiny.onnx",
        &PruneConfig::default(),
        &Schedule::Layer(0.5),
    );
    check_magnitude_order(&b, &a, &ls, &s);
    for r in s.layers.iter().filter(|r| r.pruned) {
        assert_eq!(r.zeros, (r.weights as f64 * 0.5).round() as usize);
    }
    insta::assert_snapshot!(s.table());
}

#[test]
fn layer_uniform_all_layers_and_exclusion() {
    let cfg = PruneConfig {
        all_layers: true,
        exclude: vec!["layer1.0.conv2".into(), "fc.weight".into()],
        ..Default::default()
    };
    let (b, a, ls, s) = run("resnet_tiny.onnx", &cfg, &Schedule::Layer(0.3));
    check_magnitude_order(&b, &a, &ls, &s);
    insta::assert_snapshot!(s.table());
}

#[test]
fn layer_uniform_mlp() {
    let (b, a, ls, s) = run("mlp.onnx", &all(), &Schedule::Layer(0.7));
    check_magnitude_order(&b, &a, &ls, &s);
    insta::assert_snapshot!(s.table());
}

#[test]
fn global_threshold_resnet() {
    let sched = Schedule::Global {
        sparsity: 0.5,
        norm: Norm::Rms,
    };
    let (b, a, ls, s) = run("resnet_tiny.onnx", &all(), &sched);
    check_magnitude_order(&b, &a, &ls, &s);
    let (z, w) = s.pruned_totals();
    assert_eq!(z, (w as f64 * 0.5).round() as usize, "exact global count");
    // Normalized: no layer is emptied, and layers differ.
    assert!(s.layers.iter().all(|l| l.zeros < l.weights));
    insta::assert_snapshot!(s.table());
}

#[test]
fn global_threshold_mlp_norms() {
    for (norm, name) in [
        (Norm::Rms, "rms"),
        (Norm::MaxAbs, "max_abs"),
        (Norm::None, "none"),
    ] {
        let sched = Schedule::Global {
            sparsity: 0.6,
            norm,
        };
        let (b, a, ls, s) = run("mlp.onnx", &all(), &sched);
        check_magnitude_order(&b, &a, &ls, &s);
        let (z, w) = s.pruned_totals();
        assert_eq!(z, (w as f64 * 0.6).round() as usize);
        insta::assert_snapshot!(format!("global_mlp_{name}"), s.table());
    }
}

/// Every group of `m` along the reduction axis keeps exactly its `n`
/// largest magnitudes (ties: the later position stays), unchanged.
fn check_nm(before: &Model, after: &Model, ls: &[Layer], s: &PruneSummary, n: usize, m: usize) {
    for (l, r) in ls.iter().zip(&s.layers) {
        let (a, b) = (weights(before, l), weights(after, l));
        if !r.pruned {
            assert_eq!(a, b);
            continue;
        }
        let dims: Vec<usize> = l.shape.iter().map(|d| *d as usize).collect();
        let ax = l.reduction_axis;
        let len = dims[ax];
        let inner: usize = dims[ax + 1..].iter().product();
        let outer: usize = dims[..ax].iter().product();
        assert_eq!(len % m, 0);
        let mut groups = 0;
        for o in 0..outer {
            for i in 0..inner {
                for g0 in (0..len).step_by(m) {
                    let idx: Vec<usize> = (g0..g0 + m).map(|r| (o * len + r) * inner + i).collect();
                    let mut order = idx.clone();
                    order.sort_by(|x, y| a[*x].abs().total_cmp(&a[*y].abs()).then(x.cmp(y)));
                    for (rank, j) in order.iter().enumerate() {
                        if rank < m - n {
                            assert_eq!(b[*j], 0.0, "{} element {j} should be pruned", l.node);
                        } else {
                            assert_eq!(b[*j], a[*j], "{} element {j} should stay", l.node);
                        }
                    }
                    groups += 1;
                }
            }
        }
        assert_eq!(groups * m, l.weights);
        // Only pre-existing zeros among the kept ones add to the count.
        assert!(r.zeros >= l.weights / m * (m - n));
    }
}

#[test]
fn nm_2_4_resnet_element_by_element() {
    let (b, a, ls, s) = run("resnet_tiny.onnx", &all(), &Schedule::NM { n: 2, m: 4 });
    check_nm(&b, &a, &ls, &s, 2, 4);
    // conv1 has 3 input channels: skipped and reported.
    let c1 = s.layers.iter().find(|l| l.node == "conv1").unwrap();
    assert!(
        !c1.pruned && c1.note.contains("not a multiple of 4"),
        "{c1:?}"
    );
    insta::assert_snapshot!(s.table());
}

#[test]
fn nm_patterns_mlp_element_by_element() {
    for (n, m) in [(2, 4), (1, 4), (4, 8)] {
        let (b, a, ls, s) = run("mlp.onnx", &all(), &Schedule::NM { n, m });
        check_nm(&b, &a, &ls, &s, n, m);
        assert!(s.layers.iter().all(|l| l.pruned));
        insta::assert_snapshot!(format!("nm_mlp_{n}_{m}"), s.table());
    }
}

#[test]
fn nm_along_k_of_gemm_and_conv_transpose() {
    // Gemm with transB=1 ([N, K]): groups run along axis 1. ConvTranspose
    // ([C, M/g, kh, kw]): along axis 0.
    for f in [
        "digits_cnn.onnx",
        "bn_convtranspose.onnx",
        "bn_gemm.onnx",
        "transformer.onnx",
    ] {
        let (b, a, ls, s) = run(f, &all(), &Schedule::NM { n: 2, m: 4 });
        check_nm(&b, &a, &ls, &s, 2, 4);
        insta::assert_snapshot!(format!("nm_{}", f.trim_end_matches(".onnx")), s.table());
    }
}

#[test]
fn default_rules_on_depthwise_and_attention() {
    // mobilenet: depthwise convolutions stay; transformer: q, k and v
    // projections are all first layers.
    for f in ["mobilenet_tiny.onnx", "transformer.onnx", "digits_cnn.onnx"] {
        let (b, a, ls, s) = run(f, &PruneConfig::default(), &Schedule::Layer(0.5));
        check_magnitude_order(&b, &a, &ls, &s);
        insta::assert_snapshot!(
            format!("defaults_{}", f.trim_end_matches(".onnx")),
            s.table()
        );
    }
}

#[test]
fn per_layer_schedule_from_sensitivity() {
    let mut m = BTreeMap::new();
    m.insert("layer1.0.conv1.weight".to_string(), 0.25);
    m.insert("layer2.0.conv2.weight".to_string(), 0.8);
    let (b, a, ls, s) = run("resnet_tiny.onnx", &all(), &Schedule::PerLayer(m));
    check_magnitude_order(&b, &a, &ls, &s);
    insta::assert_snapshot!(s.table());
}

#[test]
fn pass_interface_logs_every_layer() {
    let mut m = model("digits_cnn.onnx");
    let mut cx = PassCx::new(17);
    let p = prune::Prune {
        config: all(),
        schedule: Schedule::Layer(0.5),
    };
    assert!(p.run(&mut m.graph, &mut cx).unwrap());
    assert_eq!(cx.stat("prune.layers"), 3);
    assert_eq!(cx.log.len(), 3);
}

/// Pruned (zero) weights are exactly zero in the int8 tensors, per channel
/// and per tensor, in static and weight-only mode.
#[test]
fn zeros_survive_weight_quantization() {
    for (file, per_channel, mode) in [
        ("resnet_tiny.onnx", true, Mode::Static),
        ("resnet_tiny.onnx", false, Mode::Static),
        ("mlp.onnx", true, Mode::WeightOnly),
        ("digits_cnn.onnx", true, Mode::Static),
    ] {
        let (_, mut a, ls, s) = run(file, &all(), &Schedule::Layer(0.5));
        let zeros: BTreeMap<String, Vec<bool>> = ls
            .iter()
            .map(|l| {
                (
                    l.weight.clone(),
                    weights(&a, l).iter().map(|x| *x == 0.0).collect(),
                )
            })
            .collect();
        let cfg = QuantizeConfig {
            mode,
            per_channel,
            ..Default::default()
        };
        let opset = a.default_opset().unwrap();
        let mut cx = PassCx::new(opset);
        let pl = plan(&a.graph, &cfg).unwrap();
        let ranges: Ranges = pl
            .tensors_to_observe(&a.graph)
            .into_iter()
            .map(|t| (t, (-1.0, 1.0)))
            .collect();
        apply(&mut a.graph, &pl, &ranges, &cfg, opset, &mut cx).unwrap();
        let mut checked = 0;
        for (w, z) in &zeros {
            let Some(v) = a.graph.value_by_name(&format!("{w}_quantized")) else {
                continue;
            };
            let t = a.graph.const_tensor(v).unwrap();
            let q = t.raw_data.as_ref().unwrap();
            assert_eq!(q.len(), z.len());
            for (i, (byte, zero)) in q.iter().zip(z).enumerate() {
                if *zero {
                    assert_eq!(
                        *byte, 0,
                        "{file} {w}[{i}]: pruned weight quantized to {byte}"
                    );
                }
            }
            checked += 1;
        }
        assert_eq!(checked, s.layers.len(), "{file}: every weight quantized");
    }
}

/// `plan_sensitivity`'s greedy choice worked out by hand. Noise power of a
/// point is 10^(-SQNR/10); a move's cost is added noise per pruned weight.
#[test]
fn sensitivity_plan_by_hand() {
    use quench_passes::prune::{plan_sensitivity, LayerSensitivity, PruneTarget};
    let layer = |name: &str, weights: usize, points: &[(f64, f64)]| LayerSensitivity {
        node: name.to_string(),
        weight: name.to_string(),
        weights,
        points: points.to_vec(),
    };
    let noise = |db: f64| 10f64.powf(-db / 10.0);
    let sqnr = |n: f64| -10.0 * n.log10();
    let near = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);

    // A: 100 weights, 0.5 -> 40 dB, 0.9 -> 20 dB; B: 300 weights, 0.5 -> 30 dB.
    // Target 0.5 = 200 weights. Costs from dense: A 0.5: 1e-4 / 50 = 2e-6,
    // A 0.9: 1e-2 / 90, B 0.5: 1e-3 / 150 = 6.7e-6. A to 0.5 first; then
    // B 0.5 (6.7e-6) beats A 0.9 (9.9e-3 / 40) and meets the target exactly.
    let rows = [
        layer("A", 100, &[(0.5, 40.0), (0.9, 20.0)]),
        layer("B", 300, &[(0.5, 30.0)]),
    ];
    let p = plan_sensitivity(&rows, 0.5, None);
    assert_eq!(
        p.steps,
        vec![("A".to_string(), 0.5), ("B".to_string(), 0.5)]
    );
    assert!(near(p.sparsity, 0.5), "{p:?}");
    assert!(
        near(p.estimated_sqnr_db, sqnr(noise(40.0) + noise(30.0))),
        "{p:?}"
    );

    // Sizes decide: A (100 weights, 0.5 -> 30 dB) costs 1e-3 / 50 = 2e-5,
    // B (1000 weights, 0.5 -> 25 dB) 3.16e-3 / 500 = 6.3e-6: B first. Target
    // 0.25 = 275 of 1100 weights is 55% of B's move: B at 0.275 with 55% of
    // its noise.
    let rows = [
        layer("A", 100, &[(0.5, 30.0)]),
        layer("B", 1000, &[(0.5, 25.0)]),
    ];
    let p = plan_sensitivity(&rows, 0.25, None);
    assert_eq!(p.steps.len(), 1, "{p:?}");
    assert_eq!(p.steps[0].0, "B");
    assert!(near(p.steps[0].1, 0.275), "{p:?}");
    assert!(near(p.sparsity, 0.25), "{p:?}");
    assert!(near(p.estimated_sqnr_db, sqnr(0.55 * noise(25.0))), "{p:?}");

    // A floor of 28 dB (noise 1.58e-3): B's move (3.16e-3) is never
    // allowed; A's (1e-3) is, and planning stops short: 50 / 1100.
    let p = plan_sensitivity(&rows, 0.25, Some(28.0));
    assert_eq!(p.steps, vec![("A".to_string(), 0.5)]);
    assert!(near(p.sparsity, 50.0 / 1100.0), "{p:?}");
    assert!(near(p.estimated_sqnr_db, 30.0), "{p:?}");

    // A move cut short from a measured point: A at 0.5 (1e-4) first, then
    // 20 of the 40 weights of its move to 0.9 (1e-3): noise halfway,
    // 1e-4 + (1e-3 - 1e-4) / 2 = 5.5e-4.
    let rows = [layer("A", 100, &[(0.5, 40.0), (0.9, 30.0)])];
    let p = plan_sensitivity(&rows, 0.7, None);
    assert_eq!(p.steps.len(), 2, "{p:?}");
    assert!(near(p.steps[1].1, 0.7) && near(p.sparsity, 0.7), "{p:?}");
    assert!(near(p.estimated_sqnr_db, sqnr(5.5e-4)), "{p:?}");

    // Sparsity of targets: N:M keeps n of m.
    assert_eq!(PruneTarget::NM { n: 2, m: 4 }.sparsity(), 0.5);
    assert_eq!(PruneTarget::NM { n: 1, m: 4 }.sparsity(), 0.75);
    assert_eq!(PruneTarget::Unstructured { sparsity: 0.3 }.sparsity(), 0.3);
}
