//! Every fixture passes the type check as loaded and after the default pass
//! pipeline; a graph with a float input to `And` does not (see the unit
//! tests in `src/typecheck.rs`).

use std::path::Path;

use quench_ir::Model;
use quench_passes::{pipeline, run_passes, typecheck, PassCx, RunOptions};

#[test]
fn fixtures_pass_the_type_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    entries.sort();
    for path in entries {
        let loaded = quench_onnx::load_model(&path).expect("fixture loads");
        let mut model = Model::from_onnx(loaded.model).expect("fixture imports");
        let opset = model.default_opset().unwrap_or(0);
        if let Err(errs) = typecheck::check(&model.graph, opset) {
            panic!("{} as loaded: {errs:?}", path.display());
        }
        let passes = pipeline::default_pipeline();
        let mut cx = PassCx::new(opset);
        run_passes(&mut model.graph, &passes, &mut cx, &RunOptions::default()).expect("pipeline");
        if let Err(errs) = typecheck::check(&model.graph, opset) {
            panic!("{} after the pipeline: {errs:?}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures");
}

/// DequantizeLinear's input types by opset (the ONNX schemas): int32 (the
/// bias form) from opset 10 on, int16 only from 21; a float input never.
#[test]
fn dequantize_input_types_follow_the_opset() {
    let check = |elem: &str, opset: i64| {
        let text = format!(
            "# ir_version 8; opset ai.onnx {opset}\ngraph main(%x: {elem}[4], %s: f32[], %z: {elem}[]) -> (%0)\n  %0 = DequantizeLinear(%x, %s, %z) : f32[4]  # dq: y\n"
        );
        let m = quench_ir::parse_model(&text).expect("parses");
        typecheck::check(&m.graph, opset).is_ok()
    };
    let got: Vec<bool> = [
        ("i32", 13),
        ("i32", 19),
        ("i32", 21),
        ("u8", 13),
        ("i16", 13),
        ("i16", 21),
        ("f32", 13),
    ]
    .iter()
    .map(|(e, o)| check(e, *o))
    .collect();
    assert_eq!(got, vec![true, true, true, true, false, true, false]);
}
