//! What a compile did, as data: the JSON of `--report` and the source of
//! every line the command line prints.

use std::collections::BTreeMap;

use quench_passes::quantize::{Mode, QuantSummary, QuantizeConfig};
use quench_verify::Metrics;
use serde::Serialize;

use crate::attribution::TensorError;
use crate::options::Method;
use crate::prune::PruneReport;

/// One graph output's verification figures.
#[derive(Debug, Clone, Serialize)]
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
    /// The output's element type is an integer one (an ArgMax's class
    /// index): its SQNR is shown but judges nothing (`--min-sqnr`,
    /// `--target-sqnr`) when the model has another output.
    pub integer: bool,
    /// The tensors a Concat assembled this output from, each measured on
    /// its own (see [`crate::parts`]); empty for an output of one piece.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartCheck>,
}

/// One part of an output (see [`OutputCheck::parts`]): FP32 against the
/// file and the float twin, over that part's elements only.
#[derive(Debug, Clone, Serialize)]
pub struct PartCheck {
    pub tensor: String,
    pub file: Option<Metrics>,
    pub reference: Option<Metrics>,
}

impl OutputCheck {
    /// The figures thresholds are judged on: the reference semantics when
    /// the twin ran, else the file.
    pub fn best(&self) -> Option<&Metrics> {
        self.reference.as_ref().or(self.file.as_ref())
    }
}

#[derive(Debug, Clone, Serialize)]
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
    pub tensors: Vec<TensorError>,
    /// The `If`s tract ran as their taken branch, each with why (see
    /// `control_flow`): empty when tract ran the model as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specialised: Vec<String>,
    /// The row `tensors` was measured on alone (`--explain-sample`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explained_sample: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    pub labels: usize,
    pub fp32: f64,
    pub quantized: f64,
    /// 95% interval of `quantized - fp32` over the labelled samples (a
    /// paired bootstrap: the samples where only one model is right decide
    /// it), as fractions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_interval: Option<[f64; 2]>,
}

/// Wall time of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub phase: String,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// Passes only: nothing was quantized.
    pub no_quantize: bool,
    pub input: String,
    pub output: String,
    /// The mode that ran (after any fallback).
    pub mode: Mode,
    pub method: Method,
    pub config: QuantizeConfig,
    pub passes: Vec<String>,
    /// Counters of the graph passes and of quantization
    /// (`fold_batchnorm.folded`, `quantize.*`).
    pub pass_stats: BTreeMap<String, usize>,
    pub quantization: QuantSummary,
    pub size_before: u64,
    /// Bytes written (model plus external data); 0 until the model is
    /// saved with [`crate::Outcome::save`].
    pub size_after: u64,
    pub calibration_samples: usize,
    pub verification: Option<Verification>,
    /// What `--prune` did: sparsity per layer, fidelity after pruning
    /// alone, compressed sizes.
    pub pruning: Option<PruneReport>,
    /// What `--target-sqnr` / `--max-top1-drop` / `--max-accuracy-drop`
    /// did: tensors raised to 16 bits or left float, why, and the figures
    /// before and after.
    pub mixed_precision: Option<crate::mixed::MixedReport>,
    /// What `--method auto` did: ranges changed and the output SQNR on
    /// calibration samples before and after.
    pub auto_ranges: Option<crate::search::AutoReport>,
    /// What `--error-compensated-rounding` did.
    pub rounding: Option<crate::rounding::RoundingReport>,
    /// What the saturation guard measured and which layers it gave 7-bit
    /// weight codes.
    pub saturation_guard: Option<crate::saturation::GuardReport>,
    /// What `--bias-correction` did.
    pub bias_correction: Option<crate::bias::BiasReport>,
    /// What `--smooth-quant` did.
    pub smooth_quant: Option<crate::smooth::SmoothReport>,
    /// Things the user should know (fallbacks, upgrades, skipped steps).
    pub notes: Vec<String>,
    /// The subset of `notes` that is a warning (printed as such).
    pub warnings: Vec<String>,
    /// Detail for `--verbose`: the passes' log, what was changed in
    /// tract's copies of the model, counts of range-policy decisions.
    pub log: Vec<String>,
    pub timings: Vec<Timing>,
    /// Why a requested threshold (`min_sqnr`, `min_top1`) was not met.
    pub threshold_failure: Option<String>,
    /// Why a mixed-precision target (`target_sqnr`, `max_top1_drop`,
    /// `max_accuracy_drop`) was not reached or could not be searched for.
    /// Unlike a failed threshold, the model is still the best found (the
    /// command line writes it and exits with status 3).
    pub target_missed: Option<String>,
}

impl Report {
    /// Whether every output's SQNR could be computed and is finite or +inf.
    pub fn check_thresholds(&self, min_sqnr: Option<f64>, min_top1: Option<f64>) -> Option<String> {
        if min_sqnr.is_none() && min_top1.is_none() {
            return None;
        }
        let Some(v) = self.verification.as_ref() else {
            return Some(
                "--min-sqnr/--min-top1 were given but verification did not run (see the notes above)"
                    .into(),
            );
        };
        // Integer outputs (class indices) are judged by the others when
        // there are others: no SQNR, no class scores of their own.
        let all_integer = v.outputs.iter().all(|o| o.integer);
        for o in v.outputs.iter().filter(|o| !o.integer || all_integer) {
            let Some(m) = o.best() else {
                return Some(format!(
                    "output `{}`: no figures (neither the file nor its twin ran)",
                    o.output
                ));
            };
            if let Some(t) = min_sqnr {
                // NaN is never above a threshold.
                if m.sqnr_db.is_nan() || m.sqnr_db < t {
                    return Some(format!(
                        "output `{}`: SQNR {:.2} dB is below --min-sqnr {t}",
                        o.output, m.sqnr_db
                    ));
                }
            }
            if let (Some(t), None) = (min_top1, &m.top1) {
                return Some(format!(
                    "output `{}`: --min-top1 {t} cannot be checked: the output has no class scores (no top-1 figure)",
                    o.output
                ));
            }
            if let (Some(t), Some(top1)) = (min_top1, &m.top1) {
                if top1.fraction.is_nan() || top1.fraction < t {
                    return Some(format!(
                        "output `{}`: top-1 agreement {:.4} is below --min-top1 {t}",
                        o.output, top1.fraction
                    ));
                }
            }
        }
        None
    }
}

/// A requested check on a verification figure, for
/// [`Report::undecided_thresholds`].
#[derive(Debug, Clone, Copy)]
pub struct Threshold {
    /// The flag that asked for it.
    pub flag: &'static str,
    pub bound: Bound,
    /// A mixed-precision target's verdict (`--target-sqnr`,
    /// `--max-top1-drop`, `--max-accuracy-drop`), taken from the search's
    /// result; `None` for a threshold (`--min-sqnr`, `--min-top1`), judged
    /// on the figure itself.
    pub reached: Option<bool>,
}

/// What a [`Threshold`] accepts.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// The lowest SQNR (dB) on every float output.
    MinSqnr(f64),
    /// The lowest top-1 agreement (a fraction) on every output with class
    /// scores.
    MinTop1(f64),
    /// The largest accuracy drop against labels (percentage points).
    MaxAccuracyDrop(f64),
}

impl Report {
    /// One note per output and check whose bound lies strictly inside the
    /// figure's 95% interval over the evaluation samples
    /// ([`quench_verify::metrics::Interval`], `Accuracy::change_interval`):
    /// the check went one way on this evaluation set, but another set of
    /// the same size and kind could decide it the other way. Outputs are
    /// those the checks judge (integer outputs only when every output is
    /// one).
    pub fn undecided_thresholds(&self, thresholds: &[Threshold]) -> Vec<String> {
        let Some(v) = self.verification.as_ref() else {
            return Vec::new();
        };
        let all_integer = v.outputs.iter().all(|o| o.integer);
        let outcome = |t: &Threshold, met: bool| match t.reached {
            Some(true) => "the targets are reached here",
            Some(false) => "the targets are not reached here",
            None if met => "the check is met here",
            None => "the check is not met here",
        };
        let mut notes = Vec::new();
        for t in thresholds {
            let Bound::MaxAccuracyDrop(bound) = t.bound else {
                continue;
            };
            let Some(acc) = v.accuracy.as_ref() else {
                continue;
            };
            let Some([lo, hi]) = acc.change_interval else {
                continue;
            };
            // The drop is minus the change, in points (+ 0.0: no "-0.00").
            let (drop, lo, hi) = (
                100.0 * (acc.fp32 - acc.quantized),
                -100.0 * hi + 0.0,
                -100.0 * lo + 0.0,
            );
            if lo < bound && bound < hi {
                notes.push(format!(
                    "{} ({bound:.2} points) lies inside the accuracy drop's 95% interval over the {} \
                     labelled samples ({drop:.2} points measured, {lo:.2} to {hi:.2} points): {}, but \
                     another evaluation set of this size and kind could decide it the other way; more \
                     samples narrow the interval",
                    t.flag,
                    acc.labels,
                    outcome(t, drop <= bound)
                ));
            }
        }
        for o in v.outputs.iter().filter(|o| !o.integer || all_integer) {
            let Some(m) = o.best() else { continue };
            let Some(iv) = m.interval.as_ref() else {
                continue;
            };
            for t in thresholds {
                let (bound, range, figure, unit, scale) = match t.bound {
                    Bound::MinSqnr(b) => match iv.sqnr_db {
                        Some(range) => (b, range, m.sqnr_db, " dB", 1.0),
                        None => continue,
                    },
                    Bound::MinTop1(b) => match (iv.top1, m.top1.as_ref()) {
                        (Some(range), Some(top1)) => (b, range, top1.fraction, "%", 100.0),
                        _ => continue,
                    },
                    Bound::MaxAccuracyDrop(_) => continue,
                };
                let [lo, hi] = range;
                if lo < bound && bound < hi {
                    notes.push(format!(
                        "output `{}`: {} ({:.2}{unit}) lies inside the figure's 95% interval over the {} \
                         evaluation samples ({:.2}{unit} measured, {:.2}{unit} to {:.2}{unit}): {}, but \
                         another evaluation set of this size and kind could decide it the other way; more \
                         samples narrow the interval",
                        o.output,
                        t.flag,
                        bound * scale,
                        iv.samples,
                        figure * scale,
                        lo * scale,
                        hi * scale,
                        outcome(t, figure >= bound)
                    ));
                }
            }
        }
        notes
    }
}

/// Up to `max` names quoted and joined, then how many more.
pub fn short_list(names: &[String], max: usize) -> String {
    let shown: Vec<String> = names.iter().take(max).map(|n| format!("`{n}`")).collect();
    if names.len() > max {
        format!("{} and {} more", shown.join(", "), names.len() - max)
    } else {
        shown.join(", ")
    }
}
