//! `--method auto`: per activation, the range whose quantization costs the
//! least **at the model output**, chosen in topological order with the
//! earlier choices in place (sequential, in the spirit of AdaQuant and
//! SeqMSE, but over a small set of ranges rather than by gradient).
//!
//! 1. Candidates per activation: the observed range and the percentile
//!    (99.999, 99.99, 99.9), MSE and entropy ranges on the tensor's own
//!    grid, each clamped where its consumers are flat (exact), with
//!    near-duplicates (within 1% of the range's width) dropped. Outputs of
//!    Softmax/Sigmoid keep the observed range.
//! 2. The model is quantized once and turned into a **parametric twin**
//!    ([`parametric_twin`]): every activation's scale, zero point and an
//!    on/off switch are graph inputs, so tract compiles one model and each
//!    candidate is one run of it, not one compile.
//! 3. Every activation starts off (float). In topological order each is
//!    switched on with each of its candidates in turn, the output error
//!    against FP32 is measured on up to [`SAMPLES`] calibration samples
//!    spread over the calibration set, and the best candidate stays (the
//!    policy's range unless another is better by more than [`MIN_GAIN_DB`]).
//!    A tensor with one candidate is switched on without a run.
//! 4. The whole choice is kept only if the twin with every activation on
//!    scores higher than with the policy's ranges; the report states both.
//! 5. Outliers: each activation is left float alone; one behind at least
//!    half of the output error power ([`OUTLIER_DB`]) stays float,
//!    largest first, each re-measured with the earlier ones float
//!    (`float_outliers`; off with `--no-float-outliers`).
//!
//! Score: `-10 log10(mean over outputs of error power / signal power)`,
//! pooled over the samples: the output SQNR, averaged in the linear domain
//! so no single output or sample decides alone.
//!
//! Invariant: only `Ranges` entries change; every figure is measured on
//! calibration samples, never on the held-back evaluation split.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, Context, Result};
use quench_calib::{QuantFormat, RangeMethod, TensorStats};
use quench_ir::Model;
use quench_onnx::proto::ModelProto;
use quench_passes::quantize::{Plan, QuantizeConfig, Ranges};
use quench_passes::simulate::{parametric_twin, ParamPair};
use quench_passes::PassCx;
use quench_verify::{ArrayData, Runners, MAX_BATCH};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::Bound;

/// Calibration samples each candidate is measured on.
pub const SAMPLES: usize = 16;
/// A candidate replaces the policy's range only when it raises the output
/// score by more than this (dB): smaller differences are noise of the
/// sample choice, not a better range.
pub const MIN_GAIN_DB: f64 = 0.02;

/// A tensor whose quantization alone causes at least half of the output
/// error power (leaving it float gains `10 log10(2)` dB or more) is an
/// outlier and stays float: the rule follows from the measurement, not
/// from a tuned threshold.
pub const OUTLIER_DB: f64 = 3.0103;

/// One range the search changed.
#[derive(Debug, Clone, Serialize)]
pub struct AutoChoice {
    pub tensor: String,
    /// The candidate chosen (`minmax`, `percentile 99.99`, `mse`, ...).
    pub method: String,
    pub from: (f32, f32),
    pub to: (f32, f32),
    /// Output score gain over the policy's range when chosen (dB).
    pub gain_db: f64,
}

/// What `--method auto` did.
#[derive(Debug, Clone, Serialize)]
pub struct AutoReport {
    /// Calibration samples the candidates were measured on.
    pub samples: usize,
    /// Activations with more than one candidate, and the runs made.
    pub searched: usize,
    pub runs: usize,
    /// Output score (dB) with the policy's ranges and with the chosen ones.
    pub policy_db: f64,
    pub auto_db: f64,
    /// Whether the chosen ranges were kept (they must score higher).
    pub kept: bool,
    pub changed: Vec<AutoChoice>,
    /// Outlier tensors left float: each was behind at least half of the
    /// output error when it was chosen (leaving it float gained
    /// [`OUTLIER_DB`] or more).
    pub float: Vec<crate::mixed::FloatTensor>,
    /// Output score (dB) with the chosen ranges and the outliers float.
    pub final_db: f64,
}

/// A candidate range and its name.
type Candidate = (String, (f32, f32));

fn method_name(m: RangeMethod) -> String {
    match m {
        RangeMethod::MinMax => "minmax".into(),
        RangeMethod::Percentile(p) => format!("percentile {p}"),
        RangeMethod::Entropy => "entropy".into(),
        RangeMethod::Mse => "mse".into(),
    }
}

/// The candidate ranges of one tensor, the policy's range first.
fn candidates(
    g: &quench_ir::Graph,
    name: &str,
    stats: &TensorStats,
    format: &QuantFormat,
    policy: (f32, f32),
    consumer_clamp: bool,
    entropy_guard: f64,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = vec![("policy".into(), policy)];
    if crate::calibrate::produced_by_bounded_op(g, name) {
        return out;
    }
    for m in [
        RangeMethod::MinMax,
        RangeMethod::Percentile(99.999),
        RangeMethod::Percentile(99.99),
        RangeMethod::Percentile(99.9),
        RangeMethod::Mse,
        RangeMethod::Entropy,
    ] {
        let r = if m == RangeMethod::Entropy {
            quench_calib::entropy_range_guarded_for(stats, format, entropy_guard).map(|(r, _)| r)
        } else {
            quench_calib::choose_range_for(stats, m, format)
        };
        let Ok(r) = r else { continue };
        let r = if consumer_clamp {
            crate::calibrate::clamp_to_consumers(g, name, r)
        } else {
            r
        };
        if !(r.0.is_finite() && r.1.is_finite() && r.0 <= r.1) {
            continue;
        }
        let near = |a: (f32, f32), b: (f32, f32)| {
            let w = (a.1 - a.0)
                .abs()
                .max((b.1 - b.0).abs())
                .max(f32::MIN_POSITIVE);
            (a.0 - b.0).abs() <= 0.01 * w && (a.1 - b.1).abs() <= 0.01 * w
        };
        if out.iter().all(|(_, c)| !near(*c, r)) {
            out.push((method_name(m), r));
        }
    }
    out
}

/// The parametric twin of a quantized model with its data: runs a choice
/// of parameters on fixed samples and scores it against FP32 (one tract
/// compile per batch shape, then one run per choice).
pub(crate) struct ParamBench {
    runners: Runners,
    names: Vec<String>,
    batches: Vec<Vec<ArrayData>>,
    reference: Vec<Vec<ArrayData>>,
    pub pairs: Vec<ParamPair>,
    /// Root tensor (a tensor with a range of its own) -> its pairs and
    /// those of the tensors sharing its parameters, roots in topological
    /// order of their producers.
    pub roots: Vec<(String, Vec<usize>)>,
    pub runs: usize,
    /// The absorbed Relu/Clip bounds of every root (see
    /// [`crate::attribution::absorbed_clamp`]).
    clamps: HashMap<String, (f32, f32)>,
}

/// One pair's parameters: scale, zero point, on.
pub(crate) type Setting = (f32, f32, bool);

/// Output figures of one run of a [`ParamBench`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Score {
    /// `-10 log10(mean over outputs of error power / signal power)`.
    pub mean_db: f64,
    /// The lowest per-output SQNR (what thresholds and reports use).
    pub min_db: f64,
}

impl ParamBench {
    /// Quantizes `float` with `ranges`, builds the parametric twin and runs
    /// FP32 (`original`) on `rows` of `data` once for reference.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        float: &Model,
        original: &ModelProto,
        plan: &Plan,
        ranges: &Ranges,
        cfg: &QuantizeConfig,
        opset: i64,
        data: &Bound,
        rows: &[usize],
    ) -> Result<ParamBench> {
        let g = &float.graph;
        let mut q = float.clone();
        let mut cx = PassCx::new(opset);
        crate::phases::quantize_phase(&mut q, plan, ranges, cfg, opset, &mut cx)?;
        let mut twin = q.clone();
        let mut clamps = HashMap::new();
        for name in ranges.keys() {
            if let Some(c) = crate::attribution::absorbed_clamp(g, &q.graph, name) {
                clamps.insert(name.clone(), c);
            }
        }
        let clamp = |x: &str| crate::attribution::absorbed_clamp(g, &q.graph, x);
        let (pairs, _) = parametric_twin(&mut twin.graph, opset, &clamp);
        let sub = data.data.pick(rows);
        let data_names = quench_verify::input_names(original);
        let mut batches = Vec::new();
        for r in data.feed.ranges(sub.samples(), MAX_BATCH) {
            batches.push(sub.feed(data.feed, r)?);
        }
        let fp = Runners::new(original, vec![]);
        let reference: Vec<Vec<ArrayData>> = batches
            .par_iter()
            .map(|b| fp.run(&data_names, b))
            .collect::<Result<_>>()
            .context("running the FP32 model")?;
        let mut names = data_names;
        for p in &pairs {
            names.extend([p.scale.clone(), p.zero_point.clone(), p.on.clone()]);
        }
        // Roots and their pairs; members (data movement after a root)
        // share the root's setting.
        let members = crate::mixed::shared_members(float, plan);
        let mut root_of: HashMap<&str, &str> = HashMap::new();
        for (root, ms) in &members {
            for m in ms {
                root_of.insert(m.as_str(), root.as_str());
            }
        }
        let mut pairs_of: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, p) in pairs.iter().enumerate() {
            let root = root_of.get(p.tensor.as_str()).copied().unwrap_or(&p.tensor);
            if ranges.contains_key(root) {
                pairs_of.entry(root.to_string()).or_default().push(i);
            }
        }
        let order = g.topo_order().map_err(|e| anyhow!("{e}"))?;
        let pos: HashMap<quench_ir::NodeId, usize> =
            order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut roots: Vec<(String, Vec<usize>)> = pairs_of.into_iter().collect();
        roots.sort_by_key(|(r, _)| {
            g.value_by_name(r)
                .and_then(|v| g.producer(v))
                .and_then(|n| pos.get(&n).copied())
                .map_or(0, |p| p + 1)
        });
        Ok(ParamBench {
            runners: Runners::new(&twin.to_onnx(), vec![]),
            names,
            batches,
            reference,
            pairs,
            roots,
            runs: 0,
            clamps,
        })
    }

    /// Samples the bench runs on.
    pub fn samples(&self) -> usize {
        self.batches
            .iter()
            .map(|b| {
                b.first()
                    .map_or(0, |a| a.shape().first().copied().unwrap_or(1))
            })
            .sum()
    }

    /// Every pair with the parameters it was built with, on or off.
    pub fn initial(&self, on: bool) -> Vec<Setting> {
        self.pairs
            .iter()
            .map(|p| (p.initial_scale, p.initial_zero_point, on))
            .collect()
    }

    /// Scale and zero point of `root` quantized with `range` on `format`
    /// (with its absorbed Relu/Clip bounds, as quantization applies them).
    pub fn params(
        &self,
        root: &str,
        format: &QuantFormat,
        range: (f32, f32),
    ) -> Option<(f32, f32)> {
        let (mut lo, mut hi) = range;
        if let Some((clo, chi)) = self.clamps.get(root) {
            lo = lo.max(*clo);
            hi = hi.min(*chi);
        }
        let p = format.params(lo, hi.max(lo)).ok()?;
        Some((p.scale, p.zero_point as f32))
    }

    pub fn score(&mut self, set: &[Setting]) -> Result<Score> {
        self.runs += 1;
        let mut params = Vec::with_capacity(3 * set.len());
        for &(s, z, on) in set {
            params.push(ArrayData::F32(ndarray::arr0(s).into_dyn()));
            params.push(ArrayData::F32(ndarray::arr0(z).into_dyn()));
            params.push(ArrayData::Bool(ndarray::arr0(on).into_dyn()));
        }
        let sums: Vec<Vec<(f64, f64)>> = self
            .batches
            .par_iter()
            .zip(&self.reference)
            .map(|(b, r)| -> Result<Vec<(f64, f64)>> {
                let mut inputs = b.clone();
                inputs.extend(params.iter().cloned());
                let out = self.runners.run(&self.names, &inputs)?;
                Ok(r.iter()
                    .zip(&out)
                    .map(|(r, o)| {
                        let (r, o) = (r.to_f32(), o.to_f32());
                        if r.shape() != o.shape() {
                            return (f64::INFINITY, 1.0);
                        }
                        r.iter().zip(o.iter()).fold((0.0, 0.0), |(n, s), (a, b)| {
                            let d = f64::from(*a) - f64::from(*b);
                            (n + d * d, s + f64::from(*a) * f64::from(*a))
                        })
                    })
                    .collect())
            })
            .collect::<Result<_>>()?;
        let outputs = self.reference.first().map_or(0, Vec::len);
        let db = |ratio: f64| {
            if ratio.is_nan() {
                f64::NEG_INFINITY
            } else {
                -10.0 * ratio.log10()
            }
        };
        let mut mean = 0.0;
        let mut min_db = f64::INFINITY;
        for o in 0..outputs {
            let (n, s) = sums
                .iter()
                .fold((0.0, 0.0), |(n, s), b| (n + b[o].0, s + b[o].1));
            let ratio = if n == 0.0 { 0.0 } else { n / s.max(1e-30) };
            mean += ratio;
            min_db = min_db.min(db(ratio));
        }
        Ok(Score {
            mean_db: db((mean / outputs.max(1) as f64).max(1e-30)),
            min_db,
        })
    }
}

/// Rows spread evenly over `0..n`, at most `k` of them.
fn spread(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    (0..k).map(|i| i * n / k).collect()
}

/// Chooses a range per activation by its cost at the model output (see the
/// module docs). `float` is the graph right before quantization, `original`
/// the FP32 input (the reference), `policy` the ranges the range policy
/// chose (the starting point and the fallback).
#[allow(clippy::too_many_arguments)]
pub fn search(
    float: &Model,
    original: &ModelProto,
    plan: &Plan,
    stats: &BTreeMap<String, TensorStats>,
    policy: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    data: &Bound,
    consumer_clamp: bool,
    entropy_guard: f64,
    float_outliers: bool,
) -> Result<(Ranges, AutoReport)> {
    let g = &float.graph;
    let rows = spread(data.data.samples(), SAMPLES);
    let mut bench = ParamBench::new(float, original, plan, policy, cfg, opset, data, &rows)?;
    let default = cfg.default_activation_format();
    let mut set = bench.initial(false);
    let mut chosen = policy.clone();
    let mut changed = Vec::new();
    let mut searched = 0;
    let roots = bench.roots.clone();
    for (root, ixs) in &roots {
        let Some(v) = g.value_by_name(root) else {
            continue;
        };
        let format = plan.format_of(v, default);
        let cands = match stats.get(root.as_str()) {
            Some(s) => candidates(
                g,
                root,
                s,
                &format,
                policy[root.as_str()],
                consumer_clamp,
                entropy_guard,
            ),
            None => vec![("policy".into(), policy[root.as_str()])],
        };
        let apply = |set: &mut Vec<Setting>, (s, z): (f32, f32)| {
            for &i in ixs {
                set[i] = (s, z, true);
            }
        };
        let first = (set[ixs[0]].0, set[ixs[0]].1);
        apply(&mut set, first);
        if cands.len() < 2 {
            continue;
        }
        searched += 1;
        let base = bench.score(&set)?.mean_db;
        let mut best: Option<(f64, usize, (f32, f32))> = None;
        for (k, (_, r)) in cands.iter().enumerate().skip(1) {
            let Some(p) = bench.params(root, &format, *r) else {
                continue;
            };
            apply(&mut set, p);
            let s = bench.score(&set)?.mean_db;
            if s > base + MIN_GAIN_DB && best.is_none_or(|b| s > b.0) {
                best = Some((s, k, p));
            }
        }
        match best {
            Some((s, k, p)) => {
                apply(&mut set, p);
                changed.push(AutoChoice {
                    tensor: root.clone(),
                    method: cands[k].0.clone(),
                    from: policy[root.as_str()],
                    to: cands[k].1,
                    gain_db: s - base,
                });
                chosen.insert(root.clone(), cands[k].1);
            }
            None => apply(&mut set, first),
        }
    }
    let auto_db = bench.score(&set)?.mean_db;
    let policy_db = if changed.is_empty() {
        auto_db
    } else {
        let initial = bench.initial(true);
        bench.score(&initial)?.mean_db
    };
    let kept = !changed.is_empty() && auto_db > policy_db;
    let mut cur = if kept { set } else { bench.initial(true) };
    let mut float_tensors = Vec::new();
    let mut final_db = auto_db.max(policy_db);
    if float_outliers {
        // Each root alone left float; a tensor behind at least half of
        // the output error (its removal gains OUTLIER_DB) is an outlier.
        let mut cands: Vec<(String, Vec<usize>, f64)> = Vec::new();
        for (root, ixs) in &roots {
            let mut alone = cur.clone();
            for &i in ixs {
                alone[i].2 = false;
            }
            let gain = bench.score(&alone)?.mean_db - final_db;
            if gain >= OUTLIER_DB {
                cands.push((root.clone(), ixs.clone(), gain));
            }
        }
        cands.sort_by(|a, b| b.2.total_cmp(&a.2));
        // Re-measured one by one with the earlier ones float: each must
        // still be behind half of what error is left.
        for (root, ixs, gain) in cands {
            for &i in &ixs {
                cur[i].2 = false;
            }
            let now = bench.score(&cur)?.mean_db;
            if now - final_db >= OUTLIER_DB {
                float_tensors.push(crate::mixed::FloatTensor {
                    tensor: root,
                    gain_db: gain,
                    sqnr_after_db: now,
                });
                final_db = now;
            } else {
                for &i in &ixs {
                    cur[i].2 = true;
                }
            }
        }
    }
    let report = AutoReport {
        samples: bench.samples(),
        searched,
        runs: bench.runs,
        policy_db,
        auto_db,
        kept,
        changed,
        float: float_tensors,
        final_db,
    };
    let mut out = if kept { chosen } else { policy.clone() };
    for f in &report.float {
        out.remove(&f.tensor);
    }
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_rows_cover_the_set_evenly() {
        assert_eq!(spread(5, 16), vec![0, 1, 2, 3, 4]);
        assert_eq!(spread(64, 4), vec![0, 16, 32, 48]);
        assert_eq!(spread(10, 3), vec![0, 3, 6]);
    }
}
