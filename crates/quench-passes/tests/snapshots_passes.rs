//! Structural snapshots of the default pipeline on whole fixtures. Single
//! passes, including the cases where a pass must decline, are filetests
//! (`filetests/*.qir`, run by `tests/filetests.rs`). Numeric truth (tract
//! runs before/after) lives in the workspace's `tests/passes_numeric.rs`.

use std::path::Path;

use quench_ir::Model;
use quench_passes::{pipeline, run_passes, PassCx, RunOptions};

fn load(name: &str) -> Model {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name);
    Model::from_onnx(quench_onnx::load_model(&p).unwrap().model).unwrap()
}

/// Runs the named passes on a model and returns the IR text after them
/// followed by the passes' log.
fn check(model: &mut Model, passes: &[&str]) -> String {
    let names: Vec<String> = passes.iter().map(|s| s.to_string()).collect();
    let passes = pipeline::by_names(&names).unwrap();
    let mut cx = PassCx::new(model.default_opset().unwrap_or(0));
    run_passes(
        &mut model.graph,
        &passes,
        &mut cx,
        &RunOptions {
            verify: true,
            dump_after: vec![],
        },
    )
    .unwrap();
    let mut s = model.to_text();
    s.push_str("--- log\n");
    for l in &cx.log {
        s.push_str(l);
        s.push('\n');
    }
    s
}

#[test]
fn default_pipeline_on_real_shapes() {
    for f in [
        "resnet_tiny",
        "mobilenet_tiny",
        "transformer",
        "if_subgraph",
        "custom_domain",
        "digits_cnn",
    ] {
        let mut m = load(&format!("{f}.onnx"));
        let names: Vec<&str> = pipeline::default_pipeline()
            .iter()
            .map(|p| p.name())
            .collect();
        insta::assert_snapshot!(format!("pipeline_{f}"), check(&mut m, &names));
    }
}
