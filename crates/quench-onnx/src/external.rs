//! Resolving tensors stored as external data.
//!
//! A tensor with `data_location = EXTERNAL` names a file relative to the
//! model's directory (`location`) and optionally a byte range (`offset`,
//! `length`). Each file is memory-mapped once and every tensor becomes a
//! zero-copy slice of the map.

use std::collections::HashMap;
use std::path::{Component, Path};

use bytes::Bytes;

use crate::dtype::packed_bytes;
use crate::proto::tensor_proto::DataLocation;
use crate::proto::{ModelProto, TensorProto};
use crate::visit::try_for_each_tensor_mut;
use crate::OnnxError;

/// What a loaded model stored outside its `.onnx` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalUse {
    /// External data files, as named in the model (relative paths).
    pub files: Vec<String>,
    /// Number of tensors read from them.
    pub tensors: usize,
    /// Total bytes read from them.
    pub bytes: u64,
}

pub(crate) fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

/// Replaces every external reference in `model` by the bytes it refers to.
pub(crate) fn resolve(model: &mut ModelProto, model_path: &Path) -> Result<ExternalUse, OnnxError> {
    let base = model_path.parent().unwrap_or(Path::new("."));
    let mut maps: HashMap<String, Bytes> = HashMap::new();
    let mut used = ExternalUse::default();
    try_for_each_tensor_mut(model, &mut |t: &mut TensorProto| {
        if !is_external(t) {
            return Ok(());
        }
        let name = t.name().to_string();
        let invalid = |reason: String| OnnxError::ExternalInvalid {
            path: model_path.to_path_buf(),
            tensor: name.clone(),
            reason,
        };
        let mut location = None;
        let mut offset: u64 = 0;
        let mut length: Option<u64> = None;
        for e in &t.external_data {
            match e.key() {
                "location" => location = Some(e.value().to_string()),
                "offset" => {
                    offset = e
                        .value()
                        .parse()
                        .map_err(|_| invalid(format!("offset `{}` is not a number", e.value())))?
                }
                "length" => {
                    length =
                        Some(e.value().parse().map_err(|_| {
                            invalid(format!("length `{}` is not a number", e.value()))
                        })?)
                }
                _ => {}
            }
        }
        let location = location.ok_or_else(|| invalid("no `location` entry".into()))?;
        let rel = Path::new(&location);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(invalid(format!(
                "location `{location}` must be a relative path inside the model's directory"
            )));
        }
        let data = match maps.get(&location) {
            Some(d) => d.clone(),
            None => {
                let missing = |source| OnnxError::ExternalMissing {
                    path: model_path.to_path_buf(),
                    tensor: name.clone(),
                    location: location.clone(),
                    source,
                };
                // After symlinks, the file must still be inside the model's
                // directory: a link planted there must not pull in (and
                // later inline into an output) a file from elsewhere.
                let dir = std::fs::canonicalize(if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    base
                })
                .map_err(missing)?;
                let file = std::fs::canonicalize(base.join(rel)).map_err(missing)?;
                if !file.starts_with(&dir) {
                    return Err(invalid(format!(
                        "location `{location}` resolves to {} through a symbolic link, outside the model's directory {}",
                        file.display(),
                        dir.display()
                    )));
                }
                let d = map_file(&file).map_err(|source| OnnxError::ExternalMissing {
                    path: model_path.to_path_buf(),
                    tensor: name.clone(),
                    location: location.clone(),
                    source,
                })?;
                maps.insert(location.clone(), d.clone());
                used.files.push(location.clone());
                d
            }
        };
        let have = data.len() as u64;
        let end = match length {
            Some(l) => offset.checked_add(l),
            None => Some(have),
        };
        let end = match end {
            Some(e) if e <= have && offset <= e => e,
            _ => {
                return Err(OnnxError::ExternalShort {
                    path: model_path.to_path_buf(),
                    tensor: name,
                    location,
                    offset,
                    end: end.unwrap_or(u64::MAX),
                    have,
                })
            }
        };
        // The declared length must match what the type and shape need,
        // computed without overflow: `[2^31, 2^31]` f32 is not "0 bytes".
        let need =
            crate::validate::checked_numel(&t.dims).and_then(|n| packed_bytes(t.data_type(), n));
        match need {
            Some(need) if need == end - offset => {}
            Some(need) => {
                return Err(OnnxError::TensorData {
                    path: model_path.to_path_buf(),
                    tensor: name,
                    reason: format!(
                        "external data in `{location}` holds {} bytes but the tensor's type and shape need {need}",
                        end - offset
                    ),
                })
            }
            None => {
                return Err(OnnxError::TensorData {
                    path: model_path.to_path_buf(),
                    tensor: name,
                    reason: format!(
                        "{} {:?} stored as external data: {}",
                        crate::dtype::elem_name(t.data_type()),
                        t.dims,
                        if crate::dtype::elem_bits(t.data_type()).is_none() {
                            "the type has no fixed size"
                        } else {
                            "its size does not fit in 64 bits or a dimension is negative"
                        }
                    ),
                })
            }
        }
        t.raw_data = Some(data.slice(offset as usize..end as usize));
        t.external_data.clear();
        t.data_location = None;
        used.tensors += 1;
        used.bytes += end - offset;
        Ok(())
    })?;
    Ok(used)
}

/// Memory-maps a whole file (an empty file gives empty bytes).
pub(crate) fn map_file(path: &Path) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only. quench never writes to files it has
    // mapped (outputs are written to a temporary file and renamed over the
    // destination, which leaves a mapped inode intact). Another process
    // truncating the file while we run is outside what we can guard against,
    // as for every memory-mapped reader.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(map))
}
