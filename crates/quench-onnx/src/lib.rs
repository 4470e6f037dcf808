//! ONNX model files for quench: the protobuf types, loading and saving.
//!
//! The protobuf types in [`proto`] are generated at build time from
//! `proto/onnx.proto` (prost-build driven by protox). Every `bytes` field is a
//! [`bytes::Bytes`], so tensor data decoded from a memory-mapped file is a
//! view into that map rather than a copy.
//!
//! [`load_model`] reads a `.onnx` file and resolves tensors stored as external
//! data; [`save_model`] writes a model atomically, inline or with external
//! data.
//!
//! Invariant: after [`load_model`] returns, no tensor anywhere in the model
//! (graph, subgraphs, functions, training info) refers to external data; all
//! tensor bytes are in `raw_data`. External storage is a property of how a
//! model is written, chosen by [`SaveOptions`].

#![allow(clippy::doc_overindented_list_items)]

pub mod dtype;
mod error;
mod external;
mod io;
mod tempfiles;
pub mod validate;
pub mod visit;

pub use error::OnnxError;
pub use io::write_atomic;
pub use io::{
    load_model, load_model_from_bytes, replaced_data_files, save_model, ExternalData, ExternalUse,
    LoadedModel, SaveOptions, SaveReport, DEFAULT_EXTERNAL_THRESHOLD,
};
pub use tempfiles::{registered_temp_files, remove_temp_files};

/// Types generated from `proto/onnx.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// The protobuf limit: a single message may not exceed 2 GiB.
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;
