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
//!   expected outputs when quench can read every one of them (otherwise the
//!   dataset has none: calibration does not need them). A `SequenceProto`
//!   input file is an error that says so. A tensor without a name is matched to the model input
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
//! Inputs are read from disk batch by batch, so memory does not grow with
//! the number of samples: loading reads only `.npy` headers (and checks each
//! file holds the data its header declares) and, for the test-data layout,
//! each tensor file once to learn its element type and shape; a batch then
//! reads just its rows or files (see [`super::npy`]). Two cases are loaded
//! whole: compressed `.npz` files (`np.savez_compressed`) and Fortran-order
//! `.npy` arrays. Extra arrays and expected outputs are held in memory.
//!
//! Invariant: after a successful `check_against`, the dataset's inputs are
//! exactly the model's inputs in the model's order, all with the same number
//! of samples and the element types the model declares; every other array is
//! an extra array.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use quench_onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use quench_onnx::proto::type_proto::Value as TypeValue;
use quench_onnx::proto::{ModelProto, TensorProto};

use super::npy::{open_npy, open_npz, NpyRows, Opened};
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
    /// One array `[N, ...sample shape]` in memory.
    Stacked(ArrayData),
    /// One array `[N, ...sample shape]` on disk, read by rows.
    Rows(NpyRows),
    /// One tensor file per sample (ONNX test-data inputs), read on request.
    Files(Vec<TensorFile>),
    /// One array per sample in memory (ONNX test-data expected outputs).
    PerSample(Vec<ArrayData>),
    /// Some samples of another storage, in this order (a held-back split
    /// chosen at random): nothing is read until a sample is asked for.
    Picked(Box<Stored>, Vec<usize>),
}

impl From<Opened> for Stored {
    fn from(o: Opened) -> Stored {
        match o {
            Opened::Rows(r) => Stored::Rows(r),
            Opened::Whole(a) => Stored::Stacked(a),
        }
    }
}

/// A TensorProto file of the test-data layout: its element type and shape
/// were read at load time, its value is read again when requested.
#[derive(Debug, Clone)]
struct TensorFile {
    path: PathBuf,
    elem_type: i32,
    dtype: &'static str,
    shape: Vec<usize>,
}

impl TensorFile {
    fn new(path: PathBuf, value: &ArrayData) -> TensorFile {
        TensorFile {
            path,
            elem_type: value.elem_type(),
            dtype: value.dtype_name(),
            shape: value.shape().to_vec(),
        }
    }

    /// The value, which must still have the element type and shape it had
    /// at load time.
    fn read(&self) -> Result<ArrayData, DataError> {
        let (_, a) = read_pb(&self.path)?;
        if a.elem_type() != self.elem_type || a.shape() != self.shape {
            return Err(DataError::Layout {
                path: self.path.clone(),
                reason: format!(
                    "changed since the dataset was loaded: it held {} {}, it now holds {} {}",
                    self.dtype,
                    show_shape(&self.shape),
                    a.dtype_name(),
                    show_shape(a.shape())
                ),
            });
        }
        Ok(a)
    }
}

/// Sample `i` of `data`, or `None` when out of range.
fn stored_sample(data: &Stored, i: usize) -> Result<Option<ArrayData>, DataError> {
    match data {
        Stored::Stacked(a) => Ok(a.index_axis0(i)),
        Stored::Rows(r) => (i < r.count()).then(|| r.row(i)).transpose(),
        Stored::Files(v) => v.get(i).map(TensorFile::read).transpose(),
        Stored::PerSample(v) => Ok(v.get(i).cloned()),
        Stored::Picked(base, rows) => match rows.get(i) {
            Some(&r) => stored_sample(base, r),
            None => Ok(None),
        },
    }
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
            Stored::Rows(r) => r.count(),
            Stored::Files(v) => v.len(),
            Stored::PerSample(v) => v.len(),
            Stored::Picked(_, rows) => rows.len(),
        }
    }

    /// Sample `i`, or `None` when out of range.
    fn sample(&self, i: usize) -> Result<Option<ArrayData>, DataError> {
        stored_sample(&self.data, i)
    }

    /// Samples `range` stacked; a range out of bounds or samples that do
    /// not stack are a shape mismatch of the dataset at `source`.
    fn batch(&self, range: Range<usize>, source: &Path) -> Result<ArrayData, DataError> {
        let mismatch = |reason: String| DataError::ShapeMismatch {
            path: source.to_path_buf(),
            name: self.name.clone(),
            reason: format!("cannot batch samples {range:?}: {reason}"),
        };
        let out_of_range = || mismatch(format!("samples {range:?} out of range"));
        match &self.data {
            Stored::Stacked(a) => a.slice_axis0(range.clone()).ok_or_else(out_of_range),
            Stored::Rows(r) => {
                if r.shape().is_empty() || range.start > range.end || range.end > r.count() {
                    return Err(out_of_range());
                }
                r.rows(range.clone())
            }
            Stored::Files(v) => {
                let parts = v
                    .get(range.clone())
                    .ok_or_else(out_of_range)?
                    .iter()
                    .map(TensorFile::read)
                    .collect::<Result<Vec<_>, _>>()?;
                ArrayData::stack(&parts.iter().collect::<Vec<_>>()).map_err(mismatch)
            }
            Stored::PerSample(v) => {
                let parts: Vec<&ArrayData> = v
                    .get(range.clone())
                    .ok_or_else(out_of_range)?
                    .iter()
                    .collect();
                ArrayData::stack(&parts).map_err(mismatch)
            }
            Stored::Picked(base, rows) => {
                let parts = rows
                    .get(range.clone())
                    .ok_or_else(out_of_range)?
                    .iter()
                    .map(|&r| stored_sample(base, r)?.ok_or_else(out_of_range))
                    .collect::<Result<Vec<_>, _>>()?;
                ArrayData::stack(&parts.iter().collect::<Vec<_>>()).map_err(mismatch)
            }
        }
    }

    /// Samples `rows` of this column, in that order, read lazily.
    fn pick(&self, rows: &[usize]) -> Column {
        let data = match &self.data {
            Stored::Picked(base, inner) => Stored::Picked(
                base.clone(),
                rows.iter().filter_map(|&r| inner.get(r).copied()).collect(),
            ),
            d => Stored::Picked(Box::new(d.clone()), rows.to_vec()),
        };
        Column {
            name: self.name.clone(),
            index: self.index,
            data,
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
            Stored::Rows(r) => {
                let (a, b) = r.split(at);
                (Stored::Rows(a), Stored::Rows(b))
            }
            Stored::Files(mut v) => {
                let tail = v.split_off(at);
                (Stored::Files(v), Stored::Files(tail))
            }
            Stored::PerSample(mut v) => {
                let tail = v.split_off(at);
                (Stored::PerSample(v), Stored::PerSample(tail))
            }
            Stored::Picked(base, mut rows) => {
                let tail = rows.split_off(at);
                (
                    Stored::Picked(base.clone(), rows),
                    Stored::Picked(base, tail),
                )
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
    /// Row in the loaded data of each sample, when a split or pick made
    /// them differ (`None`: sample `i` is row `i`).
    rows: Option<Vec<usize>>,
}

impl Dataset {
    /// Loads a dataset from a `.npy` directory, an `.npz` (or `.npy`) file,
    /// or an ONNX test-data directory (see the module docs). Inputs stay on
    /// disk: this reads `.npy` headers and tensor files' element types and
    /// shapes, and each batch reads its own samples later. Until
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
            rows: None,
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
                let data = open_npy(path, &name)?.into();
                ds.inputs.push(Column {
                    name,
                    index: None,
                    data,
                });
            } else {
                for (name, opened) in open_npz(path)? {
                    ds.inputs.push(Column {
                        name,
                        index: None,
                        data: opened.into(),
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
                let data = open_npy(&p, &name)?.into();
                ds.inputs.push(Column {
                    name,
                    index: None,
                    data,
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
        // Expected outputs are optional (calibration does not use them): a
        // dataset with an output file quench cannot read (a type it does
        // not hold, a sequence) has none, and its inputs still load.
        let mut outputs_readable = true;
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
                if prefix == "output" && !outputs_readable {
                    continue;
                }
                if prefix == "output" && set_ix > 0 && files.len() != columns.len() {
                    outputs_readable = false;
                    columns.clear();
                    continue;
                }
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
                    // Inputs keep only the file (and what it holds) and are
                    // read again per batch; expected outputs stay loaded.
                    let (name, a) = match read_pb(&file) {
                        Ok(r) => r,
                        Err(_) if prefix == "output" => {
                            outputs_readable = false;
                            columns.clear();
                            break;
                        }
                        Err(e) => return Err(e),
                    };
                    if set_ix == 0 {
                        let (name, index) = match name {
                            Some(n) => (n, None),
                            None => (format!("{prefix}_{k}"), Some(pos)),
                        };
                        let data = if prefix == "input" {
                            Stored::Files(vec![TensorFile::new(file, &a)])
                        } else {
                            Stored::PerSample(vec![a])
                        };
                        columns.push(Column { name, index, data });
                    } else {
                        match columns.get_mut(pos).map(|c| &mut c.data) {
                            Some(Stored::Files(v)) => v.push(TensorFile::new(file, &a)),
                            Some(Stored::PerSample(v)) => v.push(a),
                            _ => {}
                        }
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

    /// The row of sample `i` in the data as loaded (before any
    /// [`split`](Self::split) or [`pick`](Self::pick)): what a user finds
    /// in their file.
    pub fn source_row(&self, i: usize) -> usize {
        self.rows
            .as_ref()
            .and_then(|r| r.get(i).copied())
            .unwrap_or(i)
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
                c.sample(i)?
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
                c.batch(range.clone(), &self.source)
                    .map(|a| (c.name.clone(), a))
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
        // Expected outputs are held in memory: reading them cannot fail.
        self.expected
            .iter()
            .map(|c| c.sample(i).ok().flatten().map(|a| (c.name.clone(), a)))
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
            rows: Some((0..at).map(|i| self.source_row(i)).collect()),
        };
        let mut second = first.clone();
        second.rows = Some((at..n).map(|i| self.source_row(i)).collect());
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

    /// The samples `rows` (in that order), read lazily from this dataset's
    /// storage. Extra arrays with one row per sample are picked alike;
    /// others are kept whole. Rows out of range are skipped.
    pub fn pick(&self, rows: &[usize]) -> Dataset {
        let n = self.samples();
        let rows: Vec<usize> = rows.iter().copied().filter(|&r| r < n).collect();
        let extras = self
            .extras
            .iter()
            .map(|(name, arr)| {
                let picked = (arr.shape().first() == Some(&n))
                    .then(|| {
                        let parts: Option<Vec<ArrayData>> =
                            rows.iter().map(|&r| arr.index_axis0(r)).collect();
                        let parts = parts?;
                        ArrayData::stack(&parts.iter().collect::<Vec<_>>()).ok()
                    })
                    .flatten();
                (name.clone(), picked.unwrap_or_else(|| arr.clone()))
            })
            .collect();
        Dataset {
            source: self.source.clone(),
            rows: Some(rows.iter().map(|&r| self.source_row(r)).collect()),
            inputs: self.inputs.iter().map(|c| c.pick(&rows)).collect(),
            extras,
            expected: self.expected.iter().map(|c| c.pick(&rows)).collect(),
        }
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
            if matches!(c.data, Stored::Files(_) | Stored::PerSample(_)) && !picked.contains(&p) {
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
                    ColumnRef::of_column(&self.inputs[p])
                } else {
                    ColumnRef::of_array(&self.extras[p - n_inputs].1)
                }
            })
            .collect();
        let mut feed: Option<(Feed, &str)> = None;
        let mut first_count: Option<(usize, &str)> = None;
        for (mi, c) in model_inputs.iter().zip(&refs) {
            let name = mi.name.as_str();
            for (elem_type, dtype) in c.dtypes() {
                if elem_type != mi.elem_type {
                    return Err(DataError::DtypeMismatch {
                        path: path.clone(),
                        name: name.to_string(),
                        expected: quench_onnx::dtype::elem_name(mi.elem_type),
                        found: dtype.to_string(),
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

        // Arrays left on disk that become extras are read now, so that a
        // read error still leaves the dataset unchanged.
        let mut loaded: Vec<Option<ArrayData>> = Vec::with_capacity(n_inputs);
        for (p, c) in self.inputs.iter().enumerate() {
            loaded.push(match &c.data {
                Stored::Rows(r) if !picked.contains(&p) => Some(r.all()?),
                _ => None,
            });
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
            .enumerate()
            .filter_map(|(p, c)| {
                let c = c?;
                match c.data {
                    Stored::Stacked(a) => Some((c.name, a)),
                    Stored::Rows(_) => loaded.get_mut(p)?.take().map(|a| (c.name, a)),
                    Stored::Files(_) | Stored::PerSample(_) | Stored::Picked(..) => None,
                }
            })
            .collect();
        Ok(feed)
    }
}

/// A candidate input during [`Dataset::check_against`]: what is checked of
/// it (element types and shapes), taken from the file headers for data left
/// on disk.
enum ColumnRef<'a> {
    /// One array `[N, ...]`.
    Stacked {
        elem_type: i32,
        dtype: &'static str,
        shape: &'a [usize],
    },
    /// One tensor per sample: element type code, name and shape.
    PerSample(Vec<(i32, &'static str, &'a [usize])>),
}

impl<'a> ColumnRef<'a> {
    fn of_array(a: &'a ArrayData) -> ColumnRef<'a> {
        ColumnRef::Stacked {
            elem_type: a.elem_type(),
            dtype: a.dtype_name(),
            shape: a.shape(),
        }
    }

    fn of_column(c: &'a Column) -> ColumnRef<'a> {
        Self::of_stored(&c.data)
    }

    fn of_stored(data: &'a Stored) -> ColumnRef<'a> {
        match data {
            Stored::Picked(base, rows) => {
                // One entry per picked sample, described by the base storage.
                let per_sample: Vec<(i32, &'static str, &'a [usize])> = match Self::of_stored(base)
                {
                    ColumnRef::Stacked {
                        elem_type,
                        dtype,
                        shape,
                    } => rows
                        .iter()
                        .map(|_| (elem_type, dtype, shape.get(1..).unwrap_or(&[])))
                        .collect(),
                    ColumnRef::PerSample(v) => {
                        rows.iter().filter_map(|&r| v.get(r).copied()).collect()
                    }
                };
                ColumnRef::PerSample(per_sample)
            }
            Stored::Stacked(a) => ColumnRef::of_array(a),
            Stored::Rows(r) => ColumnRef::Stacked {
                elem_type: r.elem_type(),
                dtype: r.dtype_name(),
                shape: r.shape(),
            },
            Stored::Files(v) => ColumnRef::PerSample(
                v.iter()
                    .map(|f| (f.elem_type, f.dtype, f.shape.as_slice()))
                    .collect(),
            ),
            Stored::PerSample(v) => ColumnRef::PerSample(
                v.iter()
                    .map(|a| (a.elem_type(), a.dtype_name(), a.shape()))
                    .collect(),
            ),
        }
    }

    /// Element type code and name of every stored array.
    fn dtypes(&self) -> Vec<(i32, &'static str)> {
        match self {
            ColumnRef::Stacked {
                elem_type, dtype, ..
            } => vec![(*elem_type, *dtype)],
            ColumnRef::PerSample(v) => v.iter().map(|&(e, d, _)| (e, d)).collect(),
        }
    }

    fn count(&self) -> usize {
        match self {
            ColumnRef::Stacked { shape, .. } => shape.first().copied().unwrap_or(0),
            ColumnRef::PerSample(v) => v.len(),
        }
    }

    /// Per-sample shapes, and the stored shape for messages.
    fn sample_shapes(&self) -> Result<(Vec<Vec<usize>>, String), String> {
        match self {
            ColumnRef::Stacked { shape, .. } => {
                if shape.is_empty() {
                    return Err("the stored array is a scalar; it needs a leading sample axis ([N] for a scalar input)".into());
                }
                Ok((
                    vec![shape[1..].to_vec()],
                    format!("stored as {}", show_shape(shape)),
                ))
            }
            ColumnRef::PerSample(v) => {
                let mut shapes: Vec<Vec<usize>> = v.iter().map(|(_, _, s)| s.to_vec()).collect();
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

/// The fields of ONNX's `SequenceProto` (onnx-data.proto) that tell it from
/// a `TensorProto`: `elem_type` (1 tensor .. 5 optional) and the tensors.
#[derive(Clone, PartialEq, prost::Message)]
struct SequenceProbe {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int32, optional, tag = "2")]
    elem_type: Option<i32>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    tensor_values: Vec<Vec<u8>>,
}

/// Reads a TensorProto file: its name (if any) and value.
fn read_pb(path: &Path) -> Result<(Option<String>, ArrayData), DataError> {
    let mut bytes = Vec::new();
    super::npy::open_regular(path)
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let bytes = Bytes::from(bytes);
    let decoded = TensorProto::decode(bytes.clone());
    // A SequenceProto (name 1, elem_type 2, tensor_values 3) also decodes
    // as a TensorProto (name as packed dims, elem_type as data_type, its
    // tensors as `segment`): tell them apart before reading values.
    if decoded.as_ref().map_or(true, |t| t.segment.is_some()) {
        if let Ok(seq) = SequenceProbe::decode(bytes.clone()) {
            if matches!(seq.elem_type, Some(1..=5)) && !seq.tensor_values.is_empty() {
                return Err(DataError::Layout {
                    path: path.to_path_buf(),
                    reason: "holds a SequenceProto: sequence inputs are not supported".into(),
                });
            }
        }
    }
    let t = decoded.map_err(|source| DataError::Decode {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};
    use ndarray_npy::{NpzWriter, WriteNpyExt};
    use quench_onnx::proto::tensor_proto::DataType;

    fn f32_array(shape: &[usize]) -> ArrayD<f32> {
        let n = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32 * 0.5 - 3.0).collect())
            .unwrap()
    }

    fn write_npy<T: ndarray_npy::WritableElement>(dir: &Path, name: &str, a: &ArrayD<T>) {
        let path = dir.join(format!("{name}.npy"));
        a.write_npy(fs::File::create(path).unwrap()).unwrap();
    }

    fn model_input(name: &str, elem_type: DataType, shape: &[Option<i64>]) -> ModelInput {
        ModelInput {
            name: name.into(),
            elem_type: elem_type as i32,
            shape: Some(shape.to_vec()),
        }
    }

    fn is_lazy(c: &Column) -> bool {
        matches!(c.data, Stored::Rows(_) | Stored::Files(_))
    }

    #[test]
    fn truncated_npy_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_npy(dir.path(), "x", &f32_array(&[4, 3]));
        let path = dir.path().join("x.npy");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let e = Dataset::load(dir.path()).unwrap_err();
        assert!(
            matches!(&e, DataError::Npy { path: p, .. } if *p == path),
            "{e:?}"
        );
        assert!(e.to_string().contains("x.npy"), "{e}");
    }

    #[test]
    fn lazy_columns_split_batch_and_become_extras() {
        let dir = tempfile::tempdir().unwrap();
        let x = f32_array(&[10, 2, 3]);
        let labels = ArrayD::from_shape_vec(IxDyn(&[10]), (0..10i64).collect()).unwrap();
        write_npy(dir.path(), "x", &x);
        write_npy(dir.path(), "labels", &labels);
        let mut ds = Dataset::load(dir.path()).unwrap();
        assert!(ds.inputs.iter().all(is_lazy));
        let feed = ds
            .check_against(&[model_input("x", DataType::Float, &[None, Some(2), Some(3)])])
            .unwrap();
        assert_eq!(feed, Feed::Batch { fixed: None });
        assert!(is_lazy(&ds.inputs[0]));
        // The labels column, left on disk until now, is an extra array.
        assert_eq!(ds.extra("labels"), Some(&ArrayData::I64(labels.clone())));

        let whole = ArrayData::F32(x);
        let (head, tail) = ds.clone().split(6);
        assert_eq!((head.samples(), tail.samples()), (6, 4));
        assert!(is_lazy(&head.inputs[0]) && is_lazy(&tail.inputs[0]));
        assert_eq!(
            head.sample_batch(2..6).unwrap()[0].1,
            whole.slice_axis0(2..6).unwrap()
        );
        assert_eq!(
            tail.sample_batch(1..4).unwrap()[0].1,
            whole.slice_axis0(7..10).unwrap()
        );
        assert_eq!(tail.sample(0).unwrap()[0].1, whole.index_axis0(6).unwrap());
        assert_eq!(
            tail.feed(feed, 0..4).unwrap(),
            vec![whole.slice_axis0(6..10).unwrap()]
        );
        assert_eq!(
            tail.extra("labels").unwrap().index_axis0(0),
            ArrayData::I64(labels).index_axis0(6)
        );
        let e = tail.sample_batch(2..5).unwrap_err();
        assert!(
            matches!(&e, DataError::ShapeMismatch { name, .. } if name == "x"),
            "{e}"
        );
        assert!(matches!(
            tail.sample(4).unwrap_err(),
            DataError::OutOfRange {
                index: 4,
                count: 4,
                ..
            }
        ));

        // Re-binding picks the materialized extra as an input.
        let mut rebound = ds;
        rebound
            .check_against(&[model_input("labels", DataType::Int64, &[])])
            .unwrap();
        assert_eq!(
            rebound.sample(3).unwrap()[0].1,
            ArrayData::I64(ArrayD::from_elem(IxDyn(&[]), 3))
        );
        assert_eq!(rebound.extra("x"), Some(&whole));
    }

    #[test]
    fn batches_are_read_from_several_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        let x = f32_array(&[64, 5]);
        let mut w = NpzWriter::new(fs::File::create(&path).unwrap());
        w.add_array("x", &x).unwrap();
        w.finish().unwrap();
        let ds = Dataset::load(&path).unwrap();
        assert!(is_lazy(&ds.inputs[0]));
        let whole = ArrayData::F32(x);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (ds, whole) = (&ds, &whole);
                s.spawn(move || {
                    for k in 0..16 {
                        let r = (t * 16 + k)..(t * 16 + k + 1);
                        let got = ds.sample_batch(r.clone()).unwrap().remove(0).1;
                        assert_eq!(got, whole.slice_axis0(r).unwrap());
                    }
                });
            }
        });
    }

    fn write_pb(path: &Path, name: &str, a: &ArrayData) {
        fs::write(path, a.to_tensor_proto(name).encode_to_vec()).unwrap();
    }

    #[test]
    fn test_data_sets_are_read_per_sample() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<ArrayData> = (0..3)
            .map(|k| ArrayData::F32(f32_array(&[1, 4]).mapv(|v| v + k as f32)))
            .collect();
        for (k, a) in samples.iter().enumerate() {
            let set = dir.path().join(format!("test_data_set_{k}"));
            fs::create_dir(&set).unwrap();
            // Unnamed input: matched to the model input at its index.
            write_pb(&set.join("input_0.pb"), "", a);
            write_pb(&set.join("output_0.pb"), "y", &a.slice_axis0(0..1).unwrap());
        }
        let mut ds = Dataset::load(dir.path()).unwrap();
        assert_eq!(ds.samples(), 3);
        assert!(is_lazy(&ds.inputs[0]));
        assert_eq!(
            ds.check_against(&[model_input("data", DataType::Float, &[Some(1), Some(4)])])
                .unwrap(),
            Feed::Sample
        );
        assert_eq!(ds.input_names(), vec!["data"]);
        for (k, a) in samples.iter().enumerate() {
            assert_eq!(ds.sample(k).unwrap(), vec![("data".to_string(), a.clone())]);
            assert_eq!(ds.expected_outputs(k).unwrap()[0].0, "y");
        }
        let parts: Vec<&ArrayData> = samples.iter().collect();
        assert_eq!(
            ds.sample_batch(0..3).unwrap()[0].1,
            ArrayData::stack(&parts).unwrap()
        );
        let (_, tail) = ds.clone().split(1);
        assert_eq!(tail.sample(1).unwrap()[0].1, samples[2]);

        // Element types are checked from what the files held at load time.
        let e = ds
            .clone()
            .check_against(&[model_input("data", DataType::Int64, &[Some(1), Some(4)])])
            .unwrap_err();
        assert!(
            matches!(&e, DataError::DtypeMismatch { found, .. } if found == "f32"),
            "{e}"
        );

        // A file rewritten after loading is reported, not misread.
        let changed = dir.path().join("test_data_set_1").join("input_0.pb");
        write_pb(&changed, "", &ArrayData::F32(f32_array(&[2, 4])));
        let e = ds.sample(1).unwrap_err();
        assert!(
            matches!(&e, DataError::Layout { path, .. } if *path == changed),
            "{e}"
        );
        fs::remove_file(&changed).unwrap();
        let e = ds.sample_batch(0..2).unwrap_err();
        assert!(
            matches!(&e, DataError::Io { path, .. } if *path == changed),
            "{e}"
        );
    }

    /// f16 and u16 test-data files load as those types, bound to model
    /// inputs of those types; a file whose raw_data does not fit its dims
    /// is an error naming the file.
    #[test]
    fn test_data_of_new_element_types() {
        use tract_onnx::prelude::tract_data::half::f16;
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("test_data_set_0");
        fs::create_dir(&set).unwrap();
        let h = ArrayData::F16(
            ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![f16::from_f32(0.5), f16::MAX, f16::MIN])
                .unwrap(),
        );
        let u = ArrayData::U16(ArrayD::from_shape_vec(IxDyn(&[2]), vec![1, u16::MAX]).unwrap());
        write_pb(&set.join("input_0.pb"), "x", &h);
        write_pb(&set.join("input_1.pb"), "n", &u);
        let mut ds = Dataset::load(dir.path()).unwrap();
        ds.check_against(&[
            model_input("x", DataType::Float16, &[Some(1), Some(3)]),
            model_input("n", DataType::Uint16, &[Some(2)]),
        ])
        .unwrap();
        let sample = ds.sample(0).unwrap();
        assert_eq!(
            sample,
            vec![("x".to_string(), h.clone()), ("n".to_string(), u)]
        );
        let bad = set.join("input_0.pb");
        let mut p = h.to_tensor_proto("x");
        p.dims = vec![1, 4];
        fs::write(&bad, p.encode_to_vec()).unwrap();
        let e = Dataset::load(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains(&*bad.to_string_lossy())
                && e.to_string().contains("raw_data has 6 bytes"),
            "{e}"
        );
    }

    /// A SequenceProto input is reported as a sequence (it also decodes as
    /// a TensorProto, which was misread as "float_data has N values"); an
    /// output file quench cannot read drops the expected outputs instead of
    /// failing the load.
    #[test]
    fn sequence_inputs_and_unreadable_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("test_data_set_0");
        fs::create_dir(&set).unwrap();
        let x = ArrayData::F32(f32_array(&[2, 3]));
        let seq = SequenceProbe {
            name: Some("seq".into()),
            elem_type: Some(1),
            tensor_values: vec![x.to_tensor_proto("").encode_to_vec(); 2],
        };
        let seq_file = set.join("input_0.pb");
        fs::write(&seq_file, seq.encode_to_vec()).unwrap();
        let e = Dataset::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("sequence inputs are not supported")
                && e.contains(&*seq_file.to_string_lossy()),
            "{e}"
        );

        write_pb(&seq_file, "x", &x);
        let mut c = x.to_tensor_proto("y");
        c.data_type = Some(DataType::Complex64 as i32);
        fs::write(set.join("output_0.pb"), c.encode_to_vec()).unwrap();
        let ds = Dataset::load(dir.path()).unwrap();
        assert_eq!(ds.input_names(), vec!["x"]);
        assert!(ds.expected_outputs(0).is_none());
        write_pb(&set.join("output_0.pb"), "y", &x);
        let ds = Dataset::load(dir.path()).unwrap();
        assert_eq!(ds.expected_outputs(0).unwrap()[0].0, "y");
    }
}
