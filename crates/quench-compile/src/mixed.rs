//! Mixed precision to a target (`--target-sqnr DB`, `--max-top1-drop PCT`,
//! `--max-accuracy-drop POINTS`): raise the tensors that cost the most at
//! the model output to 16-bit activations or float, fewest changes first,
//! until every target holds on held-back data.
//!
//! 1. The plan is quantized with every calibrated range and its float twin
//!    measured against FP32 on the evaluation samples ([`Figures`]: the
//!    lowest output SQNR, the top-1 agreement with FP32 lost on
//!    class-score outputs, the accuracy on the data's `labels` lost). When
//!    every target holds: nothing changes.
//! 2. Otherwise activations are taken in order of their **output gain**
//!    (the SQNR gained by leaving only that tensor, with the tensors
//!    sharing its parameters, float), largest first, and each is left
//!    float with the whole model re-measured; a change that does not
//!    bring the model closer to the targets is undone ([`closer`]), until
//!    they hold, [`MAX_CHANGES`] tensors are raised, `4 x MAX_CHANGES`
//!    were tried or no tensor left gains [`MIN_GAIN_DB`] alone. Before
//!    that, all the candidates (at most `4 x MAX_CHANGES`) are left float
//!    at once: when even that misses the targets, nothing is tried and the
//!    target is reported unreachable (one run instead of up to 128; PP-OCR
//!    mobile classifier, `--target-sqnr 40`: all 100 candidates float give
//!    30.6 dB, the phase took 32 s instead of 61 s, debug build).
//!    When the candidates cannot reach the targets but every activation
//!    float does (errors that only add up together: after SmoothQuant on a
//!    post-norm transformer most activations gain nothing alone), the
//!    choice is made by elimination instead: from every activation float,
//!    each is quantized again, the least gaining alone first, unless the
//!    targets then miss (one run per activation).
//! 3. When the search's twin says the targets hold, the choice is measured
//!    on the written model's own twin ([`measure_plan`]). The search's
//!    twin rounds the int32 bias of a compute op on the scale its input
//!    has in the choice (float when the input is float; see
//!    [`BiasParam`](crate::search::BiasParam)), as the written model does;
//!    it was kept at the 8-bit rounding before, and that sub-LSB change
//!    alone moved PP-OCRv4 rec's figure by up to 0.9 dB (its Softmax
//!    output's SQNR on 16 samples is decided by a few near-tie rows). What
//!    it still does not follow: the weight scales of such an op, raised
//!    where the int32 bias would overflow on the input's scale (channels
//!    whose weights are near zero and bias is not). Not confirmed: the
//!    search goes on (at most [`MAX_CONFIRMATIONS`] times).
//! 4. Once the targets hold, each tensor left float is tried at 16 bits
//!    (the default activation format widened to 16 bits, when the model's
//!    opset is or can be made 21) and moved there when the targets still
//!    hold, all of them confirmed together on the written model's twin
//!    (else all stay float): a 16-bit tensor keeps its op on integer
//!    hardware (NPUs) where a float one does not.
//!
//! **The order's cost** is one run per activation on every evaluation
//! sample, and it is what keeps the changes few. Two cheaper orders were
//! tried and dropped, both measured on real models: best-first group
//! testing (halves left float, the better half halved again: error
//! powers do not add, and on the PP-OCR mobile classifier it needed two
//! changes where one suffices), and a screen of every gain on 4 of the 16
//! samples with the best 24 re-measured on all (the classifier: same
//! result; the nudenet 320n detector: the tensor that matters most ranked
//! below 24 on the 4 samples, and 32 changes missed a target that 2
//! reach, in 760 s against 962 s for the full order, debug build).
//!
//! All of it runs on parametric twins ([`crate::search::ParamBench`]):
//! tract compiles one model, and every choice (float, 8 or 16 bits) is a
//! run of it.
//!
//! Invariant: every figure is measured on the evaluation split of the
//! [`DataPlan`](crate::DataPlan), never on calibration samples; the report
//! states the figures before and after and, for each tensor raised, why.

use anyhow::{anyhow, Result};
use quench_calib::QuantFormat;
use quench_ir::Model;
use quench_onnx::proto::ModelProto;
use quench_passes::quantize::{Plan, QuantizeConfig, Ranges};
use quench_verify::Accumulator;
use serde::Serialize;

use crate::data::Bound;
use crate::search::{ParamBench, Setting};

/// Most tensors raised on the way to a target.
pub const MAX_CHANGES: usize = 32;

/// Most times a choice the search's twin says meets the targets is
/// measured on the written model's own twin ([`measure_plan`]; one tract
/// compile each).
pub const MAX_CONFIRMATIONS: usize = 4;

/// A tensor whose leaving float alone gains less than this (dB) is not
/// tried: its effect is below the noise of the measurement, and every
/// tensor after it in the order gains less.
pub const MIN_GAIN_DB: f64 = 0.01;

/// One tensor left float by `--method auto` (an outlier), and what leaving
/// it float alone measured.
#[derive(Debug, Clone, Serialize)]
pub struct FloatTensor {
    pub tensor: String,
    /// Output SQNR gain (dB) of leaving only this tensor float.
    pub gain_db: f64,
    /// Output SQNR (dB) once it and every tensor before it are float.
    pub sqnr_after_db: f64,
}

/// What a mixed-precision search must reach on the evaluation data (each
/// `None`: not asked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Targets {
    /// Lowest output SQNR against FP32 (dB), `--target-sqnr`.
    pub sqnr_db: Option<f64>,
    /// Most top-1 agreement with FP32 that may be lost, in percentage
    /// points, on every class-score output, `--max-top1-drop`.
    pub max_top1_drop: Option<f64>,
    /// Most accuracy against the data's `labels` that may be lost next to
    /// FP32's, in percentage points, `--max-accuracy-drop`.
    pub max_accuracy_drop: Option<f64>,
}

impl Targets {
    /// Whether any target is asked.
    pub fn any(&self) -> bool {
        self.sqnr_db.is_some() || self.max_top1_drop.is_some() || self.max_accuracy_drop.is_some()
    }

    /// The targets as the command line spells them.
    pub fn flags(&self) -> String {
        let mut v = Vec::new();
        if let Some(t) = self.sqnr_db {
            v.push(format!("--target-sqnr {t}"));
        }
        if let Some(t) = self.max_top1_drop {
            v.push(format!("--max-top1-drop {t}"));
        }
        if let Some(t) = self.max_accuracy_drop {
            v.push(format!("--max-accuracy-drop {t}"));
        }
        v.join(" ")
    }

    /// How far `f` is from each target (0 where it holds; +inf where the
    /// figure is missing or NaN), in the target's own unit.
    fn shortfalls(&self, f: &Figures) -> [f64; 3] {
        let gap = |x: f64| {
            if x.is_nan() {
                f64::INFINITY
            } else {
                x.max(0.0)
            }
        };
        [
            self.sqnr_db.map_or(0.0, |t| gap(t - f.sqnr_db)),
            self.max_top1_drop
                .map_or(0.0, |t| f.top1_drop.map_or(f64::INFINITY, |d| gap(d - t))),
            self.max_accuracy_drop.map_or(0.0, |t| {
                f.accuracy_drop.map_or(f64::INFINITY, |d| gap(d - t))
            }),
        ]
    }

    /// Whether every target holds for `f`.
    pub fn met(&self, f: &Figures) -> bool {
        self.shortfalls(f).iter().all(|s| *s == 0.0)
    }
}

/// Whether `new` is closer to the targets than `cur`: no target's
/// shortfall grows and one shrinks, or none changes and the output SQNR
/// rises (progress on the continuous figure where the counted ones, top-1
/// and accuracy, have not moved yet).
pub fn closer(t: &Targets, new: &Figures, cur: &Figures) -> bool {
    let (a, b) = (t.shortfalls(new), t.shortfalls(cur));
    if a.iter().zip(&b).any(|(a, b)| a > b) {
        return false;
    }
    a.iter().zip(&b).any(|(a, b)| a < b) || new.sqnr_db > cur.sqnr_db
}

/// The model's figures on the evaluation data (reference semantics).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// Lowest SQNR over the outputs (dB).
    pub sqnr_db: f64,
    /// Top-1 agreement with FP32 lost, in percentage points: 100 minus
    /// the lowest agreement over the class-score outputs (the last axis
    /// holds 2 to 10000 classes); `None` when no output has class scores.
    pub top1_drop: Option<f64>,
    /// FP32's accuracy on the data's integer `labels` minus the model's
    /// (percentage points, first output `[N, C]`); `None` without labels.
    pub accuracy_drop: Option<f64>,
}

impl Figures {
    /// The figures from each output's metrics against FP32, with whether
    /// the output is an integer one (lowest SQNR over the outputs that are
    /// not, or over all when every output is: an ArgMax's class index has
    /// no signal-to-noise meaning, a flipped index read as 29 dB on
    /// `argmax_head.onnx` and decided `--target-sqnr` while its scores
    /// were at 43; NaN counting as -inf; lowest top-1 agreement over the
    /// class-score outputs) and the accuracy drop on labels: the one rule
    /// both the search and the check of the written model use.
    pub fn from_metrics<'m>(
        outputs: impl IntoIterator<Item = (&'m quench_verify::Metrics, bool)>,
        accuracy_drop: Option<f64>,
    ) -> Figures {
        let outputs: Vec<(&quench_verify::Metrics, bool)> = outputs.into_iter().collect();
        let all_integer = outputs.iter().all(|(_, integer)| *integer);
        let mut sqnr = f64::INFINITY;
        let mut top1: Option<f64> = None;
        for (m, integer) in outputs {
            if !integer || all_integer {
                sqnr = sqnr.min(if m.sqnr_db.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    m.sqnr_db
                });
            }
            if let Some(t) = m.top1.as_ref().filter(|t| t.rows > 0) {
                let f = if t.fraction.is_nan() { 0.0 } else { t.fraction };
                top1 = Some(top1.map_or(f, |b: f64| b.min(f)));
            }
        }
        Figures {
            sqnr_db: sqnr,
            top1_drop: top1.map(|f| 100.0 * (1.0 - f)),
            accuracy_drop,
        }
    }
}

/// Where a tensor went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Quantized on the 16-bit grid (opset 21 Q/DQ).
    Int16,
    /// Left float (no Q/DQ).
    Float,
}

/// One tensor raised on the way to the targets.
#[derive(Debug, Clone, Serialize)]
pub struct RaisedTensor {
    pub tensor: String,
    pub to: Precision,
    /// Output SQNR gain (dB) of leaving only this tensor float (the order
    /// the search tried tensors in).
    pub gain_db: f64,
    /// The figures once it and every tensor before it were raised (float
    /// during the search; for a 16-bit tensor, once it was moved to 16
    /// bits with the choices before it in place).
    pub after: Figures,
    /// Why, in words.
    pub why: String,
}

/// What a mixed-precision search did.
#[derive(Debug, Clone, Serialize)]
pub struct MixedReport {
    pub targets: Targets,
    /// Figures with every activation quantized, and of the result: the
    /// model as written (before bias correction), measured on a twin built
    /// from the edited plan ([`measure_plan`]) when anything was raised.
    pub initial: Figures,
    pub result: Figures,
    pub reached: bool,
    /// Tensors raised, in the order they were chosen.
    pub raised: Vec<RaisedTensor>,
    /// The 16-bit format tried for tensors left float, or (`wide_declined`)
    /// why none was.
    pub wide_format: Option<QuantFormat>,
    pub wide_declined: Option<String>,
    /// Runs the order took (each tensor's gain alone).
    pub order_runs: usize,
    /// The figures with every candidate of the search (each gaining
    /// alone, at most `4 x MAX_CHANGES`) float at once: when these miss
    /// the targets, nothing is tried (no subset of them reaches them).
    pub bound: Option<Figures>,
    /// Choices measured on the written model's own twin
    /// ([`measure_plan`]).
    pub confirmations: usize,
    /// Runs of the parametric twins in all, and the seconds they took.
    pub runs: usize,
    pub seconds: f64,
    /// Evaluation data the figures are measured on.
    pub data: String,
}

impl MixedReport {
    /// The tensors left float.
    pub fn float(&self) -> impl Iterator<Item = &RaisedTensor> {
        self.raised.iter().filter(|r| r.to == Precision::Float)
    }

    /// The tensors raised to 16 bits.
    pub fn int16(&self) -> impl Iterator<Item = &RaisedTensor> {
        self.raised.iter().filter(|r| r.to == Precision::Int16)
    }
}

/// Root tensor name -> the names of the tensors sharing its quantization
/// parameters (data movement after it).
pub fn shared_members(
    float: &Model,
    plan: &Plan,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let g = &float.graph;
    let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (&v, &root) in &plan.shared {
        m.entry(g.value(root).name.clone())
            .or_default()
            .push(g.value(v).name.clone());
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// The 16-bit format a tensor of `narrow` format is raised to: same
/// signedness and symmetry, per tensor; `None` for formats that are not
/// 8-bit integers.
pub fn widened(narrow: QuantFormat) -> Option<QuantFormat> {
    let f = narrow.int_format()?;
    if f.bits() != 8 {
        return None;
    }
    quench_calib::IntFormat::new(16, f.signed(), f.symmetric(), false)
        .ok()
        .map(|w| QuantFormat::int(w).per_tensor())
}

/// The 16-bit format tensors raised may take, or why there is none:
/// `enabled` (`--no-mixed-int16` turns it off), an 8-bit integer default
/// activation format ([`widened`]), and an opset that has 16-bit Q/DQ
/// (21) or a graph [`upgrade_opset`](quench_passes::upgrade_opset) can
/// take there (it declines, e.g., `GroupNormalization`, whose scale and
/// bias changed shape at 21): a model that cannot be upgraded leaves its
/// raised tensors float.
pub fn wide_choice(
    g: &quench_ir::Graph,
    opset: i64,
    default: QuantFormat,
    enabled: bool,
) -> Result<QuantFormat, String> {
    if !enabled {
        return Err("--no-mixed-int16".into());
    }
    let w = widened(default).ok_or("the activation format is not an 8-bit integer")?;
    let need = w.min_opset().unwrap_or(21);
    if opset >= need {
        return Ok(w);
    }
    quench_passes::upgrade_opset::check(g, opset, need)
        .map(|()| w)
        .map_err(|why| format!("opset {opset} cannot be upgraded to {need}: {why}"))
}

/// Measures [`Figures`] of one choice on a bench.
struct Meter<'a> {
    bench: ParamBench,
    /// First sample of each batch.
    starts: Vec<usize>,
    /// The data's class labels, one per sample (see `class_labels`).
    labels: Option<&'a [i64]>,
    /// Per output, whether it is an integer one (see
    /// [`Figures::from_metrics`]).
    integer: Vec<bool>,
}

impl Meter<'_> {
    fn figures(&mut self, set: &[Setting], grid: &[Option<(f32, f32)>]) -> Result<Figures> {
        let starts = self.starts.clone();
        let rows = self.bench.batch_rows().to_vec();
        let labels = self.labels;
        let per_batch = self.bench.run_each(set, grid, |b, r, q| {
            let mut acc: Vec<Accumulator> = Vec::with_capacity(r.len());
            for (r, q) in r.iter().zip(q) {
                let mut a = Accumulator::new();
                let (r, q) = (r.to_f32(), q.to_f32());
                if a.update(r.view(), q.view()).is_err() {
                    // A shape the twin should never change: no figure.
                    acc.push(Accumulator::new());
                    continue;
                }
                acc.push(a);
            }
            let hits = match (r.first(), q.first()) {
                (Some(r), Some(q)) => quench_verify::evaluate::label_hits(
                    &r.to_f32(),
                    &q.to_f32(),
                    labels,
                    starts.get(b).copied().unwrap_or(0),
                    rows.get(b).copied().unwrap_or(0),
                ),
                _ => Ok(quench_verify::LabelHits::default()),
            };
            (acc, hits)
        })?;
        let per_batch = per_batch
            .into_iter()
            .map(|(a, h)| h.map(|h| (a, h)))
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| anyhow!("{e} (labels of the evaluation data)"))?;
        let outputs = per_batch.first().map_or(0, |(a, _)| a.len());
        let metrics: Vec<quench_verify::Metrics> = (0..outputs)
            .map(|o| {
                let mut a = Accumulator::new();
                for (accs, _) in &per_batch {
                    if let Some(x) = accs.get(o) {
                        a.merge(x);
                    }
                }
                a.finish()
            })
            .collect();
        let mut hits = quench_verify::LabelHits::default();
        for (_, h) in &per_batch {
            hits.add(*h);
        }
        let accuracy_drop = (hits.rows > 0)
            .then(|| 100.0 * (hits.first as f64 - hits.second as f64) / hits.rows as f64);
        Ok(Figures::from_metrics(
            metrics
                .iter()
                .zip(self.integer.iter().copied().chain(std::iter::repeat(false))),
            accuracy_drop,
        ))
    }
}

/// Raises tensors until `targets` hold (see the module docs). `float` is
/// the graph right before quantization, `original` the FP32 input model
/// (the reference), `wide` the 16-bit format tried for tensors left float
/// (or why none is). Errors when a target cannot be measured on this
/// model and data (no class-score output, no labels).
#[allow(clippy::too_many_arguments)]
pub fn to_target(
    float: &Model,
    original: &ModelProto,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    data: &Bound,
    targets: Targets,
    wide: Result<QuantFormat, String>,
) -> Result<MixedReport> {
    let t0 = std::time::Instant::now();
    let labels = data.data.extra("labels");
    let class_labels = labels.and_then(quench_verify::evaluate::class_labels);
    if targets.max_accuracy_drop.is_some() {
        let found = match (labels, &class_labels) {
            (None, _) => "none".to_string(),
            (Some(_), Some(v)) if v.len() == data.data.samples() => String::new(),
            (Some(l), _) => format!("`labels` is {} {:?}", l.dtype_name(), l.shape()),
        };
        if !found.is_empty() {
            return Err(anyhow!(
                "--max-accuracy-drop needs integer class labels with the evaluation data: a `labels.npy` (int64 or int32, shape [N] or [N, 1], one class id per sample) beside its inputs, or a `labels` array in its .npz ({}; found: {found})",
                data.label
            ));
        }
    }
    let rows: Vec<usize> = (0..data.data.samples()).collect();
    let bench = ParamBench::new(float, original, plan, ranges, cfg, opset, data, &rows)?;
    let starts = starts_of(&bench);
    let mut m = Meter {
        bench,
        starts,
        labels: class_labels.as_deref(),
        integer: quench_verify::integer_outputs(original),
    };
    let none = vec![None; m.bench.pairs.len()];
    let mut set = m.bench.initial(true);
    let first = m.figures(&set, &none)?;
    if targets.max_top1_drop.is_some() && first.top1_drop.is_none() {
        return Err(anyhow!(
            "--max-top1-drop needs an output with class scores (its last axis 2 to 10000 classes); this model has none"
        ));
    }
    if targets.max_accuracy_drop.is_some() && first.accuracy_drop.is_none() {
        return Err(anyhow!(
            "--max-accuracy-drop needs a first output of shape [N, classes] (one row of 2 or more class scores per sample) to compare with the labels"
        ));
    }
    let mut report = MixedReport {
        targets,
        initial: first,
        result: first,
        reached: targets.met(&first),
        raised: Vec::new(),
        wide_format: wide.as_ref().ok().copied(),
        wide_declined: wide.as_ref().err().cloned(),
        order_runs: 0,
        bound: None,
        confirmations: 0,
        runs: 0,
        seconds: 0.0,
        data: data.label.clone(),
    };
    let roots = m.bench.roots.clone();
    if !report.reached && !roots.is_empty() {
        // The order: each root alone left float, measured against every
        // activation quantized, on every evaluation sample (see the module
        // docs for the cheaper orders that were tried).
        let runs_before = m.bench.runs;
        let base = m.bench.score(&set)?.min_db;
        let mut order: Vec<(usize, f64)> = Vec::new();
        let mut gains: Vec<f64> = Vec::with_capacity(roots.len());
        for (k, (_, ixs)) in roots.iter().enumerate() {
            let mut alone = set.clone();
            for &i in ixs {
                alone[i].2 = false;
            }
            let gain = m.bench.score(&alone)?.min_db - base;
            gains.push(gain);
            // Below MIN_GAIN_DB: no measurable effect (NaN fails too).
            if gain >= MIN_GAIN_DB {
                order.push((k, gain));
            }
        }
        report.order_runs = m.bench.runs - runs_before;
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        // The written model's figures for a choice (see `measure_plan`).
        let exact = |raised: &[RaisedTensor]| -> Result<Figures> {
            let (mut p, mut r, mut op) = (plan.clone(), ranges.clone(), opset);
            for x in raised {
                match (x.to, &wide, float.graph.value_by_name(&x.tensor)) {
                    (Precision::Float, _, _) => {
                        r.remove(&x.tensor);
                    }
                    (Precision::Int16, Ok(w), Some(v)) => {
                        p.formats.insert(v, *w);
                        // As the compile does when it writes the choice.
                        if let Some(rg) = r.get_mut(&x.tensor) {
                            *rg = crate::calibrate::cover_consumer_bounds(
                                &float.graph,
                                &x.tensor,
                                *rg,
                                w,
                            );
                        }
                        op = op.max(w.min_opset().unwrap_or(21));
                    }
                    (Precision::Int16, _, _) => {
                        r.remove(&x.tensor);
                    }
                }
            }
            measure_plan(float, original, &p, &r, cfg, op, data)
        };
        // Stop rule: every candidate the search may try, left float at
        // once. Leaving a tensor float removes its rounding error (each
        // candidate was measured to gain alone); only errors cancelling
        // each other could make a subset better than all of them, so when
        // even all of them miss the targets the search is not tried: one
        // run instead of up to 4 x MAX_CHANGES.
        order.truncate(4 * MAX_CHANGES);
        if order.len() > 1 {
            let mut all = set.clone();
            for (k, _) in &order {
                for &i in &roots[*k].1 {
                    all[i].2 = false;
                }
            }
            let f = m.figures(&all, &none)?;
            report.bound = Some(f);
            if !targets.met(&f) {
                order.clear();
            }
        }
        // When the tensors that gain alone cannot reach the targets, errors
        // interact (after SmoothQuant on a post-norm transformer most
        // activations gain nothing alone, several of them together do):
        // with every activation float the targets may still hold. Then by
        // elimination: from every activation float, each is quantized
        // again, the least gaining alone first, unless the targets then
        // miss; what stays float is, given the others, needed.
        if order.is_empty() && !targets.met(&first) && roots.len() > 1 {
            let mut cur: Vec<Setting> = set.clone();
            for (_, ixs) in roots.iter() {
                for &i in ixs {
                    cur[i].2 = false;
                }
            }
            let all_float = m.figures(&cur, &none)?;
            if targets.met(&all_float) {
                report.bound = Some(all_float);
                let mut ks: Vec<usize> = (0..roots.len()).collect();
                ks.sort_by(|a, b| gains[*a].total_cmp(&gains[*b]));
                let mut cur_f = all_float;
                for k in ks {
                    let mut s2 = cur.clone();
                    for &i in &roots[k].1 {
                        s2[i].2 = true;
                    }
                    let f2 = m.figures(&s2, &none)?;
                    if targets.met(&f2) {
                        cur = s2;
                        cur_f = f2;
                    }
                }
                for (k, (root, ixs)) in roots.iter().enumerate() {
                    if ixs.first().is_some_and(|&i| !cur[i].2) {
                        report.raised.push(RaisedTensor {
                            tensor: root.clone(),
                            to: Precision::Float,
                            gain_db: gains[k],
                            after: cur_f,
                            why: format!(
                                "alone float {:+.2} dB at the output; left float by elimination (quantizing it again with the others float missed the targets): {}",
                                gains[k],
                                describe(&cur_f)
                            ),
                        });
                    }
                }
                set = cur;
                report.confirmations += 1;
                let e = exact(&report.raised)?;
                if targets.met(&e) {
                    report.reached = true;
                    report.result = e;
                }
            }
        }
        let mut cur = first;
        for (tried, (k, gain)) in order.into_iter().enumerate() {
            if report.raised.len() >= MAX_CHANGES
                || tried >= 4 * MAX_CHANGES
                || report.confirmations >= MAX_CONFIRMATIONS
            {
                break;
            }
            let (root, ixs) = &roots[k];
            for &i in ixs {
                set[i].2 = false;
            }
            let f = m.figures(&set, &none)?;
            if !closer(&targets, &f, &cur) {
                for &i in ixs {
                    set[i].2 = true;
                }
                continue;
            }
            report.raised.push(RaisedTensor {
                tensor: root.clone(),
                to: Precision::Float,
                gain_db: gain,
                after: f,
                why: format!(
                    "alone float {gain:+.2} dB at the output; it and the tensors chosen before it float: {}",
                    describe(&f)
                ),
            });
            cur = f;
            if targets.met(&f) {
                // Confirmed on the written model's own twin.
                report.confirmations += 1;
                let e = exact(&report.raised)?;
                if targets.met(&e) {
                    report.reached = true;
                    report.result = e;
                    break;
                }
                if let Some(x) = report.raised.last_mut() {
                    x.why.push_str(&format!(
                        "; the written model measured {}: not yet",
                        describe(&e)
                    ));
                }
            }
        }
        if !report.reached && !report.raised.is_empty() {
            report.result = exact(&report.raised)?;
        }
        // 16 bits where it keeps the targets: each tried on the search's
        // twin, all of them confirmed together on the written model's.
        if let (true, Ok(w)) = (report.reached, &wide) {
            let (qmin, qmax) = match w.int_format() {
                Some(f) => (f.qmin() as f32, f.qmax() as f32),
                None => (0.0, 0.0),
            };
            let before = (report.raised.clone(), report.result);
            let mut grid = none.clone();
            for r in 0..report.raised.len() {
                let name = report.raised[r].tensor.clone();
                let Some(k) = roots.iter().position(|(n, _)| *n == name) else {
                    continue;
                };
                let Some(range) = ranges.get(&name).copied() else {
                    continue;
                };
                let Some((s, z)) = m.bench.params(&name, w, range) else {
                    continue;
                };
                let (mut s2, mut g2) = (set.clone(), grid.clone());
                for &i in &roots[k].1 {
                    s2[i] = (s, z, true);
                    g2[i] = Some((qmin, qmax));
                }
                let f = m.figures(&s2, &g2)?;
                if targets.met(&f) {
                    set = s2;
                    grid = g2;
                    let x = &mut report.raised[r];
                    x.to = Precision::Int16;
                    x.after = f;
                    x.why = format!(
                        "{}; at 16 bits the targets still hold ({})",
                        x.why,
                        describe(&f)
                    );
                }
            }
            if report.raised.iter().any(|x| x.to == Precision::Int16) {
                report.confirmations += 1;
                let e = exact(&report.raised)?;
                if targets.met(&e) {
                    report.result = e;
                } else {
                    // The written model missed at 16 bits: float as found.
                    (report.raised, report.result) = before;
                    report.wide_declined = Some(format!(
                        "at 16 bits the written model measured {}, missing the targets",
                        describe(&e)
                    ));
                }
            }
        }
    }
    report.runs = m.bench.runs;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The [`Figures`] of the model `plan` and `ranges` describe (as written,
/// before bias correction) on `data`: one more tract compile and one run.
/// The search's figures come from a twin built once with 8-bit
/// parameters; its biases follow each choice, the weight scales of a
/// compute op fed by a raised tensor do not (see the module docs): this
/// is the exact figure of the plan once edited.
#[allow(clippy::too_many_arguments)]
pub fn measure_plan(
    float: &Model,
    original: &ModelProto,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    data: &Bound,
) -> Result<Figures> {
    let rows: Vec<usize> = (0..data.data.samples()).collect();
    let bench = ParamBench::new(float, original, plan, ranges, cfg, opset, data, &rows)?;
    let starts = starts_of(&bench);
    let class_labels = data
        .data
        .extra("labels")
        .and_then(quench_verify::evaluate::class_labels);
    let mut m = Meter {
        bench,
        starts,
        labels: class_labels.as_deref(),
        integer: quench_verify::integer_outputs(original),
    };
    let set = m.bench.initial(true);
    let none = vec![None; set.len()];
    m.figures(&set, &none)
}

/// First sample of each batch of a bench.
fn starts_of(bench: &ParamBench) -> Vec<usize> {
    bench
        .batch_rows()
        .iter()
        .scan(0, |s, &n| {
            let at = *s;
            *s += n;
            Some(at)
        })
        .collect()
}

/// The figures in words.
pub fn describe(f: &Figures) -> String {
    let mut s = format!("SQNR {:.2} dB", f.sqnr_db);
    if let Some(d) = f.top1_drop {
        s.push_str(&format!(", top-1 agreement {:.2}%", 100.0 - d));
    }
    if let Some(d) = f.accuracy_drop {
        s.push_str(&format!(", accuracy {:+.2} points vs FP32", -d));
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fig(sqnr: f64, top1: Option<f64>) -> Figures {
        Figures {
            sqnr_db: sqnr,
            top1_drop: top1,
            accuracy_drop: None,
        }
    }

    #[test]
    fn a_change_is_closer_when_no_shortfall_grows() {
        let t = Targets {
            sqnr_db: None,
            max_top1_drop: Some(1.0),
            max_accuracy_drop: None,
        };
        // Top-1 unchanged, SQNR up: progress on the continuous figure.
        assert!(closer(&t, &fig(20.0, Some(3.0)), &fig(19.0, Some(3.0))));
        // Top-1 worse: undone even though the SQNR rose.
        assert!(!closer(&t, &fig(25.0, Some(4.0)), &fig(19.0, Some(3.0))));
        // Top-1 better with a lower SQNR: the target comes first.
        assert!(closer(&t, &fig(18.0, Some(2.0)), &fig(19.0, Some(3.0))));
        assert!(t.met(&fig(10.0, Some(1.0))));
        assert!(!t.met(&fig(60.0, Some(1.01))));
        // A figure that cannot be measured never meets its target.
        assert!(!t.met(&fig(60.0, None)));
    }

    #[test]
    fn sixteen_bits_need_an_opset_that_has_them() {
        use quench_calib::IntFormat;
        let u8a = QuantFormat::int(IntFormat::new(8, false, false, false).unwrap());
        let g = |op: &str, opset: i64| {
            quench_ir::parse_model(&format!(
                "# ir_version 8; opset ai.onnx {opset}\n\
                 graph main(%x: f32[1,4,2,2]) -> (%0)\n\
                 \x20 %w0 = const f32[2] [1.0,1.0]\n\
                 \x20 %w1 = const f32[2] [0.0,0.0]\n\
                 \x20 %0 = {op}(%x, %w0, %w1) {{num_groups=2}} : f32[1,4,2,2]\n"
            ))
            .unwrap()
        };
        // Opset 17 with a plain op: upgraded when chosen.
        let m = g("InstanceNormalization", 17);
        assert!(wide_choice(&m.graph, 17, u8a, true).is_ok());
        assert!(wide_choice(&m.graph, 21, u8a, true).is_ok());
        // GroupNormalization changed at 21: no 16-bit choice, float it is.
        let m = g("GroupNormalization", 18);
        let why = wide_choice(&m.graph, 18, u8a, true).unwrap_err();
        assert!(why.contains("cannot be upgraded to 21"), "{why}");
        // Turned off, or a format that is not 8 bits.
        assert_eq!(
            wide_choice(&m.graph, 21, u8a, false).unwrap_err(),
            "--no-mixed-int16"
        );
        let f8 = QuantFormat::float(quench_calib::FloatKind::F8E4M3FN);
        assert!(wide_choice(&m.graph, 21, f8, true).is_err());
    }

    #[test]
    fn the_wide_format_keeps_signedness_and_symmetry() {
        use quench_calib::IntFormat;
        let u8a = QuantFormat::int(IntFormat::new(8, false, false, false).unwrap());
        let w = widened(u8a).unwrap().int_format().unwrap();
        assert_eq!((w.bits(), w.signed(), w.symmetric()), (16, false, false));
        assert_eq!((w.qmin(), w.qmax()), (0, 65535));
        let s8s = QuantFormat::int(IntFormat::new(8, true, true, false).unwrap());
        let w = widened(s8s).unwrap().int_format().unwrap();
        assert_eq!((w.bits(), w.signed(), w.symmetric()), (16, true, true));
        assert!(widened(QuantFormat::float(quench_calib::FloatKind::F8E4M3FN)).is_none());
    }
}
