//! The one measuring harness: run models on the same samples and compare
//! what they produce.
//!
//! Verification (FP32 vs the emitted file vs its float twin), pruning's
//! fidelity and sensitivity scans, and `--explain`'s per-tensor attribution
//! all ask the same question: run A and B on the same data and say how far
//! their outputs (or exposed intermediate tensors) are apart. They all go
//! through [`Evaluator`]:
//!
//! - [`Runners`] caches one compiled tract runner per input shape (a last,
//!   shorter batch needs its own) and remembers a shape tract cannot
//!   compile, so it is not retried for every batch.
//! - [`Evaluator::compare`] runs a list of models batch by batch (batches
//!   in parallel, merged in batch order, so the figures do not depend on
//!   the thread count) and accumulates [`Metrics`] for chosen pairs of
//!   them, plus top-1 hits against integer `labels` when the data has them.
//! - [`Evaluator::compare_tensors`] does the same for exposed intermediate
//!   tensors, one sample per run.
//!
//! Invariant: every figure compares tensors of the same samples, fed in the
//! same batches; a model that cannot run is reported per model (its figures
//! are `Err`), never silently skipped.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::ArrayD;
use quench_onnx::proto::ModelProto;
use rayon::prelude::*;

use crate::{
    prepare_for_tract, Accumulator, ArrayData, Dataset, Feed, InputFact, Metrics, ModelInput,
    Runner, RunnerConfig,
};

/// The largest batch calibration and evaluation feed at once.
pub const MAX_BATCH: usize = 16;

/// Names of a model's real inputs (initializers that are also listed as
/// inputs are not), in order.
pub fn input_names(m: &ModelProto) -> Vec<String> {
    ModelInput::from_model(m)
        .into_iter()
        .map(|i| i.name)
        .collect()
}

/// Names of a model's graph outputs, in order.
pub fn output_names(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name().to_string()).collect())
        .unwrap_or_default()
}

/// Per graph output of a model, in order: whether its declared element
/// type is an integer or boolean one (an ArgMax's class index, a count):
/// such an output has no signal-to-noise meaning, its figures are top-1
/// agreement and accuracy. An output without a declared type counts as
/// not integer.
pub fn integer_outputs(m: &ModelProto) -> Vec<bool> {
    use quench_onnx::proto::tensor_proto::DataType;
    use quench_onnx::proto::type_proto::Value;
    m.graph
        .as_ref()
        .map(|g| {
            g.output
                .iter()
                .map(|o| {
                    let elem = match o.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                        Some(Value::TensorType(t)) => t.elem_type(),
                        _ => return false,
                    };
                    matches!(
                        DataType::try_from(elem),
                        Ok(DataType::Int8
                            | DataType::Int16
                            | DataType::Int32
                            | DataType::Int64
                            | DataType::Uint8
                            | DataType::Uint16
                            | DataType::Uint32
                            | DataType::Uint64
                            | DataType::Int4
                            | DataType::Uint4
                            | DataType::Bool)
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Per graph output of a model, in order: whether its first axis is the
/// samples' batch axis, so that a batch's output splits into one slice per
/// sample along it. Only when the model says so: the output's declared
/// first dimension is a symbolic one some input's first dimension also
/// has, or a fixed size above 1 that an input's first dimension also has.
/// A sequence-first output (`[T, N, C]`) or one without a declared shape
/// is not split.
pub fn batch_leading_outputs(m: &ModelProto) -> Vec<bool> {
    use quench_onnx::proto::tensor_shape_proto::dimension::Value as Dim;
    use quench_onnx::proto::type_proto::Value;
    use quench_onnx::proto::ValueInfoProto;
    fn first_dim(v: &ValueInfoProto) -> Option<&Dim> {
        match v.r#type.as_ref()?.value.as_ref()? {
            Value::TensorType(t) => t.shape.as_ref()?.dim.first()?.value.as_ref(),
            _ => None,
        }
    }
    let Some(g) = m.graph.as_ref() else {
        return Vec::new();
    };
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let inputs: Vec<&Dim> = g
        .input
        .iter()
        .filter(|i| !inits.contains(i.name()))
        .filter_map(first_dim)
        .collect();
    g.output
        .iter()
        .map(|o| match first_dim(o) {
            Some(Dim::DimParam(p)) if !p.is_empty() => inputs
                .iter()
                .any(|d| matches!(d, Dim::DimParam(q) if q == p)),
            Some(Dim::DimValue(v)) if *v > 1 => inputs
                .iter()
                .any(|d| matches!(d, Dim::DimValue(w) if w == v)),
            _ => false,
        })
        .collect()
}

/// Runners of one model by input shapes, compiled on first use.
pub struct Runners {
    model: ModelProto,
    extra: Vec<String>,
    /// Compiled runners, and the error of a shape tract could not compile
    /// (not retried for every batch).
    cache: Mutex<HashMap<Vec<Vec<usize>>, Result<Runner, String>>>,
    /// What was changed in tract's copy of the model
    /// ([`prepare_for_tract`]), each note once.
    pub notes: Mutex<Vec<String>>,
}

impl Runners {
    /// Runners of `model` that also expose the tensors named in `extra`
    /// (after the graph outputs, in that order).
    pub fn new(model: &ModelProto, extra: Vec<String>) -> Runners {
        Runners {
            model: model.clone(),
            extra,
            cache: Mutex::new(HashMap::new()),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// The model these runners run.
    pub fn model(&self) -> &ModelProto {
        &self.model
    }

    /// Runs the model on `inputs` (named as the model's inputs, in order).
    pub fn run(&self, names: &[String], inputs: &[ArrayData]) -> Result<Vec<ArrayData>> {
        Ok(self.runner(names, inputs)?.run(inputs)?)
    }

    /// [`run`](Self::run), converting only the outputs `read` selects
    /// ([`Runner::run_reading`]).
    pub fn run_reading(
        &self,
        names: &[String],
        inputs: &[ArrayData],
        read: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Option<ArrayData>>> {
        Ok(self.runner(names, inputs)?.run_reading(inputs, read)?)
    }

    /// The runner compiled for the shapes of `inputs`. Compiled once: the
    /// cache stays locked while tract compiles, so parallel batches of the
    /// same shape wait for it instead of compiling it again.
    pub fn runner(&self, names: &[String], inputs: &[ArrayData]) -> Result<Runner> {
        let key: Vec<Vec<usize>> = inputs.iter().map(|a| a.shape().to_vec()).collect();
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| anyhow!("runner cache poisoned"))?;
        if let Some(r) = cache.get(&key) {
            return r.clone().map_err(|e| anyhow!(e));
        }
        let shapes: Vec<(String, Vec<i64>)> = names
            .iter()
            .zip(&key)
            .map(|(n, s)| (n.clone(), s.iter().map(|d| *d as i64).collect()))
            .collect();
        let (prepared, notes) = prepare_for_tract(&self.model, &shapes);
        if let Ok(mut n) = self.notes.lock() {
            for note in notes {
                if !n.contains(&note) {
                    n.push(note);
                }
            }
        }
        let facts = names
            .iter()
            .zip(inputs)
            .map(|(n, a)| InputFact {
                name: n.clone(),
                elem_type: a.elem_type(),
                shape: a.shape().to_vec(),
            })
            .collect();
        let r = Runner::new(
            &prepared,
            &RunnerConfig {
                input_facts: facts,
                extra_outputs: self.extra.clone(),
            },
        )
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
        cache.insert(key, r.clone());
        r.map_err(|e| anyhow!(e))
    }

    /// The notes collected so far (see [`Runners::notes`]).
    pub fn take_notes(&self) -> Vec<String> {
        self.notes
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }
}

/// The data's class labels as one i64 per sample: int64 or int32, shape
/// `[N]` or `[N, 1]`; `None` for anything else.
pub fn class_labels(labels: &ArrayData) -> Option<Vec<i64>> {
    let flat = |shape: &[usize]| shape.len() == 1 || (shape.len() == 2 && shape[1] == 1);
    match labels {
        ArrayData::I64(l) if flat(l.shape()) => Some(l.iter().copied().collect()),
        ArrayData::I32(l) if flat(l.shape()) => Some(l.iter().map(|&v| i64::from(v)).collect()),
        _ => None,
    }
}

/// Top-1 hits against class `labels` (one per sample, from
/// [`class_labels`]; rows `offset..offset + samples` of them) for a reference and a test output
/// of shape `[samples, C]` with `C >= 2`, the reference as the pair's
/// first model. Any other output shape counts nothing (one row per sample
/// is what a label describes). A label outside `0..C` is an error naming
/// it.
pub fn label_hits(
    reference: &ArrayD<f32>,
    test: &ArrayD<f32>,
    labels: Option<&[i64]>,
    offset: usize,
    samples: usize,
) -> Result<LabelHits, String> {
    let mut hits = LabelHits::default();
    let Some(l) = labels else {
        return Ok(hits);
    };
    if reference.ndim() != 2
        || reference.shape()[0] != samples
        || reference.shape()[1] < 2
        || test.shape() != reference.shape()
    {
        return Ok(hits);
    }
    let classes = reference.shape()[1];
    let argmax = |m: &ArrayD<f32>, row: usize| {
        (0..classes).fold(0, |best, k| {
            if m[[row, k]] > m[[row, best]] {
                k
            } else {
                best
            }
        }) as i64
    };
    for row in 0..samples {
        let Some(&lab) = l.get(offset + row) else {
            continue;
        };
        if lab < 0 || lab >= classes as i64 {
            return Err(format!(
                "label {lab} of sample {} is not a class of the first output (it has {classes}: 0 to {})",
                offset + row,
                classes - 1
            ));
        }
        let (a, b) = (argmax(reference, row) == lab, argmax(test, row) == lab);
        hits.rows += 1;
        hits.first += a as usize;
        hits.second += b as usize;
        hits.only_first += (a && !b) as usize;
        hits.only_second += (b && !a) as usize;
    }
    Ok(hits)
}

/// Accuracy of two models against the data's integer `labels`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LabelHits {
    /// Labelled rows seen.
    pub rows: usize,
    /// Rows where the pair's first model's argmax equals the label.
    pub first: usize,
    /// Rows where the pair's second model's argmax equals the label.
    pub second: usize,
    /// Rows only the first model gets right.
    pub only_first: usize,
    /// Rows only the second model gets right.
    pub only_second: usize,
}

impl LabelHits {
    pub fn add(&mut self, other: LabelHits) {
        self.rows += other.rows;
        self.first += other.first;
        self.second += other.second;
        self.only_first += other.only_first;
        self.only_second += other.only_second;
    }

    /// 95% interval of the second model's accuracy minus the first's, a
    /// fraction ([`crate::metrics::paired_change_interval`]).
    pub fn change_interval(&self) -> Option<[f64; 2]> {
        crate::metrics::paired_change_interval(
            self.rows as u64,
            self.first.saturating_sub(self.only_first) as u64,
            self.only_first as u64,
            self.only_second as u64,
        )
    }
}

/// Figures of one compared pair: per graph output, or why one of the two
/// models could not run.
#[derive(Debug, Clone)]
pub struct PairFigures {
    /// `Err` holds the error of the first model of the pair that failed.
    pub outputs: std::result::Result<Vec<Metrics>, String>,
    /// Top-1 hits against labels on output 0 (zero rows without labels).
    pub labels: LabelHits,
    /// Per [`PartSplit`] of the evaluator, the figures of each part
    /// (`None` when a batch had no mask, the pair did not run, or its
    /// reference is not the first subject).
    pub parts: Vec<Option<Vec<Metrics>>>,
}

/// The mask of a [`PartSplit`] from the first subject's outputs on one
/// batch (graph outputs, then exposed tensors).
pub type PartMask = dyn Fn(&[ArrayData]) -> Option<Vec<u32>> + Send + Sync;

/// A graph output read by parts as well as whole: per element (row-major),
/// its part (1-based; 0: in no part), from the mask the first subject's
/// run of each batch gives. Which elements form a part is the caller's
/// (quench-compile: the tensors a Concat assembled the output from).
pub struct PartSplit {
    pub output: usize,
    pub parts: usize,
    pub mask: Box<PartMask>,
}

/// Outputs of a model precomputed batch by batch (see
/// [`Evaluator::outputs`]): a reference compared with many candidates runs
/// once.
pub struct Cached(Vec<Vec<ArrayData>>);

impl Cached {
    /// The outputs of each batch, in batch order.
    pub fn batches(&self) -> &[Vec<ArrayData>] {
        &self.0
    }
}

/// A model taking part in [`Evaluator::compare`].
pub enum Subject<'a> {
    /// Runs on every batch; its errors are reported, not fatal.
    Run(&'a Runners),
    /// Runs on every batch; an error fails the whole comparison (the
    /// reference: without it nothing can be compared).
    Required(&'a Runners, &'static str),
    /// Outputs already computed on the same evaluator.
    Cached(&'a Cached),
}

/// The data a comparison runs on, bound to the models' inputs.
pub struct Evaluator<'d> {
    data: &'d Dataset,
    feed: Feed,
    names: Vec<String>,
    ranges: Vec<Range<usize>>,
    parts: Vec<PartSplit>,
}

/// One batch's accumulators of the `parts` parts of an output (`x` the
/// reference, `y` the compared), by `mask`; `None` when the mask does
/// not cover the output element for element.
fn part_update(
    mask: &[u32],
    parts: usize,
    x: &ArrayD<f32>,
    y: &ArrayD<f32>,
) -> Result<Option<Vec<Accumulator>>> {
    if mask.len() != x.len() || x.shape() != y.shape() {
        return Ok(None);
    }
    let mut xs = vec![Vec::new(); parts];
    let mut ys = vec![Vec::new(); parts];
    for ((a, b), &k) in x.iter().zip(y.iter()).zip(mask) {
        if k == 0 || k as usize > parts {
            continue;
        }
        xs[k as usize - 1].push(*a);
        ys[k as usize - 1].push(*b);
    }
    let mut accs = vec![Accumulator::new(); parts];
    for ((acc, a), b) in accs.iter_mut().zip(xs).zip(ys) {
        if a.is_empty() {
            continue;
        }
        let n = a.len();
        let a = ArrayD::from_shape_vec(vec![n], a)?;
        let b = ArrayD::from_shape_vec(vec![n], b)?;
        acc.update(a.view(), b.view())?;
    }
    Ok(Some(accs))
}

impl<'d> Evaluator<'d> {
    /// An evaluator over every sample of `data`, fed as `feed` to models
    /// whose inputs are `input_names` (in order), in batches of at most
    /// [`MAX_BATCH`].
    pub fn new(data: &'d Dataset, feed: Feed, input_names: Vec<String>) -> Evaluator<'d> {
        let ranges = feed.ranges(data.samples(), MAX_BATCH);
        Evaluator {
            data,
            feed,
            names: input_names,
            ranges,
            parts: Vec::new(),
        }
    }

    /// The same evaluator with outputs also read by parts in
    /// [`compare`](Self::compare) (see [`PartSplit`]).
    pub fn with_parts(mut self, parts: Vec<PartSplit>) -> Evaluator<'d> {
        self.parts = parts;
        self
    }

    /// Samples compared.
    pub fn samples(&self) -> usize {
        self.data.samples()
    }

    /// The model input names samples are fed to.
    pub fn input_names(&self) -> &[String] {
        &self.names
    }

    /// Runs `runners` on every batch and keeps the outputs, for
    /// [`Subject::Cached`].
    pub fn outputs(&self, runners: &Runners, what: &str) -> Result<Cached> {
        let mut outs = Vec::with_capacity(self.ranges.len());
        for r in &self.ranges {
            let inputs = self.data.feed(self.feed, r.clone())?;
            outs.push(
                runners
                    .run(&self.names, &inputs)
                    .with_context(|| format!("running {what}"))?,
            );
        }
        Ok(Cached(outs))
    }

    /// Runs `runners` on the first batch: whether it runs on this data.
    pub fn probe(&self, runners: &Runners) -> Result<()> {
        if let Some(first) = self.ranges.first() {
            let inputs = self.data.feed(self.feed, first.clone())?;
            runners.run(&self.names, &inputs)?;
        }
        Ok(())
    }

    /// Compiles the runners of `models` side by side for the first batch's
    /// shapes (their errors, if any, come back from the runs).
    pub fn warm_up(&self, models: &[&Runners]) -> Result<()> {
        let Some(first) = self.ranges.first() else {
            return Ok(());
        };
        let probe = self.data.feed(self.feed, first.clone())?;
        rayon::scope(|s| {
            for r in models {
                let (names, probe) = (&self.names, &probe);
                s.spawn(move |_| {
                    let _ = r.runner(names, probe);
                });
            }
        });
        Ok(())
    }

    /// Runs every subject on every batch and compares the graph outputs
    /// (the first `outputs` of each) of each pair `(a, b)` of subject
    /// indices, `a` as the reference. Batches run in parallel and merge in
    /// batch order.
    pub fn compare(
        &self,
        subjects: &[Subject<'_>],
        pairs: &[(usize, usize)],
        outputs: usize,
    ) -> Result<Vec<PairFigures>> {
        let labels = self.data.extra("labels").and_then(class_labels);
        // Which outputs a batch's samples can be told apart in.
        let leading = subjects
            .iter()
            .find_map(|s| match s {
                Subject::Run(m) | Subject::Required(m, _) => Some(batch_leading_outputs(m.model())),
                Subject::Cached(_) => None,
            })
            .unwrap_or_default();
        struct Batch {
            acc: Vec<Vec<Accumulator>>,
            errors: Vec<Option<String>>,
            labels: Vec<LabelHits>,
            parts: Vec<Vec<Option<Vec<Accumulator>>>>,
        }
        let batches: Vec<Batch> = self
            .ranges
            .par_iter()
            .enumerate()
            .map(|(bi, r)| -> Result<Batch> {
                let inputs = self.data.feed(self.feed, r.clone())?;
                let mut errors = vec![None; subjects.len()];
                let mut runs: Vec<Option<std::borrow::Cow<'_, [ArrayData]>>> =
                    Vec::with_capacity(subjects.len());
                for (i, s) in subjects.iter().enumerate() {
                    runs.push(match s {
                        Subject::Cached(c) => c.0.get(bi).map(|v| v.as_slice().into()),
                        Subject::Required(m, what) => Some(
                            m.run(&self.names, &inputs)
                                .with_context(|| format!("running {what}"))?
                                .into(),
                        ),
                        Subject::Run(m) => match m.run(&self.names, &inputs) {
                            Ok(v) => Some(v.into()),
                            Err(e) => {
                                errors[i] = Some(format!("{e:#}"));
                                None
                            }
                        },
                    });
                }
                let f32s: Vec<Option<Vec<ArrayD<f32>>>> = runs
                    .iter()
                    .map(|o| {
                        o.as_ref()
                            .map(|v| v.iter().take(outputs).map(|a| a.to_f32()).collect())
                    })
                    .collect();
                let mut acc = vec![vec![Accumulator::new(); outputs]; pairs.len()];
                let mut hits = vec![LabelHits::default(); pairs.len()];
                let masks: Vec<Option<Vec<u32>>> = self
                    .parts
                    .iter()
                    .map(|s| runs.first()?.as_ref().and_then(|r| (s.mask)(r)))
                    .collect();
                let mut parts = vec![vec![None; self.parts.len()]; pairs.len()];
                for (p, &(a, b)) in pairs.iter().enumerate() {
                    let (Some(x), Some(y)) = (&f32s[a], &f32s[b]) else {
                        continue;
                    };
                    // Parts against the first subject only (whose run gives
                    // the masks); other pairs' parts would go unread.
                    for (si, s) in self.parts.iter().enumerate().filter(|_| a == 0) {
                        parts[p][si] = match (&masks[si], x.get(s.output), y.get(s.output)) {
                            (Some(m), Some(x), Some(y)) => part_update(m, s.parts, x, y)?,
                            _ => None,
                        };
                    }
                    if x.len() < outputs || y.len() < outputs {
                        bail!(
                            "a model returned {} outputs where {outputs} were expected",
                            x.len().min(y.len())
                        );
                    }
                    // Each sample named by its row in the user's data; a batch
                    // of several only where the output's first axis is the
                    // batch (else that output gets no worst sample).
                    let rows: Vec<usize> = r.clone().map(|i| self.data.source_row(i)).collect();
                    for k in 0..outputs {
                        if rows.len() == 1 || leading.get(k) == Some(&true) {
                            acc[p][k].update_samples(x[k].view(), y[k].view(), &rows)?;
                        } else {
                            acc[p][k].update(x[k].view(), y[k].view())?;
                        }
                    }
                    if outputs > 0 {
                        // Labels that are no classes of this output give no
                        // accuracy (the figures stand without it);
                        // --max-accuracy-drop names the bad label.
                        hits[p] = label_hits(&x[0], &y[0], labels.as_deref(), r.start, r.len())
                            .unwrap_or_default();
                    }
                }
                Ok(Batch {
                    acc,
                    errors,
                    labels: hits,
                    parts,
                })
            })
            .collect::<Result<_>>()?;
        let mut acc = vec![vec![Accumulator::new(); outputs]; pairs.len()];
        let mut errors: Vec<Option<String>> = vec![None; subjects.len()];
        let mut hits = vec![LabelHits::default(); pairs.len()];
        let mut parts: Vec<Vec<Option<Vec<Accumulator>>>> = (0..pairs.len())
            .map(|_| {
                self.parts
                    .iter()
                    .map(|s| Some(vec![Accumulator::new(); s.parts]))
                    .collect()
            })
            .collect();
        for b in &batches {
            for (p, row) in b.parts.iter().enumerate() {
                for (si, got) in row.iter().enumerate() {
                    // A part's figure covers every batch or none.
                    parts[p][si] = match (parts[p][si].take(), got) {
                        (Some(mut all), Some(one)) => {
                            for (x, y) in all.iter_mut().zip(one) {
                                x.merge(y);
                            }
                            Some(all)
                        }
                        _ => None,
                    };
                }
            }
            for (p, row) in b.acc.iter().enumerate() {
                for (k, a) in row.iter().enumerate() {
                    acc[p][k].merge(a);
                }
                hits[p].add(b.labels[p]);
            }
            for (i, e) in b.errors.iter().enumerate() {
                if errors[i].is_none() {
                    errors[i].clone_from(e);
                }
            }
        }
        Ok(pairs
            .iter()
            .enumerate()
            .map(|(p, &(a, b))| PairFigures {
                outputs: match errors[a].as_ref().or(errors[b].as_ref()) {
                    Some(e) => Err(e.clone()),
                    None => Ok(acc[p].iter().map(Accumulator::finish).collect()),
                },
                labels: hits[p],
                parts: parts[p]
                    .iter()
                    .map(|s| {
                        s.as_ref().map(|accs| {
                            accs.iter()
                                .map(|a| Metrics {
                                    // A part is no class scores.
                                    top1: None,
                                    ..a.finish()
                                })
                                .collect()
                        })
                    })
                    .collect(),
            })
            .collect())
    }

    /// Runs `a` and `b` (both with exposed tensors) on the first `samples`
    /// samples, one per run, and compares tensor `a_out[j]` of `a` with
    /// `b_out[j]` of `b` for every `j` (indices into each run's outputs).
    /// `prepare`, when given for `j`, is applied to `b`'s tensor first
    /// (e.g. a clamp the reference applied after it).
    pub fn compare_tensors(
        &self,
        (a, a_out): (&Runners, &[usize]),
        (b, b_out): (&Runners, &[usize]),
        prepare: &[Option<(f32, f32)>],
        samples: usize,
    ) -> Result<Vec<Metrics>> {
        let k = a_out.len().min(b_out.len());
        let mut acc: Vec<Accumulator> = (0..k).map(|_| Accumulator::new()).collect();
        let ranges = self.feed.ranges(self.data.samples().min(samples), 1);
        if let Some(first) = ranges.first() {
            let probe = self.data.feed(self.feed, first.clone())?;
            rayon::join(
                || a.runner(&self.names, &probe).ok(),
                || b.runner(&self.names, &probe).ok(),
            );
        }
        for r in ranges {
            let inputs = self.data.feed(self.feed, r.clone())?;
            let x = a.run(&self.names, &inputs)?;
            let y = b.run(&self.names, &inputs)?;
            for j in 0..k {
                let (Some(xr), Some(yr)) = (x.get(a_out[j]), y.get(b_out[j])) else {
                    bail!("an exposed tensor is missing from a run's outputs");
                };
                let reference = xr.to_f32();
                let mut test = yr.to_f32();
                if let Some(Some((lo, hi))) = prepare.get(j) {
                    test.mapv_inplace(|v| v.max(*lo).min(*hi));
                }
                acc[j].update(reference.view(), test.view())?;
            }
        }
        Ok(acc.iter().map(Accumulator::finish).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2, Array2};

    fn scores(rows: &[[f32; 3]]) -> ArrayD<f32> {
        Array2::from_shape_vec((rows.len(), 3), rows.iter().flatten().copied().collect())
            .unwrap()
            .into_dyn()
    }

    #[test]
    fn labels_count_one_row_per_sample_and_refuse_out_of_range_classes() {
        let r = scores(&[[0.9, 0.0, 0.1], [0.0, 0.2, 0.8]]);
        let t = scores(&[[0.9, 0.0, 0.1], [0.0, 0.9, 0.1]]);
        // Samples 3 and 4 of the labels: classes 0 and 2.
        let l = class_labels(&ArrayData::I64(arr1(&[1, 1, 1, 0, 2]).into_dyn())).unwrap();
        assert_eq!(
            label_hits(&r, &t, Some(&l), 3, 2),
            Ok(LabelHits {
                rows: 2,
                first: 2,
                second: 1,
                only_first: 1,
                only_second: 0
            })
        );
        // int32 and [N, 1] labels are the same labels.
        let l32 = ArrayData::I32(arr2(&[[1], [1], [1], [0], [2]]).into_dyn());
        assert_eq!(class_labels(&l32).unwrap(), l);
        // An output with more rows than the batch has samples (or a
        // single class) is not one row per sample: nothing is counted.
        assert_eq!(label_hits(&r, &t, Some(&l), 3, 1), Ok(LabelHits::default()));
        let one = Array2::<f32>::zeros((2, 1)).into_dyn();
        assert_eq!(
            label_hits(&one, &one, Some(&l), 0, 2),
            Ok(LabelHits::default())
        );
        // A label that is no class of the output is an error naming it.
        let e = label_hits(&r, &t, Some(&[0, 3]), 0, 2).unwrap_err();
        assert!(
            e.contains("label 3 of sample 1") && e.contains("has 3"),
            "{e}"
        );
        assert!(label_hits(&r, &t, Some(&[-1, 0]), 0, 2).is_err());
        // Float labels are no class labels; no labels count nothing.
        let f = ArrayData::F32(arr1(&[0.0f32, 2.0]).into_dyn());
        assert_eq!(class_labels(&f), None);
        assert_eq!(label_hits(&r, &t, None, 0, 2), Ok(LabelHits::default()));
    }
}
