//! Mixed precision as a plan edit, checked against a reference computed
//! here in Rust (no numpy, no ONNX runtime in the loop).
//!
//! `testdata/mlp.onnx` (`MatMul w1 [32,64] → Add → Relu → MatMul w2 [64,64]
//! → Add → Relu → Gemm w3 [10,64] transB`) is planned with u8 activations
//! and per-tensor u8 weights, then the plan is edited through the public
//! API: activation `h1` becomes u16, `w2` int4 in blocks of 32 along its
//! reduction axis, `w3` int8 per output channel. The quantized model is
//! checked for its element types and attributes and written to
//! `target/interop/mixed_formats/` (CI runs onnx.checker and ONNX Runtime
//! on it); its float twin runs in tract and is compared with the network
//! evaluated directly from the float weights, every weight and activation
//! quantized here with the `QuantFormat` math:
//!
//! * element-wise stages (the fake-quantized input, `h1 = relu(mm1 + b1)`,
//!   `h2`) must equal the reference bit for bit;
//! * matrix products (accumulated in f64 here, in f32 by tract, in another
//!   order) must land inside `[fq(v - e), fq(v + e)]`, `fq` the format's
//!   fake quantization and `e = 1e-5 · Σ|terms|` a bound on f32
//!   accumulation error: the twin may differ only where the accumulation
//!   error can move a value across a rounding tie;
//! * end to end, the twin's output is within 1e-4 of the output's range of
//!   the reference chain computed without any twin tensor when no product
//!   crossed a rounding tie (measured: 0 crossings of 8192, max error
//!   7.2e-7 over a range of 4.68), within 2% otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{input_facts, interop_dir, testdata, Lcg};
use ndarray::ArrayD;
use quench_calib::{Granularity, QuantFormat, QuantParams};
use quench_ir::{tensor, Graph, Model, NodeId};
use quench_onnx::proto::tensor_proto::DataType;
use quench_passes::quantize::{self, Mode, QuantizeConfig, WeightType};
use quench_passes::{pipeline, run_passes, PassCx, RunOptions};
use quench_verify::{ArrayData, Runner, RunnerConfig};

const BATCH: usize = 64;

fn node_by_name(g: &Graph, name: &str) -> NodeId {
    g.node_ids()
        .into_iter()
        .find(|n| g.node(*n).name() == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn const_f32(g: &Graph, name: &str) -> (Vec<i64>, Vec<f32>) {
    let v = g.value_by_name(name).unwrap();
    let t = g.const_tensor(v).unwrap();
    (t.dims.clone(), tensor::to_f32(t).unwrap())
}

/// Weight `w` (row-major, `dims`) quantized and dequantized with `fmt`,
/// scales computed from each group's min/max exactly as the format says.
/// Returns the dequantized weight and the scales (group order).
fn fake_quant_weight(fmt: QuantFormat, dims: &[i64], w: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (rows, cols) = (dims[0] as usize, dims[1] as usize);
    // Group of element (r, c) and number of groups, for 2-D weights.
    let (groups, group): (usize, Box<dyn Fn(usize, usize) -> usize>) = match fmt.granularity {
        Granularity::PerTensor => (1, Box::new(|_, _| 0)),
        Granularity::PerAxis { axis: 0 } => (rows, Box::new(|r, _| r)),
        Granularity::PerAxis { axis: _ } => (cols, Box::new(|_, c| c)),
        Granularity::Block { axis: 0, size } => (
            rows.div_ceil(size) * cols,
            Box::new(move |r, c| (r / size) * cols + c),
        ),
        Granularity::Block { axis: _, size } => {
            let nb = cols.div_ceil(size);
            (rows * nb, Box::new(move |r, c| r * nb + c / size))
        }
    };
    let mut lo = vec![0f32; groups];
    let mut hi = vec![0f32; groups];
    for r in 0..rows {
        for c in 0..cols {
            let (k, x) = (group(r, c), w[r * cols + c]);
            lo[k] = lo[k].min(x);
            hi[k] = hi[k].max(x);
        }
    }
    let params: Vec<QuantParams> = (0..groups)
        .map(|k| fmt.params(lo[k], hi[k]).unwrap())
        .collect();
    let mut out = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[r * cols + c] = fmt.fake_quantize(w[r * cols + c], &params[group(r, c)]);
        }
    }
    (out, params.iter().map(|p| p.scale).collect())
}

/// `x [n, k] · W`, with `W` given as `[k, m]` (or `[m, k]` if
/// `transposed`), in f64; also `Σ|x·w|` per output for the error bound.
fn matmul(
    x: &[f32],
    n: usize,
    k: usize,
    w: &[f32],
    m: usize,
    transposed: bool,
) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; n * m];
    let mut mag = vec![0f64; n * m];
    for i in 0..n {
        for j in 0..m {
            for t in 0..k {
                let wv = if transposed {
                    w[j * k + t]
                } else {
                    w[t * m + j]
                };
                let p = f64::from(x[i * k + t]) * f64::from(wv);
                y[i * m + j] += p;
                mag[i * m + j] += p.abs();
            }
        }
    }
    (y, mag)
}

/// Every twin value lies in `[fq(v - e), fq(v + e)]`; returns how many
/// differ from `fq(v)` (for a quantizing `fq`: rounding ties within
/// accumulation error).
fn check_product(
    what: &str,
    twin: &[f32],
    v: &[f64],
    mag: &[f64],
    fq: &dyn Fn(f32) -> f32,
) -> usize {
    assert_eq!(twin.len(), v.len());
    let mut moved = 0;
    for (i, (&t, (&v, &m))) in twin.iter().zip(v.iter().zip(mag)).enumerate() {
        let e = 1e-5 * m + 1e-30;
        let (a, b) = (fq((v - e) as f32), fq((v + e) as f32));
        assert!(
            t >= a.min(b) && t <= a.max(b),
            "{what}[{i}]: twin {t}, reference fq({v}) = {}, allowed [{a}, {b}]",
            fq(v as f32)
        );
        moved += usize::from(t != fq(v as f32));
    }
    moved
}

fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

#[test]
fn mixed_formats_plan_matches_a_direct_reference() {
    // 1. The model, cleaned up by the default passes, at opset 21.
    let proto = quench_onnx::load_model(&testdata("mlp.onnx"))
        .unwrap()
        .model;
    let mut m = Model::from_onnx(proto).unwrap();
    let from = m.default_opset().unwrap();
    let mut cx = PassCx::new(from);
    let verify = RunOptions {
        verify: true,
        dump_after: vec![],
    };
    run_passes(
        &mut m.graph,
        &pipeline::default_pipeline(),
        &mut cx,
        &verify,
    )
    .unwrap();
    quench_passes::upgrade_opset::check(&m.graph, from, 21).unwrap();
    quench_passes::upgrade_opset::apply(&mut m.graph, from, 21);
    m.set_opset("", 21);
    m.header.ir_version = Some(10);
    let float_model = m.to_onnx();

    // 2. Float weights and inputs.
    let g = &m.graph;
    let (_, w1) = const_f32(g, "w1");
    let (_, b1) = const_f32(g, "b1");
    let (_, w2) = const_f32(g, "w2");
    let (_, b2) = const_f32(g, "b2");
    let (_, w3) = const_f32(g, "w3");
    let (_, b3) = const_f32(g, "b3");
    let facts = input_facts(&float_model, BATCH);
    let mut rng = Lcg(11);
    let x: Vec<f32> = (0..BATCH * 32).map(|_| rng.normal() * 1.5).collect();

    // 3. Plan with defaults (u8 activations, u8 per-tensor weights), then
    // edit formats: one u16 activation, int4 blocks, int8 per channel.
    let cfg = QuantizeConfig {
        mode: Mode::Static,
        weights: WeightType::U8,
        per_channel: false,
        ..Default::default()
    };
    let mut plan = quantize::plan(g, &cfg).unwrap();
    let h1 = g.value_by_name("h1").unwrap();
    assert_eq!(plan.formats.get(&h1), Some(&QuantFormat::U8));
    plan.formats.insert(h1, QuantFormat::U16);
    let int4_blocks = QuantFormat::I4_WEIGHT
        .with_granularity(Granularity::Block { axis: 0, size: 32 })
        .unwrap();
    let int8_channels = QuantFormat::I8_WEIGHT
        .with_granularity(Granularity::PerAxis { axis: 0 })
        .unwrap();
    let (mm1, mm2, gemm) = (
        node_by_name(g, "mm1"),
        node_by_name(g, "mm2"),
        node_by_name(g, "gemm"),
    );
    assert_eq!(plan.weight_formats.get(&mm1), Some(&QuantFormat::U8));
    plan.weight_formats.insert(mm2, int4_blocks);
    plan.weight_formats.insert(gemm, int8_channels);

    // 4. Ranges: min/max of each planned tensor in the float network.
    let (w1q, _) = fake_quant_weight(QuantFormat::U8, &[32, 64], &w1);
    let (w2q, _) = fake_quant_weight(int4_blocks, &[64, 64], &w2);
    let (w3q, w3s) = fake_quant_weight(int8_channels, &[10, 64], &w3);
    let relu_bias = |v: &[f64], b: &[f32]| -> Vec<f32> {
        v.iter()
            .enumerate()
            .map(|(i, y)| (*y as f32 + b[i % b.len()]).max(0.0))
            .collect()
    };
    let f32s = |v: &[f64]| v.iter().map(|y| *y as f32).collect::<Vec<f32>>();
    let (fm1, _) = matmul(&x, BATCH, 32, &w1, 64, false);
    let fh1 = relu_bias(&fm1, &b1);
    let (fm2, _) = matmul(&fh1, BATCH, 64, &w2, 64, false);
    let fh2 = relu_bias(&fm2, &b2);
    let ranges: quantize::Ranges = [
        ("input", min_max(&x)),
        ("mm1", min_max(&f32s(&fm1))),
        ("h1", min_max(&fh1)),
        ("mm2", min_max(&f32s(&fm2))),
        ("h2", min_max(&fh2)),
    ]
    .into_iter()
    .map(|(k, r)| (k.to_string(), r))
    .collect();
    let mut observed = plan.tensors_to_observe(g);
    observed.sort();
    assert_eq!(observed, ["h1", "h2", "input", "mm1", "mm2"]);

    // 5. Apply and check what was emitted.
    let summary = quantize::apply(&mut m.graph, &plan, &ranges, &cfg, 21, &mut cx).unwrap();
    quench_passes::Pass::run(&quench_passes::dead_code::DeadCode, &mut m.graph, &mut cx).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(
        (
            summary.weights_quantized,
            summary.activations_quantized,
            summary.biases_quantized
        ),
        (3, 5, 1)
    );
    let g = &m.graph;
    let elem_of = |name: &str| {
        let v = g.value_by_name(name).unwrap();
        g.const_tensor(v).unwrap().data_type()
    };
    let dims_of = |name: &str| {
        let v = g.value_by_name(name).unwrap();
        g.const_tensor(v).unwrap().dims.clone()
    };
    let dq_of = |name: &str| g.node(node_by_name(g, name)).clone();
    assert_eq!(elem_of("h1_zero_point"), DataType::Uint16 as i32);
    for a in ["input", "mm1", "mm2", "h2"] {
        assert_eq!(
            elem_of(&format!("{a}_zero_point")),
            DataType::Uint8 as i32,
            "{a}"
        );
    }
    assert_eq!(elem_of("w2_quantized"), DataType::Int4 as i32);
    assert_eq!(dims_of("w2_scale"), [2, 64]);
    assert_eq!(dims_of("w2_zero_point"), [2, 64]);
    let d = dq_of("w2_DequantizeLinear");
    assert_eq!(
        (d.attr_int("axis"), d.attr_int("block_size")),
        (Some(0), Some(32))
    );
    assert_eq!(elem_of("w3_quantized"), DataType::Int8 as i32);
    assert_eq!(dims_of("w3_scale"), [10]);
    let d = dq_of("w3_DequantizeLinear");
    assert_eq!(
        (d.attr_int("axis"), d.attr_int("block_size")),
        (Some(0), None)
    );
    assert_eq!(elem_of("w1_quantized"), DataType::Uint8 as i32);
    assert_eq!(dims_of("w1_scale"), Vec::<i64>::new());
    assert_eq!(dq_of("w1_DequantizeLinear").attr_int("axis"), None);
    assert!(summary
        .nodes
        .iter()
        .any(|d| d.node == "mm2" && d.reason == "int4 weights, blocks of 32"));
    let quantized = m.to_onnx();
    let path = interop_dir("mixed_formats").join("mlp_mixed.onnx");
    quench_onnx::save_model(&quantized, &path, &Default::default()).unwrap();

    // 6. The float twin in tract, with every fake-quantized tensor as an
    // extra output.
    let mut twin = Model::from_onnx(quantized).unwrap();
    let report = quench_passes::simulate::float_twin_report(&mut twin.graph, 21);
    assert_eq!((report.pairs.len(), report.folded), (5, 4), "{report:?}");
    assert!(report.declined.is_empty(), "{:?}", report.declined);
    let twin_proto = twin.to_onnx();
    let twin_path = interop_dir("mixed_formats").join("mlp_mixed_twin.onnx");
    quench_onnx::save_model(&twin_proto, &twin_path, &Default::default()).unwrap();
    let sim: HashMap<String, String> = report.pairs.into_iter().collect();
    let names = ["input", "mm1", "h1", "mm2", "h2"];
    let runner = Runner::new(
        &twin_proto,
        &RunnerConfig {
            input_facts: facts.clone(),
            extra_outputs: names.iter().map(|n| sim[*n].clone()).collect(),
        },
    )
    .unwrap();
    let xa = ArrayData::F32(ArrayD::from_shape_vec(vec![BATCH, 32], x.clone()).unwrap());
    let outs: Vec<Vec<f32>> = runner
        .run(&[xa])
        .unwrap()
        .iter()
        .map(|a| a.to_f32().iter().copied().collect())
        .collect();
    let (out, t_in, t_m1, t_h1, t_m2, t_h2) =
        (&outs[0], &outs[1], &outs[2], &outs[3], &outs[4], &outs[5]);

    // 7. Stage by stage against the reference, each stage fed with the
    // twin's previous stage.
    let p = |name: &str, f: QuantFormat| {
        let (lo, hi) = ranges[name];
        (f, f.params(lo, hi).unwrap())
    };
    let fq = |(f, q): (QuantFormat, QuantParams)| move |v: f32| f.fake_quantize(v, &q);
    let fq_in = fq(p("input", QuantFormat::U8));
    let fq_m1 = fq(p("mm1", QuantFormat::U8));
    let fq_h1 = fq(p("h1", QuantFormat::U16));
    let fq_m2 = fq(p("mm2", QuantFormat::U8));
    let fq_h2 = fq(p("h2", QuantFormat::U8));
    let exact = |what: &str, twin: &[f32], want: Vec<f32>| {
        assert_eq!(twin.len(), want.len());
        for (i, (t, w)) in twin.iter().zip(&want).enumerate() {
            assert_eq!(
                t.to_bits(),
                w.to_bits(),
                "{what}[{i}]: twin {t}, reference {w}"
            );
        }
    };
    exact("input", t_in, x.iter().map(|v| fq_in(*v)).collect());
    let (v, mag) = matmul(t_in, BATCH, 32, &w1q, 64, false);
    let mut moved = check_product("mm1", t_m1, &v, &mag, &fq_m1);
    let h1_ref: Vec<f32> = t_m1
        .iter()
        .enumerate()
        .map(|(i, y)| fq_h1((y + b1[i % 64]).max(0.0)))
        .collect();
    exact("h1 (u16)", t_h1, h1_ref);
    let (v, mag) = matmul(t_h1, BATCH, 64, &w2q, 64, false);
    moved += check_product("mm2 (int4 blocks)", t_m2, &v, &mag, &fq_m2);
    let h2_ref: Vec<f32> = t_m2
        .iter()
        .enumerate()
        .map(|(i, y)| fq_h2((y + b2[i % 64]).max(0.0)))
        .collect();
    exact("h2", t_h2, h2_ref);
    // Gemm: the int32 bias at scale h2_scale × w3_scale[j].
    let h2_scale = p("h2", QuantFormat::U8).1.scale;
    let b3q: Vec<f64> = b3
        .iter()
        .zip(&w3s)
        .map(|(b, s)| {
            let bs = h2_scale * s;
            f64::from(((f64::from(*b) / f64::from(bs)).round_ties_even() as f32) * bs)
        })
        .collect();
    let (v, mag) = matmul(t_h2, BATCH, 64, &w3q, 10, true);
    let v: Vec<f64> = v.iter().enumerate().map(|(i, y)| y + b3q[i % 10]).collect();
    // Not quantized: only the accumulation bound applies.
    check_product("output", out, &v, &mag, &|y| y);
    assert!(
        moved * 100 <= BATCH * (64 + 64),
        "{moved} quantized products crossed a rounding tie: more than 1%"
    );

    // 8. End to end: the reference chain alone, from the input.
    let r_in: Vec<f32> = x.iter().map(|v| fq_in(*v)).collect();
    let r_m1: Vec<f32> = f32s(&matmul(&r_in, BATCH, 32, &w1q, 64, false).0)
        .into_iter()
        .map(&fq_m1)
        .collect();
    let r_h1: Vec<f32> = relu_bias(&r_m1.iter().map(|v| f64::from(*v)).collect::<Vec<_>>(), &b1)
        .into_iter()
        .map(&fq_h1)
        .collect();
    let r_m2: Vec<f32> = f32s(&matmul(&r_h1, BATCH, 64, &w2q, 64, false).0)
        .into_iter()
        .map(&fq_m2)
        .collect();
    let r_h2: Vec<f32> = relu_bias(&r_m2.iter().map(|v| f64::from(*v)).collect::<Vec<_>>(), &b2)
        .into_iter()
        .map(&fq_h2)
        .collect();
    let r_out: Vec<f32> = matmul(&r_h2, BATCH, 64, &w3q, 10, true)
        .0
        .iter()
        .enumerate()
        .map(|(i, y)| (y + b3q[i % 10]) as f32)
        .collect();
    let (lo, hi) = min_max(&r_out);
    let max_err = out
        .iter()
        .zip(&r_out)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    // With no tie crossed the two chains differ by f32 accumulation only;
    // a crossed tie moves one value by one step of its format.
    let tol = if moved == 0 { 1e-4 } else { 0.02 };
    assert!(
        max_err <= tol * (hi - lo),
        "end to end: max |twin - reference| = {max_err} over an output range of {} ({moved} ties crossed)",
        hi - lo
    );
    eprintln!(
        "mixed formats: {moved} of {} quantized products crossed a rounding tie; end-to-end max error {max_err:e} (output range {})",
        BATCH * 128,
        hi - lo
    );
}

/// Float8 (E4M3FN) activations and per-channel weights are planned and
/// emitted as opset-19 Q/DQ: float8 zero points, float8 weight codes equal
/// to the `QuantFormat` conversion of each weight with its channel's scale
/// `amax / 448`; the float twin folds the float8 weights exactly and
/// declines the activation pairs, saying why. Written to
/// `target/interop/mixed_formats/` for onnx.checker and ONNX Runtime.
#[test]
fn float8_formats_are_emitted_as_qdq() {
    let proto = quench_onnx::load_model(&testdata("mlp.onnx"))
        .unwrap()
        .model;
    let mut m = Model::from_onnx(proto).unwrap();
    let from = m.default_opset().unwrap();
    let mut cx = PassCx::new(from);
    run_passes(
        &mut m.graph,
        &pipeline::default_pipeline(),
        &mut cx,
        &RunOptions::default(),
    )
    .unwrap();
    let cfg = QuantizeConfig {
        activation_format: Some(QuantFormat::F8E4M3FN),
        weight_format: Some(QuantFormat::F8E4M3FN),
        ..Default::default()
    };
    assert_eq!(cfg.min_opset(), Some(19));
    quench_passes::upgrade_opset::check(&m.graph, from, 19).unwrap();
    quench_passes::upgrade_opset::apply(&mut m.graph, from, 19);
    m.set_opset("", 19);
    m.header.ir_version = Some(9);
    let (_, w1) = const_f32(&m.graph, "w1");
    let plan = quantize::plan(&m.graph, &cfg).unwrap();
    let ranges: quantize::Ranges = plan
        .tensors_to_observe(&m.graph)
        .into_iter()
        .map(|t| (t, (-2.0, 3.0)))
        .collect();
    // Below opset 19 float8 is refused with the reason.
    let err = quantize::apply(&mut m.graph.clone(), &plan, &ranges, &cfg, 17, &mut cx)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("need opset 19"), "{err}");
    let summary = quantize::apply(&mut m.graph, &plan, &ranges, &cfg, 19, &mut cx).unwrap();
    quench_passes::Pass::run(&quench_passes::dead_code::DeadCode, &mut m.graph, &mut cx).unwrap();
    m.graph.verify().unwrap();
    // No int32 bias for a float8 weight.
    assert_eq!(
        (
            summary.weights_quantized,
            summary.activations_quantized,
            summary.biases_quantized
        ),
        (3, 5, 0)
    );
    let g = &m.graph;
    let t = |name: &str| {
        let v = g.value_by_name(name).unwrap();
        g.const_tensor(v).unwrap().clone()
    };
    let f8 = DataType::Float8e4m3fn as i32;
    for a in ["input", "mm1", "h1", "mm2", "h2"] {
        let z = t(&format!("{a}_zero_point"));
        assert_eq!(
            (z.data_type(), z.raw_data.as_deref()),
            (f8, Some(&[0u8][..])),
            "{a}"
        );
        // Symmetric: scale = max(|lo|, |hi|) / 448.
        assert_eq!(
            tensor::to_f32(&t(&format!("{a}_scale"))).unwrap(),
            [3.0 / 448.0]
        );
    }
    // w1 [32, 64], per channel along axis 1.
    let q = t("w1_quantized");
    assert_eq!((q.data_type(), q.dims.clone()), (f8, vec![32, 64]));
    let scales = tensor::to_f32(&t("w1_scale")).unwrap();
    assert_eq!(scales.len(), 64);
    let codes = q.raw_data.as_deref().unwrap();
    for (i, (w, code)) in w1.iter().zip(codes).enumerate() {
        let c = i % 64;
        let amax = (0..32).fold(0f32, |m, r| m.max(w1[r * 64 + c].abs()));
        let p = QuantFormat::F8E4M3FN.params(-amax, amax).unwrap();
        assert_eq!(scales[c], p.scale);
        assert_eq!(
            i32::from(*code),
            QuantFormat::F8E4M3FN.quantize(*w, &p),
            "w1[{i}]"
        );
    }
    assert_eq!(
        g.node(node_by_name(g, "w1_DequantizeLinear"))
            .attr_int("axis"),
        Some(1)
    );
    let quantized = m.to_onnx();
    let path = interop_dir("mixed_formats").join("mlp_float8.onnx");
    quench_onnx::save_model(&quantized, &path, &Default::default()).unwrap();

    let mut twin = Model::from_onnx(quantized).unwrap();
    let report = quench_passes::simulate::float_twin_report(&mut twin.graph, 19);
    assert_eq!((report.pairs.len(), report.folded), (0, 3));
    assert_eq!(report.declined.len(), 5);
    assert!(report
        .declined
        .iter()
        .all(|(_, why)| why.contains("float8")));
    // The folded weight is the exact float8 value times the scale.
    let folded = tensor::to_f32(
        twin.graph
            .const_tensor(twin.graph.value_by_name("w1_dequantized").unwrap())
            .unwrap(),
    )
    .unwrap();
    for (i, (w, f)) in w1.iter().zip(&folded).enumerate() {
        let c = i % 64;
        let amax = (0..32).fold(0f32, |m, r| m.max(w1[r * 64 + c].abs()));
        let p = QuantFormat::F8E4M3FN.params(-amax, amax).unwrap();
        assert_eq!(*f, QuantFormat::F8E4M3FN.fake_quantize(*w, &p), "w1[{i}]");
    }
}
