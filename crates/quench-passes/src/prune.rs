//! `prune`: magnitude pruning of constant weights (Conv, ConvTranspose,
//! Gemm, MatMul), unstructured or N:M structured.
//!
//! Three steps, each usable on its own:
//!
//! 1. [`layers`] lists every compute node whose weight (input 1) is a
//!    constant f32 tensor, with the axis of its reduction dimension and, when
//!    it is left alone, why. By default the first and last compute layers
//!    (no compute node before, resp. after them; they carry the most
//!    information per weight), depthwise convolutions (one input channel per
//!    group: nothing to share the loss with), and layers with fewer than
//!    [`DEFAULT_MIN_WEIGHTS`] weights (little to gain) are left alone;
//!    [`PruneConfig::all_layers`] lifts these four rules. Names in
//!    [`PruneConfig::exclude`] (node or weight names) and weights shared by
//!    several uses are always left alone.
//! 2. [`prune`] zeroes weights by a [`Schedule`]:
//!    - [`Schedule::Layer`]: the same fraction of every layer, its smallest
//!      magnitudes;
//!    - [`Schedule::Global`]: one threshold over all layers on magnitudes
//!      divided by each layer's [`Norm`] (RMS by default), so a layer of
//!      small weights is not emptied just because its scale is small;
//!    - [`Schedule::PerLayer`]: fractions chosen per layer (by
//!      [`plan_sensitivity`] from measured output SQNR);
//!    - [`Schedule::NM`]: in every group of `m` consecutive weights along the
//!      reduction dimension (the input channels of a Conv weight
//!      `[M, C/g, kh, kw]` at each `(out, kh, kw)`, the `C/g` input channels
//!      of a ConvTranspose weight `[C, M/g, kh, kw]`, `K` of a Gemm/MatMul
//!      weight), the `n` largest magnitudes stay: the pattern sparse tensor
//!      cores run (2:4). Layers whose reduction length is not a multiple of
//!      `m` are skipped and reported.
//! 3. [`PruneSummary::table`] prints sparsity per layer and overall.
//!
//! Invariant: counts are exact and deterministic. A fraction `s` of a layer
//! of `n` weights zeroes `round(s·n)` weights; magnitude ties are broken by
//! position (the earlier weight is pruned first), and the global threshold
//! hands out weights tied at the threshold in layer order. Pruning only ever
//! writes `0.0` into a weight tensor of the same shape and type: the graph's
//! structure does not change, and weights already zero stay zero.
//! Symmetric int8 weight quantization (zero point 0) maps `0.0` to `0`
//! exactly, so the zeros survive quantization.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use quench_ir::{tensor, Graph, NodeId, OpKind, ValueId};
use quench_onnx::proto::tensor_proto::DataType;
use serde::{Deserialize, Serialize};

use crate::{Changed, Pass, PassCx, PassError};

/// Layers with fewer weights than this are left alone by default.
pub const DEFAULT_MIN_WEIGHTS: usize = 1024;

/// What to prune to: a sparsity fraction or an N:M pattern.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PruneTarget {
    /// This fraction of the weights (in `(0, 1)`) becomes zero.
    Unstructured { sparsity: f64 },
    /// `n` of every `m` consecutive weights along the reduction dimension
    /// stay; the others become zero.
    NM { n: usize, m: usize },
}

impl PruneTarget {
    /// The fraction of weights this target zeroes.
    pub fn sparsity(self) -> f64 {
        match self {
            PruneTarget::Unstructured { sparsity } => sparsity,
            PruneTarget::NM { n, m } => 1.0 - n as f64 / m as f64,
        }
    }
}

impl FromStr for PruneTarget {
    type Err = String;

    /// `0.5`, `50%` (unstructured) or `2:4` (N:M).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((n, m)) = s.split_once(':') {
            let parse = |x: &str| x.trim().parse::<usize>().ok();
            return match (parse(n), parse(m)) {
                (Some(n), Some(m)) if n >= 1 && n < m => Ok(PruneTarget::NM { n, m }),
                _ => Err(format!(
                    "`{s}`: an N:M pattern needs integers 1 <= N < M (e.g. 2:4)"
                )),
            };
        }
        let (num, scale) = match s.strip_suffix('%') {
            Some(p) => (p, 0.01),
            None => (s, 1.0),
        };
        match num.trim().parse::<f64>() {
            Ok(x) if (x * scale) > 0.0 && (x * scale) < 1.0 => Ok(PruneTarget::Unstructured {
                sparsity: x * scale,
            }),
            _ => Err(format!(
                "`{s}`: expected a sparsity in (0, 1) such as 0.5 or 50%, or an N:M pattern such as 2:4"
            )),
        }
    }
}

impl fmt::Display for PruneTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruneTarget::Unstructured { sparsity } => {
                write!(f, "{} unstructured", percent(*sparsity))
            }
            PruneTarget::NM { n, m } => write!(f, "{n}:{m} structured"),
        }
    }
}

/// What a layer's magnitudes are divided by before the global threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// Root mean square of the layer's weights.
    #[default]
    Rms,
    /// Largest magnitude of the layer.
    MaxAbs,
    /// Raw magnitudes (one threshold for all: small-scale layers empty first).
    None,
}

/// Which layers may be pruned.
#[derive(Debug, Clone, Serialize)]
pub struct PruneConfig {
    /// Also prune the first and last compute layers, depthwise convolutions
    /// and small layers.
    pub all_layers: bool,
    /// Node or weight names never pruned.
    pub exclude: Vec<String>,
    /// Layers with fewer weights are left alone (unless `all_layers`).
    pub min_weights: usize,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            all_layers: false,
            exclude: Vec::new(),
            min_weights: DEFAULT_MIN_WEIGHTS,
        }
    }
}

/// A compute node with a constant f32 weight.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Node name (its first output's name when the node has none).
    pub node: String,
    pub op: String,
    /// Name of the weight tensor.
    pub weight: String,
    pub shape: Vec<i64>,
    pub weights: usize,
    /// Axis of the reduction (input-channel, K) dimension in the weight.
    pub reduction_axis: usize,
    /// Length of one reduction run that N:M groups must not straddle (the
    /// per-group input channels for grouped convolutions).
    pub reduction_len: usize,
    /// Why the layer is left alone; `None` if it may be pruned.
    pub skip: Option<String>,
    pub node_id: NodeId,
    pub value: ValueId,
}

impl Layer {
    pub fn prunable(&self) -> bool {
        self.skip.is_none()
    }
}

fn node_label(g: &Graph, n: NodeId) -> String {
    let node = g.node(n);
    if !node.name().is_empty() {
        return node.name().to_string();
    }
    node.outputs()
        .iter()
        .flatten()
        .next()
        .map(|v| g.value(*v).name.clone())
        .unwrap_or_default()
}

/// Compute nodes with no compute node before them (`first`) and with none
/// after them (`last`), by data flow.
fn first_and_last(g: &Graph) -> (HashSet<NodeId>, HashSet<NodeId>) {
    let order = g.topo_order().unwrap_or_else(|_| g.node_ids());
    let mut first = HashSet::new();
    let mut last = HashSet::new();
    // Values computed from the output of some compute node.
    let mut after: HashSet<ValueId> = HashSet::new();
    for &n in &order {
        let node = g.node(n);
        let tainted = node
            .inputs()
            .iter()
            .flatten()
            .chain(node.implicit_inputs())
            .any(|v| after.contains(v));
        let compute = crate::facts::is_compute(node.kind());
        if compute && !tainted {
            first.insert(n);
        }
        if compute || tainted {
            after.extend(node.outputs().iter().flatten());
        }
    }
    // Values some compute node reads, directly or through other nodes.
    let mut feeds: HashSet<ValueId> = HashSet::new();
    for &n in order.iter().rev() {
        let node = g.node(n);
        let downstream = node.outputs().iter().flatten().any(|v| feeds.contains(v));
        let compute = crate::facts::is_compute(node.kind());
        if compute && !downstream {
            last.insert(n);
        }
        if compute || downstream {
            feeds.extend(node.inputs().iter().flatten());
            feeds.extend(node.implicit_inputs());
        }
    }
    (first, last)
}

/// Every compute layer with a constant f32 weight, in topological order,
/// with the reason it is left alone (if it is).
pub fn layers(g: &Graph, cfg: &PruneConfig) -> Vec<Layer> {
    let (first, last) = first_and_last(g);
    let order = g.topo_order().unwrap_or_else(|_| g.node_ids());
    let mut out = Vec::new();
    for n in order {
        let node = g.node(n);
        let kind = node.kind();
        if !crate::facts::is_compute(kind) {
            continue;
        }
        let Some(w) = node.input(1) else { continue };
        let Some(t) = g.const_tensor(w) else { continue };
        let shape = t.dims.clone();
        let weights = tensor::numel(&shape).unwrap_or(0);
        let rank = shape.len();
        let group = node.attr_int("group").unwrap_or(1).max(1) as usize;
        let dim = |i: usize| shape.get(i).map_or(0, |d| (*d).max(0) as usize);
        let (reduction_axis, reduction_len) = match kind {
            OpKind::Conv => (1, dim(1)),
            OpKind::ConvTranspose => (0, dim(0) / group),
            OpKind::Gemm => {
                let ax = if node.attr_int("transB").unwrap_or(0) != 0 {
                    1
                } else {
                    0
                };
                (ax, dim(ax))
            }
            _ => {
                let ax = rank.saturating_sub(2);
                (ax, dim(ax))
            }
        };
        let name = node_label(g, n);
        let wname = g.value(w).name.clone();
        let uses = g.use_count(w);
        let depthwise = group > 1
            && match kind {
                OpKind::Conv => dim(1) == 1,
                OpKind::ConvTranspose => dim(0) == group,
                _ => false,
            };
        let shape_ok = match kind {
            OpKind::Conv | OpKind::ConvTranspose => rank >= 3,
            OpKind::Gemm => rank == 2,
            _ => rank >= 1,
        };
        let skip = if cfg.exclude.iter().any(|e| *e == name || *e == wname) {
            Some("excluded by name".to_string())
        } else if t.data_type() != DataType::Float as i32 {
            Some("weight is not f32".to_string())
        } else if !shape_ok || weights == 0 {
            Some(format!("unexpected weight shape {shape:?}"))
        } else if uses > 1 {
            Some(format!("weight shared by {uses} uses"))
        } else if tensor::to_f32(t).map_or(true, |d| d.iter().any(|x| !x.is_finite())) {
            Some("weights not finite".to_string())
        } else if cfg.all_layers {
            None
        } else if first.contains(&n) {
            Some("first compute layer".to_string())
        } else if last.contains(&n) {
            Some("last compute layer".to_string())
        } else if depthwise {
            Some("depthwise convolution".to_string())
        } else if weights < cfg.min_weights {
            Some(format!("small: {weights} < {} weights", cfg.min_weights))
        } else {
            None
        };
        out.push(Layer {
            node: name,
            op: node.op_type().to_string(),
            weight: wname,
            shape,
            weights,
            reduction_axis,
            reduction_len,
            skip,
            node_id: n,
            value: w,
        });
    }
    out
}

/// How much of each prunable layer to prune.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// The same fraction of every layer.
    Layer(f64),
    /// One threshold over all layers on normalized magnitudes, zeroing this
    /// fraction of all their weights together.
    Global { sparsity: f64, norm: Norm },
    /// Fractions by weight name (unique, unlike node names); layers not
    /// listed (or at 0) stay dense.
    PerLayer(BTreeMap<String, f64>),
    /// Keep the `n` largest of every `m` along the reduction dimension.
    NM { n: usize, m: usize },
}

impl Schedule {
    /// The schedule of a target for the uniform or global method.
    pub fn of(target: PruneTarget, global: Option<Norm>) -> Schedule {
        match (target, global) {
            (PruneTarget::NM { n, m }, _) => Schedule::NM { n, m },
            (PruneTarget::Unstructured { sparsity }, None) => Schedule::Layer(sparsity),
            (PruneTarget::Unstructured { sparsity }, Some(norm)) => {
                Schedule::Global { sparsity, norm }
            }
        }
    }
}

/// One layer's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LayerResult {
    pub node: String,
    pub op: String,
    pub weight: String,
    pub shape: Vec<i64>,
    pub weights: usize,
    /// Zeros before pruning.
    pub zeros_before: usize,
    /// Zeros after pruning.
    pub zeros: usize,
    pub pruned: bool,
    /// Why it was left alone (empty when pruned).
    pub note: String,
}

impl LayerResult {
    pub fn sparsity(&self) -> f64 {
        self.zeros as f64 / self.weights.max(1) as f64
    }
}

/// What [`prune`] did, layer by layer.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct PruneSummary {
    pub layers: Vec<LayerResult>,
}

impl PruneSummary {
    /// (zeros, weights) over the pruned layers.
    pub fn pruned_totals(&self) -> (usize, usize) {
        self.layers
            .iter()
            .filter(|l| l.pruned)
            .fold((0, 0), |(z, w), l| (z + l.zeros, w + l.weights))
    }

    /// (zeros, weights) over every compute layer with a constant weight.
    pub fn all_totals(&self) -> (usize, usize) {
        self.layers
            .iter()
            .fold((0, 0), |(z, w), l| (z + l.zeros, w + l.weights))
    }

    /// Per-layer table plus totals: deterministic text for reports and
    /// snapshots.
    pub fn table(&self) -> String {
        let shape = |s: &[i64]| {
            format!(
                "[{}]",
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let rows: Vec<[String; 6]> = self
            .layers
            .iter()
            .map(|l| {
                [
                    l.node.clone(),
                    l.op.clone(),
                    shape(&l.shape),
                    l.weights.to_string(),
                    l.zeros.to_string(),
                    percent(l.sparsity()),
                ]
            })
            .collect();
        let head = ["node", "op", "shape", "weights", "zeros", "sparsity"];
        let mut width = head.map(str::len);
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cells: [&str; 6], status: &str| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                // Names left-aligned, numbers right-aligned.
                if i < 3 {
                    s.push_str(&format!("{c:<w$}  "));
                } else {
                    s.push_str(&format!("{c:>w$}  "));
                }
            }
            s.push_str(status);
            s.trim_end().to_string() + "\n"
        };
        let mut s = line(head, "status");
        for (r, l) in rows.iter().zip(&self.layers) {
            let status = if l.pruned {
                "pruned".to_string()
            } else {
                format!("kept: {}", l.note)
            };
            s.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]], &status));
        }
        let (pz, pw) = self.pruned_totals();
        let (az, aw) = self.all_totals();
        let np = self.layers.iter().filter(|l| l.pruned).count();
        s.push_str(&format!(
            "pruned layers: {np} of {}, {pz} of {pw} weights zero ({})\n",
            self.layers.len(),
            percent(pz as f64 / pw.max(1) as f64)
        ));
        s.push_str(&format!(
            "all compute weights: {az} of {aw} zero ({})\n",
            percent(az as f64 / aw.max(1) as f64)
        ));
        s
    }
}

/// `0.5` → `"50.00%"`.
pub fn percent(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// `round(s·n)`, clamped to `0..=n`.
fn count_of(s: f64, n: usize) -> usize {
    if s.is_nan() || s <= 0.0 {
        return 0;
    }
    ((s * n as f64).round() as usize).min(n)
}

/// Zeroes the `k` smallest magnitudes (ties: earlier position first).
fn zero_smallest(data: &mut [f32], k: usize) {
    if k == 0 {
        return;
    }
    let mut idx: Vec<usize> = (0..data.len()).collect();
    let key = |i: &usize| (data[*i].abs(), *i);
    let cmp = |a: &usize, b: &usize| {
        let (x, i) = key(a);
        let (y, j) = key(b);
        x.total_cmp(&y).then(i.cmp(&j))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    for &i in &idx[..k] {
        data[i] = 0.0;
    }
}

/// Keeps the `n` largest of every `m` consecutive weights along `axis`.
fn prune_nm(data: &mut [f32], shape: &[i64], axis: usize, n: usize, m: usize) {
    let dims: Vec<usize> = shape.iter().map(|d| (*d).max(0) as usize).collect();
    let len = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let mut group: Vec<usize> = Vec::with_capacity(m);
    for o in 0..outer {
        for i in 0..inner {
            for start in (0..len).step_by(m) {
                group.clear();
                group.extend((start..start + m).map(|r| (o * len + r) * inner + i));
                // Smallest first; ties: the earlier position is pruned.
                group.sort_by(|a, b| data[*a].abs().total_cmp(&data[*b].abs()).then(a.cmp(b)));
                for &j in &group[..m - n] {
                    data[j] = 0.0;
                }
            }
        }
    }
}

fn norm_of(data: &[f32], norm: Norm) -> f64 {
    let v = match norm {
        Norm::Rms => {
            let ss: f64 = data.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
            (ss / data.len().max(1) as f64).sqrt()
        }
        Norm::MaxAbs => data.iter().fold(0f64, |a, x| a.max(f64::from(x.abs()))),
        Norm::None => 1.0,
    };
    if v > 0.0 && v.is_finite() {
        v
    } else {
        1.0
    }
}

/// How many weights of each layer the global threshold zeroes, so that
/// exactly `round(sparsity · total)` are zeroed overall.
fn global_counts(data: &[Vec<f32>], sparsity: f64, norm: Norm) -> Vec<usize> {
    let total: usize = data.iter().map(Vec::len).sum();
    let k = count_of(sparsity, total);
    if k == 0 {
        return vec![0; data.len()];
    }
    let norms: Vec<f64> = data.iter().map(|d| norm_of(d, norm)).collect();
    let score = |l: usize, x: f32| (f64::from(x.abs()) / norms[l]) as f32;
    let mut all: Vec<f32> = Vec::with_capacity(total);
    for (l, d) in data.iter().enumerate() {
        all.extend(d.iter().map(|x| score(l, *x)));
    }
    let (_, tau, _) = all.select_nth_unstable_by(k - 1, f32::total_cmp);
    let tau = *tau;
    // Below the threshold: all; at it: handed out in layer order.
    let mut counts: Vec<usize> = data
        .iter()
        .enumerate()
        .map(|(l, d)| {
            d.iter()
                .filter(|x| score(l, **x).total_cmp(&tau).is_lt())
                .count()
        })
        .collect();
    let mut left = k - counts.iter().sum::<usize>();
    for (l, d) in data.iter().enumerate() {
        if left == 0 {
            break;
        }
        let ties = d.iter().filter(|x| score(l, **x) == tau).count();
        let take = ties.min(left);
        counts[l] += take;
        left -= take;
    }
    counts
}

/// Prunes the prunable `layers` of `g` by `schedule` and reports every
/// layer (pruned or not).
pub fn prune(g: &mut Graph, layers: &[Layer], schedule: &Schedule) -> PruneSummary {
    let zeros = |d: &[f32]| d.iter().filter(|x| **x == 0.0).count();
    let read = |g: &Graph, l: &Layer| {
        g.const_tensor(l.value)
            .and_then(|t| tensor::to_f32(t).ok())
            .unwrap_or_default()
    };
    // Decide what happens to each layer first (the global threshold needs
    // all of them at once).
    let mut notes: Vec<Option<String>> = layers.iter().map(|l| l.skip.clone()).collect();
    if let Schedule::NM { m, .. } = schedule {
        for (l, note) in layers.iter().zip(notes.iter_mut()) {
            if note.is_none() && !l.reduction_len.is_multiple_of(*m) {
                *note = Some(format!(
                    "reduction length {} is not a multiple of {m}",
                    l.reduction_len
                ));
            }
        }
    }
    if let Schedule::PerLayer(map) = schedule {
        for (l, note) in layers.iter().zip(notes.iter_mut()) {
            if note.is_none() && map.get(&l.weight).copied().unwrap_or(0.0) <= 0.0 {
                *note = Some("dense by sensitivity".to_string());
            }
        }
    }
    let mut data: Vec<Vec<f32>> = layers.iter().map(|l| read(g, l)).collect();
    let before: Vec<usize> = data.iter().map(|d| zeros(d)).collect();
    let counts: Vec<usize> = match schedule {
        Schedule::Global { sparsity, norm } => {
            let live: Vec<usize> = (0..layers.len()).filter(|i| notes[*i].is_none()).collect();
            let sub: Vec<Vec<f32>> = live.iter().map(|i| data[*i].clone()).collect();
            let c = global_counts(&sub, *sparsity, *norm);
            let mut counts = vec![0; layers.len()];
            for (i, k) in live.into_iter().zip(c) {
                counts[i] = k;
            }
            counts
        }
        Schedule::Layer(s) => data.iter().map(|d| count_of(*s, d.len())).collect(),
        Schedule::PerLayer(map) => layers
            .iter()
            .zip(&data)
            .map(|(l, d)| count_of(map.get(&l.weight).copied().unwrap_or(0.0), d.len()))
            .collect(),
        Schedule::NM { .. } => vec![0; layers.len()],
    };
    let mut results = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let d = &mut data[i];
        let pruned = notes[i].is_none();
        if pruned {
            match schedule {
                Schedule::NM { n, m } => prune_nm(d, &l.shape, l.reduction_axis, *n, *m),
                _ => zero_smallest(d, counts[i]),
            }
            let name = g
                .const_tensor(l.value)
                .map(|t| t.name().to_string())
                .unwrap_or_default();
            g.replace_const(l.value, tensor::from_f32(&name, &l.shape, d));
        }
        results.push(LayerResult {
            node: l.node.clone(),
            op: l.op.clone(),
            weight: l.weight.clone(),
            shape: l.shape.clone(),
            weights: l.weights,
            zeros_before: before[i],
            zeros: zeros(d),
            pruned,
            note: notes[i].clone().unwrap_or_default(),
        });
    }
    PruneSummary { layers: results }
}

/// Output SQNR of a model with one layer pruned, at several sparsities.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LayerSensitivity {
    pub node: String,
    /// The key of [`Schedule::PerLayer`].
    pub weight: String,
    pub weights: usize,
    /// `(sparsity, SQNR dB)`, by increasing sparsity.
    pub points: Vec<(f64, f64)>,
}

/// The greedy choice of per-layer sparsities; see [`plan_sensitivity`].
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct SensitivityPlan {
    /// `(weight, sparsity)` in the order they were taken; a later step of
    /// the same layer replaces the earlier one.
    pub steps: Vec<(String, f64)>,
    /// Overall sparsity over the layers' weights after all steps.
    pub sparsity: f64,
    /// Output SQNR estimated by adding the noise of every layer.
    pub estimated_sqnr_db: f64,
}

impl SensitivityPlan {
    /// The sparsities after the first `k` steps.
    pub fn sparsities(&self, k: usize) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for (n, s) in self.steps.iter().take(k) {
            m.insert(n.clone(), *s);
        }
        m
    }
}

/// Relative noise power of an output with this SQNR.
fn noise(sqnr_db: f64) -> f64 {
    if sqnr_db.is_nan() {
        f64::INFINITY
    } else {
        10f64.powf(-sqnr_db / 10.0)
    }
}

fn sqnr_of(noise: f64) -> f64 {
    if noise <= 0.0 {
        f64::INFINITY
    } else {
        -10.0 * noise.log10()
    }
}

/// Chooses per-layer sparsities that reach `target` overall (a fraction of
/// all the rows' weights) at the least estimated loss of output SQNR.
///
/// Each layer's noise power at a sparsity is `10^(-SQNR/10)` from its
/// measured point; the noise of several pruned layers is taken to add up.
/// Greedy: from all layers dense, repeatedly take the move to a measured
/// point of one layer with the smallest added noise per pruned weight; the
/// move that crosses the target is cut short (interpolated) so the target is
/// met exactly. With `min_sqnr`, moves that would push the estimate below it
/// are not taken, and planning stops when none is left.
pub fn plan_sensitivity(
    rows: &[LayerSensitivity],
    target: f64,
    min_sqnr: Option<f64>,
) -> SensitivityPlan {
    let total: f64 = rows.iter().map(|r| r.weights as f64).sum();
    let need = target * total;
    let budget = min_sqnr.map_or(f64::INFINITY, noise);
    let mut cur: Vec<(f64, f64)> = vec![(0.0, 0.0); rows.len()];
    let mut plan = SensitivityPlan::default();
    let pruned = |cur: &[(f64, f64)]| -> f64 {
        cur.iter()
            .zip(rows)
            .map(|((s, _), r)| s * r.weights as f64)
            .sum()
    };
    loop {
        let done = pruned(&cur);
        let remaining = need - done;
        if remaining <= 1e-9 * total.max(1.0) {
            break;
        }
        let total_noise: f64 = cur.iter().map(|c| c.1).sum();
        // (cost, layer, sparsity, noise)
        let mut best: Option<(f64, usize, f64, f64)> = None;
        for (l, r) in rows.iter().enumerate() {
            let (s0, n0) = cur[l];
            for &(s, q) in &r.points {
                if s <= s0 {
                    continue;
                }
                let dp = (s - s0) * r.weights as f64;
                let dn = (noise(q) - n0).max(0.0);
                if !dn.is_finite() || total_noise + dn > budget || dp <= 0.0 {
                    continue;
                }
                let cost = dn / dp;
                if best.is_none_or(|b| cost < b.0) {
                    best = Some((cost, l, s, n0 + dn));
                }
            }
        }
        let Some((_, l, s, n)) = best else { break };
        let (s0, n0) = cur[l];
        let dp = (s - s0) * rows[l].weights as f64;
        let (s, n) = if dp > remaining {
            let f = remaining / dp;
            (s0 + (s - s0) * f, n0 + (n - n0) * f)
        } else {
            (s, n)
        };
        cur[l] = (s, n);
        plan.steps.push((rows[l].weight.clone(), s));
    }
    plan.sparsity = pruned(&cur) / total.max(1.0);
    plan.estimated_sqnr_db = sqnr_of(cur.iter().map(|c| c.1).sum());
    plan
}

/// The pruning pass: finds layers by its config and prunes them by its
/// schedule, logging one line per layer.
///
/// Requires nothing; declines layers as [`layers`] and [`prune`] describe.
/// Guarantees the graph structure is unchanged (only weight values change).
/// Not part of the default pipeline: `quench compile --prune` runs it after
/// the pipeline and before calibration.
pub struct Prune {
    pub config: PruneConfig,
    pub schedule: Schedule,
}

impl Prune {
    /// Runs it and returns the per-layer summary.
    pub fn apply(&self, g: &mut Graph, cx: &mut PassCx) -> PruneSummary {
        let ls = layers(g, &self.config);
        let summary = prune(g, &ls, &self.schedule);
        for l in &summary.layers {
            if l.pruned {
                cx.note(
                    self.name(),
                    format!("{}: {} of {} weights zero", l.node, l.zeros, l.weights),
                );
                cx.count(self.name(), "layers", 1);
                cx.count(self.name(), "zeroed", l.zeros - l.zeros_before.min(l.zeros));
            } else {
                cx.note(self.name(), format!("{}: kept ({})", l.node, l.note));
            }
        }
        summary
    }
}

impl Pass for Prune {
    fn name(&self) -> &'static str {
        "prune"
    }
    fn description(&self) -> &'static str {
        "magnitude pruning of Conv/ConvTranspose/Gemm/MatMul weights (unstructured or N:M)"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let s = self.apply(g, cx);
        Ok(s.layers
            .iter()
            .any(|l| l.pruned && l.zeros > l.zeros_before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "0.5".parse::<PruneTarget>(),
            Ok(PruneTarget::Unstructured { sparsity: 0.5 })
        );
        assert_eq!(
            "30%"
                .parse::<PruneTarget>()
                .map(|t| (t.sparsity() * 100.0).round()),
            Ok(30.0)
        );
        assert_eq!(
            "2:4".parse::<PruneTarget>(),
            Ok(PruneTarget::NM { n: 2, m: 4 })
        );
        for bad in ["0", "1", "1.5", "-0.1", "4:4", "0:4", "a:b", "half", ""] {
            assert!(bad.parse::<PruneTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_smallest_breaks_ties_by_position() {
        let mut d = vec![1.0, -0.5, 0.5, 2.0, 0.5];
        zero_smallest(&mut d, 2);
        assert_eq!(d, vec![1.0, 0.0, 0.0, 2.0, 0.5]);
    }

    #[test]
    fn global_counts_are_exact_and_normalized() {
        // Layer 1 is layer 0 scaled by 100: after RMS normalization they
        // are the same, so each gives up half.
        let a: Vec<f32> = (1..=10).map(|x| x as f32).collect();
        let b: Vec<f32> = a.iter().map(|x| x * 100.0).collect();
        assert_eq!(
            global_counts(&[a.clone(), b.clone()], 0.5, Norm::Rms),
            vec![5, 5]
        );
        // Unnormalized, the small layer empties first.
        assert_eq!(global_counts(&[a, b], 0.5, Norm::None), vec![10, 0]);
    }

    #[test]
    fn sensitivity_prefers_cheap_layers_and_meets_the_target() {
        let rows = vec![
            LayerSensitivity {
                node: "a".into(),
                weight: "a".into(),
                weights: 1000,
                points: vec![(0.5, 20.0), (0.9, 10.0)],
            },
            LayerSensitivity {
                node: "b".into(),
                weight: "b".into(),
                weights: 1000,
                points: vec![(0.5, 60.0), (0.9, 40.0)],
            },
        ];
        let p = plan_sensitivity(&rows, 0.5, None);
        let s = p.sparsities(p.steps.len());
        assert!((p.sparsity - 0.5).abs() < 1e-12, "{p:?}");
        assert!((s["b"] - 0.9).abs() < 1e-12, "{s:?}");
        assert!((s["a"] - 0.1).abs() < 1e-12, "{s:?}");
        // A floor on SQNR stops before the target.
        let q = plan_sensitivity(&rows, 0.9, Some(35.0));
        assert!(q.estimated_sqnr_db >= 35.0, "{q:?}");
        assert!(q.sparsity < 0.9);
    }
}
