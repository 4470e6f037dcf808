//! Empirical bias correction (`--bias-correction`): rounding weights and
//! activations shifts each compute layer's output mean per channel; this
//! phase measures that shift on calibration samples and subtracts it from
//! the layer's float bias before quantization.
//!
//! For every Conv/ConvTranspose/Gemm with a constant bias whose weights are
//! quantized, the float model (after the passes) and the float twin of the
//! model quantized with the current biases run on up to
//! [`SAMPLES`] calibration samples with the layers' outputs exposed; the
//! mean over every axis but the channel axis (1 for Conv, the last for
//! Gemm) of `twin - fp32` is the shift, subtracted from the bias. Errors
//! compound downstream, so this repeats [`ROUNDS`] times, each time
//! measuring with the corrections so far in place (Nagel et al. 2019,
//! empirical variant).
//!
//! The corrections are fitted on up to [`SAMPLES`] calibration samples and
//! judged on up to [`SAMPLES`] others (disjoint; with fewer than 16 samples
//! both are all of them, and the report says so).
//!
//! Invariant: only bias values change; a correction whose output SQNR on
//! the judging samples is not higher than without it is discarded.

use std::collections::BTreeMap;

use anyhow::Result;
use quench_ir::{tensor, Model, OpKind};
use quench_passes::quantize::{Plan, QuantizeConfig, Ranges};
use quench_passes::PassCx;
use quench_verify::{Evaluator, Runners};
use serde::Serialize;

use crate::data::Bound;

/// Calibration samples each round runs on.
pub const SAMPLES: usize = 32;
/// Measure-and-correct rounds.
pub const ROUNDS: usize = 2;

/// What bias correction did.
#[derive(Debug, Clone, Serialize)]
pub struct BiasReport {
    /// Layers whose bias was corrected.
    pub layers: usize,
    /// Largest correction relative to the layer's output RMS.
    pub max_relative_shift: f64,
    /// Output SQNR (lowest over outputs) of the float twin on the judging
    /// samples, before and after.
    pub sqnr_before_db: f64,
    pub sqnr_after_db: f64,
    /// Samples the corrections were fitted on, and judged on.
    pub fit_samples: usize,
    pub validation_samples: usize,
    /// Whether the judging samples are the fitting ones (too few samples
    /// to keep them apart).
    pub in_sample: bool,
    /// Whether the corrections were kept (they must raise that SQNR).
    pub kept: bool,
}

/// A compute layer with a bias: node name, output name in the float
/// model, bias value name, channel axis of its output.
struct Layer {
    node: String,
    output: String,
    bias: String,
    axis: usize,
}

fn layers(float: &Model, plan: &Plan) -> Vec<Layer> {
    let g = &float.graph;
    // Layers are found again in the twin by node name: only unique,
    // non-empty names can be.
    let mut names: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for n in g.node_ids() {
        *names.entry(g.node(n).name()).or_default() += 1;
    }
    plan.compute
        .iter()
        .filter_map(|&n| {
            let node = g.node(n);
            let (bias_ix, axis) = match node.kind() {
                OpKind::Conv | OpKind::ConvTranspose => (2, 1),
                OpKind::Gemm => (2, 1),
                _ => return None,
            };
            if node.name().is_empty() || names.get(node.name()) != Some(&1) {
                return None;
            }
            let b = node.input(bias_ix)?;
            let t = g.const_tensor(b)?;
            let out = node.output(0)?;
            (t.dims.len() == 1 && g.use_count(b) == 1).then(|| Layer {
                node: node.name().to_string(),
                output: g.value(out).name.clone(),
                bias: g.value(b).name.clone(),
                axis,
            })
        })
        .collect()
}

/// The twin's name of layer `node`'s output (an absorbed Relu renames it).
fn twin_output(twin: &Model, node: &str) -> Option<String> {
    let g = &twin.graph;
    g.node_ids()
        .into_iter()
        .find(|&n| g.node(n).name() == node)
        .and_then(|n| g.node(n).output(0))
        .map(|v| g.value(v).name.clone())
}

/// Per-channel mean of `a - b` along `axis`, and the RMS of `b`.
fn channel_shift(
    a: &ndarray::ArrayD<f32>,
    b: &ndarray::ArrayD<f32>,
    axis: usize,
) -> Option<(Vec<f64>, f64)> {
    if a.shape() != b.shape() || axis >= a.ndim() {
        return None;
    }
    let c = a.shape()[axis];
    let mut sum = vec![0f64; c];
    let mut count = vec![0usize; c];
    let mut sq = 0f64;
    for ((idx, x), y) in a.indexed_iter().zip(b.iter()) {
        let ch = idx[axis];
        sum[ch] += f64::from(*x) - f64::from(*y);
        count[ch] += 1;
        sq += f64::from(*y) * f64::from(*y);
    }
    let n = a.len().max(1) as f64;
    Some((
        sum.iter()
            .zip(&count)
            .map(|(s, k)| s / (*k).max(1) as f64)
            .collect(),
        (sq / n).sqrt(),
    ))
}

/// Corrects the biases of `float` in place (see the module docs); the
/// float twin is measured against the float model itself.
#[allow(clippy::too_many_arguments)]
pub fn correct(
    float: &mut Model,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    data: &Bound,
) -> Result<Option<BiasReport>> {
    let ls = layers(float, plan);
    if ls.is_empty() {
        return Ok(None);
    }
    let (fit_rows, val_rows) = crate::data::fit_and_judge(data.data.samples(), SAMPLES);
    let in_sample = fit_rows == val_rows;
    let sub = data.data.pick(&fit_rows);
    let val = data.data.pick(&val_rows);
    let reference_proto = float.to_onnx();
    let names = quench_verify::input_names(&reference_proto);
    let eval = Evaluator::new(&sub, data.feed, names.clone());
    let val_eval = Evaluator::new(&val, data.feed, names);
    let val_ref = val_eval.outputs(
        &Runners::new(&reference_proto, vec![]),
        "the float model on the judging samples",
    )?;
    let judge = |twin: &quench_onnx::proto::ModelProto| -> Result<f64> {
        let r = Runners::new(twin, vec![]);
        let f = val_eval
            .compare(
                &[
                    quench_verify::Subject::Cached(&val_ref),
                    quench_verify::Subject::Required(&r, "the float twin"),
                ],
                &[(0, 1)],
                quench_verify::output_names(&reference_proto).len(),
            )?
            .remove(0);
        let m = f.outputs.map_err(anyhow::Error::msg)?;
        Ok(m.iter().map(|m| m.sqnr_db).fold(f64::INFINITY, f64::min))
    };
    let n_out = quench_verify::output_names(&reference_proto).len();
    let fp = Runners::new(
        &reference_proto,
        ls.iter().map(|l| l.output.clone()).collect(),
    );
    let fp_out = eval.outputs(&fp, "the float model with its layer outputs exposed")?;
    let original_biases: BTreeMap<String, quench_onnx::proto::TensorProto> = ls
        .iter()
        .filter_map(|l| {
            let v = float.graph.value_by_name(&l.bias)?;
            Some((l.bias.clone(), float.graph.const_tensor(v)?.clone()))
        })
        .collect();
    let mut before = f64::NAN;
    let mut after = f64::NAN;
    let mut max_rel = 0f64;
    for round in 0..=ROUNDS {
        let mut q = float.clone();
        let mut cx = PassCx::new(opset);
        crate::phases::quantize_phase(&mut q, plan, ranges, cfg, opset, &mut cx)?;
        let mut twin = q.clone();
        quench_passes::simulate::float_twin_pairs(&mut twin.graph, opset);
        if round == 0 {
            before = judge(&twin.to_onnx())?;
        }
        if round == ROUNDS {
            after = judge(&twin.to_onnx())?;
            break;
        }
        let exposed: Vec<Option<String>> = ls.iter().map(|l| twin_output(&twin, &l.node)).collect();
        let tw = Runners::new(&twin.to_onnx(), exposed.iter().flatten().cloned().collect());
        let tw_out = eval.outputs(&tw, "the float twin with its layer outputs exposed")?;
        let mut shifts: Vec<Option<(Vec<f64>, f64)>> = vec![None; ls.len()];
        let mut sums: Vec<(Vec<f64>, f64, usize)> = vec![(Vec::new(), 0.0, 0); ls.len()];
        for (a, b) in fp_out.batches().iter().zip(tw_out.batches()) {
            let mut j = 0;
            for (i, l) in ls.iter().enumerate() {
                let Some(_) = &exposed[i] else { continue };
                let (x, y) = (b[n_out + j].to_f32(), a[n_out + i].to_f32());
                j += 1;
                if let Some((s, rms)) = channel_shift(&x, &y, l.axis) {
                    let e = &mut sums[i];
                    if e.0.is_empty() {
                        e.0 = vec![0.0; s.len()];
                    }
                    if e.0.len() == s.len() {
                        for (t, v) in e.0.iter_mut().zip(&s) {
                            *t += v;
                        }
                        e.1 += rms;
                        e.2 += 1;
                    }
                }
            }
        }
        for (i, e) in sums.iter().enumerate() {
            if e.2 > 0 {
                shifts[i] = Some((
                    e.0.iter().map(|v| v / e.2 as f64).collect(),
                    e.1 / e.2 as f64,
                ));
            }
        }
        for (l, s) in ls.iter().zip(&shifts) {
            let (Some((shift, rms)), Some(v)) = (s, float.graph.value_by_name(&l.bias)) else {
                continue;
            };
            let Some(t) = float.graph.const_tensor(v) else {
                continue;
            };
            let Ok(mut b) = tensor::to_f32(t) else {
                continue;
            };
            if b.len() != shift.len() {
                continue;
            }
            for (bv, sv) in b.iter_mut().zip(shift) {
                *bv -= *sv as f32;
                if *rms > 0.0 {
                    max_rel = max_rel.max(sv.abs() / rms);
                }
            }
            let dims = t.dims.clone();
            float
                .graph
                .replace_const(v, tensor::from_f32(&l.bias, &dims, &b));
        }
    }
    let kept = after > before;
    if !kept {
        for (name, t) in original_biases {
            if let Some(v) = float.graph.value_by_name(&name) {
                float.graph.replace_const(v, t);
            }
        }
    }
    Ok(Some(BiasReport {
        layers: ls.len(),
        max_relative_shift: max_rel,
        sqnr_before_db: before,
        sqnr_after_db: after,
        kept,
        fit_samples: fit_rows.len(),
        validation_samples: val_rows.len(),
        in_sample,
    }))
}
