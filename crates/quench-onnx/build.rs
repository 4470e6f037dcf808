//! Generates the ONNX protobuf types from `proto/onnx.proto` with protox
//! (a pure-Rust protobuf compiler), so no `protoc` binary is ever needed.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = root.join("onnx.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = match protox::compile([&proto], [&root]) {
        Ok(fds) => fds,
        Err(e) => panic!("cannot compile {}: {e:?}", proto.display()),
    };
    let mut cfg = prost_build::Config::new();
    // `bytes::Bytes` for every bytes field: decoding from a memory-mapped
    // file then slices tensor data out of the map instead of copying it.
    cfg.bytes(["."]);
    if let Err(e) = cfg.compile_fds(fds) {
        panic!("cannot generate Rust types for {}: {e}", proto.display());
    }
}
