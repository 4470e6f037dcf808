//! The whole pipeline, not just the loader: load → import → default passes
//! → weight-only quantize → export → re-import (see
//! `fuzz/common/pipeline.rs`, shared with `tests/fuzz_pipeline.rs`).
//! Inputs are model bytes (seed the corpus with testdata/*.onnx) or, when
//! they start with `QGEN`, seeds of small random graphs built by the
//! structured generator. A panic (or a sanitizer report) is a finding:
//! an invalid graph after a pass or quantization, or an exported model that
//! does not decode, import and verify.
//!
//!   FUZZ_TARGET=pipeline scripts/fuzz.sh 1800

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/pipeline.rs"]
mod pipeline;

fuzz_target!(|data: &[u8]| {
    let _ = pipeline::run(data);
});
