//! `quench convert`: import → export with no passes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use quench_onnx::{ExternalData, SaveOptions};

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Input model (.onnx).
    pub input: PathBuf,
    /// Output model (.onnx). Written atomically; never the input file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Store tensors of at least 1 KiB in `<output>.data` beside the model.
    #[arg(long, conflicts_with = "inline")]
    pub external_data: bool,
    /// Store all tensors inside the .onnx file (fails above 2 GiB).
    #[arg(long)]
    pub inline: bool,
}

/// The storage to write with: what the user asked, else what the input
/// used (external data stays external), else inline up to the 2 GiB limit.
pub(crate) fn storage(external: bool, inline: bool, input_had_external: bool) -> ExternalData {
    if external || (!inline && input_had_external) {
        ExternalData::External {
            threshold: quench_onnx::DEFAULT_EXTERNAL_THRESHOLD,
        }
    } else if inline {
        ExternalData::Inline
    } else {
        ExternalData::Auto
    }
}

/// Refuses outputs that would overwrite the input model or its data.
pub(crate) fn check_output(input: &Path, external_files: &[String], output: &Path) -> Result<()> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(input, output) {
        bail!(
            "{}: output would overwrite the input model; choose another path",
            output.display()
        );
    }
    let data = output.with_file_name(format!(
        "{}.data",
        output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    if same(input, &data) {
        bail!("{}: its external data file `{}` would overwrite the input model; choose another output name", output.display(), data.display());
    }
    let base = input.parent().unwrap_or(Path::new("."));
    for f in external_files {
        if same(&base.join(f), output) {
            bail!("{}: output would overwrite the input's external data file `{f}`; choose another path", output.display());
        }
        if same(&base.join(f), &data) {
            bail!("{}: its external data file would overwrite the input's `{f}`; choose another output name", output.display());
        }
    }
    Ok(())
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let (loaded, model) = crate::load(&a.input)?;
    check_output(&a.input, &loaded.external.files, &a.output)?;
    model
        .graph
        .verify()
        .with_context(|| a.input.display().to_string())?;
    let opts = SaveOptions {
        external: storage(a.external_data, a.inline, loaded.external.tensors > 0),
        limit: None,
    };
    let report = quench_onnx::save_model(&model.to_onnx(), &a.output, &opts)?;
    println!(
        "wrote {} ({} bytes){}",
        report.model_path.display(),
        report.model_bytes,
        match &report.data_path {
            Some(p) => format!(
                " + {} ({} bytes, {} tensors)",
                p.display(),
                report.data_bytes,
                report.external_tensors
            ),
            None => String::new(),
        }
    );
    Ok(())
}
