//! Mixed precision to a target (`--target-sqnr DB`): leave the tensors that
//! cost the most at the model output float, fewest changes first, until the
//! output SQNR on held-back data reaches the target.
//!
//! 1. The plan is quantized with every calibrated range and its float twin
//!    measured against FP32 on the evaluation samples. At or above the
//!    target: nothing changes.
//! 2. Otherwise every quantized activation's output gain is measured (the
//!    twin with only that tensor left float), and tensors are left float in order of gain, largest first,
//!    re-measuring the whole model after each (a change that does not raise
//!    it is undone), until the target holds or [`MAX_CHANGES`] tensors are
//!    float.
//!
//! All of it runs on one parametric twin ([`crate::search::ParamBench`]):
//! tract compiles one model, and every choice is a run of it.
//!
//! Invariant: every figure is measured on the evaluation split of the
//! [`DataPlan`](crate::DataPlan), never on calibration samples; the report
//! states the SQNR before and after and each tensor's measured gain.

use anyhow::Result;
use quench_ir::Model;
use quench_onnx::proto::ModelProto;
use quench_passes::quantize::{Plan, QuantizeConfig, Ranges};
use serde::Serialize;

use crate::data::Bound;

/// Most tensors left float on the way to a target.
pub const MAX_CHANGES: usize = 32;

/// One tensor left float, and what leaving it float alone measured.
#[derive(Debug, Clone, Serialize)]
pub struct FloatTensor {
    pub tensor: String,
    /// Output SQNR gain (dB) of leaving only this tensor float.
    pub gain_db: f64,
    /// Output SQNR (dB) once it and every tensor before it are float.
    pub sqnr_after_db: f64,
}

/// What `--target-sqnr` did.
#[derive(Debug, Clone, Serialize)]
pub struct MixedReport {
    pub target_db: f64,
    /// Output SQNR (lowest over outputs, reference semantics) with every
    /// activation quantized.
    pub initial_db: f64,
    pub final_db: f64,
    pub reached: bool,
    pub float: Vec<FloatTensor>,
    /// Evaluation data the figures are measured on.
    pub data: String,
}

/// Root tensor name -> the names of the tensors sharing its quantization
/// parameters (data movement after it).
pub fn shared_members(
    float: &Model,
    plan: &Plan,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let g = &float.graph;
    let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (&v, &root) in &plan.shared {
        m.entry(g.value(root).name.clone())
            .or_default()
            .push(g.value(v).name.clone());
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// The tensors to leave float so that the output SQNR reaches `target`
/// (see the module docs). `float` is the graph right before quantization,
/// `original` the FP32 input model (the reference). Every figure comes from
/// one parametric twin ([`crate::search::ParamBench`]: one tract compile,
/// each choice a run), which computes bit for bit what the written
/// model's float twin computes.
#[allow(clippy::too_many_arguments)]
pub fn to_target(
    float: &Model,
    original: &ModelProto,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    data: &Bound,
    target: f64,
) -> Result<MixedReport> {
    let rows: Vec<usize> = (0..data.data.samples()).collect();
    let mut bench =
        crate::search::ParamBench::new(float, original, plan, ranges, cfg, opset, data, &rows)?;
    let mut set = bench.initial(true);
    let first = bench.score(&set)?.min_db;
    let mut report = MixedReport {
        target_db: target,
        initial_db: first,
        final_db: first,
        reached: first >= target,
        float: Vec::new(),
        data: data.label.clone(),
    };
    if report.reached {
        return Ok(report);
    }
    // Each root alone left float (with the tensors sharing its
    // parameters), measured against every activation quantized.
    let roots = bench.roots.clone();
    let mut order: Vec<(&String, &Vec<usize>, f64)> = Vec::new();
    for (root, ixs) in &roots {
        let mut alone = set.clone();
        for &i in ixs {
            alone[i].2 = false;
        }
        let gain = bench.score(&alone)?.min_db - first;
        if gain.is_finite() {
            order.push((root, ixs, gain));
        }
    }
    order.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut tried = 0;
    for (root, ixs, gain) in order {
        if report.float.len() >= MAX_CHANGES || tried >= 4 * MAX_CHANGES {
            break;
        }
        tried += 1;
        for &i in ixs {
            set[i].2 = false;
        }
        let s = bench.score(&set)?.min_db;
        // A change that does not raise the whole model's SQNR is undone:
        // fewest changes, each one measured to help.
        if !(s > report.final_db) {
            for &i in ixs {
                set[i].2 = true;
            }
            continue;
        }
        report.float.push(FloatTensor {
            tensor: root.clone(),
            gain_db: gain,
            sqnr_after_db: s,
        });
        report.final_db = s;
        if s >= target {
            report.reached = true;
            break;
        }
    }
    Ok(report)
}
