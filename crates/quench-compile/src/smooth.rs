//! SmoothQuant (`--smooth-quant`): move activation outlier channels into
//! the weights for MatMuls fed by a LayerNormalization.
//!
//! Transformer activations after a normalization often have a few channels
//! 10-100x larger than the rest; one per-tensor activation scale then wastes
//! most of its levels. For a LayerNormalization L whose output X feeds only
//! MatMuls with constant 2-D weights W (`[K, N]`, X's last axis is K),
//! dividing L's scale and bias by `s_j` and multiplying row j of every W by
//! `s_j` leaves the model's function unchanged (Xiao et al., "SmoothQuant",
//! 2023), with `s_j = max|X_j|^a / max|W_j|^(1-a)`. A normalization written
//! out in elementary ops (exports below opset 17) is one too: its scale
//! and bias are the final `Mul` and `Add` constants ([`normalization`]).
//!
//! `a` is searched in {0.25, 0.5, 0.75} and "no change": each candidate is
//! quantized with only the normalization outputs (and the weights) given
//! ranges, and its float twin measured against FP32 on up to [`SAMPLES`]
//! calibration samples; the best output SQNR wins (the other activations'
//! errors, which `--method auto` may yet leave float, would hide the
//! trade: MiniLM's candidates read 4.65 and 4.84 dB fully quantized, 18.51
//! and 27.32 so). X's calibrated range is
//! recomputed exactly from per-channel minima and maxima observed over every
//! calibration sample (`min_j x_j / s_j`, `max_j x_j / s_j`); every other
//! range is unchanged, since the MatMul outputs are.
//!
//! Invariant: the FP32 function is unchanged up to f32 rounding; only L's
//! scale and bias, the MatMul weights and X's range change.

use anyhow::Result;
use quench_ir::{tensor, Model, OpKind, ValueId};
use quench_passes::quantize::{Plan, QuantizeConfig, Ranges};
use quench_passes::PassCx;
use quench_verify::{Evaluator, Runners, Subject};
use serde::Serialize;

use crate::data::Bound;

/// Samples each candidate is measured on.
pub const SAMPLES: usize = 16;
/// Migration strengths tried with `--smooth-quant` (0 = unchanged is
/// always a candidate).
pub const ALPHAS: [f64; 3] = [0.25, 0.5, 0.75];
/// The strength tried by default (SmoothQuant's own default): one twin
/// build instead of three (MiniLM: the three scored within 0.3 dB of each
/// other, about 8 s each).
pub const DEFAULT_ALPHAS: [f64; 1] = [0.5];

/// What SmoothQuant did.
#[derive(Debug, Clone, Serialize)]
pub struct SmoothReport {
    /// Normalizations whose outputs were smoothed.
    pub sites: Vec<String>,
    /// The tensors the MatMuls read once smoothed (each normalization's
    /// output, or the inserted rescale's): their ranges are the exact
    /// smoothed ones, and calibration statistics of them (taken before)
    /// no longer apply.
    pub tensors: Vec<String>,
    /// The normalization outputs left float because a rescale was
    /// inserted after them (their range removed; empty when nothing
    /// changed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_float: Vec<String>,
    /// The chosen strength (0: nothing changed).
    pub alpha: f64,
    /// Output SQNR (dB) on the search samples per candidate `(alpha, dB)`,
    /// each with only the normalization outputs (and the weights)
    /// quantized.
    pub candidates: Vec<(f64, f64)>,
}

/// A LayerNormalization whose output feeds MatMuls with own 2-D constant
/// weights: only them (its scale and bias are divided), or also other
/// nodes, such as a transformer's residual Add (a `Mul` by `1/s` is
/// inserted before the MatMuls; the normalization and its other
/// consumers are unchanged).
pub struct Site {
    /// The normalization's name once smoothed: with a rescale inserted it
    /// is kept float by name ([`QuantizeConfig::keep_float`]), so an
    /// unnamed node, or one whose name another node shares, gets a new
    /// unique name (an empty name would match every unnamed node).
    pub norm: String,
    node: quench_ir::NodeId,
    scale: ValueId,
    bias: Option<ValueId>,
    x: String,
    /// The tensor the MatMuls read once smoothed: X, or the inserted
    /// rescale's output (a name no tensor of the graph has).
    smoothed: String,
    weights: Vec<ValueId>,
    /// The MatMuls reading X (input 0), when X has other consumers: they
    /// read the inserted rescale instead.
    insert: Option<Vec<quench_ir::NodeId>>,
}

impl Site {
    /// The tensor the MatMuls read once `s` is applied (X, or the inserted
    /// rescale's output).
    pub fn smoothed(&self) -> String {
        self.smoothed.clone()
    }
}

/// Why a normalization rescaled through an inserted `Mul` stays float.
pub const KEEP_FLOAT_REASON: &str =
    "SmoothQuant rescales its output before the MatMuls (quantizing it would undo that)";

/// Whether `v` is computed by a normalization written out in elementary
/// ops: a `Div` or `Mul` whose inputs reach, through at most
/// [`WRITTEN_OUT_DEPTH`] elementwise ops, a `ReduceMean` over the last
/// axis (a LayerNorm's `(x - mean) / sqrt(var + eps)`, an RMSNorm's
/// `x * 1/sqrt(mean(x^2) + eps)`, as exporters at opset < 17 write them),
/// possibly behind `Cast`s to a float type (LLaMA's RMSNorm computes in
/// float32 and casts back: `weight * (x * rsqrt(...)).to(dtype)`).
fn normalized(g: &quench_ir::Graph, v: ValueId) -> bool {
    let mut v = v;
    for _ in 0..2 {
        match g.producer(v) {
            Some(c) if float_cast(g, c) => match g.node(c).input(0) {
                Some(i) => v = i,
                None => return false,
            },
            _ => break,
        }
    }
    let Some(p) = g.producer(v) else {
        return false;
    };
    if !g.node(p).domain().is_empty() || !matches!(g.node(p).op_type(), "Div" | "Mul") {
        return false;
    }
    let mut frontier = vec![p];
    for _ in 0..WRITTEN_OUT_DEPTH {
        let mut next = Vec::new();
        for n in frontier {
            for i in g.node(n).inputs().iter().flatten() {
                let Some(q) = g.producer(*i) else { continue };
                let node = g.node(q);
                if !node.domain().is_empty() {
                    continue;
                }
                match node.op_type() {
                    "ReduceMean" => {
                        // The axes as an attribute (opset < 18) or a
                        // constant input; only the last axis normalizes
                        // a token's channels.
                        let axes: Option<Vec<i64>> =
                            node.attr_ints("axes").map(<[i64]>::to_vec).or_else(|| {
                                let t = g.const_tensor(node.input(1)?)?;
                                tensor::to_i64(t).ok()
                            });
                        let rank = node
                            .input(0)
                            .and_then(|v| g.value(v).shape())
                            .map(|s| s.len() as i64);
                        let last = axes
                            .as_deref()
                            .is_some_and(|a| a == [-1] || rank.is_some_and(|r| a == [r - 1]));
                        if last && node.attr_int("keepdims").unwrap_or(1) == 1 {
                            return true;
                        }
                    }
                    "Sub" | "Add" | "Mul" | "Div" | "Pow" | "Sqrt" | "Reciprocal" => next.push(q),
                    _ => {}
                }
            }
        }
        frontier = next;
    }
    false
}

/// Whether node `n` is a default-domain `Cast` to a float type (float32,
/// float16, bfloat16 or double): the same values, for matching.
fn float_cast(g: &quench_ir::Graph, n: quench_ir::NodeId) -> bool {
    let node = g.node(n);
    node.domain().is_empty()
        && node.op_type() == "Cast"
        && node
            .attr_int("to")
            .is_some_and(|t| matches!(t, 1 | 10 | 11 | 16))
}

/// How far [`normalized`] looks up from the division (LayerNorm's
/// `Div <- Sqrt <- Add(eps) <- ReduceMean`: 3 ops; its `Sub <- ReduceMean`
/// is found at 1).
const WRITTEN_OUT_DEPTH: usize = 4;

/// The normalization at node `n`, as `(output X, scale, bias)`: a
/// `LayerNormalization` over the last axis, or one written out, whose
/// site is the final `Add` of `Mul(normalized, scale) + bias` (or that
/// `Mul` without a bias), the scale and bias constant (their shapes are
/// checked by the caller).
pub(crate) fn normalization(
    g: &quench_ir::Graph,
    n: quench_ir::NodeId,
) -> Option<(ValueId, ValueId, Option<ValueId>)> {
    let node = g.node(n);
    if node.outputs().iter().flatten().count() != 1 || !node.domain().is_empty() {
        return None;
    }
    let x = node.output(0)?;
    // `Mul(z, c)` or `Mul(c, z)` with z normalized and c constant:
    // (z, c), the constant being the scale or the bias.
    let split = |n: quench_ir::NodeId| -> Option<(ValueId, ValueId)> {
        let node = g.node(n);
        let (a, b) = (node.input(0)?, node.input(1)?);
        match (g.const_tensor(a).is_some(), g.const_tensor(b).is_some()) {
            (false, true) => Some((a, b)),
            (true, false) => Some((b, a)),
            _ => None,
        }
    };
    match node.op_type() {
        "LayerNormalization" => {
            if node.attr_int("axis").unwrap_or(-1) != -1 {
                return None;
            }
            Some((x, node.input(1)?, node.input(2)))
        }
        "Add" => {
            let (m, bias) = split(n)?;
            let p = g.producer(m)?;
            if g.node(p).op_type() != "Mul"
                || !g.node(p).domain().is_empty()
                || g.use_count(m) != 1
                || g.is_graph_output(m)
            {
                return None;
            }
            let (z, scale) = split(p)?;
            normalized(g, z).then_some((x, scale, Some(bias)))
        }
        "Mul" => {
            let (z, scale) = split(n)?;
            // A Mul whose only reader adds a constant is that Add's
            // scale (the Add is the site).
            let into_bias = g.use_count(x) == 1
                && !g.is_graph_output(x)
                && g.uses(x)
                    .first()
                    .is_some_and(|u| g.node(u.node).op_type() == "Add" && split(u.node).is_some());
            (!into_bias && normalized(g, z)).then_some((x, scale, None))
        }
        _ => None,
    }
}

/// Outputs of the normalizations written out in elementary ops that
/// MatMuls read: the Gemm rewrite leaves those MatMuls for SmoothQuant,
/// as it leaves a LayerNormalization's.
pub(crate) fn written_out_outputs(g: &quench_ir::Graph) -> Vec<String> {
    g.node_ids()
        .into_iter()
        .filter(|&n| g.node(n).kind() != OpKind::LayerNormalization)
        .filter_map(|n| normalization(g, n))
        .filter(|(x, _, _)| {
            g.uses(*x)
                .iter()
                .any(|u| u.index == 0 && g.node(u.node).kind() == OpKind::MatMul)
        })
        .map(|(x, _, _)| g.value(x).name.clone())
        .collect()
}

/// The places SmoothQuant can act on: normalization outputs (the op, or
/// one written out in elementary ops, [`normalization`]) with a calibrated
/// range.
pub fn sites(m: &Model, ranges: &Ranges) -> Vec<Site> {
    let g = &m.graph;
    g.node_ids()
        .into_iter()
        .filter_map(|n| {
            let node = g.node(n);
            let (x, scale, bias) = normalization(g, n)?;
            if g.is_captured(x) || !ranges.contains_key(&g.value(x).name) {
                return None;
            }
            let own = |v: ValueId| g.const_tensor(v).is_some() && g.use_count(v) == 1;
            // f32 only: the rescaled constants are written as f32 (an f16
            // model keeps its normalizations as they are).
            let f32_type = quench_onnx::proto::tensor_proto::DataType::Float as i32;
            if g.value(x).elem_type().is_some_and(|t| t != f32_type) {
                return None;
            }
            // Channels: X's last axis, as the MatMul weights' rows count
            // them (the first decides; the others must agree).
            let k = g
                .uses(x)
                .iter()
                .filter(|u| u.index == 0 && g.node(u.node).kind() == OpKind::MatMul)
                .find_map(|u| {
                    let t = g.const_tensor(g.node(u.node).input(1)?)?;
                    (t.dims.len() == 2).then_some(t.dims[0])
                })?;
            if let Some(quench_ir::Dim::Known(last)) =
                g.value(x).shape().and_then(|s| s.last().cloned())
            {
                if last != k {
                    return None;
                }
            }
            let mut weights = Vec::new();
            let mut readers = Vec::new();
            let mut others = g.is_graph_output(x);
            for u in g.uses(x) {
                let c = g.node(u.node);
                let w = c.input(1).filter(|w| own(*w));
                let t = w.and_then(|w| g.const_tensor(w));
                match (w, t) {
                    (Some(w), Some(t))
                        if c.kind() == OpKind::MatMul
                            && u.index == 0
                            && t.dims.len() == 2
                            && t.dims[0] == k
                            && t.data_type() == f32_type =>
                    {
                        weights.push(w);
                        readers.push(u.node);
                    }
                    _ => others = true,
                }
            }
            // Folding into the scale and bias needs both to be the
            // normalization's own, one value per channel (a broadcast [1]
            // bias would be left as it is, changing the function).
            let per_channel = |v: ValueId| {
                g.const_tensor(v)
                    .is_some_and(|t| t.dims == [k] && t.data_type() == f32_type)
            };
            let foldable =
                own(scale) && per_channel(scale) && bias.is_none_or(|b| own(b) && per_channel(b));
            let insert = if others || !foldable {
                Some(readers)
            } else {
                None
            };
            if weights.is_empty() {
                return None;
            }
            let x_name = g.value(x).name.clone();
            let (norm, smoothed) = match insert {
                Some(_) => {
                    let name = node.name();
                    let shared = name.is_empty()
                        || g.node_ids()
                            .into_iter()
                            .filter(|m| g.node(*m).name() == name)
                            .count()
                            > 1;
                    let norm = if shared {
                        g.unique_name(&format!("{x_name}_norm"))
                    } else {
                        name.to_string()
                    };
                    (norm, g.unique_name(&format!("{x_name}_smoothed")))
                }
                None => (node.name().to_string(), x_name.clone()),
            };
            Some(Site {
                norm,
                node: n,
                scale,
                bias,
                x: x_name,
                smoothed,
                weights,
                insert,
            })
        })
        .collect()
}

/// Per-channel (last axis) minima and maxima of the exposed tensors over
/// every sample of `data`.
fn channel_ranges(
    float: &Model,
    names: &[String],
    data: &Bound,
) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let proto = float.to_onnx();
    let n_out = quench_verify::output_names(&proto).len();
    let runners = Runners::new(&proto, names.to_vec());
    let eval = Evaluator::new(&data.data, data.feed, quench_verify::input_names(&proto));
    let outs = eval.outputs(
        &runners,
        "the float model with normalization outputs exposed",
    )?;
    let mut acc: Vec<(Vec<f32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); names.len()];
    for batch in outs.batches() {
        for (i, a) in acc.iter_mut().enumerate() {
            let Some(t) = batch.get(n_out + i) else {
                continue;
            };
            let t = t.to_f32();
            let k = *t.shape().last().unwrap_or(&0);
            if k == 0 {
                continue;
            }
            if a.0.is_empty() {
                *a = (vec![f32::INFINITY; k], vec![f32::NEG_INFINITY; k]);
            }
            for (j, v) in t.iter().enumerate() {
                let c = j % k;
                if c < a.0.len() && v.is_finite() {
                    a.0[c] = a.0[c].min(*v);
                    a.1[c] = a.1[c].max(*v);
                }
            }
        }
    }
    Ok(acc)
}

/// `float` with `s` applied at `site` (scale and bias divided, or a `Mul`
/// by `1/s` inserted before the MatMuls; weight rows multiplied).
pub fn apply(float: &mut Model, site: &Site, s: &[f64]) {
    let g = &mut float.graph;
    if let Some(readers) = &site.insert {
        // The name it is kept float by (see [`Site::norm`]).
        if g.contains_node(site.node) && g.node(site.node).name() != site.norm {
            let mut node = g.remove_node(site.node);
            let (ins, outs) = (node.inputs().to_vec(), node.outputs().to_vec());
            node.proto.name = Some(site.norm.clone());
            g.add_node(node, &ins, &outs);
        }
        if let Some(x) = g.value_by_name(&site.x) {
            let inv: Vec<f32> = s.iter().map(|k| (1.0 / k) as f32).collect();
            let c = g.add_const(
                &g.unique_name(&format!("{}_smooth_inv", site.x)),
                tensor::from_f32("", &[inv.len() as i64], &inv),
            );
            let name = site.smoothed();
            let node = quench_ir::Node::new("Mul", &g.unique_name(&format!("{}_smooth", site.x)));
            let (_, out) = g.add_op(node, &[x, c], &[&name]);
            for &r in readers {
                g.set_input(r, 0, Some(out[0]));
            }
        }
    }
    let div = |g: &mut quench_ir::Graph, v: ValueId| {
        let Some(t) = g.const_tensor(v) else { return };
        let Ok(mut d) = tensor::to_f32(t) else { return };
        if d.len() != s.len() {
            return;
        }
        for (x, k) in d.iter_mut().zip(s) {
            *x = (f64::from(*x) / k) as f32;
        }
        let (name, dims) = (g.value(v).name.clone(), t.dims.clone());
        g.replace_const(v, tensor::from_f32(&name, &dims, &d));
    };
    if site.insert.is_none() {
        div(g, site.scale);
        if let Some(b) = site.bias {
            div(g, b);
        }
    }
    for &w in &site.weights {
        let Some(t) = g.const_tensor(w) else { continue };
        let Ok(mut d) = tensor::to_f32(t) else {
            continue;
        };
        let n = t.dims[1] as usize;
        for (j, row) in d.chunks_mut(n.max(1)).enumerate() {
            let k = s.get(j).copied().unwrap_or(1.0);
            for x in row {
                *x = (f64::from(*x) * k) as f32;
            }
        }
        let (name, dims) = (g.value(w).name.clone(), t.dims.clone());
        g.replace_const(w, tensor::from_f32(&name, &dims, &d));
    }
}

/// Searches the strength and applies the best (see the module docs);
/// `float` and `ranges` are changed in place. `None`: no site.
pub fn smooth(
    float: &mut Model,
    original: &quench_onnx::proto::ModelProto,
    plan: &mut Plan,
    ranges: &mut Ranges,
    cfg: &mut QuantizeConfig,
    opset: i64,
    data: &Bound,
    alphas: &[f64],
) -> Result<Option<SmoothReport>> {
    let ss = sites(float, ranges);
    if ss.is_empty() {
        return Ok(None);
    }
    let xr = channel_ranges(
        float,
        &ss.iter().map(|s| s.x.clone()).collect::<Vec<_>>(),
        data,
    )?;
    let rows: Vec<usize> = (0..data.data.samples().min(SAMPLES)).collect();
    let sub = data.data.pick(&rows);
    let eval = Evaluator::new(&sub, data.feed, quench_verify::input_names(original));
    let outputs = quench_verify::output_names(original).len();
    let reference = eval.outputs(&Runners::new(original, vec![]), "the FP32 model")?;
    // With a rescale inserted, the normalization's output stays float and
    // the plan is made again for the new graph.
    let mut smoothed_cfg = cfg.clone();
    for site in &ss {
        if site.insert.is_some() {
            smoothed_cfg
                .keep_float
                .push((site.norm.clone(), KEEP_FLOAT_REASON.to_string()));
        }
    }
    let inserts = ss.iter().any(|s| s.insert.is_some());
    // Each candidate is judged with only the normalization outputs (and
    // the weights) quantized: what SmoothQuant trades is their rounding
    // against the scaled weights', and the other activations' errors,
    // which the range search may yet leave float, would hide it.
    let site_tensors: std::collections::HashSet<String> = ss
        .iter()
        .flat_map(|s| [s.x.clone(), s.smoothed()])
        .collect();
    let score = |m: &Model, r: &Ranges, smoothed: bool| -> Result<f64> {
        let r: Ranges = r
            .iter()
            .filter(|(k, _)| site_tensors.contains(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let r = &r;
        let mut q = m.clone();
        let mut cx = PassCx::new(opset);
        let (p, c) = if smoothed && inserts {
            (
                quench_passes::quantize::plan(&m.graph, &smoothed_cfg)?,
                &smoothed_cfg,
            )
        } else {
            (plan.clone(), &*cfg)
        };
        crate::phases::quantize_phase(&mut q, &p, r, c, opset, &mut cx)?;
        quench_passes::simulate::float_twin_pairs(&mut q.graph, opset);
        let tw = Runners::new(&q.to_onnx(), vec![]);
        let f = eval
            .compare(
                &[
                    Subject::Cached(&reference),
                    Subject::Required(&tw, "a smoothed twin"),
                ],
                &[(0, 1)],
                outputs,
            )?
            .remove(0);
        let m = f.outputs.map_err(anyhow::Error::msg)?;
        Ok(m.iter().map(|m| m.sqnr_db).fold(f64::INFINITY, f64::min))
    };
    let candidate = |alpha: f64| -> (Model, Ranges) {
        let mut m = float.clone();
        let mut r = ranges.clone();
        for (site, (lo, hi)) in ss.iter().zip(&xr) {
            if lo.is_empty() {
                continue;
            }
            let g = &m.graph;
            let wmax: Vec<f64> = (0..lo.len())
                .map(|j| {
                    site.weights
                        .iter()
                        .filter_map(|w| {
                            let t = g.const_tensor(*w)?;
                            let d = tensor::to_f32(t).ok()?;
                            let n = t.dims[1] as usize;
                            d.get(j * n..(j + 1) * n)
                                .map(|row| row.iter().fold(0f64, |a, v| a.max(f64::from(v.abs()))))
                        })
                        .fold(0f64, f64::max)
                })
                .collect();
            let s: Vec<f64> = (0..lo.len())
                .map(|j| {
                    let xm = f64::from(lo[j].abs().max(hi[j].abs()));
                    if xm > 0.0 && wmax[j] > 0.0 {
                        (xm.powf(alpha) / wmax[j].powf(1.0 - alpha)).clamp(1e-5, 1e5)
                    } else {
                        1.0
                    }
                })
                .collect();
            apply(&mut m, site, &s);
            // The smoothed X's range, exactly, from the per-channel ones.
            let nlo = lo
                .iter()
                .zip(&s)
                .map(|(v, k)| (f64::from(*v) / k) as f32)
                .fold(f32::INFINITY, f32::min);
            let nhi = hi
                .iter()
                .zip(&s)
                .map(|(v, k)| (f64::from(*v) / k) as f32)
                .fold(f32::NEG_INFINITY, f32::max);
            if nlo.is_finite() && nhi.is_finite() {
                r.insert(site.smoothed(), (nlo.min(0.0), nhi.max(0.0)));
            }
            if site.insert.is_some() {
                // X itself stays float: its consumers other than the
                // MatMuls (a residual Add) would quantize it, outliers and
                // all, and the rescale would read the rounded values.
                r.remove(&site.x);
            }
        }
        (m, r)
    };
    let mut candidates = vec![(0.0, score(float, ranges, false)?)];
    let mut best: Option<(f64, f64, Model, Ranges)> = None;
    for &a in alphas {
        let (m, r) = candidate(a);
        let db = score(&m, &r, true)?;
        candidates.push((a, db));
        if db > candidates[0].1 && best.as_ref().is_none_or(|b| db > b.1) {
            best = Some((a, db, m, r));
        }
    }
    let alpha = match best {
        Some((a, _, m, r)) => {
            *float = m;
            *ranges = r;
            if inserts {
                *cfg = smoothed_cfg;
                *plan = quench_passes::quantize::plan(&float.graph, cfg)?;
            }
            a
        }
        None => 0.0,
    };
    Ok(Some(SmoothReport {
        sites: ss.iter().map(|s| s.norm.clone()).collect(),
        tensors: if alpha > 0.0 {
            ss.iter().map(Site::smoothed).collect()
        } else {
            Vec::new()
        },
        kept_float: if alpha > 0.0 {
            ss.iter()
                .filter(|s| s.insert.is_some())
                .map(|s| s.x.clone())
                .collect()
        } else {
            Vec::new()
        },
        alpha,
        candidates,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quench_ir::Graph;

    /// `crate::test_graph::graph` with [4] constants.
    fn graph(ops: &[(&str, &[&str], &str)], consts: &[&str], axes: i64) -> Graph {
        crate::test_graph::graph(ops, consts, 4, axes)
    }

    /// The normalization sites' outputs, with their scale and bias names.
    fn found(g: &Graph) -> Vec<(String, String, Option<String>)> {
        let name = |v: ValueId| g.value(v).name.clone();
        g.node_ids()
            .into_iter()
            .filter_map(|n| normalization(g, n))
            .map(|(x, s, b)| (name(x), name(s), b.map(name)))
            .collect()
    }

    #[test]
    fn a_written_out_layer_norm_is_found_at_its_bias_add() {
        // PyTorch's opset-14 LayerNorm, then a GELU-like Mul and an Add of
        // a constant that no normalization produces.
        let ops: &[(&str, &[&str], &str)] = &[
            ("ReduceMean", &["x"], "mean"),
            ("Sub", &["x", "mean"], "d"),
            ("Pow", &["d", "two"], "d2"),
            ("ReduceMean", &["d2"], "var"),
            ("Add", &["var", "eps"], "ve"),
            ("Sqrt", &["ve"], "std"),
            ("Div", &["d", "std"], "z"),
            ("Mul", &["z", "gamma"], "zs"),
            ("Add", &["beta", "zs"], "ln"),
            ("MatMul", &["ln", "w"], "h"),
            ("Mul", &["h", "half"], "hh"),
            ("Add", &["hh", "c"], "out"),
        ];
        let consts = ["two", "eps", "gamma", "beta", "w", "half", "c"];
        let g = graph(ops, &consts, -1);
        assert_eq!(
            found(&g),
            vec![(
                "ln".to_string(),
                "gamma".to_string(),
                Some("beta".to_string())
            )]
        );
        // Over another axis than the last it normalizes no token's channels.
        assert!(found(&graph(ops, &consts, 1)).is_empty());
        // Its MatMul is left for SmoothQuant by the Gemm rewrite.
        assert_eq!(written_out_outputs(&g), vec!["ln".to_string()]);
        assert!(written_out_outputs(&graph(ops, &consts, 1)).is_empty());
    }

    #[test]
    fn an_rms_norm_without_bias_is_found_at_its_scale() {
        // x * 1/sqrt(mean(x^2) + eps) * gamma (LLaMA's RMSNorm).
        let g = graph(
            &[
                ("Pow", &["x", "two"], "x2"),
                ("ReduceMean", &["x2"], "ms"),
                ("Add", &["ms", "eps"], "mse"),
                ("Sqrt", &["mse"], "rms"),
                ("Reciprocal", &["rms"], "inv"),
                ("Mul", &["x", "inv"], "z"),
                ("Mul", &["gamma", "z"], "y"),
                ("MatMul", &["y", "w"], "h"),
            ],
            &["two", "eps", "gamma", "w"],
            -1,
        );
        assert_eq!(
            found(&g),
            vec![("y".to_string(), "gamma".to_string(), None)]
        );
    }

    #[test]
    fn an_rms_norm_behind_casts_is_found_too() {
        // LLaMA's RMSNorm as exported: computed in float32 and cast back,
        // `weight * (x * rsqrt(mean(x^2) + eps)).to(dtype)`.
        let ops: &[(&str, &[&str], &str)] = &[
            ("Cast", &["x"], "xf"),
            ("Pow", &["xf", "two"], "x2"),
            ("ReduceMean", &["x2"], "ms"),
            ("Add", &["ms", "eps"], "mse"),
            ("Sqrt", &["mse"], "rms"),
            ("Reciprocal", &["rms"], "inv"),
            ("Mul", &["xf", "inv"], "z"),
            ("Cast", &["z"], "zc"),
            ("Mul", &["gamma", "zc"], "y"),
            ("MatMul", &["y", "w"], "h"),
        ];
        let consts = ["two", "eps", "gamma", "w"];
        let g = graph(ops, &consts, -1);
        assert_eq!(
            found(&g),
            vec![("y".to_string(), "gamma".to_string(), None)]
        );
        assert_eq!(written_out_outputs(&g), vec!["y".to_string()]);
        // A Cast to an integer type is no normalization's.
        let mut g = graph(ops, &consts, -1);
        let c = g
            .node_ids()
            .into_iter()
            .find(|n| g.node(*n).name() == "zc")
            .unwrap();
        g.node_proto_mut(c).set_attr(quench_ir::attr::int("to", 7));
        assert!(found(&g).is_empty());
    }
}
