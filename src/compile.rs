//! `quench compile` (the main job) and `quench calibrate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use quench_calib::{choose_range, QuantTarget, RangeMethod, TensorStats};
use quench_ir::Model;
use quench_onnx::proto::ModelProto;
use quench_onnx::SaveOptions;
use quench_passes::quantize::{self, ActType, Mode, QuantSummary, QuantizeConfig, WeightType};
use quench_passes::{pipeline, run_passes, PassCx, RunOptions};
use quench_verify::{Accumulator, ArrayData, Dataset, Feed, Metrics, ModelInput};
use rayon::prelude::*;
use serde::Serialize;

use crate::calib::{self, CalibrationTable, Runners, MAX_BATCH};

#[derive(Copy, Clone, Debug, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ModeArg {
    /// int8 weights and activations (needs calibration data).
    Static,
    /// int8 weights with DequantizeLinear; activations stay float.
    WeightOnly,
    /// int8 weights; activations quantized at run time (MatMul).
    Dynamic,
}

#[derive(Copy, Clone, Debug, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MethodArg {
    Minmax,
    Percentile,
    Entropy,
    Mse,
}

#[derive(Copy, Clone, Debug, ValueEnum, Serialize, PartialEq, Eq)]
pub enum ActArg {
    U8,
    I8,
    U16,
    I16,
}

#[derive(Copy, Clone, Debug, ValueEnum, Serialize, PartialEq, Eq)]
pub enum WeightArg {
    I8,
    U8,
}

#[derive(Args, Debug, Clone)]
pub struct CompileArgs {
    /// FP32 model to quantize (.onnx).
    pub model: PathBuf,
    /// Output model (.onnx). Written atomically; never the input file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Calibration samples: a directory of `<input>.npy` files (leading sample
    /// axis), an `.npz` with the same keys, or an ONNX `test_data_set_*`
    /// directory.
    #[arg(long, short = 'c')]
    pub calibration: Option<PathBuf>,
    /// Reuse ranges from `quench calibrate` instead of running calibration.
    #[arg(long)]
    pub calibration_table: Option<PathBuf>,
    /// Evaluation samples (same formats). Default: the last 20% of the
    /// calibration samples are held back for evaluation (all of them
    /// calibrate under `--no-verify`).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Quantization mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Static)]
    pub mode: ModeArg,
    /// How activation ranges are chosen from calibration statistics.
    #[arg(long, value_enum, default_value_t = MethodArg::Minmax)]
    pub method: MethodArg,
    /// Percentile for `--method percentile`.
    #[arg(long, default_value_t = 99.999)]
    pub percentile: f64,
    /// `--method entropy`: where the KL threshold's expected squared error
    /// is more than this many times the MSE-optimal range's, use the MSE
    /// range for that tensor (the count is reported). 0 keeps every KL
    /// threshold as it is.
    #[arg(long, default_value_t = quench_calib::ENTROPY_GUARD_RATIO)]
    pub entropy_guard: f64,
    /// Activation type: u8 (asymmetric), i8 (symmetric), u16/i16 (opset 21).
    #[arg(long, value_enum, default_value_t = ActArg::U8)]
    pub activations: ActArg,
    /// Weight type: i8 (symmetric) or u8 (asymmetric).
    #[arg(long, value_enum, default_value_t = WeightArg::I8)]
    pub weights: WeightArg,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Leave these nodes (by name) float.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub exclude_nodes: Vec<String>,
    /// Leave every node of these op types float.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub exclude_op_types: Vec<String>,
    /// Model inputs and outputs stay float (always true; kept for
    /// compatibility with other tools' flags).
    #[arg(long, default_value_t = true)]
    pub keep_io_float: bool,
    /// Also quantize inputs of Softmax (off by default: attention scores are
    /// sensitive).
    #[arg(long)]
    pub quantize_softmax_inputs: bool,
    /// Graph passes to run before quantization, comma separated, or `none`
    /// (default: the whole pipeline; see `quench passes`).
    #[arg(long, value_delimiter = ',')]
    pub passes: Option<Vec<String>>,
    /// Print the IR text after this pass (repeatable).
    #[arg(long)]
    pub dump_after: Vec<String>,
    /// Fail (exit 2) if any output's SQNR vs FP32 is below this (dB).
    #[arg(long)]
    pub min_sqnr: Option<f64>,
    /// Fail (exit 2) if top-1 agreement with FP32 is below this fraction.
    #[arg(long)]
    pub min_top1: Option<f64>,
    /// Skip verification in tract.
    #[arg(long)]
    pub no_verify: bool,
    /// Static mode: also measure, for every quantized activation, the error
    /// its own Q/DQ adds (FP32 vs the float twin with every quantized
    /// tensor exposed, on 8 evaluation samples), and list the worst: where
    /// an accuracy loss comes from. Costs two more tract compiles.
    #[arg(long)]
    pub explain: bool,
    /// Fail instead of falling back to weight-only quantization when tract
    /// cannot run the model for calibration (static mode).
    #[arg(long)]
    pub no_fallback: bool,
    /// Run the graph passes only (no quantization); the output is FP32.
    #[arg(long)]
    pub no_quantize: bool,
    /// Prune weights of Conv, ConvTranspose, Gemm and MatMul after the
    /// graph passes, before calibration: a sparsity fraction (`0.5` or
    /// `50%`: the smallest magnitudes become zero) or an N:M pattern (`2:4`:
    /// in every 4 consecutive weights along the input-channel / K dimension
    /// the 2 largest stay, as sparse tensor cores expect; layers whose
    /// dimension is not a multiple of M are skipped). Zeros stay exactly
    /// zero in int8 weights. Works with `--no-quantize`.
    #[arg(long, value_name = "SPARSITY|N:M")]
    pub prune: Option<quench_passes::prune::PruneTarget>,
    /// How a sparsity fraction is spread over layers: `layer` (the same in
    /// each), `global` (one threshold over all layers on magnitudes divided
    /// by each layer's RMS), `sensitivity` (each layer pruned alone at
    /// 30/50/70/90% and measured in tract on calibration data, then the
    /// per-layer sparsities that reach the target with the least SQNR loss;
    /// with `--min-sqnr`, the highest sparsity up to the target that keeps
    /// it, with 3 dB left for quantization).
    #[arg(long, value_enum, default_value_t = crate::prune::PruneMethodArg::Layer, requires = "prune")]
    pub prune_method: crate::prune::PruneMethodArg,
    /// Also prune the layers left alone by default: the first and last
    /// compute layers, depthwise convolutions and layers with fewer than
    /// 1024 weights.
    #[arg(long, requires = "prune")]
    pub prune_all_layers: bool,
    /// Never prune these (node or weight names, comma separated).
    #[arg(long, num_args = 1.., value_delimiter = ',', requires = "prune")]
    pub prune_exclude: Vec<String>,
    /// Write everything this command did as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Store weights in `<output>.data`.
    #[arg(long, conflicts_with = "inline")]
    pub external_data: bool,
    /// Store weights inside the .onnx file.
    #[arg(long)]
    pub inline: bool,
    /// Say more about what happens: the passes' log, what was changed in
    /// tract's copy of the model for calibration, the time of each phase.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// FP32 model (.onnx).
    pub model: PathBuf,
    /// Calibration samples (see `quench compile --help`).
    #[arg(long, short = 'c')]
    pub calibration: PathBuf,
    /// Where to write the calibration table (JSON).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Passes to run first (must match the later compile).
    #[arg(long, value_delimiter = ',')]
    pub passes: Option<Vec<String>>,
    /// Print what was changed for tract and the time of each phase.
    #[arg(long, short)]
    pub verbose: bool,
}

impl CompileArgs {
    fn config(&self) -> QuantizeConfig {
        QuantizeConfig {
            mode: match self.mode {
                ModeArg::Static => Mode::Static,
                ModeArg::WeightOnly => Mode::WeightOnly,
                ModeArg::Dynamic => Mode::Dynamic,
            },
            activations: match self.activations {
                ActArg::U8 => ActType::U8,
                ActArg::I8 => ActType::I8,
                ActArg::U16 => ActType::U16,
                ActArg::I16 => ActType::I16,
            },
            weights: match self.weights {
                WeightArg::I8 => WeightType::I8,
                WeightArg::U8 => WeightType::U8,
            },
            per_channel: !self.per_tensor,
            exclude_nodes: self.exclude_nodes.clone(),
            exclude_op_types: self.exclude_op_types.clone(),
            keep_softmax_inputs_float: !self.quantize_softmax_inputs,
            ..QuantizeConfig::default()
        }
    }
    fn method(&self) -> RangeMethod {
        match self.method {
            MethodArg::Minmax => RangeMethod::MinMax,
            MethodArg::Percentile => RangeMethod::Percentile(self.percentile),
            MethodArg::Entropy => RangeMethod::Entropy,
            MethodArg::Mse => RangeMethod::Mse,
        }
    }
}

/// One graph output's verification figures.
#[derive(Debug, Serialize)]
pub struct OutputCheck {
    pub output: String,
    /// FP32 vs the quantized file run in tract (`None` if tract cannot run
    /// it, e.g. 16-bit or 4-bit QDQ).
    pub file: Option<Metrics>,
    /// FP32 vs the float twin (exact ONNX reference semantics).
    pub reference: Option<Metrics>,
    /// Twin vs file: how far tract's integer path is from the reference.
    pub runtime_vs_reference: Option<Metrics>,
    pub runtime_discrepancy: bool,
}

#[derive(Debug, Serialize)]
pub struct Verification {
    /// Why tract could not run the emitted file, if it could not.
    pub file_error: Option<String>,
    pub data: String,
    pub samples: usize,
    pub outputs: Vec<OutputCheck>,
    /// Accuracy against `labels` when the evaluation data has them.
    pub accuracy: Option<Accuracy>,
    /// Every quantized activation's error against FP32 (static mode), in
    /// graph order: where the output error comes from.
    pub tensors: Vec<crate::attribution::TensorError>,
}

#[derive(Debug, Serialize)]
pub struct Accuracy {
    pub labels: usize,
    pub fp32: f64,
    pub quantized: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// Passes only: nothing was quantized.
    pub no_quantize: bool,
    pub input: String,
    pub output: String,
    pub mode: ModeArg,
    pub method: MethodArg,
    pub config: QuantizeConfig,
    pub passes: Vec<String>,
    pub pass_stats: BTreeMap<String, usize>,
    pub quantization: QuantSummary,
    pub size_before: u64,
    pub size_after: u64,
    pub calibration_samples: usize,
    pub verification: Option<Verification>,
    /// What `--prune` did: sparsity per layer, fidelity after pruning
    /// alone, compressed sizes.
    pub pruning: Option<crate::prune::PruneReport>,
    pub notes: Vec<String>,
}

pub(crate) fn model_input_names(m: &ModelProto) -> Vec<String> {
    ModelInput::from_model(m)
        .into_iter()
        .map(|i| i.name)
        .collect()
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

/// Runs the default (or chosen) passes; returns their names and the context.
fn run_pipeline(
    model: &mut Model,
    passes: &Option<Vec<String>>,
    dump_after: &[String],
) -> Result<(Vec<String>, PassCx)> {
    let list = match passes {
        Some(p) if p.len() == 1 && p[0] == "none" => Vec::new(),
        Some(p) => pipeline::by_names(p)?,
        None => pipeline::default_pipeline(),
    };
    let names = list.iter().map(|p| p.name().to_string()).collect();
    let mut cx = PassCx::new(model.default_opset().unwrap_or(0));
    let opts = RunOptions {
        verify: cfg!(debug_assertions),
        dump_after: dump_after.to_vec(),
    };
    run_passes(&mut model.graph, &list, &mut cx, &opts)?;
    Ok((names, cx))
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    let mut phases = Phases::new();
    let (_, mut model) = crate::load(&a.model)?;
    run_pipeline(&mut model, &a.passes, &[])?;
    let plan = quantize::plan(&model.graph, &QuantizeConfig::default())?;
    let tensors = plan.tensors_to_observe(&model.graph);
    let proto = model.to_onnx();
    let (data, feed) = load_data(&a.calibration, &proto)?;
    phases.lap("load and passes");
    let (stats, notes) = calib::collect(
        &proto,
        &data,
        feed,
        &model_input_names(&proto),
        &tensors,
        true,
    )?;
    phases.lap("tract runs");
    let table = table_from(&a.model, data.samples(), stats);
    phases.lap("range search");
    write_json(&a.output, &table, false)?;
    phases.lap("write");
    if a.verbose {
        for n in &notes {
            eprintln!("tract copy for calibration: {n}");
        }
        eprintln!("{}", phases.line());
    }
    println!(
        "calibrated {} tensors over {} samples -> {}",
        table.tensors.len(),
        table.samples,
        a.output.display()
    );
    Ok(())
}

fn table_from(
    model: &Path,
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
        model: model.display().to_string(),
        samples,
        tensors: stats,
        ranges,
    }
}

/// Writes `v` as JSON through a temporary file (never a half-written
/// `path`). Calibration tables are written compactly: they are mostly
/// histogram counts, one line each when pretty-printed.
fn write_json<T: Serialize>(path: &Path, v: &T, pretty: bool) -> Result<()> {
    let s = if pretty {
        serde_json::to_string_pretty(v)?
    } else {
        serde_json::to_string(v)?
    };
    let tmp = path.with_extension("json.quench-tmp");
    std::fs::write(&tmp, s).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Whether tensor `name` is the output of a Softmax or Sigmoid (bounded to
/// [0, 1]; see the range choice in [`compile`]).
/// Data movement (Reshape, Transpose, …) in between does not count.
fn produced_by_bounded_op(g: &quench_ir::Graph, name: &str) -> bool {
    use quench_ir::OpKind;
    use quench_passes::rules::{rule, OpRule};
    let mut v = g.value_by_name(name);
    for _ in 0..16 {
        let Some(n) = v.and_then(|v| g.producer(v)) else {
            return false;
        };
        let node = g.node(n);
        match node.kind() {
            OpKind::Softmax | OpKind::Sigmoid | OpKind::HardSigmoid => return true,
            k if rule(k) == OpRule::Shared => v = node.input(0),
            _ => return false,
        }
    }
    false
}

/// Wall time of each phase, printed by `--verbose`.
struct Phases {
    last: std::time::Instant,
    done: Vec<(&'static str, f64)>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    /// Ends phase `name` now.
    fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((name, (now - self.last).as_secs_f64()));
        self.last = now;
    }

    fn line(&self) -> String {
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(n, s)| format!("{n} {s:.3} s"))
            .collect();
        let total: f64 = self.done.iter().map(|p| p.1).sum();
        format!("time: {} (total {total:.3} s)", parts.join(", "))
    }
}

/// Exit status when verification thresholds fail.
pub struct ThresholdFailed(pub String);

pub fn compile(a: CompileArgs) -> Result<Option<ThresholdFailed>> {
    let mut phases = Phases::new();
    let (loaded, mut model) = crate::load(&a.model)?;
    crate::convert::check_output(&a.model, &loaded.external.files, &a.output)?;
    let original = loaded.model.clone();
    let size_before = loaded.file_bytes + loaded.external.bytes;
    let mut notes: Vec<String> = Vec::new();
    let mut cfg = a.config();

    // Without calibration data, static quantization is not possible: say so
    // and quantize weights only (never invent data).
    if a.no_quantize {
        cfg.mode = Mode::WeightOnly;
    } else if cfg.mode == Mode::Static && a.calibration.is_none() && a.calibration_table.is_none() {
        let msg = "no --calibration data given: quantizing weights only (--mode weight-only); pass --calibration DATA for int8 activations".to_string();
        eprintln!("note: {msg}");
        notes.push(msg);
        cfg.mode = Mode::WeightOnly;
    }

    phases.lap("load");
    // 1. Passes.
    let (pass_names, cx) = run_pipeline(&mut model, &a.passes, &a.dump_after)?;
    if a.verbose {
        for l in &cx.log {
            eprintln!("pass {l}");
        }
    }

    // 1b. Pruning: before calibration, so ranges see the pruned weights.
    let mut pruning = crate::prune::run(&a, &mut model, &original)?;

    // 2. Opset: per-channel weights need 13, 16-bit activations 21. Upgrade
    // the model when that is safe; otherwise fall back (and say so).
    let mut opset = model.default_opset().unwrap_or(0);
    let need = if cfg.mode == Mode::Static && cfg.activations.min_opset() > 13 {
        cfg.activations.min_opset()
    } else if cfg.per_channel && cfg.mode != Mode::Dynamic && !a.no_quantize {
        13
    } else {
        0
    };
    if need > opset && opset > 0 {
        match quench_passes::upgrade_opset::check(&model.graph, opset, need) {
            Ok(()) => {
                let n = quench_passes::upgrade_opset::apply(&mut model.graph, opset, need);
                notes.push(format!("default-domain opset upgraded from {opset} to {need} ({n} nodes rewritten to their opset-{need} form)"));
                model.set_opset("", need);
                // The IR version that introduced the opset.
                let ir = if need >= 21 { 10 } else { 7 };
                if model.header.ir_version() < ir {
                    model.header.ir_version = Some(ir);
                }
                opset = need;
            }
            Err(why) => notes.push(format!(
                "opset {opset} kept: cannot upgrade to {need}: {why}"
            )),
        }
    }

    phases.lap("passes");
    // 3. Plan and calibrate.
    let mut plan = quantize::plan(&model.graph, &cfg)?;
    let plan_mode = cfg.mode;
    if a.no_quantize {
        plan = quantize::Plan {
            decisions: plan
                .decisions
                .into_iter()
                .map(|mut d| {
                    d.quantized = false;
                    d.reason = "--no-quantize".into();
                    d
                })
                .collect(),
            ..Default::default()
        };
    }
    let mut calib_samples = 0;
    let mut eval_data: Option<(Dataset, Feed, String)> = None;
    let mut ranges = quantize::Ranges::new();
    if cfg.mode == Mode::Static {
        let tensors = plan.tensors_to_observe(&model.graph);
        let stats: BTreeMap<String, TensorStats> = if let Some(t) = &a.calibration_table {
            let text = std::fs::read_to_string(t)
                .with_context(|| format!("{}: cannot read", t.display()))?;
            let table: CalibrationTable = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a quench calibration table", t.display()))?;
            calib_samples = table.samples;
            let missing: Vec<&String> = tensors
                .iter()
                .filter(|n| !table.tensors.contains_key(*n))
                .collect();
            if !missing.is_empty() {
                notes.push(format!(
                    "calibration table lacks {} tensors (they stay float), e.g. `{}`",
                    missing.len(),
                    missing[0]
                ));
            }
            table.tensors
        } else {
            let path = a.calibration.clone().unwrap_or_default();
            let proto = model.to_onnx();
            let (data, feed) = load_data(&path, &original)?;
            let n = data.samples();
            let (cal, held) = if a.eval.is_none() && !a.no_verify && n >= 5 {
                let keep = n - (n / 5).max(1);
                let (c, e) = data.split(keep);
                (c, Some(e))
            } else {
                (data, None)
            };
            if let Some(e) = held {
                eval_data = Some((
                    e,
                    feed,
                    format!(
                        "{} (last {} of {} samples held back from calibration)",
                        path.display(),
                        n - cal.samples(),
                        n
                    ),
                ));
            } else if a.eval.is_none() && !a.no_verify {
                eval_data = Some((
                    cal.clone(),
                    feed,
                    format!(
                        "{} (the calibration samples themselves: too few to hold any back)",
                        path.display()
                    ),
                ));
            }
            calib_samples = cal.samples();
            let t0 = std::time::Instant::now();
            // `--method minmax` needs no histograms.
            let histograms = a.method() != RangeMethod::MinMax;
            let stats = match calib::collect(
                &proto,
                &cal,
                feed,
                &model_input_names(&proto),
                &tensors,
                histograms,
            ) {
                Ok((s, tract_notes)) => {
                    if a.verbose {
                        for n in tract_notes {
                            eprintln!("tract copy for calibration: {n}");
                        }
                    }
                    s
                }
                // tract cannot run the model: static quantization is out of
                // reach, weights can still be quantized.
                Err(e) if a.no_fallback => {
                    return Err(e.context(
                        "calibration failed; `--mode weight-only` needs no calibration run",
                    ))
                }
                Err(e) => {
                    let msg = format!(
                        "calibration could not run the model in tract ({e:#}); fell back to weight-only quantization (int8 weights, float activations). `--no-fallback` makes this an error"
                    );
                    eprintln!("warning: {msg}");
                    notes.push(msg);
                    cfg.mode = Mode::WeightOnly;
                    BTreeMap::new()
                }
            };
            if a.verbose {
                eprintln!(
                    "calibrated {} tensors on {} samples in {:.2?}",
                    tensors.len(),
                    calib_samples,
                    t0.elapsed()
                );
            }
            stats
        };
        let target = cfg.activations.target();
        let mut bounded_kept = 0usize;
        let mut guarded = 0usize;
        // Softmax and Sigmoid outputs are bounded probabilities whose large
        // values carry the information (attention weights, gates): the
        // clipping methods would cut exactly those, so they keep their
        // observed range.
        let methods: Vec<RangeMethod> = stats
            .keys()
            .map(|name| match a.method() {
                RangeMethod::MinMax => RangeMethod::MinMax,
                _ if produced_by_bounded_op(&model.graph, name) => {
                    bounded_kept += 1;
                    RangeMethod::MinMax
                }
                m => m,
            })
            .collect();
        // Range searches are independent per tensor: in parallel.
        let all: Vec<(&TensorStats, RangeMethod)> = stats.values().zip(methods).collect();
        let chosen: Vec<_> = all
            .par_iter()
            .map(|&(s, method)| {
                if method == RangeMethod::Entropy {
                    quench_calib::entropy_range_guarded(s, target, a.entropy_guard)
                } else {
                    choose_range(s, method, target).map(|r| (r, false))
                }
            })
            .collect();
        for ((name, _), c) in stats.iter().zip(chosen) {
            match c {
                Ok((r, replaced)) => {
                    guarded += usize::from(replaced);
                    ranges.insert(name.clone(), r);
                }
                Err(e) => notes.push(format!("tensor `{name}`: no range ({e}); stays float")),
            }
        }
        // A range that ends at 0 from above saw no positive value in any
        // calibration sample (a dead ReLU, a constant-zero tensor): positive
        // values at run time would all be clipped. Usually the calibration
        // data is not representative.
        let dead: Vec<&String> = stats
            .iter()
            .filter(|(_, s)| s.count > 0 && s.max <= 0.0)
            .map(|(n, _)| n)
            .collect();
        if !dead.is_empty() {
            let msg = format!(
                "{} tensor(s) never held a positive value on the calibration data, so their range ends at 0 and positive values will be clipped (e.g. `{}`); check that the calibration samples are representative",
                dead.len(),
                dead[..dead.len().min(3)]
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join("`, `")
            );
            eprintln!("warning: {msg}");
            notes.push(msg);
        }
        if guarded > 0 {
            notes.push(format!(
                "entropy: {guarded} of {} tensors use the MSE range instead of the KL threshold, whose expected squared error was over {}x larger (--entropy-guard)",
                stats.len(),
                a.entropy_guard
            ));
        }
        if bounded_kept > 0 && a.verbose {
            eprintln!("{bounded_kept} Softmax/Sigmoid outputs keep their observed range (not clipped by {:?})", a.method());
        }
    }

    if cfg.mode != plan_mode {
        plan = quantize::plan(&model.graph, &cfg)?;
    }

    phases.lap("calibration");
    // 4. Quantize. The float graph is kept for the per-tensor attribution.
    let explain = a.explain && cfg.mode == Mode::Static && !a.no_verify && !a.no_quantize;
    if a.explain && !explain {
        notes.push(
            "--explain needs static quantization with verification; nothing to explain".into(),
        );
    }
    let float_model = explain.then(|| model.clone());
    let mut qcx = PassCx::new(opset);
    let summary = quantize::apply(&mut model.graph, &plan, &ranges, &cfg, opset, &mut qcx)?;
    // The float weights replaced by integer ones are now unused.
    quench_passes::Pass::run(
        &quench_passes::dead_code::DeadCode,
        &mut model.graph,
        &mut qcx,
    )?;
    model
        .graph
        .verify()
        .context("quantized graph is invalid (a quench bug)")?;
    if cfg.mode == Mode::Static && opset < 13 && a.verbose {
        eprintln!("note: opset {opset}: per-tensor weights");
    }
    let out_proto = model.to_onnx();
    let opts = SaveOptions {
        external: crate::convert::storage(a.external_data, a.inline, loaded.external.tensors > 0),
        limit: None,
    };
    let saved = quench_onnx::save_model(&out_proto, &a.output, &opts)?;
    if let Some(p) = &mut pruning {
        p.measure_sizes(&loaded, &saved)?;
    }

    phases.lap("quantize and write");
    // 5. Verify.
    let mut verification = None;
    if !a.no_verify {
        if let Some(ev) = &a.eval {
            let (d, f) = load_data(ev, &original)?;
            eval_data = Some((d, f, ev.display().to_string()));
        } else if eval_data.is_none() {
            if let Some(c) = &a.calibration {
                let (d, f) = load_data(c, &original)?;
                eval_data = Some((d, f, format!("{} (calibration data)", c.display())));
            }
        }
        match &eval_data {
            Some((d, f, label)) => {
                // The float twin: every Q/DQ pair replaced by the exact
                // float arithmetic (the reference semantics).
                let mut twin = model.clone();
                let (twin_pairs, _) =
                    quench_passes::simulate::float_twin_pairs(&mut twin.graph, opset);
                let twin_proto = twin.to_onnx();
                drop(twin);
                match verify(&original, &out_proto, &twin_proto, d, *f, label) {
                    Ok(mut v) => {
                        if let Some(fp) = &float_model {
                            let twin = (&twin_proto, &twin_pairs[..]);
                            match crate::attribution::attribute(fp, &model.graph, twin, d, *f) {
                                Ok(t) => v.tensors = t,
                                Err(e) => notes
                                    .push(format!("per-tensor error attribution skipped: {e:#}")),
                            }
                        }
                        verification = Some(v);
                    }
                    Err(e) => notes.push(format!("verification in tract failed: {e:#}")),
                }
            }
            None => notes
                .push("no evaluation data (--eval or --calibration): verification skipped".into()),
        }
    }

    if !a.no_verify {
        phases.lap("verification");
    }
    if a.verbose {
        eprintln!("{}", phases.line());
    }
    let report = Report {
        no_quantize: a.no_quantize,
        input: a.model.display().to_string(),
        output: a.output.display().to_string(),
        mode: match cfg.mode {
            Mode::Static => ModeArg::Static,
            Mode::WeightOnly => ModeArg::WeightOnly,
            Mode::Dynamic => ModeArg::Dynamic,
        },
        method: a.method,
        config: cfg.clone(),
        passes: pass_names,
        pass_stats: cx.stats.clone(),
        quantization: summary,
        size_before,
        size_after: saved.total_bytes(),
        calibration_samples: calib_samples,
        verification,
        pruning,
        notes,
    };
    print_report(&report, a.verbose);
    if let Some(p) = &a.report {
        write_json(p, &report, true)?;
    }
    Ok(check_thresholds(&report, a.min_sqnr, a.min_top1))
}

fn check_thresholds(
    r: &Report,
    min_sqnr: Option<f64>,
    min_top1: Option<f64>,
) -> Option<ThresholdFailed> {
    if min_sqnr.is_none() && min_top1.is_none() {
        return None;
    }
    let Some(v) = r.verification.as_ref() else {
        return Some(ThresholdFailed(
            "--min-sqnr/--min-top1 were given but verification did not run (see the notes above)"
                .into(),
        ));
    };
    for o in &v.outputs {
        let Some(m) = o.reference.as_ref().or(o.file.as_ref()) else {
            continue;
        };
        if let Some(t) = min_sqnr {
            if m.sqnr_db < t {
                return Some(ThresholdFailed(format!(
                    "output `{}`: SQNR {:.2} dB is below --min-sqnr {t}",
                    o.output, m.sqnr_db
                )));
            }
        }
        if let (Some(t), Some(top1)) = (min_top1, &m.top1) {
            if top1.fraction < t {
                return Some(ThresholdFailed(format!(
                    "output `{}`: top-1 agreement {:.4} is below --min-top1 {t}",
                    o.output, top1.fraction
                )));
            }
        }
    }
    None
}

/// Top-1 hits against integer `labels` (rows `offset..` of them) for a
/// reference and a test output of shape `[N, C]`: `(rows, reference hits,
/// test hits)`. Anything else counts nothing.
pub(crate) fn label_hits(
    reference: &ndarray::ArrayD<f32>,
    test: &ndarray::ArrayD<f32>,
    labels: Option<&ArrayData>,
    offset: usize,
) -> (usize, usize, usize) {
    let Some(ArrayData::I64(l)) = labels else {
        return (0, 0, 0);
    };
    if reference.ndim() != 2 || l.ndim() != 1 || test.shape() != reference.shape() {
        return (0, 0, 0);
    }
    let argmax = |m: &ndarray::ArrayD<f32>, row: usize| {
        (0..m.shape()[1]).fold(0, |best, k| {
            if m[[row, k]] > m[[row, best]] {
                k
            } else {
                best
            }
        }) as i64
    };
    let mut hits = (0, 0, 0);
    for row in 0..reference.shape()[0] {
        let Some(&lab) = l.get(offset + row) else {
            continue;
        };
        hits.0 += 1;
        hits.1 += (argmax(reference, row) == lab) as usize;
        hits.2 += (argmax(test, row) == lab) as usize;
    }
    hits
}

/// One evaluation batch's figures (see [`verify`]).
struct BatchCheck {
    /// Per output: FP32 vs file, FP32 vs twin, twin vs file.
    file: Vec<Accumulator>,
    reference: Vec<Accumulator>,
    runtime: Vec<Accumulator>,
    file_error: Option<String>,
    twin_failed: bool,
    /// (labelled rows, FP32 correct, quantized correct).
    labels: (usize, usize, usize),
}

impl BatchCheck {
    fn new(outputs: usize) -> BatchCheck {
        let acc = vec![Accumulator::new(); outputs];
        BatchCheck {
            file: acc.clone(),
            reference: acc.clone(),
            runtime: acc,
            file_error: None,
            twin_failed: false,
            labels: (0, 0, 0),
        }
    }
}

/// Runs FP32, the emitted model and its float twin on the evaluation data.
fn verify(
    original: &ModelProto,
    quantized: &ModelProto,
    twin: &ModelProto,
    data: &Dataset,
    feed: Feed,
    label: &str,
) -> Result<Verification> {
    let names = model_input_names(original);
    let fp = Runners::new(original, vec![]);
    let qr = Runners::new(quantized, vec![]);
    let tr = Runners::new(twin, vec![]);
    let out_names: Vec<String> = original
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name().to_string()).collect())
        .unwrap_or_default();
    let labels = data.extra("labels").cloned();
    // Batches run in parallel, each into its own accumulators; they are
    // merged in batch order, so the figures do not depend on the threads.
    let ranges = feed.ranges(data.samples(), MAX_BATCH);
    let n_out = out_names.len();
    // The three models compile side by side (their errors, if any, come
    // back from the batches below).
    if let Some(first) = ranges.first() {
        let probe = data.feed(feed, first.clone())?;
        rayon::scope(|s| {
            for r in [&fp, &qr, &tr] {
                let (names, probe) = (&names, &probe);
                s.spawn(move |_| {
                    let _ = r.runner(names, probe);
                });
            }
        });
    }
    let batches: Vec<BatchCheck> = ranges
        .par_iter()
        .map(|r| -> Result<BatchCheck> {
            let mut bc = BatchCheck::new(n_out);
            let inputs = data.feed(feed, r.clone())?;
            let a = fp.run(&names, &inputs).context("running the FP32 model")?;
            let b = qr
                .run(&names, &inputs)
                .map_err(|e| bc.file_error = Some(format!("{e:#}")))
                .ok();
            let c = tr
                .run(&names, &inputs)
                .map_err(|_| bc.twin_failed = true)
                .ok();
            if b.is_none() && c.is_none() {
                bail!(
                    "tract can run neither the quantized model nor its float twin: {}",
                    bc.file_error.clone().unwrap_or_default()
                );
            }
            for (i, x) in a.iter().enumerate().take(n_out) {
                let xf = x.to_f32();
                let yf = b.as_ref().map(|b| b[i].to_f32());
                if let Some(yf) = &yf {
                    bc.file[i].update(xf.view(), yf.view())?;
                }
                if let Some(c) = &c {
                    let zf = c[i].to_f32();
                    bc.reference[i].update(xf.view(), zf.view())?;
                    if let Some(yf) = &yf {
                        bc.runtime[i].update(zf.view(), yf.view())?;
                    }
                }
                // Accuracy against labels uses the reference semantics when
                // the file cannot run.
                let yf = match (yf, &c) {
                    (Some(y), _) => y,
                    (None, Some(c)) => c[i].to_f32(),
                    (None, None) => continue,
                };
                if i == 0 {
                    bc.labels = label_hits(&xf, &yf, labels.as_ref(), r.start);
                }
            }
            Ok(bc)
        })
        .collect::<Result<_>>()?;
    let mut acc_file: Vec<Accumulator> = out_names.iter().map(|_| Accumulator::new()).collect();
    let mut acc_ref = acc_file.clone();
    let mut acc_rt = acc_file.clone();
    let mut file_error: Option<String> = None;
    let mut twin_ok = true;
    let (mut n_labels, mut correct_fp, mut correct_q) = (0usize, 0usize, 0usize);
    for bc in &batches {
        for i in 0..n_out {
            acc_file[i].merge(&bc.file[i]);
            acc_ref[i].merge(&bc.reference[i]);
            acc_rt[i].merge(&bc.runtime[i]);
        }
        if file_error.is_none() {
            file_error.clone_from(&bc.file_error);
        }
        twin_ok &= !bc.twin_failed;
        n_labels += bc.labels.0;
        correct_fp += bc.labels.1;
        correct_q += bc.labels.2;
    }
    let outputs = out_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let file = file_error.is_none().then(|| acc_file[i].finish());
            let reference = twin_ok.then(|| acc_ref[i].finish());
            let rt = (twin_ok && file_error.is_none()).then(|| acc_rt[i].finish());
            // The runtime disagrees with the reference when its difference
            // from the twin is not small next to the quantization error.
            let discrepancy = match (&reference, &rt) {
                (Some(re), Some(rt)) => rt.sqnr_db < re.sqnr_db + 10.0 && rt.sqnr_db < 40.0,
                _ => false,
            };
            OutputCheck {
                output: name.clone(),
                file,
                reference,
                runtime_vs_reference: rt,
                runtime_discrepancy: discrepancy,
            }
        })
        .collect();
    let accuracy = (n_labels > 0).then(|| Accuracy {
        labels: n_labels,
        fp32: correct_fp as f64 / n_labels as f64,
        quantized: correct_q as f64 / n_labels as f64,
    });
    Ok(Verification {
        file_error,
        data: label.to_string(),
        samples: data.samples(),
        outputs,
        accuracy,
        tensors: Vec::new(),
    })
}

/// The quantized tensors whose own Q/DQ adds the most error (all of them
/// with `--verbose`).
fn print_attribution(tensors: &[crate::attribution::TensorError], verbose: bool) {
    if tensors.is_empty() {
        return;
    }
    let mut worst: Vec<&crate::attribution::TensorError> = tensors.iter().collect();
    worst.sort_by(|a, b| a.added_db.total_cmp(&b.added_db));
    let shown = if verbose {
        worst.len()
    } else {
        worst.len().min(3)
    };
    println!(
        "    error by tensor on {} samples (SQNR of the error its own Q/DQ adds; lowest first):",
        crate::attribution::SAMPLES
    );
    for t in &worst[..shown] {
        let node = if t.node.is_empty() {
            "graph input".to_string()
        } else {
            format!("{} `{}`", t.op, t.node)
        };
        println!(
            "      {:>6.1} dB  `{}` from {node} (SQNR there {:.1} dB, {:.1} dB before its Q/DQ)",
            t.added_db, t.tensor, t.sqnr_out_db, t.sqnr_in_db
        );
    }
    if shown < worst.len() {
        println!(
            "      ... {} more in --report / --verbose; keep a tensor float with --exclude-nodes NODE",
            worst.len() - shown
        );
    }
}

fn human(b: u64) -> String {
    if b >= 1_000_000 {
        format!("{:.2} MB", b as f64 / 1e6)
    } else {
        format!("{:.1} kB", b as f64 / 1e3)
    }
}

fn print_report(r: &Report, verbose: bool) {
    let q = &r.quantization;
    let nq = q.nodes.iter().filter(|d| d.quantized).count();
    println!("quench compile: {} -> {}", r.input, r.output);
    if r.no_quantize {
        println!("  mode           none (--no-quantize: graph passes only, FP32 output)");
    } else {
        println!(
            "  mode           {:?}, activations {:?}, weights {:?}, {}",
            r.config.mode,
            r.config.activations,
            r.config.weights,
            if q.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            }
        );
    }
    if !r.passes.is_empty() {
        let folded = r
            .pass_stats
            .get("fold_batchnorm.folded")
            .copied()
            .unwrap_or(0);
        println!(
            "  passes         {} ({} BatchNormalization folded)",
            r.passes.len(),
            folded
        );
    }
    println!(
        "  nodes          {} quantized, {} float",
        nq,
        q.nodes.len() - nq
    );
    let mut why: BTreeMap<&str, usize> = BTreeMap::new();
    for d in q.nodes.iter().filter(|d| !d.quantized) {
        *why.entry(d.reason.as_str()).or_default() += 1;
    }
    for (reason, n) in &why {
        println!("    float: {n:>4} × {reason}");
    }
    if verbose {
        for d in &q.nodes {
            println!(
                "    {:<40} {:<20} {} ({})",
                d.node,
                d.op,
                if d.quantized { "int8" } else { "float" },
                d.reason
            );
        }
    }
    println!(
        "  weights        {} tensors int8, {} biases int32",
        q.weights_quantized, q.biases_quantized
    );
    if r.config.mode == Mode::Static {
        println!("  activations    {} tensors quantized ({} calibration samples, method {:?}), {} Relu/Clip absorbed", q.activations_quantized, r.calibration_samples, r.method, q.absorbed_activations);
        for (t, why) in &q.activations_float {
            println!("    float: `{t}`: {why}");
        }
    }
    println!(
        "  size           {} -> {} ({:.2}x smaller)",
        human(r.size_before),
        human(r.size_after),
        r.size_before as f64 / r.size_after.max(1) as f64
    );
    if let Some(p) = &r.pruning {
        p.print(verbose);
    }
    match &r.verification {
        Some(v) => {
            println!(
                "  verification   tract, {} samples from {}",
                v.samples, v.data
            );
            for o in &v.outputs {
                let line = |m: &Metrics| {
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
                    format!(
                        "SQNR {:.2} dB, cosine {:.6}, max abs err {:.4e}{top1}",
                        m.sqnr_db, m.cosine, m.max_abs_err
                    )
                };
                if let Some(re) = &o.reference {
                    println!(
                        "    {} (reference semantics, float twin): {}",
                        o.output,
                        line(re)
                    );
                }
                if let Some(f) = &o.file {
                    println!(
                        "    {} (emitted file in tract):           {}",
                        o.output,
                        line(f)
                    );
                }
                if o.runtime_discrepancy {
                    println!("    {}: runtime discrepancy: tract's integer path differs from the ONNX reference semantics beyond quantization error; trust the reference figures", o.output);
                }
            }
            if let Some(e) = &v.file_error {
                println!("    tract cannot run the emitted file ({e}); the figures above are the reference semantics (float twin)");
            }
            if let Some(acc) = &v.accuracy {
                println!(
                    "    accuracy on {} labels: FP32 {:.2}%, quantized {:.2}% ({:+.2} points)",
                    acc.labels,
                    100.0 * acc.fp32,
                    100.0 * acc.quantized,
                    100.0 * (acc.quantized - acc.fp32)
                );
            }
            print_attribution(&v.tensors, verbose);
            let low = v
                .outputs
                .iter()
                .filter_map(|o| o.reference.as_ref().or(o.file.as_ref()))
                .any(|m| m.sqnr_db < 20.0);
            if v.tensors.is_empty() && low && r.mode == ModeArg::Static && !r.no_quantize {
                println!("    SQNR below 20 dB: `--explain` lists the quantized tensors that add the most error");
            }
        }
        None => println!("  verification   skipped"),
    }
    for n in &q.notes {
        println!("  note: {n}");
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
}
