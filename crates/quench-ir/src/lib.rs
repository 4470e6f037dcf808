//! quench's graph IR.
//!
//! A [`Model`] holds one [`Graph`] plus everything else of the ONNX model
//! (opset imports, metadata, functions, training info) in a header that is
//! written back unchanged. A [`Graph`] is a set of nodes over a petgraph
//! `StableDiGraph` (never exposed: callers see [`NodeId`] and [`ValueId`]),
//! a value table, and a side table of constant tensors (initializers).
//!
//! A value is either a graph input, a constant (initializer), output slot
//! `k` of node `n`, or (inside a subgraph) a name from the enclosing scope.
//! Values keep their ONNX names: names are what users see, what subgraphs
//! capture and what calibration tables key on.
//!
//! Known ops are classified by [`OpKind`]; every node, known or not, keeps
//! its op type, domain and attributes verbatim (as ONNX `AttributeProto`s), so
//! import followed by export reproduces the model and unknown ops never block
//! anything. Subgraphs (`If`/`Loop`/`Scan` bodies) stay as ONNX graphs inside
//! attributes; the values they capture from this graph are recorded as the
//! node's implicit inputs, so dependency order and liveness see them.
//!
//! Invariant (checked by [`Graph::verify`]): every value a node consumes has
//! exactly one definition, the node graph is acyclic, graph outputs exist,
//! and value names are unique.

pub mod attr;
mod error;
mod export;
mod graph;
mod import;
mod infer;
mod op;
mod parse;
pub mod tensor;
mod text;

pub use error::{IrError, Problem};
pub use export::export_graph;
pub use graph::{Dim, Graph, Node, NodeId, Use, Value, ValueDef, ValueId};
pub use import::import_subgraph;
pub use op::OpKind;
pub use parse::{parse_graph, parse_model, ParseError};
pub use text::{format_float, GraphText, TextOptions};

use quench_onnx::proto::{ModelProto, OperatorSetIdProto};

/// An ONNX model in IR form.
#[derive(Debug, Clone)]
pub struct Model {
    /// The model message without its graph: IR version, opsets, producer,
    /// metadata, functions, training info. Written back as it is.
    pub header: ModelProto,
    pub graph: Graph,
}

impl Model {
    /// Imports an ONNX model. All structural problems (undefined inputs,
    /// duplicate names, cycles) are reported together.
    pub fn from_onnx(model: ModelProto) -> Result<Model, IrError> {
        import::import_model(model)
    }

    /// Exports to an ONNX model message.
    pub fn to_onnx(&self) -> ModelProto {
        export::export_model(self)
    }

    /// The version of the default ONNX operator set (`""` or `"ai.onnx"`).
    pub fn default_opset(&self) -> Option<i64> {
        self.opset("")
    }

    /// The imported version of an operator-set domain.
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let want = norm_domain(domain);
        self.header
            .opset_import
            .iter()
            .find(|o| norm_domain(o.domain()) == want)
            .map(|o| o.version())
    }

    /// Sets (or adds) the version of an operator-set domain.
    pub fn set_opset(&mut self, domain: &str, version: i64) {
        let want = norm_domain(domain);
        match self
            .header
            .opset_import
            .iter_mut()
            .find(|o| norm_domain(o.domain()) == want)
        {
            Some(o) => o.version = Some(version),
            None => self.header.opset_import.push(OperatorSetIdProto {
                domain: Some(domain.to_string()),
                version: Some(version),
            }),
        }
    }

    /// Imported operator sets as `(domain, version)`, the default domain
    /// named `ai.onnx`, sorted.
    pub fn opsets(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = self
            .header
            .opset_import
            .iter()
            .map(|o| {
                (
                    if o.domain().is_empty() {
                        "ai.onnx".to_string()
                    } else {
                        o.domain().to_string()
                    },
                    o.version(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Deterministic text form of the model (see [`GraphText`]).
    pub fn to_text(&self) -> String {
        text::model_text(self, &TextOptions::default())
    }

    /// The text form with options (e.g. small constants' data).
    pub fn to_text_with(&self, opts: &TextOptions) -> String {
        text::model_text(self, opts)
    }
}

/// `""` and `"ai.onnx"` both name the default domain.
pub fn norm_domain(d: &str) -> &str {
    if d == "ai.onnx" {
        ""
    } else {
        d
    }
}
