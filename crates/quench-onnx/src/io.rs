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
use crate::{tempfiles, OnnxError, PROTOBUF_LIMIT};

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
    /// model, named `<model file name>.<16 hex digits>.data` after a hash of
    /// its content (see [`save_model`]).
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
/// With external data the model and its data file are never out of step,
/// whatever point a save is killed at and however many processes write the
/// same path: the data goes to a file named after its content
/// (`<model file name>.<16 hex digits of a hash of the data>.data`, written
/// atomically; a name always stands for the same bytes, and saving the
/// same model twice gives the same files), then the model referring to it
/// replaces `path` atomically, then the data files of the replaced model
/// are removed (only names this function writes:
/// `<name>.data` or `<name>.<hex>.data`). A kill before the model's rename
/// leaves the old pair intact (plus an unreferenced new data file); after
/// it, the new pair (plus the old data file). Writers of one directory
/// take turns under a lock on the directory where the file system allows.
/// Temporary files are registered so a signal handler can remove them
/// ([`crate::remove_temp_files`]).
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
        let _turn = lock_dir(path);
        let stale = stale_data_files(path);
        write_atomic(path, &model.encode_to_vec())?;
        // The replaced model's data files are unreferenced now.
        for f in stale {
            let _ = fs::remove_file(f);
        }
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
            // Filled in below, once the content (and so the name) is known.
            entry("location", ""),
            entry("offset", &offset.to_string()),
            entry("length", &len.to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        chunks.push(data);
        offset += len;
        count += 1;
    });
    // The data file is named after its content (see the docs of
    // `save_model`): a name always stands for the same bytes, so a model
    // and a data file of that name are never out of step.
    let location = format!("{file_name}.{}.data", content_id(&chunks));
    let data_path = path.with_file_name(&location);
    for_each_tensor_mut(&mut out, &mut |t: &mut TensorProto| {
        for e in &mut t.external_data {
            if e.key() == "location" && e.value().is_empty() {
                e.value = Some(location.clone());
            }
        }
    });
    let size = out.encoded_len() as u64;
    if size > limit {
        return Err(OnnxError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    // Writers of the same directory take turns (best effort: where the
    // file system has no locks, the order below still keeps every pair
    // consistent, and a concurrent writer's data file may be left over).
    let _turn = lock_dir(path);
    // The data files of the model being replaced, to remove once the new
    // model is in place.
    let stale = stale_data_files(path);
    // 1. The data under its name; a new file stays registered as a
    //    temporary file until the model referring to it is in place (an
    //    existing one, with the same content, may be in use: it is
    //    replaced atomically and never removed on interruption).
    let existed = data_path.exists();
    if !existed {
        tempfiles::register(&data_path);
    }
    pause_for_tests("data");
    if let Err(e) = write_atomic_chunks(&data_path, &chunks) {
        tempfiles::forget(&data_path);
        return Err(e);
    }
    pause_for_tests("model");
    // 2. The model pointing at it, atomically; the data file stops being
    //    temporary in the same step.
    if let Err(e) = write_atomic_committing(path, &[out.encode_to_vec()], &[&data_path]) {
        if !existed {
            let _ = fs::remove_file(&data_path);
        }
        tempfiles::forget(&data_path);
        return Err(e);
    }
    pause_for_tests("cleanup");
    // 3. The replaced model's data files.
    for f in stale {
        if f != data_path {
            let _ = fs::remove_file(f);
        }
    }
    Ok(SaveReport {
        model_path: path.to_path_buf(),
        model_bytes: size,
        data_path: Some(data_path),
        data_bytes: offset,
        external_tensors: count,
    })
}

/// The files a [`save_model`] to `path` would remove: the external data
/// files the model now at `path` refers to under a name [`save_model`]
/// writes (`<name>.data`, or `<name>.<16 hex digits>.data`) that exist.
/// Data files under other names (named by the user, shared by other
/// models) are never removed. Callers that must not remove an input check
/// their inputs against this list first.
pub fn replaced_data_files(path: &Path) -> Vec<PathBuf> {
    stale_data_files(path)
}

fn stale_data_files(path: &Path) -> Vec<PathBuf> {
    // Only a regular file is read: opening a FIFO given as the output
    // would block (and special files are refused as outputs anyway).
    if !fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    let Some(file_name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let Ok(bytes) = map_file(path) else {
        return Vec::new();
    };
    let Ok(old) = ModelProto::decode(bytes) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = Vec::new();
    let mut old = old;
    for_each_tensor_mut(&mut old, &mut |t: &mut TensorProto| {
        if !is_external(t) {
            return;
        }
        for e in &t.external_data {
            if e.key() != "location" {
                continue;
            }
            let loc = e.value();
            if is_our_data_name(loc, &file_name) {
                let p = path.with_file_name(loc);
                if !found.contains(&p) && p.is_file() {
                    found.push(p);
                }
            }
        }
    });
    found
}

/// An exclusive lock on the directory of `path` (released when dropped),
/// so writers of one directory take turns; `None` where the file system
/// has no locks (the save order alone still keeps every pair consistent).
fn lock_dir(path: &Path) -> Option<fs::File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::File::open(&dir).and_then(|f| f.lock().map(|()| f)).ok()
}

/// `<name>.data` or `<name>.<16 lowercase hex digits>.data`.
fn is_our_data_name(loc: &str, file_name: &str) -> bool {
    let Some(rest) = loc.strip_prefix(file_name) else {
        return false;
    };
    if rest == ".data" {
        return true;
    }
    let Some(id) = rest.strip_prefix('.').and_then(|r| r.strip_suffix(".data")) else {
        return false;
    };
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// 16 hex digits of a 64-bit hash of the bytes of `chunks` (in order) and
/// their length. Not cryptographic: it names files, so that a different
/// content gets a different name and the same content the same name (so
/// saves are byte-for-byte reproducible).
fn content_id(chunks: &[Bytes]) -> String {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    fn mix(h: u64, w: u64) -> u64 {
        (h ^ w).wrapping_mul(K).rotate_left(29)
    }
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    let mut len: u64 = 0;
    let mut tail: Vec<u8> = Vec::with_capacity(8);
    for c in chunks {
        len += c.len() as u64;
        let mut b: &[u8] = c;
        // Finish a word left over from the previous chunk.
        while !tail.is_empty() && !b.is_empty() {
            tail.push(b[0]);
            b = &b[1..];
            if tail.len() == 8 {
                let mut w = [0u8; 8];
                w.copy_from_slice(&tail);
                h = mix(h, u64::from_le_bytes(w));
                tail.clear();
            }
        }
        let mut words = b.chunks_exact(8);
        for w in &mut words {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            h = mix(h, u64::from_le_bytes(a));
        }
        tail.extend_from_slice(words.remainder());
    }
    let mut w = [0u8; 8];
    w[..tail.len()].copy_from_slice(&tail);
    h = mix(h, u64::from_le_bytes(w));
    h = mix(h, len);
    // splitmix64 finaliser.
    let mut x = h;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{x:016x}")
}

/// A test hook: with `QUENCH_TEST_SAVE_PAUSE=<step>:<ms>` in the
/// environment, sleeps `ms` milliseconds before `step` of an external-data
/// save (`data`: before writing the data file; `model`: data in place,
/// model not yet; `cleanup`: both in place, old data not yet removed), or
/// before the rename of any atomic write (`rename`: the temporary file is
/// complete), so tests can interrupt or kill a save at each point.
fn pause_for_tests(step: &str) {
    let Ok(v) = std::env::var("QUENCH_TEST_SAVE_PAUSE") else {
        return;
    };
    let Some((at, ms)) = v.split_once(':') else {
        return;
    };
    if at == step {
        if let Ok(ms) = ms.parse::<u64>() {
            eprintln!("quench: test pause before save step `{step}`");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
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
    write_atomic_committing(path, chunks, &[])
}

/// [`write_atomic_chunks`], also taking `done` (registered temporary
/// files the new `path` refers to) off the temporary-file registry in the
/// same step as the rename.
fn write_atomic_committing<C: AsRef<[u8]>>(
    path: &Path,
    chunks: &[C],
    done: &[&Path],
) -> Result<(), OnnxError> {
    let tmp = temp_path(path);
    let werr = |source| OnnxError::Write {
        path: path.to_path_buf(),
        source,
    };
    tempfiles::register(&tmp);
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
        pause_for_tests("rename");
        let mut all: Vec<&Path> = done.to_vec();
        all.push(&tmp);
        tempfiles::commit(&all, || fs::rename(&tmp, path))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        tempfiles::forget(&tmp);
        return Err(werr(e));
    }
    Ok(())
}
