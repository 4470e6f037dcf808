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
    let conv = m
        .graph
        .node_ids()
        .into_iter()
        .find(|n| m.graph.node(*n).op_type() == "Conv")
        .map(|n| m.graph.node(n).clone());
    let ins: Vec<String> = conv
        .map(|c| {
            c.inputs()
                .iter()
                .flatten()
                .map(|v| m.graph.value(*v).name.clone())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ins, vec!["x_dequantized", "w_dequantized", "b_dequantized"]);
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
/// tensor (max |w| / 127 = 0.5 / 127), one bias scale, and a note.
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
    let sb = data(&m, "b_scale");
    assert_eq!(sb.len(), 1);
    assert!(close(sb[0], data(&m, "x_scale")[0] * sw[0]));
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
    assert_eq!(s.notes, vec!["node `conv`: weights not finite; left float"]);
    Ok(())
}
