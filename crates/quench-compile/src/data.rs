//! Which samples calibrate, which evaluate: decided here, once per compile.
//!
//! Invariant: calibration, verification, pruning's fidelity and its
//! sensitivity scan all take their data from one [`DataPlan`], so the
//! samples held back for evaluation are never calibrated on, and every
//! phase states the same split.
//!
//! - `--eval DATA`: evaluation uses it; every calibration sample
//!   calibrates.
//! - Static calibration on data without `--eval`, with verification: the
//!   last 20% of the samples (at least one, from 5 samples on) are held
//!   back for evaluation; with fewer samples, evaluation reuses the
//!   calibration samples and says so.
//! - Otherwise evaluation uses the calibration data (weight-only and
//!   dynamic modes calibrate nothing).
//! - Data is bound to the model's inputs when the plan is made, so a bad
//!   file fails the compile before anything is computed or written.

use std::path::Path;

use anyhow::{bail, Result};
use quench_onnx::proto::ModelProto;
use quench_verify::{Dataset, Feed, ModelInput};

use crate::options::Options;

/// Largest number of samples a pruning sensitivity scan runs per candidate.
pub const SENSITIVITY_SAMPLES: usize = 256;

/// A dataset bound to a model's inputs, with the words that name it.
#[derive(Clone)]
pub struct Bound {
    pub data: Dataset,
    pub feed: Feed,
    /// What it is, for reports (`"calib (last 4 of 20 samples held back
    /// from calibration)"`).
    pub label: String,
}

/// The data of each phase.
pub struct DataPlan {
    /// Samples static calibration runs on.
    pub calibration: Option<Bound>,
    /// Samples verification and pruning fidelity run on.
    pub eval: Option<Bound>,
    /// Samples a pruning sensitivity scan runs on (calibration samples
    /// first, at most [`SENSITIVITY_SAMPLES`]).
    pub sensitivity: Option<Bound>,
}

/// Loads a dataset and binds it to the model's inputs.
pub fn load_data(path: &Path, model: &ModelProto) -> Result<(Dataset, Feed)> {
    let mut d = Dataset::load(path)?;
    let feed = d.check_against(&ModelInput::from_model(model))?;
    if d.samples() == 0 {
        bail!("{}: no samples", path.display());
    }
    if let Some(l) = d.extra("labels") {
        if l.shape().first() != Some(&d.samples()) {
            bail!(
                "{}: `labels` has {} rows for {} samples; give one label per sample",
                path.display(),
                l.shape().first().copied().unwrap_or(0),
                d.samples()
            );
        }
    }
    Ok((d, feed))
}

impl DataPlan {
    /// The split for `opts` on `model` (the FP32 input model).
    pub fn new(opts: &Options, model: &ModelProto) -> Result<DataPlan> {
        let calib = match &opts.calibration {
            Some(p) => Some((p, load_data(p, model)?)),
            None => None,
        };
        let eval_given = match &opts.eval {
            Some(p) if opts.verify || opts.prune.is_some() => {
                let (data, feed) = load_data(p, model)?;
                Some(Bound {
                    data,
                    feed,
                    label: p.display().to_string(),
                })
            }
            _ => None,
        };
        let mut plan = DataPlan {
            calibration: None,
            eval: eval_given,
            sensitivity: None,
        };
        let Some((path, (data, feed))) = calib else {
            plan.sensitivity = plan.eval.clone().map(|mut b| {
                b.label = format!("{} (evaluation data)", b.label);
                b
            });
            plan.limit_sensitivity();
            return Ok(plan);
        };
        let n = data.samples();
        let shown = path.display();
        if opts.calibrates_on_data() {
            if plan.eval.is_none() && opts.verify && n >= 5 {
                let keep = n - (n / 5).max(1);
                let (c, e) = data.split(keep);
                plan.eval = Some(Bound {
                    data: e,
                    feed,
                    label: format!(
                        "{shown} (last {} of {n} samples held back from calibration)",
                        n - keep
                    ),
                });
                plan.calibration = Some(Bound {
                    data: c,
                    feed,
                    label: shown.to_string(),
                });
            } else {
                if plan.eval.is_none() && opts.verify {
                    plan.eval = Some(Bound {
                        data: data.clone(),
                        feed,
                        label: format!(
                            "{shown} (the calibration samples themselves: too few to hold any back)"
                        ),
                    });
                }
                plan.calibration = Some(Bound {
                    data,
                    feed,
                    label: shown.to_string(),
                });
            }
            plan.sensitivity = plan.calibration.clone();
        } else {
            let b = Bound {
                data,
                feed,
                label: format!("{shown} (calibration data)"),
            };
            plan.sensitivity = Some(Bound {
                label: shown.to_string(),
                ..b.clone()
            });
            if plan.eval.is_none() {
                plan.eval = Some(b);
            }
        }
        plan.limit_sensitivity();
        Ok(plan)
    }

    fn limit_sensitivity(&mut self) {
        if let Some(s) = &mut self.sensitivity {
            let n = s.data.samples();
            if n > SENSITIVITY_SAMPLES {
                s.data = s.data.clone().split(SENSITIVITY_SAMPLES).0;
                s.label = format!("{} (first {SENSITIVITY_SAMPLES} of {n} samples)", s.label);
            }
        }
    }
}
