//! Mixed precision to a target (`--target-sqnr DB`): leave the tensors that
//! cost the most at the model output float, fewest changes first, until the
//! output SQNR on held-back data reaches the target.
//!
//! 1. The plan is quantized with every calibrated range and its float twin
//!    measured against FP32 on the evaluation samples. At or above the
//!    target: nothing changes.
//! 2. Otherwise every quantized activation's output gain is measured
//!    ([`attribution::output_gains`]: the twin with only that tensor left
//!    float), and tensors are left float in order of gain, largest first,
//!    re-measuring the whole model after each (a change that does not raise
//!    it is undone), until the target holds or [`MAX_CHANGES`] tensors are
//!    float.
//!
//! Invariant: every figure is measured on the evaluation split of the
//! [`DataPlan`](crate::DataPlan), never on calibration samples; the report
//! states the SQNR before and after and each tensor's measured gain.

use anyhow::Result;
use quench_ir::Model;
use quench_onnx::proto::ModelProto;
use quench_passes::quantize::{Plan, QuantizeConfig, Ranges};
use quench_passes::PassCx;
use quench_verify::{Evaluator, Runners, Subject};
use serde::Serialize;

use crate::attribution::{self, TensorError};
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

/// Lowest output SQNR of the float twin of `float` quantized with `ranges`,
/// against `reference` outputs on `eval`; also the quantized graph and its
/// twin with its (quantized, after-Q/DQ) tensor pairs.
struct Measured {
    sqnr: f64,
    quantized: Model,
    twin: Model,
    pairs: Vec<(String, String)>,
}

#[allow(clippy::too_many_arguments)]
fn measure(
    float: &Model,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    eval: &Evaluator<'_>,
    reference: &quench_verify::Cached,
    outputs: usize,
) -> Result<Measured> {
    let mut q = float.clone();
    let mut cx = PassCx::new(opset);
    crate::phases::quantize_phase(&mut q, plan, ranges, cfg, opset, &mut cx)?;
    let mut twin = q.clone();
    let (pairs, _) = quench_passes::simulate::float_twin_pairs(&mut twin.graph, opset);
    let r = Runners::new(&twin.to_onnx(), vec![]);
    let f = eval
        .compare(
            &[
                Subject::Cached(reference),
                Subject::Required(&r, "the float twin"),
            ],
            &[(0, 1)],
            outputs,
        )?
        .remove(0);
    let m = f.outputs.map_err(anyhow::Error::msg)?;
    let sqnr = m.iter().map(|m| m.sqnr_db).fold(f64::INFINITY, |a, b| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.min(b)
        }
    });
    Ok(Measured {
        sqnr,
        quantized: q,
        twin,
        pairs,
    })
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
/// `original` the FP32 input model (the reference).
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
    let eval = Evaluator::new(&data.data, data.feed, quench_verify::input_names(original));
    let outputs = quench_verify::output_names(original).len();
    let reference = eval.outputs(&Runners::new(original, vec![]), "the FP32 model")?;
    let first = measure(float, plan, ranges, cfg, opset, &eval, &reference, outputs)?;
    let mut report = MixedReport {
        target_db: target,
        initial_db: first.sqnr,
        final_db: first.sqnr,
        reached: first.sqnr >= target,
        float: Vec::new(),
        data: data.label.clone(),
    };
    if report.reached {
        return Ok(report);
    }
    // Candidates: tensors with a range of their own (shared tensors follow
    // their root).
    let mut cands: Vec<TensorError> = first
        .pairs
        .iter()
        .filter(|(x, _)| ranges.contains_key(x))
        .map(|(x, _)| TensorError {
            tensor: x.clone(),
            node: String::new(),
            op: String::new(),
            sqnr_in_db: f64::NAN,
            sqnr_out_db: f64::NAN,
            added_db: f64::NAN,
            float_gain_db: None,
        })
        .collect();
    attribution::output_gains(
        float,
        &first.quantized.graph,
        &first.twin,
        &first.pairs,
        &shared_members(float, plan),
        data,
        &mut cands,
    )?;
    let mut order: Vec<(String, f64)> = cands
        .into_iter()
        .filter_map(|t| Some((t.tensor, t.float_gain_db.filter(|g| g.is_finite())?)))
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut cur = ranges.clone();
    let mut tried = 0;
    for (tensor, gain) in order {
        if report.float.len() >= MAX_CHANGES || tried >= 2 * MAX_CHANGES {
            break;
        }
        tried += 1;
        let Some(range) = cur.remove(&tensor) else {
            continue;
        };
        let m = measure(float, plan, &cur, cfg, opset, &eval, &reference, outputs)?;
        // A change that does not raise the whole model's SQNR is undone:
        // fewest changes, each one measured to help.
        if !(m.sqnr > report.final_db) {
            cur.insert(tensor, range);
            continue;
        }
        report.float.push(FloatTensor {
            tensor,
            gain_db: gain,
            sqnr_after_db: m.sqnr,
        });
        report.final_db = m.sqnr;
        if m.sqnr >= target {
            report.reached = true;
            break;
        }
    }
    Ok(report)
}
