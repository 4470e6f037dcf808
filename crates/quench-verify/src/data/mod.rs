//! Tensor values and datasets, independent of tract.
//!
//! [`ArrayData`] is an owned n-dimensional array of one of the element types
//! quench feeds to or reads back from a model (f32, f64, f16, bf16, i64,
//! i32, i16, i8, u64, u32, u16, u8, bool, and the narrow types: float8,
//! float4, int4/uint4, int2/uint2, read from TensorProtos only). It converts to and from ONNX `TensorProto`s (little-endian
//! `raw_data`, or the typed `*_data` fields) and tract tensors.
//!
//! [`Dataset`] holds named model inputs for many samples, read from disk
//! batch by batch. It is loaded from three layouts (see [`Dataset::load`])
//! and bound to a model with [`Dataset::check_against`], which validates
//! names, element types, shapes and sample counts and says how samples become
//! model inputs ([`Feed`]).
//!
//! Invariant: the element type of an `ArrayData` is its variant; arrays are
//! always in standard (C) order once built by this module, so their raw bytes
//! can be written out without reordering.

mod array;
mod dataset;
mod narrow;
mod npy;

pub use array::ArrayData;
pub use dataset::{Dataset, Feed, ModelInput};
pub use narrow::NarrowType;

use std::path::PathBuf;

/// Errors reading tensors and datasets or matching a dataset to a model.
/// Every variant names the file or the input concerned.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: cannot read", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid .npy file", path.display())]
    Npy {
        path: PathBuf,
        source: ndarray_npy::ReadNpyError,
    },
    #[error("{}: not a valid .npz file", path.display())]
    Npz {
        path: PathBuf,
        source: ndarray_npy::ReadNpzError,
    },
    #[error("{}: array `{name}` has element type {dtype}; supported: f32, f64, f16 ('<f2'), bf16 ('<V2', as ml_dtypes writes it), i64, i32, i16, i8, u64, u32, u16, u8, bool", path.display())]
    UnsupportedNpyType {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{}: not a TensorProto file (protobuf decoding failed)", path.display())]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },
    #[error("{}: no dataset found: expected `<input>.npy` files, an .npz file, or `test_data_set_*/input_*.pb`", path.display())]
    NoData { path: PathBuf },
    #[error("{}: {reason}", path.display())]
    Layout { path: PathBuf, reason: String },
    #[error("{}: the dataset has no input{} {}; it has: {}", path.display(), if missing.len() > 1 { "s" } else { "" }, quote_list(missing), quote_list(available))]
    MissingInput {
        path: PathBuf,
        missing: Vec<String>,
        available: Vec<String>,
    },
    #[error("{}: input `{name}`: the model takes {expected}, the dataset holds {found}", path.display())]
    DtypeMismatch {
        path: PathBuf,
        name: String,
        expected: String,
        found: String,
    },
    #[error("{}: input `{name}`: {reason}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{}: input `{name}` has {count} samples but input `{first}` has {first_count}", path.display())]
    SampleCount {
        path: PathBuf,
        name: String,
        count: usize,
        first: String,
        first_count: usize,
    },
    #[error("{}: sample index {index} is out of range: the dataset has {count} samples", path.display())]
    OutOfRange {
        path: PathBuf,
        index: usize,
        count: usize,
    },
}

pub(crate) fn quote_list(names: &[String]) -> String {
    if names.is_empty() {
        return "(nothing)".to_string();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
