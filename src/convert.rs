//! `quench convert`: import → export with no passes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use quench_onnx::{ExternalData, SaveOptions};

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Input model (.onnx).
    pub input: PathBuf,
    /// Output model (.onnx). Written atomically; never the input file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Store tensors of at least 1 KiB in `<output>.<16 hex digits>.data`
    /// beside the model (named after a hash of the data; the replaced data
    /// file is removed).
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

pub fn run(a: ConvertArgs) -> Result<()> {
    let (loaded, model) = crate::files::load(&a.input)?;
    crate::files::check_outputs(&loaded, &[], &[&a.output], &[])?;
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
