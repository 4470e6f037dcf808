//! Per-value formats in the quantization plan: what `apply` does with plan
//! edits and what it refuses.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use quench_calib::{Granularity, QuantFormat};
use quench_ir::Model;
use quench_onnx::proto::tensor_proto::DataType;
use quench_passes::quantize::{apply, plan, Plan, QuantizeConfig, Ranges};
use quench_passes::{pipeline, run_passes, PassCx, RunOptions};

/// A fixture after the default passes, at opset 21, its default plan and
/// [-1, 1] ranges for every observed tensor.
fn planned(file: &str) -> (Model, Plan, Ranges, QuantizeConfig) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(file);
    let mut m = Model::from_onnx(quench_onnx::load_model(&p).unwrap().model).unwrap();
    let from = m.default_opset().unwrap();
    let mut cx = PassCx::new(from);
    run_passes(
        &mut m.graph,
        &pipeline::default_pipeline(),
        &mut cx,
        &RunOptions::default(),
    )
    .unwrap();
    quench_passes::upgrade_opset::apply(&mut m.graph, from, 21);
    m.set_opset("", 21);
    let cfg = QuantizeConfig::default();
    let pl = plan(&m.graph, &cfg).unwrap();
    let ranges: Ranges = pl
        .tensors_to_observe(&m.graph)
        .into_iter()
        .map(|t| (t, (-1.0, 1.0)))
        .collect();
    (m, pl, ranges, cfg)
}

fn zero_point_type(m: &Model, tensor: &str) -> i32 {
    let v = m
        .graph
        .value_by_name(&format!("{tensor}_zero_point"))
        .unwrap();
    m.graph.const_tensor(v).unwrap().data_type()
}

/// A data-movement output shares its root's parameters, so it takes the
/// root's format whatever its own entry says.
#[test]
fn shared_tensors_follow_their_root() {
    let mut found = 0;
    for file in [
        "resnet_tiny.onnx",
        "transformer.onnx",
        "mobilenet_tiny.onnx",
    ] {
        let (mut m, mut pl, ranges, cfg) = planned(file);
        let Some((&v, &root)) = pl.shared.iter().next() else {
            continue;
        };
        found += 1;
        pl.formats.insert(root, QuantFormat::U16);
        pl.formats.insert(v, QuantFormat::U8);
        assert_eq!(pl.format_of(v, QuantFormat::U8), QuantFormat::U16);
        let (vn, rn) = (
            m.graph.value(v).name.clone(),
            m.graph.value(root).name.clone(),
        );
        let mut cx = PassCx::new(21);
        apply(&mut m.graph, &pl, &ranges, &cfg, 21, &mut cx).unwrap();
        assert_eq!(
            zero_point_type(&m, &rn),
            DataType::Uint16 as i32,
            "{file} {rn}"
        );
        assert_eq!(
            zero_point_type(&m, &vn),
            DataType::Uint16 as i32,
            "{file} {vn}"
        );
    }
    assert!(found > 0, "no fixture has a shared tensor");
}

/// Formats the opset or `QuantizeLinear` cannot express are refused with
/// the tensor or node named.
#[test]
fn inexpressible_formats_are_refused() {
    let (m, pl, ranges, cfg) = planned("mlp.onnx");
    let err = |pl: &Plan, opset: i64| {
        let mut g = m.graph.clone();
        apply(&mut g, pl, &ranges, &cfg, opset, &mut PassCx::new(opset))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let h1 = m.graph.value_by_name("h1").unwrap();
    // u16 activations need opset 21.
    let mut p = pl.clone();
    p.formats.insert(h1, QuantFormat::U16);
    assert!(err(&p, 13).contains("`h1`: Uint16 activations need opset 21"));
    assert_eq!(err(&p, 21), "");
    // A narrow grid cannot be computed by QuantizeLinear at run time.
    p.formats.insert(h1, QuantFormat::I8_WEIGHT);
    assert!(err(&p, 21).contains("`h1`: activations cannot be quantized at run time"));
    // Blocked weights need opset 21.
    let mm2 = m
        .graph
        .node_ids()
        .into_iter()
        .find(|n| m.graph.node(*n).name() == "mm2")
        .unwrap();
    let mut p = pl.clone();
    let blocks = QuantFormat::I4_WEIGHT
        .with_granularity(Granularity::Block { axis: 0, size: 32 })
        .unwrap();
    p.weight_formats.insert(mm2, blocks);
    assert!(err(&p, 13).contains("node `mm2`: weight format"));
    assert!(err(&p, 13).contains("needs opset 21"));
    // Float16 weights have no DequantizeLinear form.
    p.weight_formats
        .insert(mm2, QuantFormat::float(quench_calib::FloatKind::F16));
    assert!(err(&p, 21).contains("have no DequantizeLinear form"));
}

/// `QuantizeConfig::weight_block_size` makes blocks along each weight's
/// reduction axis the default, and `min_opset` says what that needs.
#[test]
fn block_size_in_the_config_sets_default_weight_formats() {
    let (m, _, _, _) = planned("mlp.onnx");
    let cfg = QuantizeConfig {
        weight_format: Some(QuantFormat::I4_WEIGHT),
        weight_block_size: Some(32),
        ..Default::default()
    };
    assert_eq!(cfg.min_opset(), Some(21));
    assert_eq!(QuantizeConfig::default().min_opset(), Some(13));
    let pl = plan(&m.graph, &cfg).unwrap();
    let by_name = |name: &str| {
        let n = m
            .graph
            .node_ids()
            .into_iter()
            .find(|n| m.graph.node(*n).name() == name)
            .unwrap();
        pl.weight_formats[&n].granularity
    };
    // MatMul [K, N]: K is axis 0; Gemm with transB [N, K]: axis 1.
    assert_eq!(by_name("mm1"), Granularity::Block { axis: 0, size: 32 });
    assert_eq!(by_name("gemm"), Granularity::Block { axis: 1, size: 32 });
}

/// The MLP fixture's `mm1`: its node, weight name, weights and shape
/// `[K, N]` (output channels along axis 1).
struct Mm1 {
    node: quench_ir::NodeId,
    weight: String,
    w: Vec<f32>,
    k: usize,
    n: usize,
}

fn mm1(m: &Model) -> Mm1 {
    let g = &m.graph;
    let node = g
        .node_ids()
        .into_iter()
        .find(|n| g.node(*n).name() == "mm1")
        .unwrap();
    let wv = g.node(node).input(1).unwrap();
    let t = g.const_tensor(wv).unwrap();
    Mm1 {
        node,
        weight: g.value(wv).name.clone(),
        w: quench_ir::tensor::to_f32(t).unwrap(),
        k: t.dims[0] as usize,
        n: t.dims[1] as usize,
    }
}

/// Applies `pl` at opset 21 and returns weight `wname`'s codes and scales.
fn applied_codes(
    m: &mut Model,
    pl: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    wname: &str,
) -> (Vec<f32>, Vec<f32>) {
    let mut cx = PassCx::new(21);
    apply(&mut m.graph, pl, ranges, cfg, 21, &mut cx).unwrap();
    let g = &m.graph;
    let read = |suffix: &str| {
        let v = g.value_by_name(&format!("{wname}{suffix}")).unwrap();
        quench_ir::tensor::to_f32(g.const_tensor(v).unwrap()).unwrap()
    };
    (read("_quantized"), read("_scale"))
}

/// `Plan::weight_narrow` (the saturation guard's per-channel choice): the
/// chosen output channels of a weight get codes in [-63, 63] with scale
/// `amax / 63`, the others keep [-127, 127] and `amax / 127`, in one int8
/// tensor; dequantized, every weight is within half its own channel's step.
#[test]
fn narrowed_weight_channels_get_seven_bit_codes() {
    let (mut m, mut pl, ranges, cfg) = planned("mlp.onnx");
    let Mm1 {
        node: mm1,
        weight: wname,
        w,
        k,
        n,
    } = mm1(&m);
    // MatMul [K, N]: output channels along axis 1; narrow every other one.
    let mask: Vec<bool> = (0..n).map(|c| c % 2 == 0).collect();
    pl.weight_narrow.insert(mm1, mask.clone());
    let (codes, scales) = applied_codes(&mut m, &pl, &ranges, &cfg, &wname);
    assert_eq!(scales.len(), n);
    for c in 0..n {
        let amax = (0..k).map(|r| w[r * n + c].abs()).fold(0f32, f32::max);
        let cmax = (0..k).map(|r| codes[r * n + c].abs()).fold(0f32, f32::max);
        let q = if mask[c] { 63.0 } else { 127.0 };
        assert_eq!(cmax, q, "channel {c}");
        assert!((scales[c] - amax / q).abs() <= 1e-6 * amax, "channel {c}");
        for r in 0..k {
            let err = (codes[r * n + c] * scales[c] - w[r * n + c]).abs();
            assert!(err <= 0.5001 * scales[c], "({r}, {c}): {err}");
        }
    }
}

/// `Plan::weight_pairs` (the saturation guard's "paired" choice): in the
/// chosen output channels of a weight, on the grid whose extreme code is
/// the given `qmax` (scale `amax / qmax`), no two codes of one pair along
/// the reduction axis share a sign and sum past 128 in magnitude (255
/// times them fits int16); such pairs are brought onto the limit, nearest
/// the unrounded codes, and every other code is the nearest one. Channels
/// not chosen keep nearest int8 codes, pairs past the limit included.
#[test]
fn paired_weight_channels_keep_their_pairs_within_the_limit() {
    use quench_passes::codes::{PairLimit, PAIR_LIMIT};
    let (mut m, mut pl, ranges, cfg) = planned("mlp.onnx");
    let Mm1 {
        node: mm1,
        weight: wname,
        w,
        k,
        n,
    } = mm1(&m);
    // MatMul [K, N]: rows (output channels) are columns of the matrix;
    // pairs (k, k + 1) in natural order. Every other channel paired, on a
    // grid with extreme code 99.
    let rows: Vec<bool> = (0..n).map(|c| c % 2 == 0).collect();
    let qmax: Vec<i32> = rows.iter().map(|p| if *p { 99 } else { 127 }).collect();
    pl.weight_pairs.insert(
        mm1,
        PairLimit {
            order: (0..k).collect(),
            row_stride: 1,
            col_stride: n,
            rows: rows.clone(),
            qmax: qmax.clone(),
        },
    );
    let (codes, scales) = applied_codes(&mut m, &pl, &ranges, &cfg, &wname);
    let at = |r: usize, c: usize| codes[r * n + c] as i32;
    let (mut moved, mut past_unpaired) = (0, 0);
    for c in 0..n {
        let amax = (0..k).map(|r| w[r * n + c].abs()).fold(0f32, f32::max);
        let q = qmax[c] as f32;
        assert!((scales[c] - amax / q).abs() <= 1e-6 * amax, "channel {c}");
        let exact = |r: usize| w[r * n + c] / scales[c];
        for p in 0..k / 2 {
            let (r0, r1) = (2 * p, 2 * p + 1);
            let (a, b) = (at(r0, c), at(r1, c));
            let (na, nb) = (exact(r0).round() as i32, exact(r1).round() as i32);
            let past = na.signum() * nb.signum() > 0 && na.abs() + nb.abs() > PAIR_LIMIT;
            if rows[c] && past {
                // On the limit, same signs, each within half the excess
                // (and a rounding step) of its unrounded code.
                assert_eq!(a.abs() + b.abs(), PAIR_LIMIT, "channel {c} pair {p}");
                assert_eq!((a.signum(), b.signum()), (na.signum(), nb.signum()));
                let excess = exact(r0).abs() + exact(r1).abs() - PAIR_LIMIT as f32;
                assert!((a as f32 - exact(r0)).abs() <= excess / 2.0 + 1.0);
                assert!((b as f32 - exact(r1)).abs() <= excess / 2.0 + 1.0);
                moved += 1;
            } else {
                assert_eq!((a, b), (na, nb), "channel {c} pair {p}");
                past_unpaired += usize::from(past);
            }
        }
    }
    assert!(moved > 0 && past_unpaired > 0, "{moved} {past_unpaired}");
}
