//! [`Dataset`]: named model inputs for many samples.
//!
//! Three layouts load with [`Dataset::load`]:
//!
//! - a directory of `.npy` files, one `<input name>.npy` per model input,
//!   each stored as `[N, ...]` with a leading sample axis (a scalar input is
//!   `[N]`). Other arrays in the directory, such as `labels.npy`, become
//!   *extra arrays* once the dataset is bound to a model;
//! - one `.npz` file with the same keys and layout (a single `.npy` file also
//!   works, named by its stem);
//! - the ONNX test-data layout: a directory of `test_data_set_*/input_*.pb`
//!   (or one such set directory). Each set is one sample whose tensors keep
//!   the shapes they were stored with; `output_*.pb` files are read as
//!   expected outputs. A tensor without a name is matched to the model input
//!   at its index.
//!
//! A *sample* of an input is its stored array with the sample axis removed
//! (for the test-data layout, the stored tensor itself). How samples become
//! model inputs depends on the model, so it is decided when the dataset is
//! bound with [`Dataset::check_against`]:
//!
//! - when the model input has the rank of a sample, samples are fed one at a
//!   time, as they are ([`Feed::Sample`]; e.g. samples `[1,3,224,224]` for a
//!   model input `[1,3,224,224]`);
//! - when the model input has one more axis, that first axis is the model's
//!   batch axis and several samples are stacked along it ([`Feed::Batch`];
//!   e.g. `input.npy` stored `[341,1,8,8]`, samples `[1,8,8]`, model input
//!   `[N,1,8,8]`).
//!
//! Invariant: after a successful `check_against`, the dataset's inputs are
//! exactly the model's inputs in the model's order, all with the same number
//! of samples and the element types the model declares; every other array is
//! an extra array.

use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ndarray::ArrayD;
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpyExt, ReadNpzError};
use prost::Message;
use quench_onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use quench_onnx::proto::type_proto::Value as TypeValue;
use quench_onnx::proto::{ModelProto, TensorProto};

use super::{ArrayData, DataError};

/// What a model declares about one of its inputs: name, ONNX element type
/// code, and shape (`None` for an unknown rank; `None` dims are symbolic or
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInput {
    pub name: String,
    pub elem_type: i32,
    pub shape: Option<Vec<Option<i64>>>,
}

impl ModelInput {
    /// The graph inputs of `model` that are not initializers, in order.
    pub fn from_model(model: &ModelProto) -> Vec<ModelInput> {
        let Some(graph) = &model.graph else {
            return Vec::new();
        };
        let inits: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name()).collect();
        graph
            .input
            .iter()
            .filter(|vi| !inits.contains(vi.name()))
            .map(|vi| {
                let tensor = vi.r#type.as_ref().and_then(|t| match &t.value {
                    Some(TypeValue::TensorType(tt)) => Some(tt),
                    _ => None,
                });
                let elem_type = tensor.map_or(0, |tt| tt.elem_type());
                let shape = tensor.and_then(|tt| tt.shape.as_ref()).map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(DimValue::DimValue(v)) => Some(v),
                            _ => None,
                        })
                        .collect()
                });
                ModelInput {
                    name: vi.name().to_string(),
                    elem_type,
                    shape,
                }
            })
            .collect()
    }
}

/// How a bound dataset's samples become model inputs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// One sample per run, fed as stored ([`Dataset::sample`]).
    Sample,
    /// Samples stacked along the model's batch axis
    /// ([`Dataset::sample_batch`]); `fixed` is the batch size when the model
    /// fixes it.
    Batch { fixed: Option<usize> },
}

impl Feed {
    /// Splits `0..samples` into the runs this feed allows: single samples,
    /// chunks of the fixed batch size, or chunks of at most `max_batch`.
    pub fn ranges(self, samples: usize, max_batch: usize) -> Vec<Range<usize>> {
        let step = match self {
            Feed::Sample => 1,
            Feed::Batch { fixed: Some(b) } => b.max(1),
            Feed::Batch { fixed: None } => max_batch.max(1),
        };
        (0..samples)
            .step_by(step)
            .map(|s| s..(s + step).min(samples))
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Stored {
    /// One array `[N, ...sample shape]`.
    Stacked(ArrayData),
    /// One array per sample (ONNX test-data sets).
    PerSample(Vec<ArrayData>),
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// Position of an unnamed tensor in the ONNX test-data layout
    /// (`input_<index>.pb`); matched to the model input at that index.
    index: Option<usize>,
    data: Stored,
}

impl Column {
    fn count(&self) -> usize {
        match &self.data {
            Stored::Stacked(a) => a.shape().first().copied().unwrap_or(0),
            Stored::PerSample(v) => v.len(),
        }
    }

    fn sample(&self, i: usize) -> Option<ArrayData> {
        match &self.data {
            Stored::Stacked(a) => a.index_axis0(i),
            Stored::PerSample(v) => v.get(i).cloned(),
        }
    }

    fn batch(&self, range: Range<usize>) -> Result<ArrayData, String> {
        match &self.data {
            Stored::Stacked(a) => a
                .slice_axis0(range.clone())
                .ok_or_else(|| format!("samples {range:?} out of range")),
            Stored::PerSample(v) => {
                let parts: Vec<&ArrayData> = v
                    .get(range.clone())
                    .ok_or_else(|| format!("samples {range:?} out of range"))?
                    .iter()
                    .collect();
                ArrayData::stack(&parts)
            }
        }
    }

    /// Samples `0..at` and `at..`.
    fn split(self, at: usize) -> (Column, Column) {
        let n = self.count();
        let at = at.min(n);
        let (a, b) = match self.data {
            Stored::Stacked(arr) => {
                match (arr.slice_axis0(0..at), arr.slice_axis0(at..n)) {
                    (Some(a), Some(b)) => (Stored::Stacked(a), Stored::Stacked(b)),
                    // A rank-0 array has no sample axis: both halves keep it.
                    _ => (Stored::Stacked(arr.clone()), Stored::Stacked(arr)),
                }
            }
            Stored::PerSample(mut v) => {
                let tail = v.split_off(at);
                (Stored::PerSample(v), Stored::PerSample(tail))
            }
        };
        (
            Column {
                name: self.name.clone(),
                index: self.index,
                data: a,
            },
            Column {
                name: self.name,
                index: self.index,
                data: b,
            },
        )
    }
}

/// Named model inputs for many samples, plus extra arrays (such as labels)
/// and, for the ONNX test-data layout, expected outputs.
#[derive(Debug, Clone)]
pub struct Dataset {
    source: PathBuf,
    inputs: Vec<Column>,
    extras: Vec<(String, ArrayData)>,
    expected: Vec<Column>,
}

impl Dataset {
    /// Loads a dataset from a `.npy` directory, an `.npz` (or `.npy`) file,
    /// or an ONNX test-data directory (see the module docs). Until
    /// [`check_against`](Self::check_against) binds it to a model, every
    /// array read counts as an input.
    pub fn load(path: &Path) -> Result<Dataset, DataError> {
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mut ds = Dataset {
            source: path.to_path_buf(),
            inputs: Vec::new(),
            extras: Vec::new(),
            expected: Vec::new(),
        };
        if meta.is_file() {
            let is_npy = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
            if is_npy {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let a = read_npy_file(path, &name)?;
                ds.inputs.push(Column {
                    name,
                    index: None,
                    data: Stored::Stacked(a),
                });
            } else {
                for (name, a) in read_npz(path)? {
                    ds.inputs.push(Column {
                        name,
                        index: None,
                        data: Stored::Stacked(a),
                    });
                }
            }
            return Ok(ds);
        }
        let mut set_dirs = Vec::new();
        let mut npy_files = Vec::new();
        let mut has_pb = false;
        for entry in fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let p = entry.path();
            let fname = entry.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if let Some(k) = fname
                    .strip_prefix("test_data_set_")
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    set_dirs.push((k, p));
                }
            } else if fname.ends_with(".npy") {
                npy_files.push(p);
            } else if pb_index(&fname, "input_").is_some() {
                has_pb = true;
            }
        }
        if !set_dirs.is_empty() || has_pb {
            set_dirs.sort();
            let dirs: Vec<PathBuf> = if set_dirs.is_empty() {
                vec![path.to_path_buf()]
            } else {
                set_dirs.into_iter().map(|(_, p)| p).collect()
            };
            ds.load_sets(&dirs)?;
        } else if !npy_files.is_empty() {
            npy_files.sort();
            for p in npy_files {
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let a = read_npy_file(&p, &name)?;
                ds.inputs.push(Column {
                    name,
                    index: None,
                    data: Stored::Stacked(a),
                });
            }
        } else {
            return Err(DataError::NoData {
                path: path.to_path_buf(),
            });
        }
        Ok(ds)
    }

    fn load_sets(&mut self, dirs: &[PathBuf]) -> Result<(), DataError> {
        let mut inputs: Vec<Column> = Vec::new();
        let mut outputs: Vec<Column> = Vec::new();
        for (set_ix, dir) in dirs.iter().enumerate() {
            let io = |source| DataError::Io {
                path: dir.clone(),
                source,
            };
            let mut ins = Vec::new();
            let mut outs = Vec::new();
            for entry in fs::read_dir(dir).map_err(io)? {
                let entry = entry.map_err(io)?;
                let fname = entry.file_name().to_string_lossy().into_owned();
                if let Some(k) = pb_index(&fname, "input_") {
                    ins.push((k, entry.path()));
                } else if let Some(k) = pb_index(&fname, "output_") {
                    outs.push((k, entry.path()));
                }
            }
            ins.sort();
            outs.sort();
            for (files, columns, prefix) in
                [(ins, &mut inputs, "input"), (outs, &mut outputs, "output")]
            {
                if set_ix > 0 && files.len() != columns.len() {
                    return Err(DataError::Layout {
                        path: dir.clone(),
                        reason: format!(
                            "has {} {prefix} files, the first set has {}",
                            files.len(),
                            columns.len()
                        ),
                    });
                }
                for (pos, (k, file)) in files.into_iter().enumerate() {
                    let (name, a) = read_pb(&file)?;
                    if set_ix == 0 {
                        let (name, index) = match name {
                            Some(n) => (n, None),
                            None => (format!("{prefix}_{k}"), Some(pos)),
                        };
                        columns.push(Column {
                            name,
                            index,
                            data: Stored::PerSample(vec![a]),
                        });
                    } else if let Some(Column {
                        data: Stored::PerSample(v),
                        ..
                    }) = columns.get_mut(pos)
                    {
                        v.push(a);
                    }
                }
            }
        }
        self.inputs = inputs;
        self.expected = outputs;
        Ok(())
    }

    /// Where the dataset was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Number of samples (of the first input; all inputs agree once bound).
    pub fn samples(&self) -> usize {
        self.inputs.first().map_or(0, Column::count)
    }

    /// Input names, in model order once bound.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|c| c.name.as_str()).collect()
    }

    /// Arrays that are not model inputs (e.g. `labels`), whole.
    pub fn extras(&self) -> &[(String, ArrayData)] {
        &self.extras
    }

    /// The extra array called `name`.
    pub fn extra(&self, name: &str) -> Option<&ArrayData> {
        self.extras.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// Sample `i` of every input, the sample axis removed.
    pub fn sample(&self, i: usize) -> Result<Vec<(String, ArrayData)>, DataError> {
        self.inputs
            .iter()
            .map(|c| {
                c.sample(i)
                    .map(|a| (c.name.clone(), a))
                    .ok_or(DataError::OutOfRange {
                        path: self.source.clone(),
                        index: i,
                        count: c.count(),
                    })
            })
            .collect()
    }

    /// Samples `range` of every input, stacked along a new leading axis (for
    /// `.npy`/`.npz` data, the stored rows `range`).
    pub fn sample_batch(&self, range: Range<usize>) -> Result<Vec<(String, ArrayData)>, DataError> {
        self.inputs
            .iter()
            .map(|c| {
                c.batch(range.clone())
                    .map(|a| (c.name.clone(), a))
                    .map_err(|reason| DataError::ShapeMismatch {
                        path: self.source.clone(),
                        name: c.name.clone(),
                        reason: format!("cannot batch samples {range:?}: {reason}"),
                    })
            })
            .collect()
    }

    /// Model-ready input values for the samples `range` (one sample for
    /// [`Feed::Sample`]), in input order.
    pub fn feed(&self, feed: Feed, range: Range<usize>) -> Result<Vec<ArrayData>, DataError> {
        let named = match feed {
            Feed::Sample if range.len() == 1 => self.sample(range.start)?,
            Feed::Sample => {
                return Err(DataError::Layout {
                    path: self.source.clone(),
                    reason: format!("samples are fed one at a time, not as the batch {range:?}"),
                })
            }
            Feed::Batch { .. } => self.sample_batch(range)?,
        };
        Ok(named.into_iter().map(|(_, a)| a).collect())
    }

    /// Expected outputs of sample `i` (ONNX test-data layout only).
    pub fn expected_outputs(&self, i: usize) -> Option<Vec<(String, ArrayData)>> {
        if self.expected.is_empty() {
            return None;
        }
        self.expected
            .iter()
            .map(|c| c.sample(i).map(|a| (c.name.clone(), a)))
            .collect()
    }

    /// Splits off the samples from `at` on (for evaluation), keeping
    /// `0..at` in the first dataset. Extra arrays with one row per sample are
    /// split alike; others are copied to both.
    pub fn split(self, at: usize) -> (Dataset, Dataset) {
        let n = self.samples();
        let at = at.min(n);
        let mut first = Dataset {
            source: self.source.clone(),
            inputs: Vec::new(),
            extras: Vec::new(),
            expected: Vec::new(),
        };
        let mut second = first.clone();
        for c in self.inputs {
            let (a, b) = c.split(at);
            first.inputs.push(a);
            second.inputs.push(b);
        }
        for c in self.expected {
            let (a, b) = c.split(at);
            first.expected.push(a);
            second.expected.push(b);
        }
        for (name, arr) in self.extras {
            match (arr.shape().first() == Some(&n))
                .then(|| (arr.slice_axis0(0..at), arr.slice_axis0(at..n)))
            {
                Some((Some(a), Some(b))) => {
                    first.extras.push((name.clone(), a));
                    second.extras.push((name, b));
                }
                _ => {
                    first.extras.push((name.clone(), arr.clone()));
                    second.extras.push((name, arr));
                }
            }
        }
        (first, second)
    }

    /// Binds the dataset to a model: picks the arrays named like
    /// `model_inputs` (in that order; unnamed test-data tensors by index),
    /// moves every other array to the extras, and checks element types,
    /// shapes and sample counts. On error the dataset is unchanged.
    pub fn check_against(&mut self, model_inputs: &[ModelInput]) -> Result<Feed, DataError> {
        let path = &self.source;
        // Candidates: current inputs, then extras (a dataset can be re-bound).
        let mut names: Vec<(&str, Option<usize>)> = self
            .inputs
            .iter()
            .map(|c| (c.name.as_str(), c.index))
            .collect();
        names.extend(self.extras.iter().map(|(n, _)| (n.as_str(), None)));
        let mut picked: Vec<usize> = Vec::with_capacity(model_inputs.len());
        let mut missing = Vec::new();
        for (j, mi) in model_inputs.iter().enumerate() {
            let by_name = names.iter().position(|(n, _)| *n == mi.name);
            let by_index = || {
                names.iter().position(|(n, ix)| {
                    *ix == Some(j) && !model_inputs.iter().any(|m| m.name == *n)
                })
            };
            match by_name.or_else(by_index) {
                Some(p) if !picked.contains(&p) => picked.push(p),
                _ => missing.push(mi.name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(DataError::MissingInput {
                path: path.clone(),
                missing,
                available: names.iter().map(|(n, _)| n.to_string()).collect(),
            });
        }
        for (p, c) in self.inputs.iter().enumerate() {
            if matches!(c.data, Stored::PerSample(_)) && !picked.contains(&p) {
                return Err(DataError::Layout {
                    path: path.clone(),
                    reason: format!(
                        "the test data has input `{}`, which the model does not take",
                        c.name
                    ),
                });
            }
        }

        let n_inputs = self.inputs.len();
        // Validation works on references; columns are moved only at the end.
        let refs: Vec<ColumnRef<'_>> = picked
            .iter()
            .map(|&p| {
                if p < n_inputs {
                    ColumnRef::Col(&self.inputs[p])
                } else {
                    ColumnRef::Extra(&self.extras[p - n_inputs].1)
                }
            })
            .collect();
        let mut feed: Option<(Feed, &str)> = None;
        let mut first_count: Option<(usize, &str)> = None;
        for (mi, c) in model_inputs.iter().zip(&refs) {
            let name = mi.name.as_str();
            for a in c.arrays() {
                if a.elem_type() != mi.elem_type {
                    return Err(DataError::DtypeMismatch {
                        path: path.clone(),
                        name: name.to_string(),
                        expected: quench_onnx::dtype::elem_name(mi.elem_type),
                        found: a.dtype_name().to_string(),
                    });
                }
            }
            let count = c.count();
            match first_count {
                None => first_count = Some((count, name)),
                Some((fc, first)) if fc != count => {
                    return Err(DataError::SampleCount {
                        path: path.clone(),
                        name: name.to_string(),
                        count,
                        first: first.to_string(),
                        first_count: fc,
                    })
                }
                Some(_) => {}
            }
            let this = input_feed(mi, c).map_err(|reason| DataError::ShapeMismatch {
                path: path.clone(),
                name: name.to_string(),
                reason,
            })?;
            if let Some(this) = this {
                match feed {
                    None => feed = Some((this, name)),
                    Some((f, other)) if f != this => {
                        return Err(DataError::ShapeMismatch {
                            path: path.clone(),
                            name: name.to_string(),
                            reason: format!(
                                "{} but input `{other}` {}; all inputs must be fed alike",
                                describe(this),
                                describe(f)
                            ),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        let feed = feed.map_or(Feed::Sample, |(f, _)| f);
        if let (Feed::Batch { fixed: Some(b) }, Some((count, name))) = (feed, first_count) {
            if b > 1 && count % b != 0 {
                return Err(DataError::ShapeMismatch {
                    path: path.clone(),
                    name: name.to_string(),
                    reason: format!("the model takes batches of exactly {b}, which do not divide the {count} samples"),
                });
            }
        }

        // Apply: picked columns in model order, everything else to extras.
        // Columns are moved, not copied: datasets can be large.
        let mut slots: Vec<Option<Column>> = std::mem::take(&mut self.inputs)
            .into_iter()
            .map(Some)
            .collect();
        slots.extend(
            std::mem::take(&mut self.extras)
                .into_iter()
                .map(|(name, a)| {
                    Some(Column {
                        name,
                        index: None,
                        data: Stored::Stacked(a),
                    })
                }),
        );
        let mut inputs = Vec::with_capacity(picked.len());
        for (&p, mi) in picked.iter().zip(model_inputs) {
            if let Some(mut c) = slots.get_mut(p).and_then(Option::take) {
                c.name = mi.name.clone();
                inputs.push(c);
            }
        }
        self.inputs = inputs;
        // Test-data columns left over were refused above; the rest are arrays.
        self.extras = slots
            .into_iter()
            .flatten()
            .filter_map(|c| match c.data {
                Stored::Stacked(a) => Some((c.name, a)),
                Stored::PerSample(_) => None,
            })
            .collect();
        Ok(feed)
    }
}

/// A candidate input during [`Dataset::check_against`].
enum ColumnRef<'a> {
    Col(&'a Column),
    Extra(&'a ArrayData),
}

impl ColumnRef<'_> {
    fn arrays(&self) -> Vec<&ArrayData> {
        match self {
            ColumnRef::Col(Column {
                data: Stored::Stacked(a),
                ..
            })
            | &ColumnRef::Extra(a) => vec![a],
            ColumnRef::Col(Column {
                data: Stored::PerSample(v),
                ..
            }) => v.iter().collect(),
        }
    }

    fn count(&self) -> usize {
        match self {
            ColumnRef::Col(c) => c.count(),
            ColumnRef::Extra(a) => a.shape().first().copied().unwrap_or(0),
        }
    }

    /// Per-sample shapes, and the stored shape for messages.
    fn sample_shapes(&self) -> Result<(Vec<Vec<usize>>, String), String> {
        match self {
            ColumnRef::Col(Column {
                data: Stored::Stacked(a),
                ..
            })
            | &ColumnRef::Extra(a) => {
                if a.shape().is_empty() {
                    return Err("the stored array is a scalar; it needs a leading sample axis ([N] for a scalar input)".into());
                }
                Ok((
                    vec![a.shape()[1..].to_vec()],
                    format!("stored as {}", show_shape(a.shape())),
                ))
            }
            ColumnRef::Col(Column {
                data: Stored::PerSample(v),
                ..
            }) => {
                let mut shapes: Vec<Vec<usize>> = v.iter().map(|a| a.shape().to_vec()).collect();
                shapes.dedup();
                Ok((shapes, "from test data".into()))
            }
        }
    }
}

/// Whether `dims` (a model shape) accepts `shape`: same rank, and every fixed
/// positive dimension equal.
fn dims_accept(dims: &[Option<i64>], shape: &[usize]) -> bool {
    dims.len() == shape.len()
        && dims.iter().zip(shape).all(|(d, &s)| match d {
            Some(v) if *v > 0 => *v as usize == s,
            _ => true,
        })
}

fn describe(feed: Feed) -> String {
    match feed {
        Feed::Sample => "takes one sample per run".into(),
        Feed::Batch { fixed: None } => "takes samples stacked on a batch axis".into(),
        Feed::Batch { fixed: Some(b) } => format!("takes batches of exactly {b} samples"),
    }
}

fn show_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn show_dims(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| {
            d.filter(|v| *v > 0)
                .map_or("?".to_string(), |v| v.to_string())
        })
        .collect();
    format!("[{}]", parts.join(","))
}

/// How one input is fed, from the model's declared shape; `None` when the
/// model does not declare a shape.
fn input_feed(mi: &ModelInput, c: &ColumnRef<'_>) -> Result<Option<Feed>, String> {
    let (shapes, stored) = c.sample_shapes()?;
    let Some(dims) = &mi.shape else {
        return Ok(None);
    };
    let Some(first) = shapes.first() else {
        return Ok(None);
    };
    let rank = first.len();
    if dims.len() == rank {
        for s in &shapes {
            if !dims_accept(dims, s) {
                return Err(format!(
                    "the model takes {}, a sample is {} ({stored})",
                    show_dims(dims),
                    show_shape(s)
                ));
            }
        }
        Ok(Some(Feed::Sample))
    } else if dims.len() == rank + 1 {
        if shapes.len() > 1 {
            return Err(format!(
                "samples differ in shape ({} and {}) and cannot be batched for the model's {}",
                show_shape(&shapes[0]),
                show_shape(&shapes[1]),
                show_dims(dims)
            ));
        }
        if !dims_accept(&dims[1..], first) {
            return Err(format!(
                "the model takes {} (first axis = batch), a sample is {} ({stored})",
                show_dims(dims),
                show_shape(first)
            ));
        }
        let fixed = dims[0].filter(|v| *v > 0).map(|v| v as usize);
        Ok(Some(Feed::Batch { fixed }))
    } else {
        Err(format!(
            "the model takes {} (rank {}), a sample is {} ({stored}); store [N, ...input shape], or [N, ...] with N as the model's batch axis",
            show_dims(dims),
            dims.len(),
            show_shape(first)
        ))
    }
}

/// `input_3.pb` -> 3 for prefix `input_`.
fn pb_index(fname: &str, prefix: &str) -> Option<usize> {
    fname
        .strip_prefix(prefix)?
        .strip_suffix(".pb")?
        .parse()
        .ok()
}

/// Reads a TensorProto file: its name (if any) and value.
fn read_pb(path: &Path) -> Result<(Option<String>, ArrayData), DataError> {
    let bytes = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let t = TensorProto::decode(Bytes::from(bytes)).map_err(|source| DataError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    let a = ArrayData::from_tensor_proto(&t).map_err(|e| match e {
        DataError::Tensor { name, reason } => DataError::Layout {
            path: path.to_path_buf(),
            reason: format!("tensor `{name}`: {reason}"),
        },
        other => other,
    })?;
    let name = Some(t.name().to_string()).filter(|n| !n.is_empty());
    Ok((name, a))
}

/// Element types an `.npy` file may hold, tried in this order.
#[derive(Debug, Clone, Copy)]
enum NpyKind {
    F32,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

const NPY_KINDS: [NpyKind; 7] = [
    NpyKind::F32,
    NpyKind::F64,
    NpyKind::I64,
    NpyKind::I32,
    NpyKind::I8,
    NpyKind::U8,
    NpyKind::Bool,
];

/// Runs `$read` with `$t` bound to the Rust element type of `$kind` and
/// converts the array it returns to [`ArrayData`].
macro_rules! read_as {
    ($kind:expr, $t:ident => $read:expr) => {
        match $kind {
            NpyKind::F32 => {
                type $t = f32;
                $read.map(ArrayData::from)
            }
            NpyKind::F64 => {
                type $t = f64;
                $read.map(ArrayData::from)
            }
            NpyKind::I64 => {
                type $t = i64;
                $read.map(ArrayData::from)
            }
            NpyKind::I32 => {
                type $t = i32;
                $read.map(ArrayData::from)
            }
            NpyKind::I8 => {
                type $t = i8;
                $read.map(ArrayData::from)
            }
            NpyKind::U8 => {
                type $t = u8;
                $read.map(ArrayData::from)
            }
            NpyKind::Bool => {
                type $t = bool;
                $read.map(ArrayData::from)
            }
        }
    };
}

/// Reads an array of whichever supported element type it holds: `read` is
/// called per type until the descriptor matches. The inner error is the
/// descriptor of an unsupported type.
fn read_any<E>(
    mut read: impl FnMut(NpyKind) -> Result<ArrayData, E>,
    wrong_descriptor: impl Fn(&E) -> Option<String>,
) -> Result<Result<ArrayData, String>, E> {
    let mut descriptor = String::new();
    for kind in NPY_KINDS {
        match read(kind) {
            Ok(a) => return Ok(Ok(a.into_standard_layout())),
            Err(e) => match wrong_descriptor(&e) {
                Some(d) => descriptor = d,
                None => return Err(e),
            },
        }
    }
    Ok(Err(descriptor))
}

fn read_npy_file(path: &Path, name: &str) -> Result<ArrayData, DataError> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let b = bytes.as_slice();
    read_any(
        |kind| read_as!(kind, T => ArrayD::<T>::read_npy(b)),
        |e| match e {
            ReadNpyError::WrongDescriptor(d) => Some(d.to_string()),
            _ => None,
        },
    )
    .map_err(|source| DataError::Npy {
        path: path.to_path_buf(),
        source,
    })?
    .map_err(|dtype| DataError::UnsupportedNpyType {
        path: path.to_path_buf(),
        name: name.to_string(),
        dtype,
    })
}

fn read_npz(path: &Path) -> Result<Vec<(String, ArrayData)>, DataError> {
    let npz_err = |source| DataError::Npz {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut npz = NpzReader::new(std::io::BufReader::new(file)).map_err(npz_err)?;
    let mut names = npz.names().map_err(npz_err)?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let a = read_any(
            |kind| read_as!(kind, T => npz.by_name::<ndarray::OwnedRepr<T>, ndarray::IxDyn>(&name)),
            |e| match e {
                ReadNpzError::Npy(ReadNpyError::WrongDescriptor(d)) => Some(d.to_string()),
                _ => None,
            },
        )
        .map_err(npz_err)?
        .map_err(|dtype| DataError::UnsupportedNpyType {
            path: path.to_path_buf(),
            name: name.clone(),
            dtype,
        })?;
        out.push((name, a));
    }
    Ok(out)
}
