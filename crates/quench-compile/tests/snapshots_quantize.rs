//! IR text after QDQ insertion for every fixture (static mode, with a fixed
//! range of [-1, 1] for every activation: structure only; the numbers come
//! from calibration and are checked by the workspace's `tests/compile.rs`).

use std::path::Path;

use quench_ir::Model;
use quench_passes::quantize::{plan, Mode, QuantizeConfig, Ranges};

/// The driver's passes and quantize phases with a fixed range for every
/// planned activation.
fn quantized_text(file: &str, mode: Mode) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(file);
    let mut m = Model::from_onnx(quench_onnx::load_model(&p).unwrap().model).unwrap();
    let opset = m.default_opset().unwrap();
    let (_, mut cx) = quench_compile::run_pipeline(&mut m, &None, &[]).unwrap();
    let cfg = QuantizeConfig {
        mode,
        ..Default::default()
    };
    let pl = plan(&m.graph, &cfg).unwrap();
    let ranges: Ranges = pl
        .tensors_to_observe(&m.graph)
        .into_iter()
        .map(|t| (t, (-1.0, 1.0)))
        .collect();
    let summary =
        quench_compile::quantize_phase(&mut m, &pl, &ranges, &cfg, opset, &mut cx).unwrap();
    let mut s = m.to_text();
    s.push_str("--- decisions\n");
    for d in &summary.nodes {
        s.push_str(&format!(
            "{} {} {}: {}\n",
            if d.quantized { "Q" } else { "F" },
            d.op,
            d.node,
            d.reason
        ));
    }
    s
}

#[test]
fn static_qdq_snapshots_of_every_fixture() {
    insta::glob!("../../../testdata", "*.onnx", |path| {
        let name = path.file_name().unwrap().to_str().unwrap();
        insta::assert_snapshot!(quantized_text(name, Mode::Static));
    });
}

#[test]
fn weight_only_and_dynamic_snapshots() {
    for f in ["mlp", "transformer", "constant_weights"] {
        insta::assert_snapshot!(
            format!("weight_only_{f}"),
            quantized_text(&format!("{f}.onnx"), Mode::WeightOnly)
        );
        insta::assert_snapshot!(
            format!("dynamic_{f}"),
            quantized_text(&format!("{f}.onnx"), Mode::Dynamic)
        );
    }
}

/// Control flow (`testdata/control_flow/`): int8 weights inside If, Loop
/// and Scan bodies, captured constants quantized where they are defined
/// under their own name, LSTM tables stored int8 (weight-only mode; static
/// mode adds nothing inside bodies).
#[test]
fn control_flow_weight_snapshots() {
    for f in ["vad_if", "loop_scan", "if_shape"] {
        insta::assert_snapshot!(
            format!("weight_only_control_flow_{f}"),
            quantized_text(&format!("control_flow/{f}.onnx"), Mode::WeightOnly)
        );
    }
}
