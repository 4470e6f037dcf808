//! Numeric truth for the graph passes: the model before and after the
//! default pipeline runs in tract on random and fixture inputs with max
//! relative error ≤ 1e-5 (relative to the output's largest magnitude).

mod common;

use common::*;
use quench_ir::Model;
use quench_passes::{pipeline, run_passes, PassCx, RunOptions};

const TOL: f32 = 1e-5;

/// Runs the default pipeline on a fixture, compares it with the original
/// in tract, writes it for the interop check; returns the BN folds, the IR
/// text and the pass context (for its counters).
fn check(name: &str) -> (usize, String, PassCx) {
    let original = load(&testdata(name));
    let opset = Model::from_onnx(original.clone())
        .unwrap()
        .default_opset()
        .unwrap();
    let (m, cx) = run_on(&original, opset, &pipeline::default_pipeline());
    let after = m.to_onnx();
    let facts = input_facts(&original, 2);
    // tract cannot run BatchNormalization with computed parameters; that
    // model is compared in ONNX Runtime only, by scripts/interop_check.py
    // through the `.check.json` written below.
    let tract_runs = name != "bn_nonconst.onnx";
    for seed in (0..3).filter(|_| tract_runs) {
        let inputs = random_inputs(&facts, seed);
        let a = run_raw(&original, &facts, &inputs);
        let b = run_raw(&after, &facts, &inputs);
        if let Err(e) = compare_outputs(&a, &b, TOL) {
            panic!("{name}: {e} (seed {seed})");
        }
    }
    // Write the rewritten model for the CI interop check.
    let out = interop_dir("passes").join(name);
    quench_onnx::save_model(&after, &out, &Default::default()).unwrap();
    // ... and the original next to it, compared in ONNX Runtime.
    write_interop_pair(&out, &original, None, &InteropCheck::exact(TOL));
    (
        cx.stat("fold_batchnorm.folded") + cx.stat("fold_batchnorm.elementwise"),
        m.to_text(),
        cx,
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
        let (n, text, _) = check(f);
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

/// `identity_dedup.onnx` (testdata/make_fixtures.py) has two Identity
/// nodes (one making the graph output), an inference-mode Dropout and two
/// convs with byte-identical weights and biases under different names: the
/// passes fire (2 + 1 nodes removed, 2 initializers merged) and tract gives
/// the same outputs before and after within 1e-5, on three random inputs.
#[test]
fn remove_identity_and_dedup_initializers_fire_and_keep_outputs() {
    let (_, text, cx) = check("identity_dedup.onnx");
    assert_eq!(cx.stat("remove_identity.removed"), 3, "{text}");
    assert_eq!(cx.stat("dedup_initializers.merged"), 2, "{text}");
    assert!(
        !text.contains("Identity") && !text.contains("Dropout"),
        "{text}"
    );
    // The graph output keeps its name (the Identity that made it is gone).
    let after = load(&interop_dir("passes").join("identity_dedup.onnx"));
    let names = |m: &quench_onnx::proto::ModelProto| -> Vec<String> {
        let g = m.graph.as_ref().unwrap();
        g.output.iter().map(|o| o.name().to_string()).collect()
    };
    assert_eq!(names(&after), vec!["output".to_string()]);
    assert_eq!(
        names(&after),
        names(&load(&testdata("identity_dedup.onnx")))
    );
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
    let a = run_raw(&original, &facts, &inputs);
    let b = run_raw(&after, &facts, &inputs);
    if let Err(e) = compare_outputs(&a, &b, TOL) {
        panic!("digits: {e}");
    }
}

/// Runs one pass on `original` (verified), returns the rewritten model, its
/// op types in order and the pass context.
/// `original` after `passes` at `opset` (verified after each), with the
/// pass context.
fn run_on(
    original: &quench_onnx::proto::ModelProto,
    opset: i64,
    passes: &[Box<dyn quench_passes::Pass>],
) -> (Model, PassCx) {
    let mut m = Model::from_onnx(original.clone()).unwrap();
    let mut cx = PassCx::new(opset);
    run_passes(
        &mut m.graph,
        passes,
        &mut cx,
        &RunOptions {
            verify: true,
            dump_after: vec![],
        },
    )
    .unwrap();
    (m, cx)
}

fn one_pass(
    original: &quench_onnx::proto::ModelProto,
    opset: i64,
    pass: Box<dyn quench_passes::Pass>,
) -> (quench_onnx::proto::ModelProto, Vec<String>, PassCx) {
    let (m, cx) = run_on(original, opset, &[pass]);
    let after = m.to_onnx();
    let ops = after
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type().to_string())
        .collect();
    (after, ops, cx)
}

/// `fuse_hard_swish` (run by the compile after quantization) computes what
/// the written-out hard-swish computed: silu_cnn's `x * Clip(x + 3, 0, 6) /
/// 6` as HardSwish (opset 17) and, with the opset set to 13, as `x *
/// HardSigmoid(x)`, in tract on random inputs within 1e-5 of the original.
#[test]
fn fused_hard_swish_preserves_outputs() {
    for (opset, op) in [(17, "HardSwish"), (13, "HardSigmoid")] {
        let mut original = load(&testdata("silu_cnn.onnx"));
        for o in &mut original.opset_import {
            if o.domain().is_empty() {
                o.version = Some(opset);
            }
        }
        let (after, ops, cx) = one_pass(
            &original,
            opset,
            Box::new(quench_passes::fuse_hard_swish::FuseHardSwish),
        );
        assert_eq!(cx.stat("fuse_hard_swish.fused"), 1, "{:?}", cx.log);
        let has = |o: &str| ops.iter().any(|x| x == o);
        assert!(has(op) && !has("Clip") && !has("Div"), "{ops:?}");
        let facts = input_facts(&original, 2);
        for seed in 0..3 {
            let inputs = random_inputs(&facts, seed);
            let a = run_raw(&original, &facts, &inputs);
            let b = run_raw(&after, &facts, &inputs);
            compare_outputs(&a, &b, TOL).unwrap_or_else(|e| panic!("opset {opset}: {e}"));
        }
        let out = interop_dir("passes").join(format!("silu_cnn_fused_hs_{opset}.onnx"));
        quench_onnx::save_model(&after, &out, &Default::default()).unwrap();
        write_interop_pair(&out, &original, None, &InteropCheck::exact(TOL));
    }
}

/// `matmul_add_to_gemm` (run by the compile before static quantization)
/// computes what the MatMul + bias Add pairs computed: mlp.onnx's first two
/// dense layers (input `[N, 32]`, Relus between; its third is a Gemm
/// already) as Gemms, in tract on random inputs within 1e-5 of the
/// original.
#[test]
fn matmul_add_to_gemm_preserves_outputs() {
    let original = load(&testdata("mlp.onnx"));
    let opset = Model::from_onnx(original.clone())
        .unwrap()
        .default_opset()
        .unwrap();
    let (after, ops, cx) = one_pass(
        &original,
        opset,
        Box::new(quench_passes::matmul_add_to_gemm::MatMulAddToGemm::default()),
    );
    assert_eq!(cx.stat("matmul_add_to_gemm.fused"), 2, "{:?}", cx.log);
    assert!(
        !ops.iter().any(|o| o == "MatMul") && ops.iter().filter(|o| *o == "Gemm").count() == 3,
        "{ops:?}"
    );
    let facts = input_facts(&original, 2);
    for seed in 0..3 {
        let inputs = random_inputs(&facts, seed);
        let a = run_raw(&original, &facts, &inputs);
        let b = run_raw(&after, &facts, &inputs);
        compare_outputs(&a, &b, TOL).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    let out = interop_dir("passes").join("mlp_gemm.onnx");
    quench_onnx::save_model(&after, &out, &Default::default()).unwrap();
    write_interop_pair(&out, &original, None, &InteropCheck::exact(TOL));
}
