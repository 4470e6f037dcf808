//! Which samples calibrate, which evaluate: decided here, once per compile.
//!
//! Invariant: calibration, verification, pruning's fidelity and its
//! sensitivity scan all take their data from one [`DataPlan`], so the
//! samples held back for evaluation are never calibrated on, and every
//! phase states the same split.
//!
//! - `--eval DATA`: evaluation uses it; every calibration sample
//!   calibrates.
//! - Static calibration on data without `--eval`, with verification: 20%
//!   of the samples (at least one, from 5 samples on), chosen at random
//!   with a fixed seed ([`held_back`]), are held back for evaluation; with
//!   fewer samples, evaluation reuses the calibration samples and says so.
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

impl Bound {
    /// The one sample at row `row` of the data as given (see
    /// [`Dataset::source_row`]), as its own dataset; `None` when this data
    /// does not hold it.
    pub fn one_row(&self, row: usize) -> Option<Bound> {
        let i = (0..self.data.samples()).find(|&i| self.data.source_row(i) == row)?;
        Some(Bound {
            data: self.data.pick(&[i]),
            feed: self.feed,
            label: format!("{}, row {row} alone", self.label),
        })
    }

    /// The rows of the data as given that this data holds, in its order.
    pub fn source_rows(&self) -> Vec<usize> {
        (0..self.data.samples())
            .map(|i| self.data.source_row(i))
            .collect()
    }
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

/// Refuses calibration data holding NaN or infinity, before the held-back
/// split: a held-back sample would otherwise only show as a NaN SQNR
/// (exit 0), and a calibration sample would be named by its index after
/// the split rather than in the file. The error names the input and the
/// sample's index in the data as stored.
fn check_finite(data: &Dataset, feed: Feed) -> Result<()> {
    const CHUNK: usize = 64;
    let names = data.input_names();
    for r in feed.ranges(data.samples(), CHUNK) {
        let inputs = data.feed(feed, r.clone())?;
        for (a, name) in inputs.iter().zip(&names) {
            if let Some(row) = a.first_non_finite_row() {
                let sample = match feed {
                    Feed::Sample => r.start,
                    Feed::Batch { .. } => r.start + row,
                };
                return Err(crate::calibrate::BadData(format!(
                    "calibration input `{name}`, sample {sample}: holds NaN or infinity; calibration needs finite data"
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// Seed of the held-back split: the same data always splits the same way.
pub const SPLIT_SEED: u64 = 20_261_127;

/// Seed of the fit/judge halves of the calibration samples.
pub const FIT_SEED: u64 = 20_261_128;

/// Calibration rows to fit a correction on and rows to judge it on:
/// disjoint halves of up to `max` samples each, chosen at random with
/// [`FIT_SEED`] (never alternate or consecutive rows: a set that
/// alternates two kinds of sample, or is sorted by kind, would be fitted
/// on one kind and judged on the other); with fewer than 16 samples both
/// are all of them (too few to keep apart; reports say so). Each is
/// ascending.
pub fn fit_and_judge(n: usize, max: usize) -> (Vec<usize>, Vec<usize>) {
    if n >= 16 {
        let k = (n / 2).min(max);
        let idx = shuffled(n, FIT_SEED);
        let mut fit = idx[..k].to_vec();
        let mut judge = idx[k..n.min(k + max)].to_vec();
        fit.sort_unstable();
        judge.sort_unstable();
        (fit, judge)
    } else {
        ((0..n).collect(), (0..n).collect())
    }
}

/// `0..n` in a random order fixed by `seed` (Fisher-Yates over
/// [`quench_verify::metrics::splitmix64`]: deterministic).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut next = quench_verify::metrics::splitmix64(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx
}

/// The held-back split of `n` samples: 20% (at least one) chosen at random
/// with [`SPLIT_SEED`], never simply the last files (a folder sorted by
/// name often ends with one kind of sample). Returns (calibration rows,
/// evaluation rows), each ascending.
pub fn held_back(n: usize) -> (Vec<usize>, Vec<usize>) {
    let k = (n / 5).max(1).min(n);
    let idx = shuffled(n, SPLIT_SEED);
    let mut eval: Vec<usize> = idx[..k].to_vec();
    let mut cal: Vec<usize> = idx[k..].to_vec();
    eval.sort_unstable();
    cal.sort_unstable();
    (cal, eval)
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
            check_finite(&data, feed)?;
            if plan.eval.is_none() && opts.verify && n >= 5 {
                let (cal_rows, eval_rows) = held_back(n);
                plan.eval = Some(Bound {
                    data: data.pick(&eval_rows),
                    feed,
                    label: format!(
                        "{shown} ({} of {n} samples chosen at random (seed {SPLIT_SEED}), held back from calibration)",
                        eval_rows.len()
                    ),
                });
                plan.calibration = Some(Bound {
                    data: data.pick(&cal_rows),
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
                let mut rows = shuffled(n, SPLIT_SEED);
                rows.truncate(SENSITIVITY_SAMPLES);
                rows.sort_unstable();
                s.data = s.data.pick(&rows);
                s.label = format!(
                    "{} ({SENSITIVITY_SAMPLES} of {n} samples chosen at random (seed {SPLIT_SEED}))",
                    s.label
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fit_and_judge, held_back, shuffled};

    #[test]
    fn fit_and_judge_halves_are_disjoint_random_and_bounded() {
        let (fit, judge) = fit_and_judge(32, 16);
        assert_eq!((fit.len(), judge.len()), (16, 16));
        assert!(fit.iter().all(|r| !judge.contains(r)));
        assert!(fit.windows(2).all(|w| w[0] < w[1]) && judge.windows(2).all(|w| w[0] < w[1]));
        // Neither the alternate rows nor the first half: a set that
        // alternates two kinds of sample, or is sorted by kind, gets both
        // kinds in each half.
        let evens = fit.iter().filter(|r| *r % 2 == 0).count();
        assert!((4..=12).contains(&evens), "{fit:?}");
        assert!(
            fit.iter().any(|r| *r >= 16) && fit.iter().any(|r| *r < 16),
            "{fit:?}"
        );
        // Bounded halves out of a large set, and the same every time.
        let (f, j) = fit_and_judge(1000, 16);
        assert_eq!((f.len(), j.len()), (16, 16));
        assert_eq!(fit_and_judge(1000, 16), (f, j));
        // Below 16 samples both are all of them.
        assert_eq!(fit_and_judge(5, 16), ((0..5).collect(), (0..5).collect()));
    }

    #[test]
    fn shuffled_is_a_permutation_and_held_back_uses_it() {
        let mut p = shuffled(50, 7);
        assert_ne!(p, (0..50).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
        let (cal, eval) = held_back(50);
        assert_eq!((cal.len(), eval.len()), (40, 10));
        assert!(eval.iter().all(|r| !cal.contains(r)));
    }
}
