//! Numeric truth for the graph passes: the model before and after the
//! default pipeline runs in tract on random and fixture inputs with max
//! relative error ≤ 1e-5 (relative to the output's largest magnitude).

mod common;

use common::*;
use quench_ir::Model;
use quench_passes::{pipeline, run_passes, PassCx, RunOptions};

const TOL: f32 = 1e-5;

fn check(name: &str) -> (usize, String) {
    let original = load(&testdata(name));
    let mut m = Model::from_onnx(original.clone()).unwrap();
    let mut cx = PassCx::new(m.default_opset().unwrap());
    run_passes(
        &mut m.graph,
        &pipeline::default_pipeline(),
        &mut cx,
        &RunOptions {
            verify: true,
            dump_after: vec![],
        },
    )
    .unwrap();
    let after = m.to_onnx();
    let facts = input_facts(&original, 2);
    // tract cannot run BatchNormalization with computed parameters; that
    // model is compared in onnxruntime by the CI interop step instead.
    let tract_runs = name != "bn_nonconst.onnx";
    for seed in (0..3).filter(|_| tract_runs) {
        let inputs = random_inputs(&facts, seed);
        let a = run(&original, &facts, &inputs);
        let b = run(&after, &facts, &inputs);
        for (x, y) in a.iter().zip(&b) {
            let e = max_rel_err(x, y);
            assert!(
                e <= TOL,
                "{name}: max relative error {e:e} > {TOL:e} (seed {seed})"
            );
        }
    }
    // Write the rewritten model for the CI interop check.
    let out = interop_dir("passes").join(name);
    quench_onnx::save_model(&after, &out, &Default::default()).unwrap();
    (
        cx.stat("fold_batchnorm.folded") + cx.stat("fold_batchnorm.elementwise"),
        m.to_text(),
    )
}

#[test]
fn pipeline_preserves_outputs_on_every_fixture() {
    let mut folded = Vec::new();
    for f in [
        "cnn_bn.onnx",
        "mlp.onnx",
        "residual.onnx",
        "transformer.onnx",
        "if_subgraph.onnx",
        "external_data.onnx",
        "constant_weights.onnx",
        "bn_depthwise.onnx",
        "bn_nobias.onnx",
        "bn_convtranspose.onnx",
        "bn_gemm.onnx",
        "bn_matmul.onnx",
        "bn_shared.onnx",
        "bn_nonconst.onnx",
        "resnet_tiny.onnx",
        "mobilenet_tiny.onnx",
        "digits_cnn.onnx",
        "affine_fold.onnx",
    ] {
        let (n, text) = check(f);
        folded.push((f, n));
        if f.starts_with("bn_") && f != "bn_shared.onnx" && f != "bn_nonconst.onnx" {
            assert_eq!(n, 1, "{f}: expected one fold\n{text}");
        }
    }
    let get = |f: &str| {
        folded
            .iter()
            .find(|(n, _)| *n == f)
            .map(|(_, c)| *c)
            .unwrap()
    };
    assert_eq!(get("resnet_tiny.onnx"), 6);
    assert_eq!(get("mobilenet_tiny.onnx"), 7);
    assert_eq!(get("cnn_bn.onnx"), 2);
    assert_eq!(get("digits_cnn.onnx"), 2);
    // Mul by a scalar, Add and Sub per channel after Conv, Mul per column
    // after Gemm; the spatially varying Mul stays.
    assert_eq!(get("affine_fold.onnx"), 4);
}

#[test]
fn digits_fixture_inputs_give_the_same_logits() {
    let original = load(&testdata("digits_cnn.onnx"));
    let mut m = Model::from_onnx(original.clone()).unwrap();
    let mut cx = PassCx::new(17);
    run_passes(
        &mut m.graph,
        &pipeline::default_pipeline(),
        &mut cx,
        &RunOptions {
            verify: true,
            dump_after: vec![],
        },
    )
    .unwrap();
    let after = m.to_onnx();
    let data = quench_verify::Dataset::load(&testdata("digits/eval")).unwrap();
    let batch = data.sample_batch(0..64).unwrap();
    let inputs: Vec<_> = batch
        .into_iter()
        .filter(|(n, _)| n == "input")
        .map(|(_, a)| a)
        .collect();
    let facts = vec![quench_verify::InputFact {
        name: "input".into(),
        elem_type: 1,
        shape: inputs[0].shape().to_vec(),
    }];
    let a = run(&original, &facts, &inputs);
    let b = run(&after, &facts, &inputs);
    assert!(max_rel_err(&a[0], &b[0]) <= TOL);
}
