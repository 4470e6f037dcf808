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
//! Gemm) of `twin - fp32` is the shift, subtracted from the bias (Nagel
//! et al. 2019, empirical variant). Layers are corrected one at a time in
//! graph order (in [`GROUPS`] contiguous groups when there are more), each
//! measured with the corrections before it in place; a channel is
//! corrected only where its shift is significant over the samples
//! ([`significant_shift`]).
//!
//! Off by default (`--bias-correction`): on the five real models of
//! `benches/compare_ort` it never raised the held-out output SQNR, while
//! it costs one twin build per layer.
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
/// Most groups the layers are corrected in, one after another (one twin
/// build and run each): up to this many layers, one layer at a time.
/// Measured on PP-OCR cls (53 layers, held-out output SQNR 30.87 dB
/// uncorrected): all layers at once, twice (the earlier scheme), 1.06 dB;
/// 8 groups, -0.24 dB; one layer at a time, 27.12 dB.
pub const GROUPS: usize = 64;

/// Contiguous ranges splitting `n` layers into at most [`GROUPS`] groups
/// of near-equal size.
fn groups(n: usize) -> Vec<std::ops::Range<usize>> {
    let g = GROUPS.clamp(1, n.max(1));
    (0..g)
        .map(|k| k * n / g..(k + 1) * n / g)
        .filter(|r| !r.is_empty())
        .collect()
}

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

/// The per-channel correction from each batch's per-channel mean shift:
/// the mean over batches where it differs from zero by more than
/// [`T_THRESHOLD`] standard errors (batches are the independent units;
/// values inside one are correlated), zero elsewhere; `None` with fewer
/// than two batches or no significant channel. A shift estimated from few
/// values (a squeeze-excite layer's 1x1 output) is mostly noise, and
/// correcting noise costs accuracy on other samples.
fn significant_shift(per_batch: &[Vec<f64>]) -> Option<Vec<f64>> {
    let n = per_batch.len();
    if n < 2 {
        return None;
    }
    let c = per_batch[0].len();
    let mut out = vec![0f64; c];
    let mut any = false;
    for (ch, o) in out.iter_mut().enumerate() {
        let mean = per_batch.iter().map(|b| b[ch]).sum::<f64>() / n as f64;
        let var = per_batch
            .iter()
            .map(|b| (b[ch] - mean).powi(2))
            .sum::<f64>()
            / (n - 1) as f64;
        let se = (var / n as f64).sqrt();
        if mean.abs() > T_THRESHOLD * se {
            *o = mean;
            any = true;
        }
    }
    any.then_some(out)
}

/// How many standard errors a channel's mean shift must exceed to be
/// corrected.
const T_THRESHOLD: f64 = 3.0;

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
    let twin_of = |float: &Model| -> Result<Model> {
        let mut q = float.clone();
        let mut cx = PassCx::new(opset);
        crate::phases::quantize_phase(&mut q, plan, ranges, cfg, opset, &mut cx)?;
        quench_passes::simulate::float_twin_pairs(&mut q.graph, opset);
        Ok(q)
    };
    let before = judge(&twin_of(float)?.to_onnx())?;
    let mut max_rel = 0f64;
    // Layers are corrected a group at a time in graph order, each group
    // measured with every earlier correction in place (Gauss-Seidel):
    // correcting all layers at once from one measurement corrects each
    // layer also for the shift its inputs carried, which the earlier
    // layers' corrections remove, and over tens of layers that
    // overcorrection grows instead of settling.
    let groups = groups(ls.len());
    for range in groups {
        let twin = twin_of(float)?;
        let group = &ls[range.clone()];
        let exposed: Vec<Option<String>> =
            group.iter().map(|l| twin_output(&twin, &l.node)).collect();
        let tw = Runners::new(&twin.to_onnx(), exposed.iter().flatten().cloned().collect());
        let tw_out = eval.outputs(&tw, "the float twin with its layer outputs exposed")?;
        // Per layer: each batch's per-channel mean shift, and its RMS.
        let mut seen: Vec<(Vec<Vec<f64>>, f64)> = vec![(Vec::new(), 0.0); group.len()];
        for (a, b) in fp_out.batches().iter().zip(tw_out.batches()) {
            let mut j = 0;
            for (i, l) in group.iter().enumerate() {
                let Some(_) = &exposed[i] else { continue };
                let (x, y) = (b[n_out + j].to_f32(), a[n_out + range.start + i].to_f32());
                j += 1;
                if let Some((s, rms)) = channel_shift(&x, &y, l.axis) {
                    let e = &mut seen[i];
                    if e.0.first().is_none_or(|f| f.len() == s.len()) {
                        e.0.push(s);
                        e.1 += rms;
                    }
                }
            }
        }
        for (l, (per_batch, rms_sum)) in group.iter().zip(&seen) {
            let Some(shift) = significant_shift(per_batch) else {
                continue;
            };
            let rms = rms_sum / per_batch.len() as f64;
            let Some(v) = float.graph.value_by_name(&l.bias) else {
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
            for (bv, sv) in b.iter_mut().zip(&shift) {
                *bv -= *sv as f32;
                if rms > 0.0 {
                    max_rel = max_rel.max(sv.abs() / rms);
                }
            }
            let dims = t.dims.clone();
            float
                .graph
                .replace_const(v, tensor::from_f32(&l.bias, &dims, &b));
        }
    }
    let after = judge(&twin_of(float)?.to_onnx())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_the_layers_in_order_one_each_up_to_the_limit() {
        assert_eq!(groups(3), vec![0..1, 1..2, 2..3]);
        assert!(groups(0).is_empty());
        let g = groups(3 * GROUPS + 1);
        assert_eq!(g.len(), GROUPS);
        assert_eq!(g[0].start, 0);
        assert_eq!(g.last().unwrap().end, 3 * GROUPS + 1);
        assert!(g.windows(2).all(|w| w[0].end == w[1].start));
        assert!(g.iter().all(|r| r.len() == 3 || r.len() == 4));
    }

    #[test]
    fn only_shifts_beyond_three_standard_errors_are_corrected() {
        // Channel 0: mean 1.0, spread 0.1 over 4 batches (t = 1/(0.0816)
        // ~ 24): corrected. Channel 1: mean 0.05, values +-1 (t ~ 0.09):
        // noise, left at 0.
        let b = vec![
            vec![1.1, 1.05],
            vec![0.9, -0.95],
            vec![1.1, 1.05],
            vec![0.9, -0.95],
        ];
        let s = significant_shift(&b).unwrap();
        assert!((s[0] - 1.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s[1], 0.0);
        // Nothing significant, or one batch only: no correction.
        assert!(significant_shift(&[vec![0.1], vec![-0.1], vec![0.12]]).is_none());
        assert!(significant_shift(&[vec![5.0]]).is_none());
        // Exactly constant nonzero shift (zero spread) is significant.
        assert_eq!(
            significant_shift(&[vec![0.5], vec![0.5]]).unwrap(),
            vec![0.5]
        );
    }
}
