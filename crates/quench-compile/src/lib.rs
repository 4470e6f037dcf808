//! The quench compiler as a library call.
//!
//! [`compile`] takes a loaded FP32 model and [`Options`] (plain data) and
//! returns an [`Outcome`]: the output model, a serde [`Report`] of what was
//! done and measured, and the warnings as data. It prints nothing; the
//! command line (`src/` of the root package) maps flags to `Options` and
//! the `Report` to text, and a Python binding can do the same.
//!
//! The phases run in this order, each a function, each followed by
//! [`Graph::verify`](quench_ir::Graph::verify) (as Cranelift's
//! `Context::compile` verifies after each phase):
//!
//! 1. **data**: [`DataPlan`] binds calibration and evaluation data to the
//!    model's inputs and decides, once, which samples calibrate and which
//!    evaluate;
//! 2. **passes**: the graph pass pipeline ([`quench_passes::pipeline`]);
//! 3. **prune** (`--prune`): magnitude pruning, with tract measurements;
//! 4. **opset**: upgrade the default-domain opset when the formats need it
//!    and it is safe;
//! 5. **calibrate**: run the model in tract over the calibration samples
//!    and observe every tensor the plan needs (or read a table), then the
//!    range policy ([`calibrate::choose_ranges`]);
//! 6. **plan** and **quantize**: [`quench_passes::quantize`];
//! 7. **verify**: FP32 vs the emitted model vs its float twin, and
//!    `--explain`'s per-tensor attribution, through one
//!    [`quench_verify::Evaluator`].
//!
//! Invariant: the driver never writes a file; [`Outcome::save`] does, and
//! only when the caller decides (the command line does not write a model
//! that failed a requested threshold).

pub mod attribution;
pub mod bias;
pub mod calibrate;
pub mod control_flow;
pub mod data;
pub mod front;
pub mod inspect;
pub mod mixed;
pub mod options;
pub mod parts;
pub mod phases;
pub mod prequantized;
pub mod progress;
pub mod prune;
pub mod report;
pub mod rounding;
pub mod saturation;
pub mod search;
pub mod smooth;
#[cfg(test)]
mod test_graph;
pub mod verify;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use quench_calib::TensorStats;
use quench_ir::Model;
use quench_onnx::proto::ModelProto;
use quench_onnx::{LoadedModel, SaveOptions, SaveReport};
use quench_passes::quantize::{self, Mode};

pub use calibrate::CalibrationTable;
pub use data::DataPlan;
pub use options::{Method, Options, PruneMethod, PruneOptions};
pub use phases::{quantize_phase, run_pipeline};
pub use progress::{Progress, Silent};
pub use report::{Accuracy, OutputCheck, Report, Timing, Verification};

/// What [`compile`] produced.
pub struct Outcome {
    /// The output model (quantized, or FP32 after the passes).
    pub model: ModelProto,
    pub report: Report,
    /// IR text after each pass named in [`Options::dump_after`].
    pub dumps: Vec<String>,
}

impl Outcome {
    /// Writes the model atomically and records the written size (and, with
    /// pruning, the compressed sizes) in the report.
    pub fn save(
        &mut self,
        input: &LoadedModel,
        path: &Path,
        opts: &SaveOptions,
    ) -> Result<SaveReport> {
        let saved = quench_onnx::save_model(&self.model, path, opts)?;
        self.report.size_after = saved.total_bytes();
        self.report.output = path.display().to_string();
        if let Some(p) = &mut self.report.pruning {
            p.measure_sizes(input, &saved)?;
        }
        Ok(saved)
    }
}

/// Wall time of each phase.
struct Phases {
    last: Instant,
    done: Vec<Timing>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Ends phase `name` now.
    fn lap(&mut self, name: &str) {
        let now = Instant::now();
        self.done.push(Timing {
            phase: name.to_string(),
            seconds: (now - self.last).as_secs_f64(),
        });
        self.last = now;
    }
}

/// The default-domain opset the formats need (13 for per-channel weights,
/// 19 for float8, 21 for 16-bit or 4-bit and blocks; see
/// [`quantize::QuantizeConfig::min_opset`]), at least 10 (QuantizeLinear);
/// 11 in dynamic mode (DynamicQuantizeLinear); 0 (keep the model's) with
/// `--no-quantize`.
fn needed_opset(opts: &Options, cfg: &quantize::QuantizeConfig) -> i64 {
    if opts.no_quantize {
        return 0;
    }
    if cfg.mode == Mode::Dynamic {
        return 11;
    }
    // Models at opset 7-9 are upgraded to 10 even for per-tensor 8-bit Q/DQ.
    cfg.min_opset().unwrap_or(0).max(10)
}

/// Upgrades the default-domain opset to `need` when that is safe; says
/// what it did (or why not) in `notes`. Returns the opset in force.
fn upgrade_opset(model: &mut Model, need: i64, notes: &mut Vec<String>) -> i64 {
    let opset = model.default_opset().unwrap_or(0);
    if need <= opset || opset <= 0 {
        return opset;
    }
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
            need
        }
        Err(why) => {
            notes.push(format!(
                "opset {opset} kept: cannot upgrade to {need}: {why}"
            ));
            opset
        }
    }
}

/// Default-domain ops removed from ONNX, and the opset that removed them.
const REMOVED_OPS: &[(&str, i64)] = &[
    ("Upsample", 10),
    ("Scatter", 11),
    ("ImageScaler", 10),
    ("Crop", 10),
];

/// Refuses a graph that uses an op its default-domain `opset` no longer has
/// (an upgrade that forgot to rewrite it would otherwise write a model
/// runtimes refuse).
fn check_removed_ops(model: &Model, opset: i64) -> Result<()> {
    let g = &model.graph;
    for n in g.node_ids() {
        let node = g.node(n);
        if !node.domain().is_empty() {
            continue;
        }
        if let Some((op, at)) = REMOVED_OPS.iter().find(|(op, _)| *op == node.op_type()) {
            if opset >= *at {
                anyhow::bail!(
                    "node `{}`: {op} was removed from ONNX at opset {at} but the output would be opset {opset}; nothing written (a quench bug, please report)",
                    node.name()
                );
            }
        }
    }
    Ok(())
}

/// Every `--exclude-nodes` name must name a node of the input model; the
/// error suggests the nearest names.
fn check_node_names(names: &[String], model: &Model) -> Result<()> {
    let mut all: Vec<String> = model
        .graph
        .node_ids()
        .into_iter()
        .map(|n| model.graph.node(n).name().to_string())
        .collect();
    // Nodes inside If/Loop/Scan bodies can be excluded too.
    all.extend(quench_passes::subgraphs::body_node_names(&model.graph));
    for n in names {
        if all.iter().any(|a| a == n) {
            continue;
        }
        // Unnamed nodes are no suggestion (they printed as "``").
        let mut near: Vec<(usize, &String)> = all
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| (edit_distance(a, n), a))
            .collect();
        near.sort();
        near.dedup();
        let hint: Vec<String> = near.iter().take(3).map(|(_, a)| format!("`{a}`")).collect();
        anyhow::bail!(
            "--exclude-nodes `{n}`: the model has no node of that name{}",
            if hint.is_empty() {
                " (its nodes have no names; --exclude-op-types selects by op type)".to_string()
            } else {
                format!(" (nearest: {})", hint.join(", "))
            }
        );
    }
    Ok(())
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Reads a calibration table written by `quench calibrate`.
pub fn read_table(path: &Path) -> Result<CalibrationTable> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a quench calibration table", path.display()))
}

/// Collects notes and warnings as the phases run.
#[derive(Default)]
struct Notes {
    notes: Vec<String>,
    warnings: Vec<String>,
    log: Vec<String>,
}

impl Notes {
    fn note(&mut self, s: String) {
        self.notes.push(s);
    }
    fn warn(&mut self, s: String) {
        self.warnings.push(s.clone());
        self.notes.push(s);
    }
}

/// Whether this machine is an x86-64 CPU on which ONNX Runtime's u8 x i8
/// integer kernels saturate: AVX2 (`VPMADDUBSW`, whose sum of two products
/// is a saturating int16) without AVX-512 VNNI or AVX-VNNI (`VPDPBUSD`,
/// which sums into int32). Measured: `benches/results/ort_avx2_saturation_2026-11-28.md`.
fn host_saturates_u8_i8() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && !std::arch::is_x86_feature_detected!("avx512vnni")
            && !std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The note a compile on such a machine (`saturates`) prints when its
/// integer layers take 8-bit activations and full-range int8 weights
/// (static or dynamic mode): there ONNX Runtime loses accuracy that the
/// verification (tract, exact) does not show.
fn saturation_note(cfg: &quantize::QuantizeConfig, saturates: bool) -> Option<String> {
    use quantize::{ActType, WeightType};
    let acts8 = cfg.mode == Mode::Dynamic
        || (cfg.mode == Mode::Static
            && cfg.activation_format.is_none()
            && matches!(cfg.activations, ActType::U8 | ActType::I8));
    (saturates && acts8 && cfg.weights == WeightType::I8 && cfg.weight_format.is_none()).then(
        || {
            "this CPU has AVX2 but no VNNI: ONNX Runtime run on it computes u8 x i8 layers with \
         saturating 16-bit pair sums, which the verification (tract, exact) does not show \
         (measured on real models: 2-16 dB lost); if the model will run on such a CPU, \
         compare `--weights i7` (as fast) and `--weights u8` (no saturation, slower \
         convolutions) on it (README: x86 CPUs without VNNI)"
                .to_string()
        },
    )
}

/// Compiles `input` as `opts` ask. See the crate documentation for the
/// phases.
/// ", N more with a bias the twin could not feed left as they are" (or
/// nothing) for the bias-correction note.
fn skipped_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more with a bias the twin could not feed, left as they are)")
    }
}

pub fn compile(input: &LoadedModel, opts: &Options, progress: &dyn Progress) -> Result<Outcome> {
    opts.validate().map_err(anyhow::Error::msg)?;
    let mut phases = Phases::new();
    let mut out = Notes::default();
    let original = &input.model;
    // An already-quantized model would be quantized a second time on top
    // of its own Q/DQ or integer ops: refused, unless only the passes run.
    if !opts.no_quantize {
        if let Some(q) = original.graph.as_ref().and_then(prequantized::detect) {
            anyhow::bail!(prequantized::refusal(
                &input.path,
                &q,
                "use --no-quantize to run only the passes"
            ));
        }
    }
    let mut model =
        Model::from_onnx(original.clone()).with_context(|| format!("{}", input.path.display()))?;
    // Outputs a Concat assembles, found before any pass renames a tensor:
    // verification measures their parts too.
    let output_parts = parts::find(&model.graph);
    let size_before = input.file_bytes + input.external.bytes;
    let mut cfg = opts.quantize_config();

    // Without calibration data, static quantization is not possible: say so
    // and quantize weights only (never invent data).
    if opts.no_quantize {
        cfg.mode = Mode::WeightOnly;
    } else if cfg.mode == Mode::Static
        && opts.calibration.is_none()
        && opts.calibration_table.is_none()
    {
        out.warn("no --calibration data given: quantizing weights only (--mode weight-only); pass --calibration DATA for int8 activations".to_string());
        cfg.mode = Mode::WeightOnly;
    }
    check_node_names(&opts.exclude_nodes, &model)?;
    // 1. Data: bound to the model's inputs, split once.
    let data = DataPlan::new(opts, original)?;
    // `--explain-sample`'s row is checked now, before anything runs, where
    // the table can be measured at all (else the note below says why not).
    let explain_possible = opts.mode == Mode::Static && opts.verify && !opts.no_quantize;
    if let (Some(row), true) = (opts.explain_sample, explain_possible) {
        let Some(ev) = &data.eval else {
            anyhow::bail!(
                "--explain-sample {row}: there is no evaluation data to take the sample from (give --eval or --calibration, and verify)"
            );
        };
        if ev.one_row(row).is_none() {
            let rows = ev.source_rows();
            let mut sorted = rows.clone();
            sorted.sort_unstable();
            let shown: Vec<String> = sorted.iter().take(20).map(|r| r.to_string()).collect();
            anyhow::bail!(
                "--explain-sample {row}: row {row} is not among the {} evaluation samples of {} (rows {}{})",
                rows.len(),
                ev.label,
                shown.join(", "),
                if rows.len() > 20 { ", ..." } else { "" }
            );
        }
    }
    phases.lap("load");

    // 2. Passes.
    let extra: &[&str] = if opts.equalize { &["equalize"] } else { &[] };
    let (mut pass_names, mut cx) =
        phases::run_pipeline_with(&mut model, &opts.passes, extra, &opts.dump_after)?;
    // Static mode: a rank-2 MatMul + bias Add becomes a Gemm, which ONNX
    // Runtime runs in integer (it fuses the pair into a float Gemm before
    // its Q/DQ fusions otherwise; MTCNN: 2.7x FP32's latency -> 1.1x).
    // Not with an explicit `--passes` list, nor when the user excludes one
    // of the op types involved; pairs named in `--exclude-nodes` stay.
    let excluded_type = opts
        .exclude_op_types
        .iter()
        .any(|t| matches!(t.as_str(), "MatMul" | "Add" | "Gemm"));
    if cfg.mode == Mode::Static && opts.passes.is_none() && !opts.no_quantize && !excluded_type {
        let pass = quench_passes::matmul_add_to_gemm::MatMulAddToGemm {
            keep: opts.exclude_nodes.clone(),
            keep_inputs: if opts.smooth_quant {
                smooth::written_out_outputs(&model.graph)
            } else {
                Vec::new()
            },
        };
        quench_passes::Pass::run(&pass, &mut model.graph, &mut cx)?;
        pass_names.push(quench_passes::Pass::name(&pass).to_string());
    }
    out.log.extend(cx.log.iter().map(|l| format!("pass {l}")));
    let dumps = std::mem::take(&mut cx.dumps);

    // 3. Pruning: before calibration, so ranges see the pruned weights.
    let pruning = prune::run(opts, &data, &mut model, original, &mut out.log)?;

    // 4. Opset. Written-out hard-swishes become one HardSwish after
    // quantization from opset 14 (x * HardSigmoid(x) below it): ask for
    // 14 when there are any (the upgrade declines what it cannot rewrite).
    let mut need = needed_opset(opts, &cfg);
    let have = model.default_opset().unwrap_or(0);
    if need > 0
        && need < 14
        && have < 14
        && quench_passes::fuse_hard_swish::count(&model.graph) > 0
        && quench_passes::upgrade_opset::check(&model.graph, have, 14).is_ok()
    {
        need = 14;
    }
    let mut opset = upgrade_opset(&mut model, need, &mut out.notes);
    model
        .graph
        .verify()
        .context("graph invalid after the passes (a quench bug)")?;
    phases.lap("passes");

    // 5. Plan and calibrate.
    let mut plan = quantize::plan(&model.graph, &cfg)?;
    let plan_mode = cfg.mode;
    if opts.no_quantize {
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
    let mut ranges = quantize::Ranges::new();
    let mut calib_stats = None;
    // `--method auto`'s FP32 references come from the calibration run:
    // its batches are run as the search will run them, and their graph
    // outputs kept. Not after pruning, which changed what the model
    // computes (the search measures against the input model). Whatever
    // else makes the calibration copy compute otherwise than the input
    // model in tract (an upgraded opset-10 Resize: 6.7 dB; f16 activations
    // rounded where they are exposed: 66 dB; renamed or reordered
    // outputs), the search finds by checking the references on its first
    // batch against the input model (`search::references_agree`), and
    // runs FP32 itself.
    let search_groups = match &data.calibration {
        Some(cal)
            if opts.method == Method::Auto
                && cfg.mode == Mode::Static
                && opts.calibration_table.is_none()
                && pruning.is_none() =>
        {
            Some(search::search_groups(cal))
        }
        _ => None,
    };
    let mut search_reference = None;
    if cfg.mode == Mode::Static {
        let keep: Vec<Vec<usize>> = match &search_groups {
            Some((fit, judge)) => fit.iter().chain(judge.iter().flatten()).cloned().collect(),
            None => Vec::new(),
        };
        let (stats, mut kept) = calibrate_phase(
            opts,
            &data,
            &model,
            &plan.tensors_to_observe(&model.graph),
            &keep,
            &mut calib_samples,
            &mut out,
            progress,
        )?;
        if let Some((fit, judge)) = &search_groups {
            if kept.len() == keep.len() && !keep.is_empty() {
                let judge_kept = kept.split_off(fit.len());
                search_reference = Some(search::SearchReference {
                    fit: kept,
                    judge: judge.as_ref().map(|_| judge_kept),
                });
            }
        }
        match stats {
            Some(stats) => {
                ranges = range_policy(opts, &model, &plan, &cfg, &stats, &mut out);
                calib_stats = Some(stats);
            }
            None => cfg.mode = Mode::WeightOnly,
        }
    }
    if cfg.mode != plan_mode {
        plan = quantize::plan(&model.graph, &cfg)?;
    }
    phases.lap("calibration");

    // 5a. SmoothQuant: outlier channels after normalizations into weights.
    // On by default; only static quantization has activation ranges to
    // smooth (nothing to say otherwise).
    let mut smooth_quant = None;
    if opts.smooth_quant && cfg.mode == Mode::Static {
        match &data.calibration {
            Some(cal) => {
                let r = match smooth::smooth(
                    &mut model,
                    original,
                    &mut plan,
                    &mut ranges,
                    &mut cfg,
                    opset,
                    cal,
                    if opts.smooth_quant_search {
                        &smooth::ALPHAS[..]
                    } else {
                        &smooth::DEFAULT_ALPHAS[..]
                    },
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        out.warn(format!("--smooth-quant skipped: {e:#}"));
                        None
                    }
                };
                match &r {
                    Some(sq) => out.note(format!(
                        "smooth-quant: {} normalization(s), strength {} chosen ({}; with only their outputs and the weights quantized)",
                        sq.sites.len(),
                        sq.alpha,
                        sq.candidates
                            .iter()
                            .map(|(a, db)| format!("{a}: {db:.2} dB"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    // No site (no LayerNormalization feeding MatMuls with
                    // constant weights): nothing to say for most models.
                    None => {}
                }
                // Statistics taken before smoothing describe other values:
                // the searches use the exact smoothed ranges instead.
                if let (Some(sq), Some(st)) = (&r, calib_stats.as_mut()) {
                    for t in &sq.tensors {
                        st.remove(t);
                    }
                }
                smooth_quant = r;
                model
                    .graph
                    .verify()
                    .context("graph invalid after smooth-quant (a quench bug)")?;
            }
            // Ranges from a calibration table, no samples: the per-channel
            // ranges and the strength search need samples. Said only where
            // there is something to smooth.
            None => {
                let n = smooth::sites(&model, &ranges).len();
                if n > 0 {
                    out.note(format!(
                        "smooth-quant not applied: {n} normalization(s) feed MatMuls with constant weights, but smoothing needs calibration samples (-c; a calibration table has ranges only)"
                    ));
                }
            }
        }
        phases.lap("smooth-quant");
    }

    // 5a. `--method auto`: each activation's range by its cost at the
    // output (after SmoothQuant, which rescales the ranges it touches).
    let mut auto_ranges = None;
    if opts.method == Method::Auto && cfg.mode == Mode::Static {
        match (&data.calibration, &calib_stats) {
            (Some(cal), Some(stats)) if !ranges.is_empty() => {
                // The search measures ranges on the weights the saturation
                // guard (5b, on the final ranges) will likely write: its
                // choice on the calibrated ranges, made here on a copy of
                // the plan. Without it the search judged int8 weights the
                // written model does not have (ddddocr's OCR: min/max kept
                // at 23.03 against 20.61 dB judged, 21.04 against 22.14 with
                // the guard's weights).
                // (The guard changes the plan only once it has measured
                // everything, so a failed run leaves the copy as it was.)
                let mut search_plan = plan.clone();
                if opts.saturation_guard && !opts.no_quantize {
                    if let Err(e) =
                        saturation::guard(&model, &mut search_plan, &ranges, &cfg, opset, cal)
                    {
                        out.log.push(format!(
                            "saturation guard before the range search skipped: {e:#}"
                        ));
                    }
                }
                match search::search(
                    &model,
                    original,
                    &search_plan,
                    stats,
                    &ranges,
                    &cfg,
                    opset,
                    cal,
                    opts.consumer_ranges,
                    opts.entropy_guard,
                    opts.float_outliers,
                    search_reference.take(),
                    if opts.part_ranges { &output_parts } else { &[] },
                ) {
                    Ok((r, rep)) => {
                        let scores = format!(
                            "output SQNR on {} calibration samples: {} dB",
                            rep.fit_samples,
                            rep.methods
                                .iter()
                                .map(|(m, db, n)| if *n < rep.fit_samples {
                                    // Stopped once certain to stay behind.
                                    format!("{m} < {db:.2} (stopped after {n})")
                                } else {
                                    format!("{m} {db:.2}")
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        if let Some(f) = &rep.log_front_end {
                            out.note(f.note());
                            // The search measured the front end's compute
                            // nodes with float weights, and kept that.
                            // By name in the config too: a later plan (mixed
                            // precision's opset upgrade) keeps them float.
                            if rep.kept && f.float && f.weights_float {
                                plan.keep_nodes_float(
                                    &model.graph,
                                    &f.node_ids,
                                    search::FRONT_END_WEIGHTS,
                                );
                                cfg.keep_float.extend(
                                    f.nodes.iter().map(|n| {
                                        (n.clone(), search::FRONT_END_WEIGHTS.to_string())
                                    }),
                                );
                            }
                        }
                        if rep.kept {
                            out.note(format!(
                                "method auto: {} for all ({scores}), {}{} outlier(s) left float{}; judged on {} {} samples: {:.2} dB against {}{:.2} with min/max{} ({} runs, {:.1} s)",
                                rep.method,
                                rep.float_op_types
                                    .iter()
                                    .map(|grp| format!("outputs of {} {} node(s) left float together ({:+.2} dB), ", grp.tensors.len(), grp.op_type, grp.gain_db))
                                    .collect::<String>(),
                                rep.float.len(),
                                if rep.float.is_empty() {
                                    String::new()
                                } else {
                                    format!(
                                        " ({})",
                                        rep.float
                                            .iter()
                                            .map(|f| format!("`{}` {:+.2} dB alone", f.tensor, f.gain_db))
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    )
                                },
                                rep.judge_samples,
                                if rep.judged_apart { "other" } else { "of the same" },
                                rep.auto_db,
                                if rep.minmax_samples < rep.judge_samples { "< " } else { "" },
                                rep.minmax_db,
                                if rep.minmax_samples < rep.judge_samples {
                                    format!(" (stopped after {} samples)", rep.minmax_samples)
                                } else {
                                    String::new()
                                },
                                rep.runs,
                                rep.setup_seconds + rep.run_seconds
                            ));
                            for t in &rep.tied_methods {
                                out.note(format!(
                                    "method auto: {} for all tied with step 1's choice on the calibration samples ({:.2} dB, within {} dB); with what the outlier step leaves float for each, it reads {:.2} dB against {:.2} for the method kept so far: {} for all in the end",
                                    t.method,
                                    t.db,
                                    search::MIN_GAIN_DB,
                                    t.after_db,
                                    t.chosen_after_db,
                                    rep.method
                                ));
                            }
                            if let Some(ps) = &rep.parts {
                                out.note(ps.note());
                            }
                            if let Some(c) = &rep.error_cluster {
                                out.note(format!(
                                    "method auto: no single activation is behind half of the output error, but {} consecutive ones of {} are: leaving `{}` .. `{}` float together gains {:+.2} dB on the calibration samples (they stay quantized; `--target-sqnr` leaves the costliest tensors float or at 16 bits until a target holds, `--explain` ranks them)",
                                    c.tensors.len(),
                                    c.of,
                                    c.tensors.first().map_or("", String::as_str),
                                    c.tensors.last().map_or("", String::as_str),
                                    c.gain_db
                                ));
                            }
                            if !rep.float_fed_compute.is_empty() {
                                out.note(format!(
                                    "method auto: {} compute node(s) take an activation left float and run in float (in ONNX Runtime their weights are then dequantized on every run, which can be slower than FP32; `--no-float-outliers` keeps them integer, at a lower accuracy): {}",
                                    rep.float_fed_compute.len(),
                                    crate::report::short_list(&rep.float_fed_compute, 6)
                                ));
                            }
                        } else {
                            out.note(format!(
                                "method auto: the searched ranges did not beat min/max on {} judging samples ({:.2} vs {:.2} dB); {} for all, the highest mean of fitting and judging figures ({}) ({scores})",
                                rep.judge_samples,
                                rep.auto_db,
                                rep.minmax_db,
                                rep.method,
                                rep.fallback
                                    .iter()
                                    .map(|f| format!(
                                        "{} {:.2}/{}{:.2}",
                                        f.method,
                                        f.fit_db,
                                        if f.judged_in_full { "" } else { "< " },
                                        f.judge_db
                                    ))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            ));
                        }
                        if !rep.float_unread.is_empty() {
                            out.note(format!(
                                "method auto: {} activation(s) left float that only nodes running in float read (quantized, they would only lose precision): {}",
                                rep.float_unread.len(),
                                crate::report::short_list(&rep.float_unread, 6)
                            ));
                        }
                        ranges = r;
                        auto_ranges = Some(rep);
                    }
                    Err(e) => out.warn(format!(
                        "method auto: range search skipped, min/max ranges kept: {e:#}"
                    )),
                }
            }
            (None, _) if opts.calibration_table.is_some() => out
                .note("method auto needs calibration samples; a table gives min/max ranges".into()),
            _ => {}
        }
        phases.lap("range search");
    }

    // 5a. Mixed precision to targets: raise the costliest tensors to 16
    // bits or float until the targets hold on held-back data.
    let mut mixed_precision = None;
    let mut target_missed = None;
    let targets = opts.targets();
    if targets.any() && cfg.mode != Mode::Static {
        let why = format!(
            "{} applies to static quantization only; not applied",
            targets.flags()
        );
        out.warn(why.clone());
        target_missed = Some(why);
    }
    if let (true, Mode::Static) = (targets.any(), cfg.mode) {
        // The 16-bit format a tensor left float is tried at, if the
        // model's opset is or can be made 21.
        let wide = mixed::wide_choice(
            &model.graph,
            opset,
            cfg.default_activation_format(),
            opts.mixed_int16,
        );
        let flags = targets.flags();
        let mixed = data.eval.as_ref().map(|ev| {
            mixed::to_target(
                &model, original, &plan, &ranges, &cfg, opset, ev, targets, wide,
            )
        });
        match mixed {
            Some(Err(e)) => {
                let why = format!("{flags} not applied: {e:#}");
                out.warn(why.clone());
                target_missed = Some(why);
            }
            Some(Ok(mut r)) => {
                for f in r.float() {
                    ranges.remove(&f.tensor);
                }
                // 16-bit tensors: the opset that has them (upgraded now
                // that one is chosen, re-planned since an upgrade may
                // rewrite nodes), then the plan edit.
                let int16: Vec<String> = r.int16().map(|t| t.tensor.clone()).collect();
                if let (false, Some(w)) = (int16.is_empty(), r.wide_format) {
                    let need = w.min_opset().unwrap_or(21);
                    if opset < need {
                        opset = upgrade_opset(&mut model, need, &mut out.notes);
                        plan = quantize::plan(&model.graph, &cfg)?;
                    }
                    for t in &int16 {
                        match model.graph.value_by_name(t) {
                            Some(v) if opset >= need => {
                                plan.formats.insert(v, w);
                                // The range was fitted to the 8-bit grid:
                                // the 16-bit one must still reach the
                                // consumers' flat bounds.
                                if let Some(r) = ranges.get_mut(t) {
                                    *r = calibrate::cover_consumer_bounds(&model.graph, t, *r, &w);
                                }
                            }
                            _ => {
                                // Cannot happen after a successful check;
                                // float is the safe fallback.
                                ranges.remove(t);
                                if let Some(x) = r.raised.iter_mut().find(|x| &x.tensor == t) {
                                    x.to = mixed::Precision::Float;
                                    x.why.push_str(
                                        "; left float: the opset could not be upgraded for 16 bits",
                                    );
                                }
                            }
                        }
                    }
                }
                let n_float = r.float().count();
                let n_int16 = r.int16().count();
                if r.reached {
                    out.note(format!(
                        "{flags}: {n_int16} tensor(s) raised to 16 bits, {n_float} left float; {} -> {} on {} ({} runs, {:.1} s)",
                        mixed::describe(&r.initial),
                        mixed::describe(&r.result),
                        r.data,
                        r.runs,
                        r.seconds
                    ));
                } else {
                    let written = match &r.bound {
                        Some(b) if n_float + n_int16 == 0 && !r.targets.met(b) => format!(
                            "not reachable by leaving tensors float: with every candidate float at once the model reaches {}, so nothing was raised and the model is written as quantized",
                            mixed::describe(b)
                        ),
                        _ => "the best model found is written".to_string(),
                    };
                    let why = format!(
                        "{flags} not reached on {} ({} runs, {:.1} s): {} -> {} with {n_int16} tensor(s) raised to 16 bits and {n_float} left float (at most {} changes); {written}",
                        r.data,
                        r.runs,
                        r.seconds,
                        mixed::describe(&r.initial),
                        mixed::describe(&r.result),
                        mixed::MAX_CHANGES,
                    );
                    out.warn(why.clone());
                    target_missed = Some(why);
                }
                if let Some(why) = &r.wide_declined {
                    out.log
                        .push(format!("mixed precision: no 16-bit choice ({why})"));
                }
                mixed_precision = Some(r);
            }
            None => {
                let why = format!(
                    "{flags} needs evaluation data and verification (--eval, or --calibration to hold some back; not with --no-verify); not applied"
                );
                out.warn(why.clone());
                target_missed = Some(why);
            }
        }
        phases.lap("mixed precision");
    }

    // 5b. The saturation guard: 7-bit weight codes for the layers whose
    // int8 sums ONNX Runtime's u8 x s8 kernels would saturate on CPUs
    // without VNNI, where that costs the layer more than the lost bit.
    // After mixed precision: a layer whose input it raised to 16 bits or
    // float runs in no u8 x s8 kernel, and the plan is final (an opset
    // upgrade there re-plans). When a target was reached, the guarded
    // plan is measured again; if it misses the target, the guard stays
    // and the target is reported missed: without it the target holds in
    // exact arithmetic, but ONNX Runtime on such CPUs saturates the
    // layers (ddddocr det: 27.0 dB in tract, 15.3 in ONNX Runtime, where
    // the guarded default reads 23.0).
    let fitting = data.calibration.as_ref().or(data
        .sensitivity
        .as_ref()
        .filter(|_| opts.calibration.is_some()));
    let mut saturation_guard = None;
    let guarded = !opts.no_quantize
        && opts.saturation_guard
        && matches!(cfg.mode, Mode::Static | Mode::Dynamic);
    if guarded {
        match fitting {
            Some(cal) => {
                match saturation::guard(&model, &mut plan, &ranges, &cfg, opset, cal) {
                    Ok(Some(mut r)) => {
                        let any_moved = r.moved().next().is_some();
                        if let (Some(mp), Some(ev), true) =
                            (mixed_precision.as_mut(), data.eval.as_ref(), any_moved)
                        {
                            // Reached: kept only if it still is. Not
                            // reached: the figures become the written plan's.
                            {
                                match mixed::measure_plan(
                                &model, original, &plan, &ranges, &cfg, opset, ev,
                            ) {
                                Ok(f) if !mp.reached && mp.targets.met(&f) => {
                                    // The guard's codes reach what the
                                    // plan without them did not: the
                                    // search's verdict is superseded.
                                    if let Some(w) = target_missed.take() {
                                        out.warnings.retain(|x| *x != w);
                                        out.notes.retain(|x| *x != w);
                                    }
                                    out.note(format!(
                                        "{} reached with the saturation guard's codes: {}",
                                        mp.targets.flags(),
                                        mixed::describe(&f)
                                    ));
                                    mp.result = f;
                                    mp.reached = true;
                                }
                                Ok(f) if !mp.reached || mp.targets.met(&f) => mp.result = f,
                                Ok(f) => {
                                    let why = format!(
                                        "{} not reached with the saturation guard's paired or 7-bit codes ({}); \
                                         without them it is reached in exact arithmetic, but ONNX Runtime on \
                                         x86 CPUs without VNNI saturates those layers (ddddocr det, \
                                         --target-sqnr 27 without the guard: 27.0 dB on the evaluation data in \
                                         tract, 15.3 dB on 56 other images in ONNX Runtime there, where the \
                                         guarded default reads 23.0); --no-saturation-guard if the model will run on CPUs with \
                                         VNNI, on ARM or in another runtime",
                                        mp.targets.flags(),
                                        mixed::describe(&f)
                                    );
                                    mp.result = f;
                                    mp.reached = false;
                                    out.warn(why.clone());
                                    target_missed = Some(why);
                                }
                                Err(e) => saturation::revert(
                                    &mut plan,
                                    &mut r,
                                    format!("the guarded model could not be measured against {}: {e:#}", mp.targets.flags()),
                                ),
                            }
                            }
                        }
                        let moved: Vec<&saturation::LayerErrors> = r.moved().collect();
                        if let Some(why) = &r.reverted {
                            out.note(format!(
                            "saturation guard undone: {why}; every layer keeps int8 codes (ONNX Runtime on x86 CPUs without VNNI may saturate them)"
                        ));
                        } else if moved.is_empty() {
                            out.note(format!(
                            "saturation guard: none of {} int8 layer(s) would lose more to ONNX Runtime's saturating u8 x s8 sums (x86 without VNNI) than to paired or 7-bit codes ({} calibration samples, {:.1} s)",
                            r.layers.len(),
                            r.samples,
                            r.seconds
                        ));
                        } else {
                            let worst = moved
                                .iter()
                                .map(|l| l.sqnr8_saturated_db())
                                .fold(f64::INFINITY, f64::min);
                            out.note(format!(
                            "saturation guard: {} of {} int8 layer(s) changed where ONNX Runtime's saturating u8 x s8 sums on x86 CPUs without VNNI cost more: {} channel(s) get paired int8 codes (no two codes it adds in int16 share a sign and pass 128 together; some on a grid up to 1 bit coarser), {} 7-bit codes (layer SQNR as low as {worst:.1} dB saturated; {} calibration samples, {:.1} s; --no-saturation-guard keeps int8)",
                            moved.len(),
                            r.layers.len(),
                            moved.iter().map(|l| l.paired.len()).sum::<usize>(),
                            moved.iter().map(|l| l.narrowed.len()).sum::<usize>(),
                            r.samples,
                            r.seconds
                        ));
                        }
                        for l in &r.layers {
                            out.log.push(format!(
                            "saturation guard: `{}`: {:.2}% of pairs saturate; layer SQNR int8 {:.2} dB, int8 saturated {:.2}, paired {:.2}, 7-bit {:.2}{}",
                            l.layer,
                            100.0 * l.saturated_pairs,
                            l.sqnr8_db(),
                            l.sqnr8_saturated_db(),
                            l.sqnr_paired_db(),
                            l.sqnr7_db(),
                            if l.moved {
                                format!(
                                    "; paired codes in {} and 7-bit codes in {} of {} channel(s): {:.2} dB saturated, {:.2} exact",
                                    l.paired.len(),
                                    l.narrowed.len(),
                                    l.channels,
                                    l.sqnr_guarded_db(),
                                    l.sqnr_guarded_exact_db()
                                )
                            } else {
                                String::new()
                            }
                        ));
                        }
                        for (l, why) in &r.skipped {
                            out.log
                                .push(format!("saturation guard: `{l}` not emulated: {why}"));
                        }
                        saturation_guard = Some(r);
                    }
                    Ok(None) => {}
                    Err(e) => out.warn(format!("saturation guard skipped: {e:#}")),
                }
            }
            None => {}
        }
        phases.lap("saturation guard");
    }

    // 5c. Error-compensated rounding: weights moved onto their grid so
    // that each layer's output error on calibration inputs is smallest
    // (before bias correction, which measures the rounded weights).
    // The samples both fit on (`fitting`): static calibration's, or in
    // weight-only mode the calibration samples given (never evaluation
    // data standing in for them: verification would then report
    // in-sample figures).
    let mut rounding = None;
    if opts.error_compensated_rounding {
        match (fitting, cfg.mode) {
            (Some(cal), Mode::Static | Mode::WeightOnly) if !opts.no_quantize => {
                match rounding::round_weights(&mut model, &plan, &ranges, &cfg, opset, cal) {
                    Ok(Some(r)) => {
                        out.note(format!(
                            "error-compensated rounding: {} layer(s), layer output error {:.3e} -> {:.3e} (relative, on calibration inputs); output SQNR on held-out calibration samples {:.2} -> {:.2} dB{}",
                            r.layers,
                            r.layer_error_nearest,
                            r.layer_error_compensated,
                            r.sqnr_nearest_db,
                            r.sqnr_compensated_db,
                            if r.kept { "" } else { ": discarded (no gain)" }
                        ));
                        for (l, why) in &r.skipped {
                            out.log.push(format!("error-compensated rounding: `{l}` left to nearest rounding: {why}"));
                        }
                        rounding = Some(r);
                    }
                    Ok(None) => out.note(
                        "error-compensated rounding: no layer it applies to (Conv with group 1, Gemm, MatMul with symmetric integer weights)".into(),
                    ),
                    Err(e) => out.warn(format!("error-compensated rounding skipped: {e:#}")),
                }
            }
            _ => out.warn(
                "--error-compensated-rounding needs calibration samples (--calibration) and quantized weights; not applied"
                    .into(),
            ),
        }
        phases.lap("error-compensated rounding");
    }

    // 5d. Bias correction: subtract each layer's measured output shift
    // (after mixed precision, so it corrects the model that is written).
    let mut bias_correction = None;
    if opts.bias_correction && cfg.mode != Mode::Dynamic && !opts.no_quantize {
        match fitting {
            Some(cal) => {
                // Bias correction is an improvement, never a requirement:
                // a model tract cannot run for it keeps its biases.
                let r = match bias::correct(&mut model, &plan, &ranges, &cfg, opset, cal) {
                    Ok(None) => {
                        out.note(
                            "--bias-correction: nothing corrected (no quantized Conv/ConvTranspose/Gemm with a constant bias of its own and a unique, non-empty node name)"
                                .to_string(),
                        );
                        None
                    }
                    Ok(r) => r,
                    Err(e) => {
                        out.note(format!("bias correction skipped: {e:#}"));
                        None
                    }
                };
                match &r {
                    Some(b) if b.kept => out.note(format!(
                        "bias correction: {} of {} layer(s) corrected{}, output SQNR on {} held-out calibration samples {:.2} -> {:.2} dB (per-sample gain t = {:.2}; {} runs, {:.1} s)",
                        b.corrected,
                        b.layers,
                        skipped_note(b.skipped),
                        b.validation_samples,
                        b.sqnr_before_db,
                        b.sqnr_after_db,
                        b.gain_t,
                        b.runs,
                        b.seconds
                    )),
                    Some(b) => out.note(format!(
                        "bias correction discarded: it did not raise the output SQNR on {} held-out calibration samples consistently ({:.2} -> {:.2} dB; per-sample gain t = {:.2}, needs more than {:.2}; {} runs, {:.1} s)",
                        b.validation_samples,
                        b.sqnr_before_db,
                        b.sqnr_after_db,
                        b.gain_t,
                        b.gain_t_needed,
                        b.runs,
                        b.seconds
                    )),
                    None => {}
                }
                bias_correction = r;
            }
            // Without calibration samples (a table, weight-only without
            // data) there is nothing to measure.
            None => out.note(
                "--bias-correction: not applied (it measures on calibration samples; none were given)"
                    .to_string(),
            ),
        }
        phases.lap("bias correction");
    } else if opts.bias_correction && cfg.mode == Mode::Dynamic && !opts.no_quantize {
        out.note(
            "--bias-correction: not applied in dynamic mode (activation scales are computed at run time)"
                .to_string(),
        );
    }

    if !opts.no_quantize {
        let guard_ran = saturation_guard.is_some();
        if let (false, Some(n)) = (guard_ran, saturation_note(&cfg, host_saturates_u8_i8())) {
            out.note(n);
        }
    }

    // 6. Quantize. The float graph is kept for the per-tensor attribution.
    let asked = opts.explain || opts.explain_sample.is_some();
    let explain = asked && cfg.mode == Mode::Static && opts.verify && !opts.no_quantize;
    if asked && !explain {
        let flag = if opts.explain_sample.is_some() {
            "--explain-sample"
        } else {
            "--explain"
        };
        out.note(format!(
            "{flag} needs static quantization with verification; nothing to explain"
        ));
    }
    let float_model = explain.then(|| model.clone());
    // Names of tensors sharing a root's parameters (for the report's
    // reasons when --target-sqnr left roots float).
    // Tensors left float on purpose (by --target-sqnr or as --method auto
    // outliers), and who did it, for the summary's reasons.
    let group_members: Vec<mixed::FloatTensor> = auto_ranges
        .iter()
        .flat_map(|a| &a.float_op_types)
        .flat_map(|grp| {
            grp.tensors.iter().map(|t| mixed::FloatTensor {
                tensor: t.clone(),
                gain_db: grp.gain_db,
                sqnr_after_db: grp.sqnr_after_db,
            })
        })
        .collect();
    let mixed_float: Vec<mixed::FloatTensor> = mixed_precision
        .iter()
        .flat_map(|m| m.float())
        .map(|f| mixed::FloatTensor {
            tensor: f.tensor.clone(),
            gain_db: f.gain_db,
            sqnr_after_db: f.after.sqnr_db,
        })
        .collect();
    let target_flags = opts.targets().flags();
    let mut left_float: Vec<(&mixed::FloatTensor, &str)> = Vec::new();
    left_float.extend(mixed_float.iter().map(|f| (f, target_flags.as_str())));
    let front_members: Vec<mixed::FloatTensor> = auto_ranges
        .iter()
        .flat_map(|a| &a.log_front_end)
        .filter(|f| f.float)
        .flat_map(|f| {
            f.tensors.iter().map(|t| mixed::FloatTensor {
                tensor: t.clone(),
                gain_db: f.gain_db(),
                sqnr_after_db: f.float_db,
            })
        })
        .collect();
    if let Some(a) = &auto_ranges {
        left_float.extend(a.float.iter().map(|f| (f, "--method auto (an outlier)")));
        left_float.extend(front_members.iter().map(|f| {
            (
                f,
                "--method auto (it computes a Log's input from the model inputs: a log front end, together)",
            )
        }));
        left_float.extend(group_members.iter().map(|f| {
            (
                f,
                "--method auto (its op type's outputs together are an outlier)",
            )
        }));
    }
    let members = (!left_float.is_empty()).then(|| mixed::shared_members(&model, &plan));
    let mut summary = quantize_phase(&mut model, &plan, &ranges, &cfg, opset, &mut cx)?;
    // The written model only (the twins the searches ran keep their
    // pairs): HardSwish as integer Add and Mul for ONNX Runtime.
    // Not with an accuracy target, a threshold or `--explain`: they
    // measured the twin without it (or judge the file against a figure
    // the user set), and their figures describe the file. Nor where the
    // user excludes the op types involved.
    let hs_excluded = opts
        .exclude_op_types
        .iter()
        .any(|t| matches!(t.as_str(), "HardSwish" | "Add" | "Mul"));
    let hs_skipped = if opts.targets().any() {
        Some("an accuracy target")
    } else if opts.min_sqnr.is_some() || opts.min_top1.is_some() {
        Some("--min-sqnr/--min-top1")
    } else if explain {
        Some("--explain")
    } else {
        None
    };
    if cfg.mode == Mode::Static && opts.lower_hard_swish && !hs_excluded {
        let pass = quench_passes::lower_hard_swish::LowerHardSwish {
            keep: opts.exclude_nodes.clone(),
        };
        let mut hcx = quench_passes::PassCx::new(opset);
        match hs_skipped {
            Some(why) => {
                let n = model
                    .graph
                    .node_ids()
                    .into_iter()
                    .filter(|&n| model.graph.node(n).kind() == quench_ir::OpKind::HardSwish)
                    .count();
                if n > 0 {
                    out.note(format!(
                        "{n} HardSwish(es) kept as float ops with {why} (ONNX Runtime runs them in float; without it they are written as integer Add and Mul)"
                    ));
                }
            }
            None => {
                if quench_passes::Pass::run(&pass, &mut model.graph, &mut hcx)? {
                    quench_passes::Pass::run(
                        &quench_passes::dead_code::DeadCode,
                        &mut model.graph,
                        &mut hcx,
                    )?;
                    model
                        .graph
                        .verify()
                        .context("graph invalid after lower_hard_swish (a quench bug)")?;
                    let lowered = hcx.stat("lower_hard_swish.lowered");
                    pass_names.push(quench_passes::Pass::name(&pass).to_string());
                    out.log.extend(hcx.log.iter().map(|l| format!("pass {l}")));
                    for (k, v) in hcx.stats {
                        *cx.stats.entry(k).or_default() += v;
                    }
                    summary.activations_quantized += lowered;
                    for d in &mut summary.nodes {
                        if d.op == "HardSwish" {
                            d.reason = "written as integer Add and Mul on Q/DQ pairs (x * Q(x/6 + 1/2); --keep-hard-swish keeps the op)".into();
                        }
                    }
                    out.note(format!(
                        "{lowered} HardSwish(es) written as integer Add and Mul on Q/DQ pairs, x * Q(x/6 + 1/2) (ONNX Runtime's QLinearAdd and QLinearMul; it runs HardSwish in float); `--keep-hard-swish` keeps them"
                    ));
                }
            }
        }
    }
    // They say so (not "no calibration range").
    if let Some(members) = &members {
        for (t, why) in &mut summary.activations_float {
            if let Some((root, by)) = members.iter().find_map(|(r, ms)| {
                let by = left_float.iter().find(|(f, _)| &f.tensor == r)?.1;
                ms.contains(t).then_some((r, by))
            }) {
                *why = format!("shares `{root}`, left float by {by}");
                continue;
            }
            if let Some((f, by)) = left_float.iter().find(|(f, _)| &f.tensor == t) {
                // A group's figure is what leaving the group float gained.
                let how = if by.contains("together") {
                    "together"
                } else {
                    "alone"
                };
                *why = format!(
                    "left float by {by} ({how} {:+.2} dB at the output)",
                    f.gain_db
                );
            }
        }
    }
    for (t, why) in &mut summary.activations_float {
        if smooth_quant
            .as_ref()
            .is_some_and(|sq| sq.kept_float.contains(t))
        {
            *why = "kept float: SmoothQuant rescales it before the MatMuls (they read the rescale)"
                .into();
        } else if auto_ranges
            .as_ref()
            .is_some_and(|a| a.float_unread.contains(t))
        {
            *why = "left float by --method auto (only nodes running in float read it)".into();
        }
    }
    if cfg.mode == Mode::Static && opset < 13 {
        out.log.push(format!("opset {opset}: per-tensor weights"));
    }
    // Never a wrong file: no op the output's opset removed (runtimes and
    // onnx.checker refuse them), and the ONNX type constraints of every
    // node, checked before anything can be written.
    check_removed_ops(&model, opset).with_context(|| input.path.display().to_string())?;
    if let Err(errors) = quench_passes::typecheck::check(&model.graph, opset) {
        let shown: Vec<String> = errors.iter().take(8).map(|e| e.to_string()).collect();
        anyhow::bail!(
            "{}: the output model would fail ONNX's type constraints ({} violation(s)); nothing written (a quench bug, please report):\n  {}",
            input.path.display(),
            errors.len(),
            shown.join("\n  ")
        );
    }
    let out_proto = model.to_onnx();
    phases.lap("quantize");

    // 7. Verify.
    let mut verification = None;
    if opts.verify {
        match &data.eval {
            Some(ev) => {
                // The float twin: every Q/DQ pair replaced by the exact
                // float arithmetic (the reference semantics).
                let mut twin = model.clone();
                let (twin_pairs, _) =
                    quench_passes::simulate::float_twin_pairs(&mut twin.graph, opset);
                let twin_proto = twin.to_onnx();
                match verify::verify(original, &out_proto, &twin_proto, ev, &output_parts) {
                    Ok(mut v) => {
                        for t in &v.specialised {
                            out.note(format!("verification: {t}"));
                        }
                        if let Some(fp) = &float_model {
                            // `--explain-sample`: the table on that one row
                            // (checked to be there when the data loaded).
                            let one = opts.explain_sample.and_then(|r| ev.one_row(r));
                            let explained = one.as_ref().and(opts.explain_sample);
                            let ev = one.as_ref().unwrap_or(ev);
                            let eval = quench_verify::Evaluator::new(
                                &ev.data,
                                ev.feed,
                                quench_verify::input_names(original),
                            );
                            let pairs = (&twin_proto, &twin_pairs[..]);
                            match attribution::attribute(fp, &model.graph, pairs, &eval) {
                                Ok(mut t) => {
                                    if let Err(e) = attribution::output_gains(
                                        fp, original, &plan, &ranges, &cfg, opset, ev, &mut t,
                                    ) {
                                        out.note(format!(
                                            "output gains of leaving tensors float not measured: {e:#}"
                                        ));
                                    }
                                    v.tensors = t;
                                    v.explained_sample = explained;
                                }
                                Err(e) => {
                                    out.note(format!("per-tensor error attribution skipped: {e:#}"))
                                }
                            }
                        }
                        verification = Some(v);
                    }
                    Err(e) if e.downcast_ref::<verify::QuantizedDoesNotRun>().is_some() => {
                        return Err(e)
                    }
                    Err(e) => out.note(format!("verification in tract failed: {e:#}")),
                }
            }
            None => out
                .note("no evaluation data (--eval or --calibration): verification skipped".into()),
        }
        phases.lap("verification");
    }
    // Error-compensated rounding and bias correction run after the
    // mixed-precision search and change the written model (they measure
    // the final plan): its targets are judged again on the verification
    // of the written model, the figures the report gives.
    let changed_after = bias_correction.as_ref().is_some_and(|b| b.kept)
        || rounding.as_ref().is_some_and(|r| r.kept);
    // (The saturation guard's plan was measured against the targets when
    // it ran: `mp.result` is already the written plan's figure.)
    if let (true, Some(mp), Some(v)) = (
        changed_after,
        mixed_precision.as_mut(),
        verification.as_ref(),
    ) {
        let best: Vec<(&quench_verify::Metrics, bool)> = v
            .outputs
            .iter()
            .filter_map(|o| Some((o.best()?, o.integer)))
            .collect();
        let f = mixed::Figures::from_metrics(
            best.iter().copied(),
            v.accuracy.as_ref().map(|a| 100.0 * (a.fp32 - a.quantized)),
        );
        if best.len() == v.outputs.len() && !best.is_empty() {
            let met = mp.targets.met(&f);
            out.notes.push(format!(
                "{}: judged again on the written model after {}: {} ({})",
                mp.targets.flags(),
                if bias_correction.as_ref().is_some_and(|b| b.kept) {
                    "bias correction"
                } else {
                    "error-compensated rounding"
                },
                mixed::describe(&f),
                if met { "reached" } else { "not reached" }
            ));
            mp.result = f;
            mp.reached = met;
            // The search's verdict is superseded: its warning goes.
            if let Some(w) = target_missed.take() {
                out.warnings.retain(|x| *x != w);
                out.notes.retain(|x| *x != w);
            }
            target_missed = if met {
                None
            } else {
                Some(format!(
                    "{} not reached on the written model: {}",
                    mp.targets.flags(),
                    mixed::describe(&f)
                ))
            };
        }
    }
    let mut report = Report {
        no_quantize: opts.no_quantize,
        input: input.path.display().to_string(),
        output: String::new(),
        mode: cfg.mode,
        method: opts.method,
        config: cfg,
        passes: pass_names,
        pass_stats: cx.stats.clone(),
        quantization: summary,
        size_before,
        size_after: 0,
        calibration_samples: calib_samples,
        verification,
        pruning,
        mixed_precision,
        auto_ranges,
        rounding,
        saturation_guard,
        bias_correction,
        smooth_quant,
        notes: out.notes,
        warnings: out.warnings,
        log: out.log,
        timings: phases.done,
        threshold_failure: None,
        target_missed,
    };
    report.threshold_failure = report.check_thresholds(opts.min_sqnr, opts.min_top1);
    // Targets only where the search ran (static mode); their verdict is
    // the search's, judged on the written model.
    let reached = report
        .mixed_precision
        .as_ref()
        .map(|_| report.target_missed.is_none());
    let thresholds: Vec<report::Threshold> = [
        (
            opts.min_sqnr.map(report::Bound::MinSqnr),
            "--min-sqnr",
            false,
        ),
        (
            opts.min_top1.map(report::Bound::MinTop1),
            "--min-top1",
            false,
        ),
        (
            opts.target_sqnr.map(report::Bound::MinSqnr),
            "--target-sqnr",
            true,
        ),
        (
            opts.max_top1_drop
                .map(|pct| report::Bound::MinTop1(1.0 - pct / 100.0)),
            "--max-top1-drop",
            true,
        ),
        (
            opts.max_accuracy_drop.map(report::Bound::MaxAccuracyDrop),
            "--max-accuracy-drop",
            true,
        ),
    ]
    .into_iter()
    .filter_map(|(bound, flag, target)| {
        // A target without a search (weight-only, dynamic) was not applied.
        let reached = if target { Some(reached?) } else { None };
        Some(report::Threshold {
            flag,
            bound: bound?,
            reached,
        })
    })
    .collect();
    let undecided = report.undecided_thresholds(&thresholds);
    report.notes.extend(undecided);
    Ok(Outcome {
        model: out_proto,
        report,
        dumps,
    })
}

/// Observes the planned tensors on the calibration samples (or reads the
/// table). `None`: tract could not run the model and the compile falls
/// back to weight-only (a warning says so).
fn calibrate_phase(
    opts: &Options,
    data: &DataPlan,
    model: &Model,
    tensors: &[String],
    keep: &[Vec<usize>],
    samples: &mut usize,
    out: &mut Notes,
    progress: &dyn Progress,
) -> Result<(
    Option<BTreeMap<String, TensorStats>>,
    Vec<Vec<quench_verify::ArrayData>>,
)> {
    if let Some(t) = &opts.calibration_table {
        let table = read_table(t)?;
        *samples = table.samples;
        let missing: Vec<&String> = tensors
            .iter()
            .filter(|n| !table.tensors.contains_key(*n))
            .collect();
        // Not one planned tensor in the table: it was made for another
        // model (it was accepted with a note and every activation left
        // float, exit 0).
        if !tensors.is_empty() && missing.len() == tensors.len() && !table.tensors.is_empty() {
            anyhow::bail!(
                "{}: the calibration table has none of this model's {} activation tensors (e.g. `{}`); it was made for `{}`, another model or another version of it: run `quench calibrate` on this model",
                t.display(),
                tensors.len(),
                tensors[0],
                table.model
            );
        }
        if !missing.is_empty() {
            out.note(format!(
                "calibration table lacks {} tensors (they stay float), e.g. `{}`",
                missing.len(),
                missing[0]
            ));
        }
        return Ok((Some(table.tensors), Vec::new()));
    }
    let Some(cal) = &data.calibration else {
        return Ok((Some(BTreeMap::new()), Vec::new()));
    };
    *samples = cal.data.samples();
    let t0 = Instant::now();
    let proto = model.to_onnx();
    // `--method minmax` needs no histograms.
    let histograms = opts.method != Method::Minmax;
    let run = |keep: &[Vec<usize>]| {
        calibrate::collect_keeping(
            &proto, &cal.data, cal.feed, tensors, histograms, keep, progress,
        )
    };
    // The search's batches are a convenience: when tract fails on them
    // (their batch size), calibration runs as it would without.
    let collected = match run(keep) {
        Err(e) if !keep.is_empty() && e.downcast_ref::<calibrate::BadData>().is_none() => {
            out.log.push(format!(
                "calibration with the search's batches failed ({e:#}); run again without"
            ));
            run(&[])
        }
        r => r,
    };
    match collected {
        Ok(c) => {
            out.log.extend(
                c.notes
                    .into_iter()
                    .map(|n| format!("tract copy for calibration: {n}")),
            );
            out.log.push(format!(
                "calibrated {} tensors on {} samples in {:.2?}",
                tensors.len(),
                samples,
                t0.elapsed()
            ));
            Ok((Some(c.stats), c.kept))
        }
        // tract cannot run the model: static quantization is out of
        // reach, weights can still be quantized.
        Err(e) if e.downcast_ref::<calibrate::BadData>().is_some() => Err(e),
        Err(e) if opts.no_fallback => {
            Err(e.context("calibration failed; `--mode weight-only` needs no calibration run"))
        }
        Err(e) => {
            out.warn(format!(
                "calibration could not run the model in tract ({e:#}); fell back to weight-only quantization (int8 weights, float activations). `--no-fallback` makes this an error"
            ));
            Ok((None, Vec::new()))
        }
    }
}

/// Ranges for the observed tensors, with the policy's notes.
fn range_policy(
    opts: &Options,
    model: &Model,
    plan: &quantize::Plan,
    cfg: &quantize::QuantizeConfig,
    stats: &BTreeMap<String, TensorStats>,
    out: &mut Notes,
) -> quantize::Ranges {
    let default = cfg.default_activation_format();
    let g = &model.graph;
    let format_of = |name: &str| match g.value_by_name(name) {
        Some(v) => plan.format_of(v, default),
        None => default,
    };
    let c = calibrate::choose_ranges(
        g,
        stats,
        opts.range_method(),
        &format_of,
        opts.entropy_guard,
        opts.consumer_ranges,
    );
    if !c.clamped.is_empty() {
        out.note(format!(
            "{} activation range(s) clamped where every consumer is flat (exact: a Relu, Clip, HardSwish, HardSigmoid, Tanh or Sigmoid gives the same output beyond the bound), e.g. `{}` [{:.3}, {:.3}] -> [{:.3}, {:.3}]",
            c.clamped.len(),
            c.clamped[0].0,
            c.clamped[0].1 .0,
            c.clamped[0].1 .1,
            c.clamped[0].2 .0,
            c.clamped[0].2 .1
        ));
        for (t, a, b) in &c.clamped {
            out.log.push(format!(
                "consumer clamp: `{t}` [{}, {}] -> [{}, {}]",
                a.0, a.1, b.0, b.1
            ));
        }
    }
    for (name, e) in &c.failed {
        out.note(format!("tensor `{name}`: no range ({e}); stays float"));
    }
    if !c.dead.is_empty() {
        out.warn(format!(
            "{} tensor(s) never held a positive value on the calibration data, so their range ends at 0 and positive values will be clipped (e.g. `{}`); check that the calibration samples are representative",
            c.dead.len(),
            c.dead[..c.dead.len().min(3)].join("`, `")
        ));
    }
    if c.guarded > 0 {
        out.note(format!(
            "entropy: {} of {} tensors use the MSE range instead of the KL threshold, whose expected squared error was over {}x larger (--entropy-guard)",
            c.guarded,
            stats.len(),
            opts.entropy_guard
        ));
    }
    if c.bounded_kept > 0 {
        out.log.push(format!(
            "{} Softmax/Sigmoid outputs keep their observed range (not clipped by {:?})",
            c.bounded_kept,
            opts.range_method()
        ));
    }
    c.ranges
}

/// Options of [`calibrate_table`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CalibrateOptions {
    pub calibration: std::path::PathBuf,
    /// Passes to run first (must match the later compile).
    pub passes: Option<Vec<String>>,
}

/// What [`calibrate_table`] produced.
pub struct CalibrateOutcome {
    pub table: CalibrationTable,
    /// What was changed in tract's copy of the model.
    pub log: Vec<String>,
    pub timings: Vec<Timing>,
}

/// `quench calibrate`: the passes, then calibration of every tensor the
/// default plan observes, with histograms and every method's range.
pub fn calibrate_table(
    input: &LoadedModel,
    opts: &CalibrateOptions,
    progress: &dyn Progress,
) -> Result<CalibrateOutcome> {
    let mut phases = Phases::new();
    // The ranges of an already-quantized model's tensors are no table for
    // quantizing it: refused as `compile` refuses it.
    if let Some(q) = input.model.graph.as_ref().and_then(prequantized::detect) {
        anyhow::bail!(prequantized::refusal(&input.path, &q, ""));
    }
    let mut model = Model::from_onnx(input.model.clone())
        .with_context(|| format!("{}", input.path.display()))?;
    run_pipeline(&mut model, &opts.passes, &[])?;
    let plan = quantize::plan(&model.graph, &quantize::QuantizeConfig::default())?;
    let tensors = plan.tensors_to_observe(&model.graph);
    let proto = model.to_onnx();
    let (data, feed) = data::load_data(&opts.calibration, &proto)?;
    phases.lap("load and passes");
    let (stats, log) = calibrate::collect(&proto, &data, feed, &tensors, true, progress)?;
    phases.lap("tract runs");
    let table = calibrate::table_from(&input.path.display().to_string(), data.samples(), stats);
    phases.lap("range search");
    Ok(CalibrateOutcome {
        table,
        log: log
            .into_iter()
            .map(|n| format!("tract copy for calibration: {n}"))
            .collect(),
        timings: phases.done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quantize::{ActType, WeightType};

    /// The saturation note: only on a saturating CPU, only for 8-bit
    /// activations (static) or dynamic mode with full-range int8 weights.
    #[test]
    fn the_saturation_note_names_only_saturating_configurations() {
        let base = Options::default().quantize_config();
        assert_eq!(base.mode, Mode::Static);
        assert!(saturation_note(&base, true).is_some());
        assert!(saturation_note(&base, false).is_none());
        let with = |f: &dyn Fn(&mut quantize::QuantizeConfig)| {
            let mut c = base.clone();
            f(&mut c);
            saturation_note(&c, true).is_some()
        };
        assert!(with(&|c| c.activations = ActType::I8));
        assert!(with(&|c| c.mode = Mode::Dynamic));
        assert!(!with(&|c| c.weights = WeightType::I7));
        assert!(!with(&|c| c.weights = WeightType::U8));
        assert!(!with(&|c| c.activations = ActType::U16));
        assert!(!with(&|c| c.mode = Mode::WeightOnly));
        assert!(!with(
            &|c| c.weight_format = Some(quench_calib::QuantFormat::I4_WEIGHT)
        ));
    }
}
