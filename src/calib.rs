//! Calibration: runs the FP32 model in tract over the calibration samples
//! and streams every observed tensor into order-invariant observers.
//!
//! Invariant: nothing keeps per-sample activations once they are observed;
//! memory is one batch of outputs per worker (borrowed from tract, not
//! copied) plus one histogram per tensor per worker, whatever the number of
//! samples. Batches run in parallel
//! (rayon); histograms merge exactly, so the result does not depend on
//! batch size, order or thread count.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use quench_calib::{Histogram, MinMax, Observer, TensorStats};
use quench_onnx::proto::ModelProto;
use quench_verify::{prepare_for_tract, ArrayData, Dataset, Feed, InputFact, Runner, RunnerConfig};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The largest batch calibration and evaluation feed at once.
pub const MAX_BATCH: usize = 16;

/// Runners by input shapes (a last, shorter batch needs its own).
pub struct Runners {
    model: ModelProto,
    extra: Vec<String>,
    /// Compiled runners, and the error of a shape tract could not compile
    /// (not retried for every batch).
    cache: Mutex<HashMap<Vec<Vec<usize>>, Result<Runner, String>>>,
    pub notes: Mutex<Vec<String>>,
}

impl Runners {
    pub fn new(model: &ModelProto, extra: Vec<String>) -> Runners {
        Runners {
            model: model.clone(),
            extra,
            cache: Mutex::new(HashMap::new()),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// Runs the model on `inputs` (named as the model's inputs, in order).
    pub fn run(&self, names: &[String], inputs: &[ArrayData]) -> Result<Vec<ArrayData>> {
        Ok(self.runner(names, inputs)?.run(inputs)?)
    }

    /// The runner compiled for the shapes of `inputs`. Compiled once: the
    /// cache stays locked while tract compiles, so parallel batches of the
    /// same shape wait for it instead of compiling it again.
    pub fn runner(&self, names: &[String], inputs: &[ArrayData]) -> Result<Runner> {
        let key: Vec<Vec<usize>> = inputs.iter().map(|a| a.shape().to_vec()).collect();
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| anyhow!("runner cache poisoned"))?;
        if let Some(r) = cache.get(&key) {
            return r.clone().map_err(|e| anyhow!(e));
        }
        let shapes: Vec<(String, Vec<i64>)> = names
            .iter()
            .zip(&key)
            .map(|(n, s)| (n.clone(), s.iter().map(|d| *d as i64).collect()))
            .collect();
        let (prepared, notes) = prepare_for_tract(&self.model, &shapes);
        if let Ok(mut n) = self.notes.lock() {
            for note in notes {
                if !n.contains(&note) {
                    n.push(note);
                }
            }
        }
        let facts = names
            .iter()
            .zip(inputs)
            .map(|(n, a)| InputFact {
                name: n.clone(),
                elem_type: a.elem_type(),
                shape: a.shape().to_vec(),
            })
            .collect();
        let r = Runner::new(
            &prepared,
            &RunnerConfig {
                input_facts: facts,
                extra_outputs: self.extra.clone(),
            },
        )
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
        cache.insert(key, r.clone());
        r.map_err(|e| anyhow!(e))
    }
}

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
/// changed in tract's copy of the model ([`prepare_for_tract`]).
///
/// `histograms`: record a histogram per tensor (the percentile, entropy
/// and MSE methods need one); without, only min/max are kept, which costs
/// a tenth per observed value.
pub fn collect(
    model: &ModelProto,
    data: &Dataset,
    feed: Feed,
    input_names: &[String],
    tensors: &[String],
    histograms: bool,
) -> Result<(BTreeMap<String, TensorStats>, Vec<String>)> {
    if histograms {
        collect_with(model, data, feed, input_names, tensors, Histogram::new)
    } else {
        collect_with(model, data, feed, input_names, tensors, MinMax::new)
    }
}

fn collect_with<O: Observer + Send>(
    model: &ModelProto,
    data: &Dataset,
    feed: Feed,
    input_names: &[String],
    tensors: &[String],
    make: fn() -> O,
) -> Result<(BTreeMap<String, TensorStats>, Vec<String>)> {
    let n_out = model.graph.as_ref().map_or(0, |g| g.output.len());
    let runners = Runners::new(model, tensors.to_vec());
    let ranges = batch_ranges(&runners, data, feed, input_names)?;
    // Drawn only on a terminal (indicatif hides itself otherwise).
    let bar = indicatif::ProgressBar::new(data.samples() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "calibrating {bar:30} {pos}/{len} samples ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let empty = || -> Vec<O> { (0..tensors.len()).map(|_| make()).collect() };
    // Memory is bounded by the thread count, not the batch count:
    // one worker per thread pulls the next batch and keeps one set of
    // observers; the sets are merged at the end. (A rayon `fold` would
    // keep one set per split of the work, more of them the more batches.)
    let next = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().clamp(1, ranges.len().max(1));
    let merged = (0..workers)
        .into_par_iter()
        .map(|_| -> Result<Vec<O>> {
            let mut hs = empty();
            while let Some(r) = ranges.get(next.fetch_add(1, Ordering::Relaxed)) {
                let inputs = data.feed(feed, r.clone())?;
                runners
                    .runner(input_names, &inputs)?
                    .run_visit(&inputs, n_out, |i, values| hs[i - n_out].observe(values))
                    .with_context(|| format!("running calibration samples {r:?}"))?;
                bar.inc(r.len() as u64);
            }
            Ok(hs)
        })
        .try_reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(&b) {
                x.merge(y);
            }
            Ok(a)
        })?;
    bar.finish_and_clear();
    let stats = tensors
        .iter()
        .cloned()
        .zip(merged.iter().map(|h| h.stats()))
        .collect();
    let notes = runners.notes.into_inner().unwrap_or_default();
    Ok((stats, notes))
}
