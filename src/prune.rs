//! `quench compile --prune`: magnitude pruning between the graph passes and
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
use clap::ValueEnum;
use quench_ir::Model;
use quench_onnx::proto::ModelProto;
use quench_onnx::{LoadedModel, SaveReport};
use quench_passes::prune::{
    self, percent, LayerSensitivity, Norm, PruneConfig, PruneSummary, PruneTarget, Schedule,
};
use quench_verify::{Accumulator, ArrayData, Dataset, Feed, Metrics, ModelInput};
use rayon::prelude::*;
use serde::Serialize;

use crate::calib::{Runners, MAX_BATCH};
use crate::compile::{CompileArgs, ModeArg};

/// Largest number of samples the sensitivity scan runs per candidate.
pub const SENSITIVITY_SAMPLES: usize = 256;

/// Sparsities at which `--prune-method sensitivity` measures each layer.
pub const SENSITIVITY_LEVELS: [f64; 4] = [0.3, 0.5, 0.7, 0.9];

#[derive(Copy, Clone, Debug, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PruneMethodArg {
    /// The same sparsity in every prunable layer.
    Layer,
    /// One threshold over all prunable layers, on magnitudes divided by
    /// each layer's RMS.
    Global,
    /// Per-layer sparsities chosen from the output SQNR measured in tract
    /// with each layer pruned alone (needs data).
    Sensitivity,
}

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
}

#[derive(Debug, Serialize)]
pub struct PruneAccuracy {
    pub labels: usize,
    pub fp32: f64,
    pub pruned: f64,
}

impl Fidelity {
    /// The lowest SQNR over the outputs.
    fn min_sqnr(&self) -> f64 {
        self.outputs
            .iter()
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
    pub method: PruneMethodArg,
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

/// Loads a dataset and binds it to the model's inputs.
fn load_data(path: &Path, model: &ModelProto) -> Result<(Dataset, Feed)> {
    let mut d = Dataset::load(path)?;
    let feed = d.check_against(&ModelInput::from_model(model))?;
    if d.samples() == 0 {
        bail!("{}: no samples", path.display());
    }
    Ok((d, feed))
}

fn input_names(m: &ModelProto) -> Vec<String> {
    ModelInput::from_model(m)
        .into_iter()
        .map(|i| i.name)
        .collect()
}

fn output_names(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name().to_string()).collect())
        .unwrap_or_default()
}

/// Samples `compile` keeps for calibration when it holds back the last 20%
/// for verification, as `compile` does in static mode without `--eval`.
fn held_back_split(a: &CompileArgs, n: usize) -> Option<usize> {
    let static_calib = !a.no_quantize
        && a.mode == ModeArg::Static
        && a.calibration.is_some()
        && a.calibration_table.is_none();
    (static_calib && a.eval.is_none() && n >= 5).then(|| n - (n / 5).max(1))
}

/// The data verification will use (same choice as `compile`).
fn eval_data(a: &CompileArgs, original: &ModelProto) -> Result<Option<(Dataset, Feed, String)>> {
    if let Some(e) = &a.eval {
        let (d, f) = load_data(e, original)?;
        return Ok(Some((d, f, e.display().to_string())));
    }
    let Some(c) = &a.calibration else {
        return Ok(None);
    };
    let (d, f) = load_data(c, original)?;
    let n = d.samples();
    Ok(Some(match held_back_split(a, n) {
        Some(keep) => (
            d.split(keep).1,
            f,
            format!("{} (last {} of {n} samples)", c.display(), n - keep),
        ),
        None => (d, f, format!("{} (calibration data)", c.display())),
    }))
}

/// The data the sensitivity scan runs on: calibration samples (those kept
/// for calibration), else evaluation samples.
fn sensitivity_data(a: &CompileArgs, original: &ModelProto) -> Result<(Dataset, Feed, String)> {
    let (d, f, label) = if let Some(c) = &a.calibration {
        let (d, f) = load_data(c, original)?;
        let n = d.samples();
        match held_back_split(a, n) {
            Some(keep) => (d.split(keep).0, f, c.display().to_string()),
            None => (d, f, c.display().to_string()),
        }
    } else if let Some(e) = &a.eval {
        let (d, f) = load_data(e, original)?;
        (d, f, format!("{} (evaluation data)", e.display()))
    } else {
        bail!("--prune-method sensitivity measures every layer in tract: give --calibration or --eval data");
    };
    let n = d.samples();
    if n > SENSITIVITY_SAMPLES {
        Ok((
            d.split(SENSITIVITY_SAMPLES).0,
            f,
            format!("{label} (first {SENSITIVITY_SAMPLES} of {n} samples)"),
        ))
    } else {
        Ok((d, f, label))
    }
}

/// Compares candidate models with a reference model on a dataset.
struct Comparison<'a> {
    data: &'a Dataset,
    feed: Feed,
    label: String,
    names: Vec<String>,
    outputs: Vec<String>,
    reference: Runners,
    /// The reference outputs per batch, when kept for many comparisons.
    cached: Option<Vec<Vec<ArrayData>>>,
}

impl<'a> Comparison<'a> {
    fn new(
        reference: &ModelProto,
        data: &'a Dataset,
        feed: Feed,
        label: String,
        cache: bool,
    ) -> Result<Comparison<'a>> {
        let mut c = Comparison {
            data,
            feed,
            label,
            names: input_names(reference),
            outputs: output_names(reference),
            reference: Runners::new(reference, vec![]),
            cached: None,
        };
        if cache {
            let mut outs = Vec::new();
            for r in feed.ranges(data.samples(), MAX_BATCH) {
                let inputs = data.feed(feed, r)?;
                outs.push(
                    c.reference
                        .run(&c.names, &inputs)
                        .context("running the FP32 model")?,
                );
            }
            c.cached = Some(outs);
        }
        Ok(c)
    }

    fn run(&self, candidate: &ModelProto) -> Result<Fidelity> {
        let cand = Runners::new(candidate, vec![]);
        let mut acc: Vec<Accumulator> = self.outputs.iter().map(|_| Accumulator::new()).collect();
        let labels = self.data.extra("labels").cloned();
        let (mut right_ref, mut right_cand, mut n_labels) = (0usize, 0usize, 0usize);
        let mut offset = 0usize;
        for (bi, r) in self
            .feed
            .ranges(self.data.samples(), MAX_BATCH)
            .into_iter()
            .enumerate()
        {
            let inputs = self.data.feed(self.feed, r.clone())?;
            let live;
            let reference = match &self.cached {
                Some(c) => &c[bi],
                None => {
                    live = self
                        .reference
                        .run(&self.names, &inputs)
                        .context("running the FP32 model")?;
                    &live
                }
            };
            let test = cand
                .run(&self.names, &inputs)
                .context("running the pruned model")?;
            for (i, (x, y)) in reference.iter().zip(&test).enumerate().take(acc.len()) {
                let (xf, yf) = (x.to_f32(), y.to_f32());
                acc[i].update(xf.view(), yf.view())?;
                if i != 0 {
                    continue;
                }
                let (n, a, b) = crate::compile::label_hits(&xf, &yf, labels.as_ref(), offset);
                n_labels += n;
                right_ref += a;
                right_cand += b;
            }
            offset += r.len();
        }
        Ok(Fidelity {
            data: self.label.clone(),
            samples: self.data.samples(),
            outputs: self
                .outputs
                .iter()
                .zip(&acc)
                .map(|(o, a)| OutputFidelity {
                    output: o.clone(),
                    metrics: a.finish(),
                })
                .collect(),
            accuracy: (n_labels > 0).then(|| PruneAccuracy {
                labels: n_labels,
                fp32: right_ref as f64 / n_labels as f64,
                pruned: right_cand as f64 / n_labels as f64,
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
    a: &CompileArgs,
    model: &Model,
    original: &ModelProto,
    layers: &[prune::Layer],
    target: f64,
) -> Result<(BTreeMap<String, f64>, SensitivityReport)> {
    let (data, feed, label) = sensitivity_data(a, original)?;
    // The reference is the model after the passes, so that only pruning
    // shows in the figures.
    let reference = model.to_onnx();
    let cmp = Comparison::new(&reference, &data, feed, label.clone(), true)?;
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
    if a.verbose {
        eprintln!(
            "sensitivity: {} runs of {} samples in {:.2?}",
            jobs.len(),
            data.samples(),
            t0.elapsed()
        );
    }
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
    let floor = a.min_sqnr.map(|m| if a.no_quantize { m } else { m + 3.0 });
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
        samples: data.samples(),
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
    a: &CompileArgs,
    model: &mut Model,
    original: &ModelProto,
) -> Result<Option<PruneReport>> {
    let Some(target) = a.prune else {
        return Ok(None);
    };
    if let (PruneTarget::NM { n, m }, false) = (target, a.prune_method == PruneMethodArg::Layer) {
        bail!(
            "--prune {n}:{m}: an N:M pattern is the same in every layer; --prune-method applies to a sparsity fraction (e.g. --prune 0.5)"
        );
    }
    let cfg = PruneConfig {
        all_layers: a.prune_all_layers,
        exclude: a.prune_exclude.clone(),
        ..PruneConfig::default()
    };
    let layers = prune::layers(&model.graph, &cfg);
    let mut notes = Vec::new();
    for e in &a.prune_exclude {
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
    if a.calibration_table.is_some() && !a.no_quantize {
        notes.push(
            "--calibration-table ranges were measured on the unpruned model; pass --calibration to calibrate the pruned one"
                .into(),
        );
    }
    let (schedule, sens) = match (target, a.prune_method) {
        (PruneTarget::NM { n, m }, _) => (Schedule::NM { n, m }, None),
        (PruneTarget::Unstructured { sparsity }, PruneMethodArg::Layer) => {
            (Schedule::Layer(sparsity), None)
        }
        (PruneTarget::Unstructured { sparsity }, PruneMethodArg::Global) => (
            Schedule::Global {
                sparsity,
                norm: Norm::Rms,
            },
            None,
        ),
        (PruneTarget::Unstructured { sparsity }, PruneMethodArg::Sensitivity) => {
            let (map, rep) = sensitivity(a, model, original, &layers, sparsity)?;
            (Schedule::PerLayer(map), Some(rep))
        }
    };
    let summary = prune::prune(&mut model.graph, &layers, &schedule);
    model
        .graph
        .verify()
        .context("pruned graph is invalid (a quench bug)")?;
    let mut after_pruning = None;
    if !a.no_verify {
        match eval_data(a, original)? {
            Some((d, f, label)) => {
                let cmp = Comparison::new(original, &d, f, label, false)?;
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
        method: a.prune_method,
        all_layers: a.prune_all_layers,
        exclude: a.prune_exclude.clone(),
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

    /// The pruning lines of `quench compile`'s summary.
    pub fn print(&self, verbose: bool) {
        let s = &self.summary;
        let (pz, pw) = s.pruned_totals();
        let (az, aw) = s.all_totals();
        let np = s.layers.iter().filter(|l| l.pruned).count();
        let method = self
            .method
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        println!(
            "  pruning        {}, method {method}: {np} of {} layers pruned, {} of all compute weights zero ({} in the pruned layers)",
            self.target,
            s.layers.len(),
            percent(az as f64 / aw.max(1) as f64),
            percent(pz as f64 / pw.max(1) as f64),
        );
        // Long tables only with --verbose: the totals say it for big models.
        let table = s.table();
        let lines: Vec<&str> = table.lines().collect();
        if verbose || lines.len() <= 40 {
            for l in &lines {
                println!("    {l}");
            }
        } else {
            println!(
                "    (per-layer table of {} layers: --verbose or --report)",
                s.layers.len()
            );
        }
        if let Some(r) = &self.sensitivity {
            println!(
                "    sensitivity: output SQNR (dB) with one layer pruned alone, {} samples from {}",
                r.samples, r.data
            );
            let w = r
                .rows
                .iter()
                .map(|x| x.node.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let mut head = format!("      {:<w$}  {:>8}", "node", "weights");
            for l in &r.levels {
                head.push_str(&format!("  {:>7}", format!("{:.0}%", 100.0 * l)));
            }
            println!("{head}   chosen");
            for row in &r.rows {
                let mut line = format!("      {:<w$}  {:>8}", row.node, row.weights);
                for q in &row.sqnr_db {
                    line.push_str(&format!("  {q:>7.2}"));
                }
                println!("{line}  {:>7}", percent(row.chosen));
            }
            let measured = r
                .measured_sqnr_db
                .map(|m| format!(", measured {m:.2} dB"))
                .unwrap_or_default();
            let floor = r
                .floor_db
                .map(|f| format!(" (floor {f:.2} dB)"))
                .unwrap_or_default();
            println!(
                "      plan: estimated SQNR {:.2} dB{measured}{floor}",
                r.estimated_sqnr_db
            );
        }
        if let Some(f) = &self.after_pruning {
            println!(
                "  after pruning  FP32 pruned vs FP32 in tract, {} samples from {}",
                f.samples, f.data
            );
            for o in &f.outputs {
                let m = &o.metrics;
                let top1 = m
                    .top1
                    .as_ref()
                    .map(|t| {
                        format!(
                            ", top-1 agreement {}/{} ({:.2}%)",
                            t.agree,
                            t.rows,
                            100.0 * t.fraction
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "    {}: SQNR {:.2} dB, cosine {:.6}, max abs err {:.4e}{top1}",
                    o.output, m.sqnr_db, m.cosine, m.max_abs_err
                );
            }
            if let Some(acc) = &f.accuracy {
                println!(
                    "    accuracy on {} labels: FP32 {:.2}%, pruned {:.2}% ({:+.2} points)",
                    acc.labels,
                    100.0 * acc.fp32,
                    100.0 * acc.pruned,
                    100.0 * (acc.pruned - acc.fp32)
                );
            }
        }
        if let Some(z) = &self.sizes {
            println!(
                "  gzip size      {} -> {} (raw {} -> {}; dense initializers shrink only compressed)",
                human(z.input_gzip),
                human(z.output_gzip),
                human(z.input_bytes),
                human(z.output_bytes)
            );
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
    }
}

fn human(b: u64) -> String {
    if b >= 1_000_000 {
        format!("{:.2} MB", b as f64 / 1e6)
    } else {
        format!("{:.1} kB", b as f64 / 1e3)
    }
}
