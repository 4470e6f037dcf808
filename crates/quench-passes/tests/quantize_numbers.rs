//! The numbers `quantize::apply` writes, against the formulas of
//! quench-calib's module docs computed here independently: int8 weights
//! per output channel with `scale = max|w| / 127` and codes
//! `round_half_even(w / scale)`, int32 biases with `scale = s_x * s_w` and
//! zero point 0, u8 activations with `scale = (hi - lo) / 255` and
//! `zero_point = round_half_even(-lo / scale)`; the int32-range widening of
//! weight scales under a large bias; per-tensor weights below opset 13; and
//! the activations left float with their reasons. (Mutation testing found
//! `apply`'s arithmetic unchecked by this crate's tests; see
//! benches/results/mutants_2026-11-27.md.)

use quench_ir::{parse_model, tensor, Model};
use quench_passes::quantize::{apply, plan, QuantSummary, QuantizeConfig, Ranges};
use quench_passes::PassCx;

const CONV: &str = "# ir_version 8; opset ai.onnx 17
graph main(%x: f32[1,2,3,3]) -> (%1)
  %w = const f32[2,2,1,1] [0.5,-0.25,0.1,-0.3]  # w
  %b = const f32[2] [0.01,-0.2]  # b
  %0 = Conv(%x, %w, %b) {kernel_shape=[1,1]} : f32[1,2,3,3]  # conv: c
  %1 = Relu(%0) : f32[1,2,3,3]  # relu: y
";

fn quantized(
    text: &str,
    ranges: &[(&str, (f32, f32))],
    cfg: &QuantizeConfig,
    opset: i64,
) -> Result<(Model, QuantSummary), String> {
    let mut m = parse_model(text).map_err(|e| e.to_string())?;
    let pl = plan(&m.graph, cfg).map_err(|e| e.to_string())?;
    let ranges: Ranges = ranges.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let mut cx = PassCx::new(opset);
    let s = apply(&mut m.graph, &pl, &ranges, cfg, opset, &mut cx).map_err(|e| e.to_string())?;
    m.graph.verify().map_err(|e| e.to_string())?;
    Ok((m, s))
}

/// Data of constant `name` as f64.
fn data(m: &Model, name: &str) -> Vec<f64> {
    m.graph
        .value_by_name(name)
        .and_then(|v| m.graph.const_tensor(v))
        .and_then(|t| tensor::to_f64(t).ok())
        .unwrap_or_default()
}

/// Names of the first Conv's inputs.
fn conv_inputs(m: &Model) -> Vec<String> {
    m.graph
        .node_ids()
        .into_iter()
        .find(|n| m.graph.node(*n).op_type() == "Conv")
        .map(|n| {
            m.graph
                .node(n)
                .inputs()
                .iter()
                .flatten()
                .map(|v| m.graph.value(*v).name.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs()
}

#[test]
fn conv_weights_bias_and_activations_follow_the_formulas() -> Result<(), String> {
    let cfg = QuantizeConfig::default();
    let (m, s) = quantized(CONV, &[("x", (-1.0, 1.0)), ("c", (-2.0, 4.0))], &cfg, 17)?;
    assert_eq!(
        (
            s.weights_quantized,
            s.biases_quantized,
            s.activations_quantized
        ),
        (1, 1, 2)
    );
    assert!(s.per_channel);
    let w = [[0.5f64, -0.25], [0.1, -0.3]];
    let b = [0.01f64, -0.2];
    // Weights: per channel, scale = max|w| / 127.
    let sw: Vec<f64> = w
        .iter()
        .map(|c| c.iter().fold(0f64, |m, v| m.max(v.abs())) / 127.0)
        .collect();
    let got_sw = data(&m, "w_scale");
    assert_eq!(got_sw.len(), 2);
    for (g, want) in got_sw.iter().zip(&sw) {
        assert!(close(*g, *want), "weight scale {g} vs {want}");
    }
    // -0.25 / (0.5 / 127) = -63.5 rounds half to even: -64.
    let codes: Vec<f64> = (0..4)
        .map(|i| (w[i / 2][i % 2] / got_sw[i / 2]).round_ties_even())
        .collect();
    assert_eq!(codes, vec![127.0, -64.0, 42.0, -127.0]);
    assert_eq!(data(&m, "w_quantized"), codes);
    assert_eq!(data(&m, "w_zero_point"), vec![0.0, 0.0]);
    // Dequantized weights are within half a step of the originals.
    for i in 0..4 {
        let dq = codes[i] * got_sw[i / 2];
        assert!((dq - w[i / 2][i % 2]).abs() <= got_sw[i / 2] / 2.0 + 1e-12);
    }
    // Input: u8 over [-1, 1]: scale 2/255, zero point round(1 / scale) =
    // round(127.49999...) = 127 with the f32 scale.
    let sx = data(&m, "x_scale");
    assert!(close(sx[0], 2.0 / 255.0), "{sx:?}");
    let zx = (1.0 / sx[0]).round_ties_even();
    assert_eq!(data(&m, "x_zero_point"), vec![zx]);
    assert_eq!(zx, 127.0);
    // Output c over [-2, 4]: scale 6/255, zero point round(2 / scale) = 85.
    let sc = data(&m, "c_scale");
    assert!(close(sc[0], 6.0 / 255.0), "{sc:?}");
    assert_eq!(data(&m, "c_zero_point"), vec![85.0]);
    // Bias: int32, scale s_x * s_w per channel, zero point 0.
    let sb = data(&m, "b_scale");
    assert_eq!(sb.len(), 2);
    for c in 0..2 {
        assert!(close(sb[c], sx[0] * got_sw[c]), "{sb:?}");
    }
    let qb: Vec<f64> = (0..2).map(|c| (b[c] / sb[c]).round_ties_even()).collect();
    assert_eq!(data(&m, "b_quantized"), qb);
    assert_eq!(qb, vec![324.0, -10795.0]);
    assert_eq!(data(&m, "b_zero_point"), vec![0.0, 0.0]);
    // The Conv reads the dequantized input, weight and bias.
    assert_eq!(
        conv_inputs(&m),
        vec!["x_dequantized", "w_dequantized", "b_dequantized"]
    );
    Ok(())
}

/// A bias far larger than `s_x * s_w * 2^31` widens the weight scale of
/// its channel to `|b| / (s_x * 2^30)`, so the int32 code stays at 2^30;
/// the other channel keeps max|w| / 127.
#[test]
fn a_huge_bias_widens_its_channel_scale() -> Result<(), String> {
    let text = CONV.replace("[0.01,-0.2]", "[1e6,-0.2]");
    let (m, s) = quantized(
        &text,
        &[("x", (-1.0, 1.0)), ("c", (-2.0, 4.0))],
        &QuantizeConfig::default(),
        17,
    )?;
    assert_eq!(s.biases_quantized, 1);
    let sx = data(&m, "x_scale")[0];
    let sw = data(&m, "w_scale");
    let want0 = 1e6 / (sx * f64::from(1u32 << 30));
    assert!(close(sw[0], want0), "{} vs {want0}", sw[0]);
    assert!(close(sw[1], 0.3 / 127.0), "{}", sw[1]);
    let qb = data(&m, "b_quantized");
    assert!((qb[0] - f64::from(1u32 << 30)).abs() <= 2.0, "{qb:?}");
    // The channel's weights then use few codes: 0.5 / scale.
    let qw = data(&m, "w_quantized");
    assert_eq!(qw[0], (0.5 / sw[0]).round_ties_even());
    Ok(())
}

/// Below opset 13 DequantizeLinear has no axis: one weight scale for the
/// tensor (max |w| / 127 = 0.5 / 127) and a note.
#[test]
fn per_tensor_weights_below_opset_13() -> Result<(), String> {
    let text = CONV.replace("ai.onnx 17", "ai.onnx 12");
    let (m, s) = quantized(
        &text,
        &[("x", (-1.0, 1.0)), ("c", (-2.0, 4.0))],
        &QuantizeConfig::default(),
        12,
    )?;
    assert!(!s.per_channel);
    assert_eq!(
        s.notes,
        vec!["opset 12 < 13 has no per-axis DequantizeLinear: weights are quantized per tensor"]
    );
    let sw = data(&m, "w_scale");
    assert_eq!(sw.len(), 1);
    assert!(close(sw[0], 0.5 / 127.0));
    assert_eq!(data(&m, "w_quantized"), vec![127.0, -64.0, 25.0, -76.0]);
    // With one weight scale for several output channels the bias stays
    // float: the Conv still reads `b`.
    assert_eq!(s.biases_quantized, 0);
    assert_eq!(conv_inputs(&m), vec!["x_dequantized", "w_dequantized", "b"]);
    Ok(())
}

#[test]
fn activations_without_usable_ranges_stay_float() -> Result<(), String> {
    let cfg = QuantizeConfig::default();
    // No range for c; an extreme one for x.
    let (m, s) = quantized(CONV, &[("x", (-1.0, 2.0e5))], &cfg, 17)?;
    assert_eq!(s.activations_quantized, 0);
    let reasons: Vec<(String, String)> = s.activations_float.clone();
    assert_eq!(
        reasons,
        vec![
            (
                "x".to_string(),
                "extreme range [-1e0, 2e5] (e.g. an attention mask)".to_string()
            ),
            ("c".to_string(), "no calibration range".to_string()),
        ]
    );
    // With x float, the bias has no input scale: it stays float, the
    // weights are still quantized.
    assert_eq!((s.weights_quantized, s.biases_quantized), (1, 0));
    assert!(m.graph.value_by_name("b_quantized").is_none());
    // A non-finite end is extreme too.
    let (_, s) = quantized(CONV, &[("x", (f32::NEG_INFINITY, 1.0))], &cfg, 17)?;
    assert_eq!(s.activations_float.len(), 2);
    // Opset 9 has no QuantizeLinear.
    let e = quantized(CONV, &[("x", (-1.0, 1.0))], &cfg, 9).err();
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("opset 9 predates QuantizeLinear")),
        "{e:?}"
    );
    // Non-finite weights are left float with a note.
    // (The text form cannot write NaN: the weight is replaced after parsing.)
    let mut m = parse_model(CONV).map_err(|e| e.to_string())?;
    let w = m.graph.value_by_name("w").ok_or("no w")?;
    m.graph.replace_const(
        w,
        tensor::from_f32("", &[2, 2, 1, 1], &[0.5, f32::NAN, 0.1, -0.3]),
    );
    let pl = plan(&m.graph, &cfg).map_err(|e| e.to_string())?;
    let ranges: Ranges = [
        ("x".to_string(), (-1.0, 1.0)),
        ("c".to_string(), (-2.0, 4.0)),
    ]
    .into_iter()
    .collect();
    let s = apply(&mut m.graph, &pl, &ranges, &cfg, 17, &mut PassCx::new(17))
        .map_err(|e| e.to_string())?;
    assert_eq!(s.weights_quantized, 0);
    assert_eq!(s.notes, vec!["node `conv`: weights not finite (or a scale not a normal number of their type); left float"]);
    Ok(())
}

/// The boundary of `max_abs_range` is inclusive: a range reaching exactly
/// the limit is quantized, one beyond it stays float.
#[test]
fn max_abs_range_is_inclusive() -> Result<(), String> {
    let cfg = QuantizeConfig {
        max_abs_range: 2.0,
        ..QuantizeConfig::default()
    };
    let (_, s) = quantized(CONV, &[("x", (-2.0, 1.0)), ("c", (-1.0, 2.0))], &cfg, 17)?;
    assert_eq!((s.activations_quantized, s.activations_float.len()), (2, 0));
    let (_, s) = quantized(CONV, &[("x", (-2.001, 1.0)), ("c", (-1.0, 2.0))], &cfg, 17)?;
    assert_eq!((s.activations_quantized, s.activations_float.len()), (1, 1));
    Ok(())
}

/// Gemm with a 2-D bias `[1, N]`: only a 1-D bias gets the int32 form.
#[test]
fn two_dimensional_bias_stays_float() -> Result<(), String> {
    let text = "# ir_version 8; opset ai.onnx 17
graph main(%x: f32[1,2]) -> (%0)
  %w = const f32[3,2] [1.0,2.0,3.0,4.0,5.0,6.0]  # w
  %b = const f32[1,3] [0.5,0.0,-1.0]  # b
  %0 = Gemm(%x, %w, %b) {transB=1} : f32[1,3]  # gemm: y
";
    let (_, s) = quantized(
        text,
        &[("x", (-1.0, 1.0)), ("y", (-10.0, 10.0))],
        &QuantizeConfig::default(),
        17,
    )?;
    assert_eq!((s.weights_quantized, s.biases_quantized), (1, 0));
    let one_d = text.replace("f32[1,3] [0.5", "f32[3] [0.5");
    let (_, s) = quantized(
        &one_d,
        &[("x", (-1.0, 1.0)), ("y", (-10.0, 10.0))],
        &QuantizeConfig::default(),
        17,
    )?;
    assert_eq!((s.weights_quantized, s.biases_quantized), (1, 1));
    Ok(())
}

/// Block-wise weights (opset 21) run along each op's reduction axis: Conv
/// `[O, I, kh, kw]` along I (axis 1): a `[2, 4, 1, 1]` weight in blocks of
/// 2 has scales `[2, 2, 1, 1]`, each max|w| / 127 over its block.
#[test]
fn conv_blocks_run_along_input_channels() -> Result<(), String> {
    let text = "# ir_version 10; opset ai.onnx 21
graph main(%x: f32[1,4,2,2]) -> (%0)
  %w = const f32[2,4,1,1] [1.0,-2.0,0.5,0.25,8.0,1.0,-1.0,4.0]  # w
  %0 = Conv(%x, %w) {kernel_shape=[1,1]} : f32[1,2,2,2]  # conv: y
";
    let cfg = QuantizeConfig {
        weight_block_size: Some(2),
        ..QuantizeConfig::default()
    };
    let (m, s) = quantized(text, &[("x", (-1.0, 1.0)), ("y", (-9.0, 9.0))], &cfg, 21)?;
    assert_eq!(s.weights_quantized, 1);
    let dq = m
        .graph
        .node_ids()
        .into_iter()
        .map(|n| m.graph.node(n).clone())
        .find(|n| n.name() == "w_DequantizeLinear")
        .ok_or("no weight DequantizeLinear")?;
    assert_eq!(
        (dq.attr_int("axis"), dq.attr_int("block_size")),
        (Some(1), Some(2))
    );
    let scale = m
        .graph
        .value_by_name("w_scale")
        .and_then(|v| m.graph.const_tensor(v))
        .ok_or("no scale")?;
    assert_eq!(scale.dims, vec![2, 2, 1, 1]);
    let want = [2.0 / 127.0, 0.5 / 127.0, 8.0 / 127.0, 4.0 / 127.0];
    let got = data(&m, "w_scale");
    assert!(got.iter().zip(want).all(|(g, w)| close(*g, w)), "{got:?}");
    Ok(())
}

/// Conv -> Clip(0, 6) -> Conv: the Clip is absorbed into the first Conv's
/// output range (its Q/DQ sits on the Conv output, clamped to [0, 6]);
/// Clip(-1, 6) or Clip(0, 0) is not absorbable.
#[test]
fn clip_from_zero_is_absorbed() -> Result<(), String> {
    let text = |lo: &str, hi: &str| {
        format!(
            "# ir_version 8; opset ai.onnx 17
graph main(%x: f32[1,2,2,2]) -> (%2)
  %w = const f32[2,2,1,1] [1.0,-2.0,0.5,0.25]  # w
  %v = const f32[2,2,1,1] [1.0,2.0,-0.5,0.25]  # v
  %lo = const f32[] [{lo}]  # lo
  %hi = const f32[] [{hi}]  # hi
  %0 = Conv(%x, %w) {{kernel_shape=[1,1]}} : f32[1,2,2,2]  # a: c
  %1 = Clip(%0, %lo, %hi) : f32[1,2,2,2]  # clip: r
  %2 = Conv(%1, %v) {{kernel_shape=[1,1]}} : f32[1,2,2,2]  # b: y
"
        )
    };
    let ranges = [
        ("x", (-1.0, 1.0)),
        ("c", (-3.0, 8.0)),
        ("r", (0.0, 6.0)),
        ("y", (-5.0, 5.0)),
    ];
    let (m, s) = quantized(&text("0.0", "6.0"), &ranges, &QuantizeConfig::default(), 17)?;
    assert_eq!(s.absorbed_activations, 1);
    assert!(m
        .graph
        .node_ids()
        .iter()
        .all(|n| m.graph.node(*n).op_type() != "Clip"));
    // r's parameters: [0, 6] over 255 steps, zero point 0.
    let sr = data(&m, "r_scale");
    assert!(close(sr[0], 6.0 / 255.0), "{sr:?}");
    assert_eq!(data(&m, "r_zero_point"), vec![0.0]);
    for (lo, hi) in [("-1.0", "6.0"), ("0.0", "0.0")] {
        let (m, s) = quantized(&text(lo, hi), &ranges, &QuantizeConfig::default(), 17)?;
        assert_eq!(s.absorbed_activations, 0, "Clip({lo}, {hi})");
        assert!(m
            .graph
            .node_ids()
            .iter()
            .any(|n| m.graph.node(*n).op_type() == "Clip"));
    }
    Ok(())
}

#[test]
fn activation_types_and_their_opsets() {
    use quench_passes::quantize::ActType;
    let got: Vec<(i64, i32)> = [ActType::U8, ActType::I8, ActType::U16, ActType::I16]
        .iter()
        .map(|a| (a.min_opset(), a.elem() as i32))
        .collect();
    // u8 = 2, i8 = 3, u16 = 4, i16 = 5; QuantizeLinear has 8 bits from
    // opset 10, 16 bits from 21.
    assert_eq!(got, vec![(10, 2), (10, 3), (21, 4), (21, 5)]);
}

/// Dynamic mode: a MatMul's `[K, N]` weight gets int8 codes with one scale
/// per output column, max|w[:, c]| / 127 (per tensor: one over all), and
/// its input a DynamicQuantizeLinear.
#[test]
fn dynamic_matmul_scales_per_column() -> Result<(), String> {
    use quench_passes::quantize::Mode;
    let text = "# ir_version 8; opset ai.onnx 17
graph main(%x: f32[2,3]) -> (%0)
  %w = const f32[3,2] [1.0,-4.0,2.0,2.0,-3.0,1.0]  # w
  %0 = MatMul(%x, %w) : f32[2,2]  # mm: y
";
    let w = [[1.0f64, -4.0], [2.0, 2.0], [-3.0, 1.0]];
    for per_channel in [true, false] {
        let cfg = QuantizeConfig {
            mode: Mode::Dynamic,
            per_channel,
            ..QuantizeConfig::default()
        };
        let (m, s) = quantized(text, &[], &cfg, 17)?;
        assert_eq!(s.weights_quantized, 1, "{s:?}");
        let scales: Vec<f64> = if per_channel {
            vec![3.0 / 127.0, 4.0 / 127.0]
        } else {
            vec![4.0 / 127.0]
        };
        let got = data(&m, "w_scale");
        assert_eq!(got.len(), scales.len());
        assert!(
            got.iter().zip(&scales).all(|(g, w)| close(*g, *w)),
            "{got:?}"
        );
        let codes: Vec<f64> = (0..6)
            .map(|i| {
                let c = if per_channel { i % 2 } else { 0 };
                (w[i / 2][i % 2] / got[c]).round_ties_even()
            })
            .collect();
        assert_eq!(data(&m, "w_quantized"), codes, "per_channel {per_channel}");
        assert!(m
            .graph
            .node_ids()
            .iter()
            .any(|n| m.graph.node(*n).op_type() == "DynamicQuantizeLinear"));
    }
    Ok(())
}

/// Only MatMul may take an activation as its second operand: a Conv whose
/// weight is a graph input stays float, an activation × activation MatMul
/// is quantized in static mode (both inputs get Q/DQ) and refused in
/// dynamic mode.
#[test]
fn activation_weights_only_for_matmul() -> Result<(), String> {
    let conv = "# ir_version 8; opset ai.onnx 17
graph main(%x: f32[1,2,2,2], %w: f32[2,2,1,1]) -> (%0)
  %0 = Conv(%x, %w) {kernel_shape=[1,1]} : f32[1,2,2,2]  # conv: y
";
    let m = parse_model(conv).map_err(|e| e.to_string())?;
    let pl = plan(&m.graph, &QuantizeConfig::default()).map_err(|e| e.to_string())?;
    assert!(pl.compute.is_empty());
    let d: Vec<(bool, String)> = pl
        .decisions
        .iter()
        .map(|d| (d.quantized, d.reason.clone()))
        .collect();
    assert_eq!(
        d,
        vec![(false, "weights are not a constant float tensor".to_string())]
    );
    let mm = "# ir_version 8; opset ai.onnx 17
graph main(%a: f32[2,3], %b: f32[3,2]) -> (%0)
  %0 = MatMul(%a, %b) : f32[2,2]  # mm: y
";
    let m = parse_model(mm).map_err(|e| e.to_string())?;
    let pl = plan(&m.graph, &QuantizeConfig::default()).map_err(|e| e.to_string())?;
    assert_eq!(pl.compute.len(), 1);
    assert_eq!(pl.decisions[0].reason, "activation × activation");
    assert_eq!(pl.tensors_to_observe(&m.graph), vec!["a", "b"]);
    let dynamic = QuantizeConfig {
        mode: quench_passes::quantize::Mode::Dynamic,
        ..QuantizeConfig::default()
    };
    let pl = plan(&m.graph, &dynamic).map_err(|e| e.to_string())?;
    assert!(pl.compute.is_empty());
    assert_eq!(
        pl.decisions[0].reason,
        "activation × activation MatMul needs static mode"
    );
    Ok(())
}

/// Inside an integer chain (Conv -> Mul -> Conv), a Mul of a tensor with
/// itself is a square (a written-out variance): it stays float, while a
/// product of two different quantized tensors is fused.
#[test]
fn squares_in_a_chain_stay_float() -> Result<(), String> {
    let text = |b: &str| {
        format!(
            "# ir_version 8; opset ai.onnx 17
graph main(%x: f32[1,2,2,2]) -> (%3)
  %w = const f32[2,2,1,1] [1.0,-2.0,0.5,0.25]  # w
  %v = const f32[2,2,1,1] [1.0,2.0,-0.5,0.25]  # v
  %0 = Conv(%x, %w) {{kernel_shape=[1,1]}} : f32[1,2,2,2]  # a: c
  %1 = Conv(%x, %v) {{kernel_shape=[1,1]}} : f32[1,2,2,2]  # a2: d
  %2 = Mul(%0, {b}) : f32[1,2,2,2]  # mul: m
  %3 = Conv(%2, %w) {{kernel_shape=[1,1]}} : f32[1,2,2,2]  # b: y
"
        )
    };
    let mul_decision = |b: &str| -> Result<(bool, String), String> {
        let m = parse_model(&text(b)).map_err(|e| e.to_string())?;
        let pl = plan(&m.graph, &QuantizeConfig::default()).map_err(|e| e.to_string())?;
        pl.decisions
            .iter()
            .find(|d| d.node == "mul")
            .map(|d| (d.quantized, d.reason.clone()))
            .ok_or_else(|| "no decision for mul".to_string())
    };
    assert_eq!(
        mul_decision("%0")?,
        (
            false,
            "square or reduced product (a written-out normalization); stays float".to_string()
        )
    );
    assert_eq!(
        mul_decision("%1")?,
        (true, "integer element-wise/pooling".to_string())
    );
    Ok(())
}
