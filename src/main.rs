//! The `quench` command line.

// The process-wide allocator (mimalloc, see src/alloc.rs) is declared by
// the `quench` library target; naming the crate links it in.
extern crate quench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod compile;
mod convert;
mod files;
mod inspect;
mod text;

/// quench: an ONNX quantization compiler.
///
/// Reads FP32 ONNX models (including models with external data and models
/// above 2 GB) and writes standard ONNX models. Unknown ops and custom
/// domains are carried through untouched.
#[derive(Parser, Debug)]
#[command(name = "quench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Quantize a model: passes, calibration, QDQ insertion, verification in
    /// tract against FP32 (the main job).
    Compile(Box<compile::CompileArgs>),
    /// Run calibration only and write a reusable calibration table (JSON)
    /// for `quench compile --calibration-table`.
    Calibrate(compile::CalibrateArgs),
    /// List the graph passes of the default pipeline, in order, then the
    /// optional ones.
    Passes,
    /// Summarise a model: IR version, opsets, inputs/outputs, op histogram,
    /// parameters by element type, external data, quantizable ops.
    Inspect(inspect::InspectArgs),
    /// Re-emit a model through quench's IR with no passes (checks the round
    /// trip on your model), optionally moving weights to or from external
    /// data.
    Convert(convert::ConvertArgs),
}

fn main() -> ExitCode {
    // tract panics are contained and reported as errors naming the phase
    // and node; the default hook would also print them as "panicked".
    quench_verify::quiet_contained_panics();
    // An interrupted save must not leave its (possibly full-size) temporary
    // files behind: remove them, then exit as the signal would (128 + 2).
    // If the handler cannot be installed, saves still work; only the
    // clean-up on interruption is lost.
    let _ = ctrlc::set_handler(|| {
        quench_onnx::remove_temp_files();
        std::process::exit(130);
    });
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile(a) => match compile::compile(*a) {
            Ok(None) => Ok(()),
            Ok(Some(compile::ThresholdFailed(msg))) => {
                eprintln!("error: verification threshold not met: {msg}");
                return ExitCode::from(3);
            }
            Err(e) => Err(e),
        },
        Command::Calibrate(a) => compile::calibrate(a),
        Command::Passes => {
            for p in quench_passes::pipeline::default_pipeline() {
                println!("{:<28} {}", p.name(), p.description());
            }
            println!("optional (by name in --passes, or their own flag):");
            for p in quench_passes::pipeline::optional_passes() {
                println!("{:<28} {}", p.name(), p.description());
            }
            Ok(())
        }
        Command::Inspect(a) => inspect::run(a),
        Command::Convert(a) => convert::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
