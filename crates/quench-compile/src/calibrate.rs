//! Calibration: runs the FP32 model in tract over the calibration samples
//! and streams every observed tensor into order-invariant observers; then
//! the range policy turns statistics into ranges.
//!
//! Invariant: nothing keeps per-sample activations once they are observed;
//! memory is one batch of outputs per worker (borrowed from tract, not
//! copied) plus one histogram per tensor per worker, whatever the number of
//! samples. Batches run in parallel (rayon); histograms merge exactly, so
//! the result does not depend on batch size, order or thread count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use quench_calib::{
    choose_range, Histogram, MinMax, Observer, QuantFormat, QuantTarget, RangeMethod, TensorStats,
};
use quench_ir::Graph;
use quench_onnx::proto::ModelProto;
use quench_passes::facts;
use quench_passes::quantize::Ranges;
use quench_verify::{ArrayData, Dataset, Feed, Runners, MAX_BATCH};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::progress::Progress;

/// Observed statistics of every calibrated tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibrationTable {
    /// quench version that wrote it.
    pub quench: String,
    pub model: String,
    pub samples: usize,
    /// Tensor name → observed statistics (with histogram).
    pub tensors: BTreeMap<String, TensorStats>,
    /// Tensor name → method → chosen `[min, max]` for the default activation
    /// type (uint8 asymmetric), for reference.
    #[serde(default)]
    pub ranges: BTreeMap<String, BTreeMap<String, (f32, f32)>>,
}

/// Bytes of observed outputs one batch may hold: every observed tensor of
/// a run is alive until the run returns, so the batch size is what bounds
/// calibration memory (times the number of workers).
pub const OUTPUT_BUDGET: u64 = 192 << 20;

/// How calibration splits the samples into runs. When the model's batch
/// axis is free, the first full batch ([`MAX_BATCH`] samples) is compiled
/// first; its output shapes tell what the observed tensors of one sample
/// weigh, and batches then hold as many samples as fit in
/// [`OUTPUT_BUDGET`] (1..=[`MAX_BATCH`]). Small models keep the first
/// batch size, so they compile nothing extra; large ones compile one
/// smaller batch shape. A shorter last batch runs as one run.
fn batch_ranges(
    runners: &Runners,
    data: &Dataset,
    feed: Feed,
    input_names: &[String],
) -> Result<Vec<std::ops::Range<usize>>> {
    let n = data.samples();
    if feed != (Feed::Batch { fixed: None }) || n <= 1 {
        return Ok(feed.ranges(n, MAX_BATCH));
    }
    let first = n.min(MAX_BATCH);
    let probe = data.feed(feed, 0..first)?;
    let bytes = runners.runner(input_names, &probe)?.output_bytes();
    let batch = match bytes {
        Some(b) if b > 0 => {
            let per_sample = (b / first as u64).max(1);
            (OUTPUT_BUDGET / per_sample).clamp(1, first as u64) as usize
        }
        _ => first,
    };
    Ok(feed.ranges(n, batch))
}

/// Runs `model` over `data` and observes `tensors`. Also returns what was
/// changed in tract's copy of the model
/// ([`prepare_for_tract`](quench_verify::prepare_for_tract)).
///
/// `histograms`: record a histogram per tensor (the percentile, entropy
/// and MSE methods need one); without, only min/max are kept, which costs
/// a tenth per observed value.
pub fn collect(
    model: &ModelProto,
    data: &Dataset,
    feed: Feed,
    tensors: &[String],
    histograms: bool,
    progress: &dyn Progress,
) -> Result<(BTreeMap<String, TensorStats>, Vec<String>)> {
    let c = collect_keeping(model, data, feed, tensors, histograms, &[], progress)?;
    Ok((c.stats, c.notes))
}

/// What [`collect_keeping`] returns.
#[derive(Debug)]
pub struct Collected {
    /// Tensor name → observed statistics.
    pub stats: BTreeMap<String, TensorStats>,
    /// What was changed in tract's copy of the model.
    pub notes: Vec<String>,
    /// Per group of `keep`, the model's graph outputs on that batch.
    pub kept: Vec<Vec<ArrayData>>,
}

/// [`collect`], with the samples of each group of `keep` (row indices,
/// each a batch `feed` allows) run together as one batch, whose graph
/// outputs are returned: the FP32 outputs a later phase would otherwise
/// run the model again for (the `--method auto` search's references).
/// The other samples run as `collect` runs them. The statistics do not
/// depend on the grouping (observers merge exactly). When a group of
/// several samples would hold more observed outputs than
/// [`OUTPUT_BUDGET`] (or their size is not known), nothing is kept
/// (`kept` is empty) and every sample runs as `collect` runs it.
pub fn collect_keeping(
    model: &ModelProto,
    data: &Dataset,
    feed: Feed,
    tensors: &[String],
    histograms: bool,
    keep: &[Vec<usize>],
    progress: &dyn Progress,
) -> Result<Collected> {
    if histograms {
        collect_with(model, data, feed, tensors, Histogram::new, keep, progress)
    } else {
        collect_with(model, data, feed, tensors, MinMax::new, keep, progress)
    }
}

/// One calibration run: its sample rows, and the group of `keep` it is.
struct Job {
    rows: Vec<usize>,
    keep: Option<usize>,
}

fn collect_with<O: Observer + Send>(
    model: &ModelProto,
    data: &Dataset,
    feed: Feed,
    tensors: &[String],
    make: fn() -> O,
    keep: &[Vec<usize>],
    progress: &dyn Progress,
) -> Result<Collected> {
    let input_names = quench_verify::input_names(model);
    let n_out = model.graph.as_ref().map_or(0, |g| g.output.len());
    let runners = Runners::new(model, tensors.to_vec());
    let n = data.samples();
    // The kept batches hold several samples: when their observed outputs
    // would pass OUTPUT_BUDGET (a large model, where batches shrink to
    // one sample), nothing is kept and the search runs FP32 itself.
    let keep = match keep.first() {
        Some(first) if first.len() > 1 => {
            let inputs = data.pick(first).feed(feed, 0..first.len())?;
            let bytes = runners.runner(&input_names, &inputs)?.output_bytes();
            if bytes.is_none_or(|b| b > OUTPUT_BUDGET) {
                &[][..]
            } else {
                keep
            }
        }
        _ => keep,
    };
    let mut jobs: Vec<Job> = keep
        .iter()
        .enumerate()
        .map(|(i, rows)| Job {
            rows: rows.clone(),
            keep: Some(i),
        })
        .collect();
    let mut taken = vec![false; n];
    for r in keep.iter().flatten() {
        if let Some(t) = taken.get_mut(*r) {
            *t = true;
        }
    }
    let rest: Vec<usize> = (0..n).filter(|&r| !taken[r]).collect();
    // The batch size (and tract's verdict on it) is the one `collect`
    // finds on all the samples, whatever `keep` takes: when every row is
    // in a kept group of one sample, a model tract cannot run at
    // `collect`'s batch size must still fail here (and fall back as it
    // does without the groups), not calibrate one sample at a time.
    let full = batch_ranges(&runners, data, feed, &input_names)?;
    let batch = full.first().map_or(1, |r| r.len());
    for r in feed.ranges(rest.len(), batch) {
        jobs.push(Job {
            rows: rest[r].to_vec(),
            keep: None,
        });
    }
    progress.samples_start("calibrating", n as u64);
    let empty = || -> Vec<O> { (0..tensors.len()).map(|_| make()).collect() };
    let kept: std::sync::Mutex<Vec<Option<Vec<ArrayData>>>> =
        std::sync::Mutex::new(vec![None; keep.len()]);
    // Memory is bounded by the thread count, not the batch count:
    // one worker per thread pulls the next batch and keeps one set of
    // observers; the sets are merged at the end. (A rayon `fold` would
    // keep one set per split of the work, more of them the more batches.)
    let next = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().clamp(1, jobs.len().max(1));
    let merged = (0..workers)
        .into_par_iter()
        .map(|_| -> Result<Vec<O>> {
            let mut hs = empty();
            while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                let rows = &job.rows;
                let Some(&first) = rows.first() else {
                    continue;
                };
                let contiguous = rows.iter().enumerate().all(|(i, &r)| r == first + i);
                let inputs = if contiguous {
                    data.feed(feed, first..first + rows.len())?
                } else {
                    data.pick(rows).feed(feed, 0..rows.len())?
                };
                check_finite(&inputs, &input_names, rows, feed)?;
                let outputs = runners
                    .runner(&input_names, &inputs)?
                    .run_visit(&inputs, n_out, job.keep.is_some(), |i, values| {
                        hs[i - n_out].observe(values)
                    })
                    .with_context(|| format!("running calibration samples {rows:?}"))?;
                if let Some(k) = job.keep {
                    if let Ok(mut kept) = kept.lock() {
                        kept[k] = Some(outputs);
                    }
                }
                progress.samples_done(rows.len() as u64);
            }
            Ok(hs)
        })
        .try_reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(&b) {
                x.merge(y);
            }
            Ok(a)
        });
    progress.samples_end();
    let merged = merged?;
    let stats = tensors
        .iter()
        .cloned()
        .zip(merged.iter().map(|h| h.stats()))
        .collect();
    let kept = kept
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a calibration worker panicked"))?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    Ok(Collected {
        stats,
        notes: runners.take_notes(),
        kept,
    })
}

/// Calibration data that cannot be used (an error of the data, not of
/// tract: no fallback applies).
#[derive(Debug)]
pub struct BadData(pub String);

impl std::fmt::Display for BadData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadData {}

/// Refuses calibration samples holding NaN or infinity: they would poison
/// every range downstream of them. The error names the input and sample.
fn check_finite(inputs: &[ArrayData], names: &[String], rows: &[usize], feed: Feed) -> Result<()> {
    for (a, name) in inputs.iter().zip(names) {
        if let Some(row) = a.first_non_finite_row() {
            let at = match feed {
                Feed::Sample => 0,
                Feed::Batch { .. } => row,
            };
            let sample = rows.get(at).copied().unwrap_or(at);
            return Err(BadData(format!(
                "calibration input `{name}`, sample {sample}: holds NaN or infinity; calibration needs finite data"
            ))
            .into());
        }
    }
    Ok(())
}

/// A calibration table: statistics plus every method's range for the
/// default activation type.
pub fn table_from(
    model: &str,
    samples: usize,
    stats: BTreeMap<String, TensorStats>,
) -> CalibrationTable {
    // At least 4 tensors per parallel task: a handful of tensors is searched
    // faster on one thread than by waking others (about 1 ms each).
    let stats_list: Vec<(&String, &TensorStats)> = stats.iter().collect();
    let ranges = stats_list
        .par_iter()
        .with_min_len(4)
        .map(|&(name, s)| {
            let mut m = BTreeMap::new();
            for (k, method) in [
                ("minmax", RangeMethod::MinMax),
                ("percentile_99.999", RangeMethod::Percentile(99.999)),
                ("entropy", RangeMethod::Entropy),
                ("mse", RangeMethod::Mse),
            ] {
                if let Ok(r) = choose_range(s, method, QuantTarget::U8) {
                    m.insert(k.to_string(), r);
                }
            }
            (name.clone(), m)
        })
        .collect();
    CalibrationTable {
        quench: env!("CARGO_PKG_VERSION").into(),
        model: model.to_string(),
        samples,
        tensors: stats,
        ranges,
    }
}

/// What the range policy decided besides the ranges.
#[derive(Debug, Default)]
pub struct RangeChoice {
    pub ranges: Ranges,
    /// Tensors whose bounded output (Softmax, Sigmoid, ...) kept its
    /// observed range under a clipping method.
    pub bounded_kept: usize,
    /// Entropy ranges replaced by the MSE range (`--entropy-guard`).
    pub guarded: usize,
    /// Tensors that never held a positive value.
    pub dead: Vec<String>,
    /// Per tensor: why it has no range.
    pub failed: Vec<(String, String)>,
    /// Ranges clamped to where their consumers are not flat: (tensor,
    /// range before, range after).
    pub clamped: Vec<(String, (f32, f32), (f32, f32))>,
}

/// The range policy: per observed tensor, the range `method` picks for
/// `target`, except that outputs of bounded ops (Softmax, Sigmoid,
/// HardSigmoid, through data movement) keep their observed range under the
/// clipping methods: their large values carry the information (attention
/// weights, gates).
///
/// With `consumer_clamp`, each range is then clamped to where its consumers
/// are not flat ([`clamp_to_consumers`]): exact, and often much tighter (a
/// stem feeding only a HardSwish with rare values down to -100).
pub fn choose_ranges(
    g: &Graph,
    stats: &BTreeMap<String, TensorStats>,
    method: RangeMethod,
    format_of: &(dyn Fn(&str) -> QuantFormat + Sync),
    entropy_guard: f64,
    consumer_clamp: bool,
) -> RangeChoice {
    let mut out = RangeChoice::default();
    let methods: Vec<RangeMethod> = stats
        .keys()
        .map(|name| match method {
            RangeMethod::MinMax => RangeMethod::MinMax,
            _ if produced_by_bounded_op(g, name) => {
                out.bounded_kept += 1;
                RangeMethod::MinMax
            }
            m => m,
        })
        .collect();
    // Range searches are independent per tensor: in parallel.
    let all: Vec<(&String, &TensorStats, RangeMethod)> = stats
        .iter()
        .zip(methods)
        .map(|((n, s), m)| (n, s, m))
        .collect();
    let chosen: Vec<_> = all
        .par_iter()
        .map(|&(name, s, method)| {
            // Each tensor's search runs on the grid of its own format.
            let format = format_of(name);
            if method == RangeMethod::Entropy {
                quench_calib::entropy_range_guarded_for(s, &format, entropy_guard)
            } else {
                quench_calib::choose_range_for(s, method, &format).map(|r| (r, false))
            }
        })
        .collect();
    for ((name, _), c) in stats.iter().zip(chosen) {
        match c {
            Ok((r, replaced)) => {
                out.guarded += usize::from(replaced);
                let c = if consumer_clamp {
                    clamp_to_consumers(g, name, r, &format_of(name))
                } else {
                    r
                };
                if c != r {
                    out.clamped.push((name.clone(), r, c));
                }
                out.ranges.insert(name.clone(), c);
            }
            Err(e) => out.failed.push((name.clone(), e.to_string())),
        }
    }
    // A range that ends at 0 from above saw no positive value in any
    // calibration sample (a dead ReLU, a constant-zero tensor).
    out.dead = stats
        .iter()
        .filter(|(_, s)| s.count > 0 && s.max <= 0.0)
        .map(|(n, _)| n.clone())
        .collect();
    out
}

/// Whether tensor `name` is the output of a Softmax, Sigmoid or
/// HardSigmoid (bounded to [0, 1]). Data movement (Reshape, Transpose, ...)
/// in between does not count.
pub(crate) fn produced_by_bounded_op(g: &Graph, name: &str) -> bool {
    use quench_passes::rules::{rule, OpRule};
    let mut v = g.value_by_name(name);
    for _ in 0..16 {
        let Some(n) = v.and_then(|v| g.producer(v)) else {
            return false;
        };
        let node = g.node(n);
        // Probabilities in [0, 1] (Softmax, Sigmoid, HardSigmoid); Tanh-like
        // [-1, 1] outputs are not gates and keep the method's range.
        if facts::bounded_output(node.kind()) == Some((0.0, 1.0)) {
            return true;
        }
        if rule(node.kind()) != OpRule::Shared {
            return false;
        }
        v = node.input(0);
    }
    false
}

/// The interval outside of which every consumer of tensor `name` is flat:
/// `(lo, hi)` such that replacing any value below `lo` by `lo` (above `hi`
/// by `hi`) changes no consumer's output. Consumers are followed through
/// pure data movement (which commutes with an element-wise clamp); a graph
/// output, or any consumer that is not flat on a side, opens that side
/// (`-inf` / `+inf`).
///
/// Flat regions come from [`facts::saturation`] (each exact in f32: Relu
/// below 0; Clip outside its constant bounds; HardSwish below -3;
/// HardSigmoid outside `[-beta/alpha, (1-beta)/alpha]`; Tanh outside
/// `[-10, 10]`; Sigmoid above 20), data movement from [`facts::moves_data`].
pub fn consumer_flat_bounds(g: &Graph, name: &str) -> (f32, f32) {
    let Some(v) = g.value_by_name(name) else {
        return (f32::NEG_INFINITY, f32::INFINITY);
    };
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    let mut stack = vec![v];
    let mut seen = 0usize;
    while let Some(v) = stack.pop() {
        seen += 1;
        if g.is_graph_output(v) || seen > 4096 {
            return (f32::NEG_INFINITY, f32::INFINITY);
        }
        for u in g.uses(v) {
            let node = g.node(u.node);
            if u.index != 0 {
                return (f32::NEG_INFINITY, f32::INFINITY);
            }
            if facts::moves_data(node.kind()) {
                stack.extend(node.outputs().iter().flatten().copied());
                continue;
            }
            let Some(sat) = facts::saturation(g, u.node) else {
                return (f32::NEG_INFINITY, f32::INFINITY);
            };
            lo = lo.min(sat.flat_below.unwrap_or(f32::NEG_INFINITY));
            hi = hi.max(sat.flat_above.unwrap_or(f32::INFINITY));
        }
    }
    if lo > hi {
        // No consumer at all (a dead tensor): nothing to clamp.
        return (f32::NEG_INFINITY, f32::INFINITY);
    }
    (lo, hi)
}

/// `range` clamped to where the consumers of `name` are not flat (see
/// [`consumer_flat_bounds`]), then widened where needed so that the grid
/// `format` puts on it still reaches each nonzero bound it was clamped to
/// ([`cover_flat_ends`]); exact: no consumer output changes.
pub fn clamp_to_consumers(
    g: &Graph,
    name: &str,
    (lo, hi): (f32, f32),
    format: &QuantFormat,
) -> (f32, f32) {
    let (flo, fhi) = consumer_flat_bounds(g, name);
    let l = lo.max(flo).min(fhi);
    let h = hi.min(fhi).max(l);
    cover_within(format, (l, h), (flo, fhi))
}

/// `(lo, hi)` widened by whole steps until the integer grid `format` puts
/// on it reaches `low` (its lowest level at or below it) and `high` (its
/// highest at or above it). The zero point is rounded to an integer, which
/// shifts the grid by up to half a step: a range clamped at HardSigmoid's
/// -2.5 got a u8 grid starting at -2.490, and every value below then read
/// as a gate of 0.002 instead of 0. Float formats (grid symmetric about 0
/// through the larger end) need nothing.
pub fn cover_flat_ends(
    format: &QuantFormat,
    (mut lo, mut hi): (f32, f32),
    low: Option<f32>,
    high: Option<f32>,
) -> (f32, f32) {
    let quench_calib::Scheme::Int(i) = format.scheme else {
        return (lo, hi);
    };
    let n = (i.qmax() - i.qmin()) as f32;
    for _ in 0..8 {
        let Ok(p) = format.params(lo, hi) else {
            break;
        };
        let glo = (i.qmin() - p.zero_point) as f32 * p.scale;
        let ghi = (i.qmax() - p.zero_point) as f32 * p.scale;
        let step = (hi.max(0.0) - lo.min(0.0)) / n;
        let short_lo = low.is_some_and(|b| glo > b);
        let short_hi = high.is_some_and(|b| ghi < b);
        if !(short_lo || short_hi) || !(step > 0.0 && step.is_finite()) {
            break;
        }
        if short_lo {
            lo -= step;
        }
        if short_hi {
            hi += step;
        }
    }
    (lo, hi)
}

/// `range` of tensor `name`, chosen (and clamped by
/// [`clamp_to_consumers`]) for another format, covered again for `format`:
/// a tensor raised to 16 bits by `--target-sqnr` keeps the range its 8-bit
/// grid was fitted to, and the finer grid's rounded zero point can leave
/// it up to half a 16-bit step short of the flat bound. See
/// [`cover_within`].
pub fn cover_consumer_bounds(
    g: &Graph,
    name: &str,
    range: (f32, f32),
    format: &QuantFormat,
) -> (f32, f32) {
    cover_within(format, range, consumer_flat_bounds(g, name))
}

/// `(lo, hi)` with each end at or beyond a finite nonzero flat bound
/// (`flo`, `fhi`) widened until the grid of `format` reaches that bound
/// ([`cover_flat_ends`]); ends inside the bounds stay as they are.
pub fn cover_within(
    format: &QuantFormat,
    (lo, hi): (f32, f32),
    (flo, fhi): (f32, f32),
) -> (f32, f32) {
    let low = (lo <= flo && flo != 0.0 && flo.is_finite()).then_some(flo);
    let high = (hi >= fhi && fhi != 0.0 && fhi.is_finite()).then_some(fhi);
    cover_flat_ends(format, (lo, hi), low, high)
}

#[cfg(test)]
mod tests {
    use quench_calib::{QuantFormat, Scheme};

    /// A range covered for u8 and then given a 16-bit grid (a tensor
    /// raised by `--target-sqnr`) is covered again by
    /// [`super::cover_within`]: the u16 grid reaches the flat bound. Without
    /// it about half of the ranges u8 left as they were came up short (by
    /// up to half a u16 step); ranges u8 widened, and ranges inside the
    /// bounds, are not changed.
    #[test]
    fn a_range_raised_to_16_bits_still_reaches_the_flat_bound() {
        let (u8f, u16f) = (QuantFormat::U8, QuantFormat::U16);
        let Scheme::Int(i) = u16f.scheme else {
            unreachable!()
        };
        let lowest = |r: (f32, f32)| {
            let p = u16f.params(r.0, r.1).unwrap();
            u16f.dequantize(i.qmin(), &p)
        };
        let (mut kept, mut short_before) = (0, 0);
        for k in 0..2000 {
            let flo = -0.1 - k as f32 * 0.00731;
            for hi in [0.3f32, 1.0, 2.7, 7.3] {
                let r = super::cover_flat_ends(&u8f, (flo, hi), Some(flo), None);
                let covered = super::cover_within(&u16f, r, (flo, f32::INFINITY));
                assert!(lowest(covered) <= flo, "{r:?} -> {covered:?}");
                if r.0 < flo {
                    assert_eq!(covered, r, "widened for u8 already");
                    continue;
                }
                kept += 1;
                short_before += usize::from(lowest(r) > flo);
                let step = (hi - flo) / 65535.0;
                assert!(flo - covered.0 <= 2.0 * step, "{r:?} -> {covered:?}");
            }
        }
        assert!(kept > 1000 && short_before > 500, "{kept} {short_before}");
        // Inside the bounds, or no bound: unchanged.
        let r = (-1.0, 1.0);
        assert_eq!(super::cover_within(&u16f, r, (-2.5, 2.5)), r);
        let open = (f32::NEG_INFINITY, f32::INFINITY);
        assert_eq!(super::cover_within(&u16f, r, open), r);
    }

    /// After [`super::cover_flat_ends`], the lowest level of the grid is
    /// at or below the flat bound the range was clamped to (and the
    /// highest at or above), so every value clamped by the quantizer reads
    /// as flat for the consumer; the widening stays within two steps.
    /// Without it, the rounded zero point leaves some ranges short.
    #[test]
    fn clamped_ends_are_reached_by_the_grid() {
        let hardsigmoid = |x: f32| (0.2 * x + 0.5).clamp(0.0, 1.0);
        let mut short_before = 0;
        for f in [QuantFormat::U8, QuantFormat::I8, QuantFormat::U16] {
            let Scheme::Int(i) = f.scheme else {
                unreachable!()
            };
            for k in 0..400 {
                let (flo, fhi) = (-2.5f32, 2.5f32);
                // Upper ends inside and at the flat bound.
                let hi = (0.05 + k as f32 * 0.0123).min(fhi);
                let high = (hi == fhi).then_some(fhi);
                let ends = |(l, h): (f32, f32)| {
                    let p = f.params(l, h).unwrap();
                    (f.dequantize(i.qmin(), &p), f.dequantize(i.qmax(), &p))
                };
                let (glo, ghi) = ends((flo, hi));
                short_before += usize::from(glo > flo || high.is_some_and(|b| ghi < b));
                let (l, h) = super::cover_flat_ends(&f, (flo, hi), Some(flo), high);
                let (glo, ghi) = ends((l, h));
                assert!(
                    glo <= flo,
                    "{f:?} [{flo}, {hi}] -> [{l}, {h}]: lowest level {glo}"
                );
                if let Some(b) = high {
                    assert!(ghi >= b, "{f:?} [{flo}, {hi}]: highest level {ghi}");
                }
                let step = (hi - flo) / (i.qmax() - i.qmin()) as f32;
                assert!(flo - l <= 2.0 * step && h - hi <= 2.0 * step);
                // What the consumer sees for a value far below the range.
                let p = f.params(l, h).unwrap();
                let x = f.dequantize(f.quantize(-40.0, &p), &p);
                assert_eq!(hardsigmoid(x), 0.0, "{f:?} [{l}, {h}]");
            }
        }
        assert!(
            short_before > 0,
            "no range was short: the test shows nothing"
        );
    }

    /// The flat regions `facts::saturation` claims, checked on the ops'
    /// ONNX definitions evaluated in f32: beyond each bound the output
    /// equals the output at the bound.
    #[test]
    fn claimed_flat_regions_are_flat_in_f32() {
        let hardswish = |x: f32| x * (x + 3.0).clamp(0.0, 6.0) / 6.0;
        let hardsigmoid = |x: f32, a: f32, b: f32| (a * x + b).clamp(0.0, 1.0);
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        for k in 0..2000 {
            let t = k as f32 * 0.37;
            assert_eq!(hardswish(-3.0 - t), hardswish(-3.0));
            assert_eq!(hardsigmoid(-2.5 - t, 0.2, 0.5), hardsigmoid(-2.5, 0.2, 0.5));
            assert_eq!(hardsigmoid(2.5 + t, 0.2, 0.5), hardsigmoid(2.5, 0.2, 0.5));
            assert_eq!((10.0 + t).tanh(), 10f32.tanh());
            assert_eq!((-10.0 - t).tanh(), (-10f32).tanh());
            assert_eq!(sigmoid(20.0 + t), sigmoid(20.0));
        }
        // And the bounds are not loose where it matters: HardSwish is not
        // flat just above -3.
        assert!(hardswish(-2.9) != hardswish(-3.0));
        assert_eq!(10f32.tanh(), 1.0);
        assert_eq!(sigmoid(20.0), 1.0);
    }
}
