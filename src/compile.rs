//! `quench compile` (the main job) and `quench calibrate`: flags to
//! [`quench_compile::Options`], the driver's outcome to files and text.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, ValueEnum};
use quench_compile::{Method, Options, PruneMethod, PruneOptions};
use quench_onnx::SaveOptions;
use quench_passes::quantize::{ActType, Mode, WeightType};

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum ModeArg {
    /// int8 weights and activations (needs calibration data).
    Static,
    /// int8 weights with DequantizeLinear; activations stay float.
    WeightOnly,
    /// int8 weights; activations quantized at run time (MatMul).
    Dynamic,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum MethodArg {
    Minmax,
    Percentile,
    Entropy,
    Mse,
    /// The ranges that cost the least at the model output: one method for
    /// all (min/max, percentiles, MSE, entropy) chosen and confirmed on
    /// calibration samples, activations behind half of the output error
    /// left float (and a log spectrogram's front end, the `Log` of what
    /// convolutions and magnitudes compute from the inputs, when that
    /// gains half of the error; its weights too when that gains half of
    /// what is left) (default).
    Auto,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum ActArg {
    U8,
    I8,
    U16,
    I16,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum WeightArg {
    I8,
    U8,
    I7,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
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
    /// Evaluation samples (same formats). Default: 20% of the calibration
    /// samples, chosen at random with a fixed seed, are held back for
    /// evaluation (all of them
    /// calibrate under `--no-verify`).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Quantization mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Static)]
    pub mode: ModeArg,
    /// How activation ranges are chosen from calibration statistics.
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
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
    /// Weight type: i8 (symmetric), u8 (asymmetric) or i7 (int8 storage,
    /// codes in [-63, 63], as ONNX Runtime's reduce_range: its u8 x i8
    /// kernels cannot saturate on x86 CPUs without VNNI; see the README).
    #[arg(long, value_enum, default_value_t = WeightArg::I8)]
    pub weights: WeightArg,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Leave these nodes (by name) float.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub exclude_nodes: Vec<String>,
    /// Leave every node of these op types float. Naming MatMul, Add or
    /// Gemm also turns off the MatMul + bias Add -> Gemm rewrite; naming
    /// HardSwish, Add or Mul keeps HardSwish a float op (see
    /// --keep-hard-swish).
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
    /// Keep calibrated ranges as the method chose them. By default each
    /// activation range is clamped to where its consumers are not flat
    /// (below 0 into Relu, outside a Clip's bounds, below -3 into
    /// HardSwish, HardSigmoid's and Tanh's saturation, Sigmoid above 20):
    /// exact, since no consumer output changes, and tighter.
    #[arg(long)]
    pub no_consumer_ranges: bool,
    /// With `--method auto`: quantize every planned activation, even one
    /// that alone causes at least half of the output error (by default
    /// such outliers stay float, and the report names them), and a log
    /// spectrogram's front end (by default float when that gains half of
    /// the error).
    #[arg(long)]
    pub no_float_outliers: bool,
    /// With `--method auto`: skip the step for outputs a Concat assembles
    /// from several tensors (a detector's boxes in pixels and its scores):
    /// by default (with 16 calibration samples or more), blocks of
    /// activations take another range method where that raises the score
    /// of the parts, each part of an output weighing equally, without
    /// lowering the whole output's on 16 calibration samples, kept when
    /// the parts gain more than the whole loses on 16 others
    #[arg(long)]
    pub no_part_ranges: bool,
    /// Keep each HardSwish a float op between DequantizeLinear and
    /// QuantizeLinear. By default (static mode, u8 activations) it is
    /// written as an Add and a Mul on Q/DQ pairs, `x * Q(x/6 + 1/2)` with
    /// the gate on [0, 1] in 1/255 steps, which ONNX Runtime runs as
    /// QLinearAdd and QLinearMul (it has no integer HardSwish; in float
    /// it cost PP-LCNet 40% of its time). Kept anyway with an accuracy
    /// target (--target-sqnr, --max-top1-drop, --max-accuracy-drop) or
    /// --explain, whose figures are the twin's without it; with
    /// --min-sqnr/--min-top1, set against the file without it; for a
    /// HardSwish named in --exclude-nodes; and when --exclude-op-types
    /// names HardSwish, Add or Mul
    #[arg(long)]
    pub keep_hard_swish: bool,
    /// Round each layer's weights one input column at a time, pushing each
    /// column's rounding error onto the columns not yet rounded, weighted
    /// by the layer's calibration inputs (GPTQ's method): lower layer
    /// output error than nearest rounding. Conv (group 1), Gemm, MatMul
    /// with symmetric integer weights; kept only if the output SQNR on
    /// held-out calibration samples rises.
    #[arg(long)]
    pub error_compensated_rounding: bool,
    /// Cross-layer equalization before calibration: in every Conv ->
    /// (Relu) -> Conv chain, rescale each channel so both weights have the
    /// same range (exact in FP32; helps per-tensor weights and activations
    /// of depthwise models).
    #[arg(long)]
    pub equalize: bool,
    /// Empirical bias correction (off by default): the shift quantization
    /// causes in each Conv/Gemm output channel's mean, measured on up to 32
    /// calibration samples (the twin vs FP32, one layer at a time with
    /// the earlier corrections in place; channels whose shift is within
    /// 3 standard errors of zero are left alone), is subtracted from the
    /// bias; kept only if the output SQNR on other calibration samples
    /// rises consistently over them (per-sample gains' paired t above the
    /// one-sided 95% value). One run of the twin per layer (up to 64
    /// groups; minutes on large detectors)
    #[arg(long, conflicts_with = "no_bias_correction")]
    pub bias_correction: bool,
    /// The default since bias correction became opt-in; accepted so older
    /// scripts keep working
    #[arg(long, hide = true)]
    pub no_bias_correction: bool,
    /// Keep full-range int8 weight codes on every layer. By default the
    /// saturation guard emulates each int8 Conv (group 1)/Gemm/MatMul on 8
    /// calibration samples as ONNX Runtime computes it on x86 CPUs without
    /// VNNI (AVX2: two u8 x s8 products summed into a saturating int16;
    /// also in dynamic mode). Output channels where saturation costs more
    /// than the change costs elsewhere get paired int8 codes (no two codes
    /// the kernel adds into one int16 share a sign and pass 128 together,
    /// on a grid up to 1 bit coarser) or 7-bit codes ([-63, 63]),
    /// whichever loses less, in the same int8 tensor; the note says how
    /// many, -v lists each layer
    #[arg(long)]
    pub no_saturation_guard: bool,
    /// SmoothQuant with its strength searched (SmoothQuant itself is the
    /// default with static quantization, at a = 0.5): for a
    /// LayerNormalization (or one written out in elementary ops, as
    /// exported below opset 17) feeding
    /// MatMuls with constant weights, divide its output channels by s_j and
    /// multiply the weight rows by s_j, s_j = max|x_j|^a / max|w_j|^(1-a),
    /// with a in {0.25, 0.5, 0.75} (default: 0.5) or none chosen by output
    /// SQNR on 16 calibration samples with only the normalization outputs
    /// and the weights quantized. When it feeds only those MatMuls, s is folded
    /// into its scale and bias; when it also feeds other nodes (a
    /// transformer's residual Add), a Mul by 1/s is inserted before the
    /// MatMuls and the normalization's output stays float. Exact in FP32
    #[arg(long, conflicts_with = "no_smooth_quant")]
    pub smooth_quant: bool,
    /// Turn SmoothQuant off
    #[arg(long)]
    pub no_smooth_quant: bool,
    /// Graph passes to run before quantization, comma separated, or `none`
    /// (default: the whole pipeline; see `quench passes`). An explicit list
    /// also turns off static mode's MatMul + bias Add -> Gemm rewrite (name
    /// `matmul_add_to_gemm` to keep it).
    #[arg(long, value_delimiter = ',')]
    pub passes: Option<Vec<String>>,
    /// Print the IR text after this pass (repeatable).
    #[arg(long)]
    pub dump_after: Vec<String>,
    /// Fail (exit 3, nothing written at `-o`) if any output's SQNR vs FP32
    /// is below this (dB).
    #[arg(long)]
    pub min_sqnr: Option<f64>,
    /// Fail (exit 3, nothing written at `-o`) if top-1 agreement with FP32
    /// is below this fraction.
    #[arg(long)]
    pub min_top1: Option<f64>,
    /// Mixed precision to a target: leave the activations that cost the
    /// most at the output float (ordered by what leaving each alone float
    /// gains), fewest changes first, until the lowest output SQNR on the
    /// evaluation data reaches DB (static mode; at most 32 tensors); then
    /// each is tried at 16 bits and kept there if the target still holds
    /// (see --no-mixed-int16). The report says which and why. Not reached:
    /// the best model found is written and the exit status is 3 (nothing
    /// raised when even every candidate float at once misses; the message
    /// gives that bound).
    #[arg(long, value_name = "DB")]
    pub target_sqnr: Option<f64>,
    /// Mixed precision (as --target-sqnr) until top-1 agreement with FP32
    /// on the evaluation data has dropped by at most PCT percentage points,
    /// on every output with class scores (last axis of 2-10000 classes).
    /// Needs no labels. Not reached: exit status 3.
    #[arg(long, value_name = "PCT")]
    pub max_top1_drop: Option<f64>,
    /// Mixed precision (as --target-sqnr) until accuracy against the
    /// evaluation data's labels is at most POINTS percentage points below
    /// FP32's. Labels: a `labels.npy` (int64, one class id per sample)
    /// beside the evaluation inputs, or `labels` in its .npz; scored on the
    /// first output, [N, classes]. Not reached: exit status 3.
    #[arg(long, value_name = "POINTS")]
    pub max_accuracy_drop: Option<f64>,
    /// With a target: never try 16-bit activations (opset 21) for the
    /// tensors raised; leave them float.
    #[arg(long)]
    pub no_mixed_int16: bool,
    /// Where to write a model that failed `--min-sqnr`/`--min-top1` (by
    /// default it is not written at all).
    #[arg(long, value_name = "PATH")]
    pub keep_rejected: Option<PathBuf>,
    /// Skip verification in tract.
    #[arg(long)]
    pub no_verify: bool,
    /// Static mode: also measure, for every quantized activation, the error
    /// its own Q/DQ adds (FP32 vs the float twin with every quantized
    /// tensor exposed, on 8 evaluation samples), and list the worst: where
    /// an accuracy loss comes from. Costs two more tract compiles.
    #[arg(long)]
    pub explain: bool,
    /// `--explain` on one evaluation sample alone: ROW is its row in the
    /// evaluation data as given (0-based; with the held-back split, its row
    /// in the calibration data), e.g. the verification's `worst sample #ROW`:
    /// which tensors make that input collapse. Implies --explain; a row the
    /// evaluation data does not hold is an error
    #[arg(long, value_name = "ROW")]
    pub explain_sample: Option<usize>,
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
    #[arg(long, value_enum, default_value_t = PruneMethodArg::Layer, requires = "prune")]
    pub prune_method: PruneMethodArg,
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
    /// Store weights in `<output>.<16 hex digits>.data` (named after a hash of the data).
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
    /// The driver's options for these flags.
    pub fn options(&self) -> Options {
        Options {
            calibration: self.calibration.clone(),
            calibration_table: self.calibration_table.clone(),
            eval: self.eval.clone(),
            mode: match self.mode {
                ModeArg::Static => Mode::Static,
                ModeArg::WeightOnly => Mode::WeightOnly,
                ModeArg::Dynamic => Mode::Dynamic,
            },
            method: match self.method {
                MethodArg::Minmax => Method::Minmax,
                MethodArg::Percentile => Method::Percentile,
                MethodArg::Entropy => Method::Entropy,
                MethodArg::Mse => Method::Mse,
                MethodArg::Auto => Method::Auto,
            },
            percentile: self.percentile,
            entropy_guard: self.entropy_guard,
            activations: match self.activations {
                ActArg::U8 => ActType::U8,
                ActArg::I8 => ActType::I8,
                ActArg::U16 => ActType::U16,
                ActArg::I16 => ActType::I16,
            },
            weights: match self.weights {
                WeightArg::I8 => WeightType::I8,
                WeightArg::U8 => WeightType::U8,
                WeightArg::I7 => WeightType::I7,
            },
            activation_format: None,
            weight_format: None,
            weight_block_size: None,
            per_channel: !self.per_tensor,
            exclude_nodes: self.exclude_nodes.clone(),
            exclude_op_types: self.exclude_op_types.clone(),
            quantize_softmax_inputs: self.quantize_softmax_inputs,
            consumer_ranges: !self.no_consumer_ranges,
            float_outliers: !self.no_float_outliers,
            part_ranges: !self.no_part_ranges,
            lower_hard_swish: !self.keep_hard_swish,
            error_compensated_rounding: self.error_compensated_rounding,
            equalize: self.equalize,
            bias_correction: self.bias_correction,
            saturation_guard: !self.no_saturation_guard,
            smooth_quant: !self.no_smooth_quant,
            smooth_quant_search: self.smooth_quant,
            passes: self.passes.clone(),
            dump_after: self.dump_after.clone(),
            min_sqnr: self.min_sqnr,
            min_top1: self.min_top1,
            target_sqnr: self.target_sqnr,
            max_top1_drop: self.max_top1_drop,
            max_accuracy_drop: self.max_accuracy_drop,
            mixed_int16: !self.no_mixed_int16,
            verify: !self.no_verify,
            explain: self.explain,
            explain_sample: self.explain_sample,
            no_fallback: self.no_fallback,
            no_quantize: self.no_quantize,
            prune: self.prune.map(|target| PruneOptions {
                target,
                method: match self.prune_method {
                    PruneMethodArg::Layer => PruneMethod::Layer,
                    PruneMethodArg::Global => PruneMethod::Global,
                    PruneMethodArg::Sensitivity => PruneMethod::Sensitivity,
                },
                all_layers: self.prune_all_layers,
                exclude: self.prune_exclude.clone(),
            }),
        }
    }
}

/// Exit status when verification thresholds fail.
pub struct ThresholdFailed(pub String);

/// Draws calibration progress on a terminal (indicatif hides itself
/// otherwise).
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new() -> Bar {
        Bar(indicatif::ProgressBar::hidden())
    }
}

impl quench_compile::Progress for Bar {
    fn samples_start(&self, what: &str, total: u64) {
        self.0
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{what} {{bar:30}} {{pos}}/{{len}} samples ({{per_sec}}, eta {{eta}})"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    }
    fn samples_done(&self, n: u64) {
        self.0.inc(n);
    }
    fn samples_end(&self) {
        self.0.finish_and_clear();
    }
}

/// The time of each phase, for `--verbose`.
fn timing_line(t: &[quench_compile::Timing]) -> String {
    let parts: Vec<String> = t
        .iter()
        .map(|p| format!("{} {:.3} s", p.phase, p.seconds))
        .collect();
    let total: f64 = t.iter().map(|p| p.seconds).sum();
    format!("time: {} (total {total:.3} s)", parts.join(", "))
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let loaded = quench_onnx::load_model(&a.model)?;
    crate::files::check_outputs(&loaded, &[Some(&a.calibration)], &[], &[&a.output])?;
    let opts = quench_compile::CalibrateOptions {
        calibration: a.calibration.clone(),
        passes: a.passes.clone(),
    };
    let mut outcome = quench_compile::calibrate_table(&loaded, &opts, &Bar::new())?;
    // The table names the model as the user did.
    outcome.table.model = a.model.display().to_string();
    let t1 = std::time::Instant::now();
    crate::files::write_json(&a.output, &outcome.table, false)?;
    outcome.timings.push(quench_compile::Timing {
        phase: "write".into(),
        seconds: t1.elapsed().as_secs_f64(),
    });
    if a.verbose {
        for n in &outcome.log {
            eprintln!("{n}");
        }
        eprintln!("{}", timing_line(&outcome.timings));
        let _ = t0;
    }
    println!(
        "calibrated {} tensors over {} samples -> {}",
        outcome.table.tensors.len(),
        outcome.table.samples,
        a.output.display()
    );
    Ok(())
}

pub fn compile(a: CompileArgs) -> Result<Option<ThresholdFailed>> {
    let loaded = quench_onnx::load_model(&a.model)?;
    let mut models: Vec<&Path> = vec![&a.output];
    models.extend(a.keep_rejected.as_deref());
    let others: Vec<&Path> = a.report.as_deref().into_iter().collect();
    crate::files::check_outputs(
        &loaded,
        &[
            a.calibration.as_ref(),
            a.eval.as_ref(),
            a.calibration_table.as_ref(),
        ],
        &models,
        &others,
    )?;
    if a.keep_rejected.is_some() && a.min_sqnr.is_none() && a.min_top1.is_none() {
        eprintln!("warning: --keep-rejected has no effect without --min-sqnr or --min-top1");
    }
    let opts = a.options();
    let mut outcome = quench_compile::compile(&loaded, &opts, &Bar::new())?;
    for d in &outcome.dumps {
        eprint!("{d}");
    }
    for w in &outcome.report.warnings {
        eprintln!("warning: {w}");
    }
    if a.verbose {
        for l in &outcome.report.log {
            eprintln!("{l}");
        }
    }
    let save = SaveOptions {
        external: crate::convert::storage(a.external_data, a.inline, loaded.external.tensors > 0),
        limit: None,
    };
    let failed = outcome.report.threshold_failure.clone();
    // A target not reached still writes the best model found (exit 3).
    let missed = outcome.report.target_missed.clone();
    let target = match (&failed, &a.keep_rejected) {
        (None, _) => Some(a.output.as_path()),
        (Some(_), Some(k)) => Some(k.as_path()),
        (Some(_), None) => None,
    };
    let t0 = std::time::Instant::now();
    match target {
        Some(path) => {
            outcome.save(&loaded, path, &save)?;
        }
        None => {
            outcome.report.output = String::new();
            outcome
                .report
                .notes
                .push("the model failed a requested threshold and was not written (--keep-rejected PATH keeps it)".into());
        }
    }
    outcome.report.timings.push(quench_compile::Timing {
        phase: "write".into(),
        seconds: t0.elapsed().as_secs_f64(),
    });
    if a.verbose {
        eprintln!("{}", timing_line(&outcome.report.timings));
    }
    crate::text::print_report(&outcome.report, a.verbose);
    if let Some(p) = &a.report {
        crate::files::write_json(p, &outcome.report, true)?;
    }
    Ok(failed.or(missed).map(ThresholdFailed))
}
