//! Loading and saving `.onnx` files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

pub use crate::external::ExternalUse;
use crate::external::{self, is_external, map_file};
use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::{ModelProto, StringStringEntryProto, TensorProto};
use crate::visit::{for_each_tensor_mut, try_for_each_tensor_mut};
use crate::{OnnxError, PROTOBUF_LIMIT};

/// A model read from disk.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub model: ModelProto,
    /// The file it was read from.
    pub path: PathBuf,
    /// Size of the `.onnx` file itself.
    pub file_bytes: u64,
    /// What it stored as external data (resolved now).
    pub external: ExternalUse,
}

/// Reads an ONNX model file and resolves its external data.
///
/// The file is memory-mapped; tensor bytes in the returned model are views
/// into the map (and into maps of the external data files), not copies.
pub fn load_model(path: &Path) -> Result<LoadedModel, OnnxError> {
    let meta = fs::metadata(path).map_err(|source| OnnxError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(OnnxError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other("is a directory, expected an .onnx file"),
        });
    }
    let bytes = map_file(path).map_err(|source| OnnxError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file_bytes = bytes.len() as u64;
    let mut model = decode_model(bytes, path)?;
    let external = external::resolve(&mut model, path)?;
    check_tensors(&mut model, path)?;
    Ok(LoadedModel {
        model,
        path: path.to_path_buf(),
        file_bytes,
        external,
    })
}

/// Decodes a model from memory. Tensors that refer to external data are
/// reported as an error, since there is no directory to resolve them in.
/// `name` is used in error messages only.
pub fn load_model_from_bytes(bytes: Bytes, name: &Path) -> Result<ModelProto, OnnxError> {
    let mut model = decode_model(bytes, name)?;
    try_for_each_tensor_mut(&mut model, &mut |t: &mut TensorProto| {
        if is_external(t) {
            Err(OnnxError::ExternalInvalid {
                path: name.to_path_buf(),
                tensor: t.name().to_string(),
                reason: "external data cannot be resolved for a model held in memory".into(),
            })
        } else {
            Ok(())
        }
    })?;
    check_tensors(&mut model, name)?;
    Ok(model)
}

/// Runs [`crate::validate::check_tensor`] on every tensor of the model and
/// [`crate::validate::check_sparse`] on every sparse tensor.
fn check_tensors(model: &mut ModelProto, path: &Path) -> Result<(), OnnxError> {
    try_for_each_tensor_mut(model, &mut |t: &mut TensorProto| {
        crate::validate::check_tensor(t).map_err(|reason| OnnxError::TensorData {
            path: path.to_path_buf(),
            tensor: t.name().to_string(),
            reason,
        })
    })?;
    crate::validate::try_for_each_sparse(model, &mut |s| {
        crate::validate::check_sparse(s).map_err(|reason| OnnxError::TensorData {
            path: path.to_path_buf(),
            tensor: s
                .values
                .as_ref()
                .map(|v| v.name().to_string())
                .unwrap_or_default(),
            reason,
        })
    })
}

fn decode_model(bytes: Bytes, path: &Path) -> Result<ModelProto, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::Empty {
            path: path.to_path_buf(),
        });
    }
    let model = ModelProto::decode(bytes).map_err(|source| OnnxError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    if model.graph.is_none() {
        return Err(OnnxError::NoGraph {
            path: path.to_path_buf(),
        });
    }
    Ok(model)
}

/// Where tensor data goes when a model is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExternalData {
    /// Inline, unless the model would exceed the 2 GiB protobuf limit; then
    /// as [`ExternalData::External`] with the default threshold.
    #[default]
    Auto,
    /// Everything inline; fails for models above the protobuf limit.
    Inline,
    /// Tensors of at least `threshold` bytes go to one data file beside the
    /// model, named `<model file name>.data`.
    External { threshold: usize },
}

/// Default size from which tensors are moved to external data.
pub const DEFAULT_EXTERNAL_THRESHOLD: usize = 1024;

#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    pub external: ExternalData,
    /// Largest `.onnx` file to write inline; `None` means the 2 GiB protobuf
    /// limit. (Tests lower it to exercise the automatic switch to external
    /// data without writing gigabytes.)
    pub limit: Option<u64>,
}

/// What [`save_model`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    pub model_path: PathBuf,
    pub model_bytes: u64,
    /// The external data file, if one was written.
    pub data_path: Option<PathBuf>,
    pub data_bytes: u64,
    pub external_tensors: usize,
}

impl SaveReport {
    pub fn total_bytes(&self) -> u64 {
        self.model_bytes + self.data_bytes
    }
}

/// Writes `model` to `path` atomically: each file is written to a temporary
/// file in the destination directory and renamed into place, so a failure
/// never leaves a half-written output and readers never see one.
///
/// `model` itself is not changed. Tensors must hold their data inline (as
/// after [`load_model`]).
pub fn save_model(
    model: &ModelProto,
    path: &Path,
    opts: &SaveOptions,
) -> Result<SaveReport, OnnxError> {
    let limit = opts.limit.unwrap_or(PROTOBUF_LIMIT);
    let threshold = match opts.external {
        ExternalData::Inline => None,
        ExternalData::External { threshold } => Some(threshold),
        ExternalData::Auto => {
            if model.encoded_len() as u64 > limit {
                Some(DEFAULT_EXTERNAL_THRESHOLD)
            } else {
                None
            }
        }
    };
    let Some(threshold) = threshold else {
        let size = model.encoded_len() as u64;
        if size > limit {
            return Err(OnnxError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        write_atomic(path, &model.encode_to_vec())?;
        return Ok(SaveReport {
            model_path: path.to_path_buf(),
            model_bytes: size,
            data_path: None,
            data_bytes: 0,
            external_tensors: 0,
        });
    };

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.onnx".to_string());
    let location = format!("{file_name}.data");
    let data_path = path.with_file_name(&location);

    // Cloning is cheap: tensor bytes are reference-counted `Bytes`.
    let mut out = model.clone();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut offset: u64 = 0;
    let mut count = 0usize;
    for_each_tensor_mut(&mut out, &mut |t: &mut TensorProto| {
        let Some(data) = take_fixed_width_bytes(t, threshold) else {
            return;
        };
        // Align every tensor to 64 bytes so mapped data is aligned for SIMD loads.
        let pad = (64 - offset % 64) % 64;
        if pad > 0 {
            chunks.push(Bytes::from(vec![0u8; pad as usize]));
            offset += pad;
        }
        let len = data.len() as u64;
        t.external_data = vec![
            entry("location", &location),
            entry("offset", &offset.to_string()),
            entry("length", &len.to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        chunks.push(data);
        offset += len;
        count += 1;
    });
    let size = out.encoded_len() as u64;
    if size > limit {
        return Err(OnnxError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    write_atomic_chunks(&data_path, &chunks)?;
    if let Err(e) = write_atomic(path, &out.encode_to_vec()) {
        let _ = fs::remove_file(&data_path);
        return Err(e);
    }
    Ok(SaveReport {
        model_path: path.to_path_buf(),
        model_bytes: size,
        data_path: Some(data_path),
        data_bytes: offset,
        external_tensors: count,
    })
}

fn entry(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}

/// Takes the tensor's data as little-endian bytes if it is a fixed-width
/// tensor of at least `threshold` bytes, clearing its in-message storage.
fn take_fixed_width_bytes(t: &mut TensorProto, threshold: usize) -> Option<Bytes> {
    if t.data_type() == DataType::String as i32 || t.segment.is_some() {
        return None;
    }
    if let Some(raw) = &t.raw_data {
        if raw.len() >= threshold {
            return t.raw_data.take();
        }
        return None;
    }
    if t.data_type() == DataType::Float as i32 && t.float_data.len() * 4 >= threshold {
        let v: Vec<u8> = t.float_data.iter().flat_map(|x| x.to_le_bytes()).collect();
        t.float_data.clear();
        return Some(Bytes::from(v));
    }
    None
}

/// A fresh temporary name beside `path`: hidden, unique per process and
/// call, so concurrent writers and planted files never share one.
fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    path.with_file_name(format!(
        ".{name}.quench-tmp-{}-{}-{nanos:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `data` to `path` atomically: a new temporary file beside it
/// (created exclusively, so an existing file or symlink of that name is
/// never followed), synced, then renamed over `path`. On error nothing is
/// left behind and `path` is unchanged.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), OnnxError> {
    write_atomic_chunks(path, &[data])
}

fn write_atomic_chunks<C: AsRef<[u8]>>(path: &Path, chunks: &[C]) -> Result<(), OnnxError> {
    let tmp = temp_path(path);
    let werr = |source| OnnxError::Write {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        for c in chunks {
            f.write_all(c.as_ref())?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(())
}
