//! What the command line may write: outputs never replace an input (the
//! model, its external data, calibration/evaluation data, a calibration
//! table) or another output, and never a special file.
//!
//! Paths are compared after resolving symlinks (the parent directory of an
//! output that does not exist yet), and existing files also by device and
//! inode, so `./m.onnx`, `dir/../m.onnx` and a hard link all count as the
//! same file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use quench_onnx::LoadedModel;
use serde::Serialize;

/// `path` with symlinks resolved; for a file that does not exist yet, its
/// resolved parent joined with its name.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(path.file_name()?))
}

/// Whether `a` and `b` name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    matches!((resolved(a), resolved(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses outputs that are inputs, other outputs or special files.
///
/// `model`: the loaded input model (its file and external data files);
/// `data`: calibration/evaluation data (files or directories) and tables;
/// `models`: the model paths the command may write (a save writes a
/// freshly named data file with external data and removes the data files
/// of the model it replaces: those count as written, see
/// `quench_onnx::replaced_data_files`);
/// `others`: reports and tables.
pub fn check_outputs(
    model: &LoadedModel,
    data: &[Option<&PathBuf>],
    models: &[&Path],
    others: &[&Path],
) -> Result<()> {
    let base = model.path.parent().unwrap_or(Path::new("."));
    let mut inputs: Vec<(PathBuf, String)> = vec![(model.path.clone(), "the input model".into())];
    for f in &model.external.files {
        inputs.push((
            base.join(f),
            format!("the input's external data file `{f}`"),
        ));
    }
    let data: Vec<&PathBuf> = data.iter().flatten().copied().collect();
    for d in &data {
        inputs.push(((*d).clone(), format!("the data `{}`", d.display())));
    }
    // Every model output may also write its `.data` file.
    let mut written: Vec<(PathBuf, &Path)> = Vec::new();
    for out in models {
        written.push((out.to_path_buf(), out));
        for f in quench_onnx::replaced_data_files(out) {
            written.push((f, out));
        }
    }
    for out in others {
        written.push((out.to_path_buf(), out));
    }
    // A missing directory is found now, not after the compile.
    for out in models.iter().chain(others) {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            bail!(
                "{}: the directory `{}` does not exist",
                out.display(),
                parent.display()
            );
        }
    }
    for (k, (w, out)) in written.iter().enumerate() {
        if let Ok(meta) = std::fs::metadata(w) {
            if !meta.is_file() {
                bail!(
                    "{}: exists and is not a regular file (a directory, device or pipe); choose another output path",
                    w.display()
                );
            }
        }
        for (inp, what) in &inputs {
            if same_file(w, inp) {
                bail!(
                    "{}: would overwrite {what}; choose another output path",
                    out.display()
                );
            }
        }
        // An existing file inside a data directory is read as data.
        for d in &data {
            if d.is_dir() && w.exists() {
                if let (Some(dir), Some(file)) = (resolved(d), resolved(w)) {
                    if file.starts_with(&dir) {
                        bail!(
                            "{}: would overwrite a file of the data directory `{}`; choose another output path",
                            out.display(),
                            d.display()
                        );
                    }
                }
            }
        }
        for (other, o2) in &written[..k] {
            if same_file(w, other)
                || matches!((resolved(w), resolved(other)), (Some(a), Some(b)) if a == b)
            {
                bail!(
                    "{}: given for two outputs (also `{}`); choose distinct paths",
                    out.display(),
                    o2.display()
                );
            }
        }
    }
    Ok(())
}

/// Writes `v` as JSON atomically (never a half-written `path`).
/// Calibration tables are written compactly: they are mostly histogram
/// counts, one line each when pretty-printed.
pub fn write_json<T: Serialize>(path: &Path, v: &T, pretty: bool) -> Result<()> {
    let s = if pretty {
        serde_json::to_string_pretty(v)?
    } else {
        serde_json::to_string(v)?
    };
    // The error already names the path.
    Ok(quench_onnx::write_atomic(path, s.as_bytes())?)
}

/// Loads a model file and imports it into the IR, with errors naming the
/// file.
pub fn load(path: &Path) -> anyhow::Result<(quench_onnx::LoadedModel, quench_ir::Model)> {
    let loaded = quench_onnx::load_model(path)?;
    let model = quench_ir::Model::from_onnx(loaded.model.clone())
        .with_context(|| format!("{}", path.display()))?;
    Ok((loaded, model))
}
