//! Calibration: runs the FP32 model in tract over the calibration samples
//! and streams every observed tensor into order-invariant observers.
//!
//! Invariant: nothing keeps per-sample activations once they are observed;
//! memory is one batch of outputs per worker plus one histogram per tensor
//! per worker, whatever the number of samples. Batches run in parallel
//! (rayon); histograms merge exactly, so the result does not depend on
//! batch size, order or thread count.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use quench_calib::{Histogram, Observer, TensorStats};
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
    cache: Mutex<HashMap<Vec<Vec<usize>>, Runner>>,
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
        let key: Vec<Vec<usize>> = inputs.iter().map(|a| a.shape().to_vec()).collect();
        let runner = {
            let cache = self
                .cache
                .lock()
                .map_err(|_| anyhow!("runner cache poisoned"))?;
            cache.get(&key).cloned()
        };
        let runner = match runner {
            Some(r) => r,
            None => {
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
                )?;
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(key, r.clone());
                }
                r
            }
        };
        Ok(runner.run(inputs)?)
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

/// Runs `model` over `data` and observes `tensors`.
pub fn collect(
    model: &ModelProto,
    data: &Dataset,
    feed: Feed,
    input_names: &[String],
    tensors: &[String],
) -> Result<BTreeMap<String, TensorStats>> {
    let n_out = model.graph.as_ref().map_or(0, |g| g.output.len());
    let runners = Runners::new(model, tensors.to_vec());
    let ranges = feed.ranges(data.samples(), MAX_BATCH);
    // Drawn only on a terminal (indicatif hides itself otherwise).
    let bar = indicatif::ProgressBar::new(data.samples() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "calibrating {bar:30} {pos}/{len} samples ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let per_worker = ranges
        .par_iter()
        .map(|r| -> Result<Vec<Histogram>> {
            bar.inc(r.len() as u64);
            let inputs = data.feed(feed, r.clone())?;
            let outs = runners
                .run(input_names, &inputs)
                .with_context(|| format!("running calibration samples {r:?}"))?;
            let mut hs: Vec<Histogram> = (0..tensors.len()).map(|_| Histogram::new()).collect();
            for (h, a) in hs.iter_mut().zip(outs.iter().skip(n_out)) {
                let f = a.to_f32();
                match f.as_slice() {
                    Some(s) => h.observe(s),
                    None => h.observe(&f.iter().copied().collect::<Vec<_>>()),
                }
            }
            Ok(hs)
        })
        .try_reduce(
            || (0..tensors.len()).map(|_| Histogram::new()).collect(),
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    x.merge(y);
                }
                Ok(a)
            },
        )?;
    bar.finish_and_clear();
    Ok(tensors
        .iter()
        .cloned()
        .zip(per_worker.iter().map(|h| h.stats()))
        .collect())
}
