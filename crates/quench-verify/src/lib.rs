//! Runs ONNX models for quench and measures how far two runs disagree.
//!
//! This is the only quench crate that depends on tract; everything else
//! builds and tests without it. Three parts:
//!
//! - [`data`]: [`ArrayData`], a tensor value that does not depend on tract
//!   (converts to and from tract tensors and ONNX `TensorProto`s), and
//!   [`Dataset`], named model inputs loaded from `.npy` directories, `.npz`
//!   files, or the ONNX `test_data_set_*` layout.
//! - [`runner`]: [`Runner`], a model compiled by tract that can also expose
//!   intermediate tensors (for calibration), and [`prepare_for_tract`], which
//!   makes a copy of a model that tract accepts more often.
//! - [`metrics`]: SQNR, cosine similarity, absolute errors and top-1
//!   agreement, accumulated over many samples.
//! - [`evaluate`]: the one measuring harness: a runner cache per model
//!   ([`Runners`]) and an [`Evaluator`] that runs several models on the
//!   same samples and compares their outputs or exposed tensors
//!   (verification, pruning fidelity and sensitivity, per-tensor
//!   attribution).
//!
//! tract is an accuracy oracle here, not a speed oracle: it runs QDQ models
//! with float kernels (see the project's FACTS).

pub mod data;
pub mod evaluate;
pub mod fake_quant;
pub mod lane_softmax;
pub mod metrics;
pub mod runner;
mod segment;

pub use data::{ArrayData, DataError, Dataset, Feed, ModelInput, NarrowType};
pub use evaluate::{
    batch_leading_outputs, input_names, integer_outputs, output_names, Cached, Evaluator,
    LabelHits, PairFigures, PartMask, PartSplit, Runners, Subject, MAX_BATCH,
};
pub use metrics::{Accumulator, Metrics, MetricsError, SampleSqnr, Top1};
pub use runner::{
    panic_is_contained, prepare_for_tract, quiet_contained_panics, InputFact, RunError, Runner,
    RunnerConfig, UnsupportedOp,
};
