use std::path::PathBuf;

/// Errors reading or writing ONNX files. Every variant names the file and,
/// where there is one, the tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot write", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the file is empty, not an ONNX model", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a valid ONNX model (the file may be truncated or not an ONNX file); protobuf decoding failed", path.display())]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("{}: the model has no graph", path.display())]
    NoGraph { path: PathBuf },
    #[error("{}: tensor `{tensor}`: external data file `{location}` cannot be read", path.display())]
    ExternalMissing {
        path: PathBuf,
        tensor: String,
        location: String,
        source: std::io::Error,
    },
    #[error("{}: tensor `{tensor}`: external data file `{location}` has {have} bytes, but the tensor needs bytes {offset}..{end}", path.display())]
    ExternalShort {
        path: PathBuf,
        tensor: String,
        location: String,
        offset: u64,
        end: u64,
        have: u64,
    },
    #[error("{}: tensor `{tensor}`: invalid external data reference: {reason}", path.display())]
    ExternalInvalid {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    TensorData {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{}: the model is {size} bytes, above the 2 GiB protobuf limit; write it with external data", path.display())]
    TooLarge { path: PathBuf, size: u64 },
}
