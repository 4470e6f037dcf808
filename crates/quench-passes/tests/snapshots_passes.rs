//! Structural snapshots of each pass on fixtures, including the cases where
//! a pass must decline. Numeric truth (tract runs before/after) lives in
//! the workspace's `tests/passes_numeric.rs`.

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
fn fold_batchnorm_conv() {
    insta::assert_snapshot!(check(
        &mut load("cnn_bn.onnx"),
        &["fold_batchnorm", "dead_code"]
    ));
}

#[test]
fn fold_batchnorm_variants() {
    for f in [
        "bn_depthwise",
        "bn_nobias",
        "bn_convtranspose",
        "bn_gemm",
        "bn_matmul",
    ] {
        let mut m = load(&format!("{f}.onnx"));
        let text = check(&mut m, &["fold_batchnorm", "dead_code"]);
        assert!(
            !text.contains("BatchNormalization("),
            "{f} not folded:\n{text}"
        );
        insta::assert_snapshot!(f, text);
    }
}

#[test]
fn fold_batchnorm_declines_shared_and_nonconstant() {
    // Shared conv output: BN cannot be folded; it becomes Mul + Add.
    insta::assert_snapshot!(
        "bn_shared",
        check(
            &mut load("bn_shared.onnx"),
            &["fold_batchnorm", "batchnorm_to_muladd", "dead_code"]
        )
    );
    // Non-constant scale: left alone by both passes.
    let text = check(
        &mut load("bn_nonconst.onnx"),
        &["fold_batchnorm", "batchnorm_to_muladd"],
    );
    assert!(text.contains("BatchNormalization("));
    insta::assert_snapshot!("bn_nonconst", text);
}

#[test]
fn fold_batchnorm_declines_training_mode() {
    let mut m = load("cnn_bn.onnx");
    let bn = m
        .graph
        .node_ids()
        .into_iter()
        .find(|n| m.graph.node(*n).op_type() == "BatchNormalization")
        .unwrap();
    m.graph
        .node_proto_mut(bn)
        .set_attr(quench_onnx::proto::AttributeProto {
            name: Some("training_mode".into()),
            r#type: Some(quench_onnx::proto::attribute_proto::AttributeType::Int as i32),
            i: Some(1),
            ..Default::default()
        });
    let text = check(&mut m, &["fold_batchnorm", "batchnorm_to_muladd"]);
    assert_eq!(text.matches("BatchNormalization(").count(), 1, "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn constants_become_initializers() {
    insta::assert_snapshot!(check(
        &mut load("constant_weights.onnx"),
        &["constants_to_initializers", "fold_constants", "dead_code"]
    ));
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
