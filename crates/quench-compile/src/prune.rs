//! The pruning phase (`quench compile --prune`): magnitude pruning between the graph passes and
//! calibration, with the measurements that need tract.
//!
//! The pruning itself lives in `quench_passes::prune` (pure, tested on the
//! fixtures). This module adds what needs data and a runtime:
//!
//! - `--prune-method sensitivity`: every prunable layer is pruned alone at
//!   30/50/70/90% (and at the target when it is above 90%), the pruned FP32
//!   model runs in tract on calibration data (at most
//!   [`SENSITIVITY_SAMPLES`] samples) against the unpruned one, and
//!   `quench_passes::prune::plan_sensitivity` picks per-layer sparsities
//!   from the measured SQNR. With `--min-sqnr`, the plan stops before the
//!   estimate drops below the floor (raised by 3 dB when quantization
//!   follows, leaving half the noise power to it), and the combined result
//!   is measured; if it still falls short, the plan is cut back (bisection
//!   over its steps) to the longest prefix that holds.
//! - Fidelity after pruning alone: the pruned FP32 model against the
//!   original, on the same evaluation data verification uses.
//! - Sizes: raw and gzip sizes of the input and output files. Dense ONNX
//!   initializers store a zero in four bytes like any other float, so
//!   pruning shrinks a model on disk only once it is compressed.
//!
//! Invariant: pruning only writes zeros into weights; pruned weights stay
//! exactly zero through symmetric weight quantization (zero point 0), so the
//! sparsity reported here is the sparsity of the emitted integer weights.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use quench_ir::Model;
use quench_onnx::proto::ModelProto;
use quench_onnx::{LoadedModel, SaveReport};
use quench_passes::prune::{
    self, LayerSensitivity, Norm, PruneConfig, PruneSummary, PruneTarget, Schedule,
};
use quench_verify::{Cached, Evaluator, Metrics, Runners, Subject};
use rayon::prelude::*;
use serde::Serialize;

pub use crate::data::SENSITIVITY_SAMPLES;
use crate::data::{Bound, DataPlan};
use crate::options::{Options, PruneMethod, PruneOptions};

/// Sparsities at which `--prune-method sensitivity` measures each layer.
pub const SENSITIVITY_LEVELS: [f64; 4] = [0.3, 0.5, 0.7, 0.9];

/// Output figures of a model against its reference on some data.
#[derive(Debug, Serialize)]
pub struct Fidelity {
    pub data: String,
    pub samples: usize,
    pub outputs: Vec<OutputFidelity>,
    pub accuracy: Option<PruneAccuracy>,
}

#[derive(Debug, Serialize)]
pub struct OutputFidelity {
    pub output: String,
    pub metrics: Metrics,
    /// An integer output (class indices): its SQNR judges nothing when the
    /// model has another output (as in verification).
    pub integer: bool,
}

#[derive(Debug, Serialize)]
pub struct PruneAccuracy {
    pub labels: usize,
    pub fp32: f64,
    pub pruned: f64,
    /// 95% interval of `pruned - fp32` over the labelled samples (as
    /// `Accuracy::change_interval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_interval: Option<[f64; 2]>,
}

impl Fidelity {
    /// The lowest SQNR over the outputs (the float ones, when there are
    /// integer ones too).
    fn min_sqnr(&self) -> f64 {
        let all_integer = self.outputs.iter().all(|o| o.integer);
        self.outputs
            .iter()
            .filter(|o| !o.integer || all_integer)
            .map(|o| o.metrics.sqnr_db)
            .fold(
                f64::INFINITY,
                |a, b| if b.is_nan() { f64::NAN } else { a.min(b) },
            )
    }
}

/// One row of the sensitivity table.
#[derive(Debug, Serialize)]
pub struct SensitivityRow {
    pub node: String,
    pub weight: String,
    pub weights: usize,
    /// Output SQNR (dB) with only this layer pruned, one per level.
    pub sqnr_db: Vec<f64>,
    /// Sparsity chosen for the layer.
    pub chosen: f64,
}

#[derive(Debug, Serialize)]
pub struct SensitivityReport {
    pub data: String,
    pub samples: usize,
    pub levels: Vec<f64>,
    pub rows: Vec<SensitivityRow>,
    /// SQNR floor the plan kept (from `--min-sqnr`).
    pub floor_db: Option<f64>,
    /// Output SQNR of the plan, estimated by adding per-layer noise.
    pub estimated_sqnr_db: f64,
    /// Output SQNR of the plan, measured (with `--min-sqnr`).
    pub measured_sqnr_db: Option<f64>,
}

/// File sizes before and after, raw and gzip-compressed.
#[derive(Debug, Serialize)]
pub struct CompressedSizes {
    pub input_bytes: u64,
    pub input_gzip: u64,
    pub output_bytes: u64,
    pub output_gzip: u64,
}

/// Everything `--prune` did, for the report.
#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub target: PruneTarget,
    pub method: PruneMethod,
    pub all_layers: bool,
    pub exclude: Vec<String>,
    /// Sparsity per layer (every compute layer with a constant weight).
    pub summary: PruneSummary,
    pub sensitivity: Option<SensitivityReport>,
    /// The pruned FP32 model against the original FP32 model.
    pub after_pruning: Option<Fidelity>,
    pub sizes: Option<CompressedSizes>,
    pub notes: Vec<String>,
}

/// Compares candidate models with a reference model on a dataset.
struct Comparison<'a> {
    eval: Evaluator<'a>,
    label: String,
    outputs: Vec<String>,
    integer: Vec<bool>,
    reference: Runners,
    /// The reference outputs per batch, when kept for many comparisons.
    cached: Option<Cached>,
}

impl<'a> Comparison<'a> {
    fn new(reference: &ModelProto, data: &'a Bound, cache: bool) -> Result<Comparison<'a>> {
        let eval = Evaluator::new(&data.data, data.feed, quench_verify::input_names(reference));
        let runners = Runners::new(reference, vec![]);
        let cached = if cache {
            Some(eval.outputs(&runners, "the FP32 model")?)
        } else {
            None
        };
        Ok(Comparison {
            eval,
            label: data.label.clone(),
            outputs: quench_verify::output_names(reference),
            integer: quench_verify::integer_outputs(reference),
            reference: runners,
            cached,
        })
    }

    fn run(&self, candidate: &ModelProto) -> Result<Fidelity> {
        let cand = Runners::new(candidate, vec![]);
        let reference = match &self.cached {
            Some(c) => Subject::Cached(c),
            None => Subject::Required(&self.reference, "the FP32 model"),
        };
        let subjects = [reference, Subject::Required(&cand, "the pruned model")];
        let figures = self
            .eval
            .compare(&subjects, &[(0, 1)], self.outputs.len())?
            .remove(0);
        let metrics = figures.outputs.map_err(anyhow::Error::msg)?;
        let l = figures.labels;
        Ok(Fidelity {
            data: self.label.clone(),
            samples: self.eval.samples(),
            outputs: self
                .outputs
                .iter()
                .zip(metrics)
                .enumerate()
                .map(|(i, (o, metrics))| OutputFidelity {
                    output: o.clone(),
                    metrics,
                    integer: self.integer.get(i).copied().unwrap_or(false),
                })
                .collect(),
            accuracy: (l.rows > 0).then(|| PruneAccuracy {
                labels: l.rows,
                fp32: l.first as f64 / l.rows as f64,
                pruned: l.second as f64 / l.rows as f64,
                change_interval: l.change_interval(),
            }),
        })
    }
}

/// `model` with the layers of `sparsities` (weight name → fraction) pruned.
fn pruned_copy(
    model: &Model,
    layers: &[prune::Layer],
    sparsities: BTreeMap<String, f64>,
) -> ModelProto {
    let mut m = model.clone();
    prune::prune(&mut m.graph, layers, &Schedule::PerLayer(sparsities));
    m.to_onnx()
}

/// Measures every layer alone and plans per-layer sparsities.
fn sensitivity(
    opts: &Options,
    data: &DataPlan,
    model: &Model,
    layers: &[prune::Layer],
    target: f64,
    log: &mut Vec<String>,
) -> Result<(BTreeMap<String, f64>, SensitivityReport)> {
    let Some(bound) = &data.sensitivity else {
        bail!("--prune-method sensitivity measures every layer in tract: give --calibration or --eval data");
    };
    // The reference is the model after the passes, so that only pruning
    // shows in the figures.
    let reference = model.to_onnx();
    let cmp = Comparison::new(&reference, bound, true)?;
    let label = bound.label.clone();
    let mut levels: Vec<f64> = SENSITIVITY_LEVELS.to_vec();
    if target > levels[levels.len() - 1] {
        levels.push(target);
    }
    let live: Vec<&prune::Layer> = layers.iter().filter(|l| l.prunable()).collect();
    let jobs: Vec<(usize, usize)> = (0..live.len())
        .flat_map(|i| (0..levels.len()).map(move |j| (i, j)))
        .collect();
    let t0 = std::time::Instant::now();
    let sqnr: Vec<f64> = jobs
        .par_iter()
        .map(|&(i, j)| -> Result<f64> {
            let mut m = BTreeMap::new();
            m.insert(live[i].weight.clone(), levels[j]);
            let f = cmp
                .run(&pruned_copy(model, layers, m))
                .with_context(|| format!("sensitivity of `{}`", live[i].node))?;
            Ok(f.min_sqnr())
        })
        .collect::<Result<_>>()?;
    log.push(format!(
        "sensitivity: {} runs of {} samples in {:.2?}",
        jobs.len(),
        cmp.eval.samples(),
        t0.elapsed()
    ));
    let rows: Vec<LayerSensitivity> = live
        .iter()
        .enumerate()
        .map(|(i, l)| LayerSensitivity {
            node: l.node.clone(),
            weight: l.weight.clone(),
            weights: l.weights,
            points: levels
                .iter()
                .enumerate()
                .map(|(j, s)| (*s, sqnr[i * levels.len() + j]))
                .collect(),
        })
        .collect();
    // Quantization adds its own noise afterwards: leave it half the budget.
    let floor = opts
        .min_sqnr
        .map(|m| if opts.no_quantize { m } else { m + 3.0 });
    let plan = prune::plan_sensitivity(&rows, target, floor);
    let mut k = plan.steps.len();
    let mut measured = None;
    if let Some(floor) = floor {
        let measure = |k: usize| -> Result<f64> {
            Ok(cmp
                .run(&pruned_copy(model, layers, plan.sparsities(k)))?
                .min_sqnr())
        };
        let full = measure(k)?;
        measured = Some(full);
        if full < floor {
            // Longest prefix of the plan that keeps the floor, measured.
            let (mut lo, mut hi) = (0usize, k);
            let mut at_lo = f64::INFINITY;
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                let s = measure(mid)?;
                if s >= floor {
                    lo = mid;
                    at_lo = s;
                } else {
                    hi = mid;
                }
            }
            k = lo;
            measured = Some(at_lo);
        }
    }
    let chosen = plan.sparsities(k);
    let report = SensitivityReport {
        data: label,
        samples: cmp.eval.samples(),
        levels: levels.clone(),
        rows: rows
            .iter()
            .map(|r| SensitivityRow {
                node: r.node.clone(),
                weight: r.weight.clone(),
                weights: r.weights,
                sqnr_db: r.points.iter().map(|p| p.1).collect(),
                chosen: chosen.get(&r.weight).copied().unwrap_or(0.0),
            })
            .collect(),
        floor_db: floor,
        estimated_sqnr_db: plan.estimated_sqnr_db,
        measured_sqnr_db: measured,
    };
    Ok((chosen, report))
}

/// Prunes `model` (after the graph passes) as `--prune*` ask. `None` when
/// `--prune` is not given.
pub fn run(
    opts: &Options,
    data: &DataPlan,
    model: &mut Model,
    original: &ModelProto,
    log: &mut Vec<String>,
) -> Result<Option<PruneReport>> {
    let Some(p) = &opts.prune else {
        return Ok(None);
    };
    let PruneOptions {
        target,
        method,
        all_layers,
        exclude,
    } = p.clone();
    if let (PruneTarget::NM { n, m }, false) = (target, method == PruneMethod::Layer) {
        bail!(
            "--prune {n}:{m}: an N:M pattern is the same in every layer; --prune-method applies to a sparsity fraction (e.g. --prune 0.5)"
        );
    }
    let cfg = PruneConfig {
        all_layers,
        exclude: exclude.clone(),
        ..PruneConfig::default()
    };
    let layers = prune::layers(&model.graph, &cfg);
    let mut notes = Vec::new();
    for e in &exclude {
        if !layers.iter().any(|l| l.node == *e || l.weight == *e) {
            notes.push(format!(
                "--prune-exclude `{e}` names no Conv/ConvTranspose/Gemm/MatMul with constant weights"
            ));
        }
    }
    if !layers.iter().any(|l| l.prunable()) {
        notes.push(
            "no layer could be pruned (see the table; --prune-all-layers lifts the default rules)"
                .into(),
        );
    }
    if opts.calibration_table.is_some() && !opts.no_quantize {
        notes.push(
            "--calibration-table ranges were measured on the unpruned model; pass --calibration to calibrate the pruned one"
                .into(),
        );
    }
    let (schedule, sens) = match (target, method) {
        (PruneTarget::NM { n, m }, _) => (Schedule::NM { n, m }, None),
        (PruneTarget::Unstructured { sparsity }, PruneMethod::Layer) => {
            (Schedule::Layer(sparsity), None)
        }
        (PruneTarget::Unstructured { sparsity }, PruneMethod::Global) => (
            Schedule::Global {
                sparsity,
                norm: Norm::Rms,
            },
            None,
        ),
        (PruneTarget::Unstructured { sparsity }, PruneMethod::Sensitivity) => {
            let (map, rep) = sensitivity(opts, data, model, &layers, sparsity, log)?;
            (Schedule::PerLayer(map), Some(rep))
        }
    };
    let summary = prune::prune(&mut model.graph, &layers, &schedule);
    model
        .graph
        .verify()
        .context("pruned graph is invalid (a quench bug)")?;
    let mut after_pruning = None;
    if opts.verify {
        match &data.eval {
            Some(bound) => {
                let cmp = Comparison::new(original, bound, false)?;
                match cmp.run(&model.to_onnx()) {
                    Ok(fid) => after_pruning = Some(fid),
                    Err(e) => notes.push(format!("pruned model in tract failed: {e:#}")),
                }
            }
            None => notes.push(
                "no evaluation data (--eval or --calibration): fidelity after pruning not measured"
                    .into(),
            ),
        }
    }
    Ok(Some(PruneReport {
        target,
        method,
        all_layers,
        exclude,
        summary,
        sensitivity: sens,
        after_pruning,
        sizes: None,
        notes,
    }))
}

/// Counts bytes written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Raw and gzip size of files taken as one stream.
fn gzip_size(files: &[PathBuf]) -> Result<(u64, u64)> {
    let mut enc = flate2::write::GzEncoder::new(Counter(0), flate2::Compression::default());
    let mut raw = 0;
    for f in files {
        let mut r =
            std::fs::File::open(f).with_context(|| format!("{}: cannot read", f.display()))?;
        raw += std::io::copy(&mut r, &mut enc)
            .with_context(|| format!("{}: cannot read", f.display()))?;
    }
    Ok((raw, enc.finish()?.0))
}

impl PruneReport {
    /// Records raw and gzip sizes of the input and the written output
    /// (model file plus external data file, if any).
    pub fn measure_sizes(&mut self, input: &LoadedModel, saved: &SaveReport) -> Result<()> {
        let dir = input.path.parent().unwrap_or(Path::new("."));
        let mut inputs = vec![input.path.clone()];
        inputs.extend(input.external.files.iter().map(|f| dir.join(f)));
        let mut outputs = vec![saved.model_path.clone()];
        outputs.extend(saved.data_path.clone());
        let (input_bytes, input_gzip) = gzip_size(&inputs)?;
        let (output_bytes, output_gzip) = gzip_size(&outputs)?;
        self.sizes = Some(CompressedSizes {
            input_bytes,
            input_gzip,
            output_bytes,
            output_gzip,
        });
        Ok(())
    }
}
