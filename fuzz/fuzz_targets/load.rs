//! Arbitrary bytes through the loader and the IR: decode, import, IR text,
//! export, encode, decode and re-import. Errors are expected for almost
//! every input; the target fails only on a panic (or a sanitizer report).
//!
//! The same pipeline runs in CI over deterministic mutations of the
//! fixtures (`tests/loader_robustness.rs`), which also replays every file
//! in `fuzz/regressions/`.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(proto) = quench_onnx::load_model_from_bytes(
        bytes::Bytes::copy_from_slice(data),
        Path::new("fuzz.onnx"),
    ) else {
        return;
    };
    let Ok(model) = quench_ir::Model::from_onnx(proto) else {
        return;
    };
    let _ = model.graph.verify();
    let text = model.to_text();
    let out = model.to_onnx();
    let encoded = out.encode_to_vec();
    let again =
        match quench_onnx::load_model_from_bytes(encoded.into(), Path::new("re-encoded.onnx")) {
            Ok(m) => m,
            Err(e) => panic!("an exported model does not decode: {e}"),
        };
    let model2 = match quench_ir::Model::from_onnx(again) {
        Ok(m) => m,
        Err(e) => panic!("an exported model does not import: {e}"),
    };
    assert_eq!(
        model2.to_text(),
        text,
        "IR text changes over export and re-import"
    );
});
