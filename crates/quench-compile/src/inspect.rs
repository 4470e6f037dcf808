//! `quench inspect`'s summary of a model as data: IR version, opsets,
//! inputs and outputs, op histogram, parameters by element type, external
//! data, what would be quantized, and whether it is already quantized. The
//! command line prints it as text or JSON.

use std::collections::BTreeMap;
use std::path::Path;

use quench_ir::{Model, OpKind};
use quench_onnx::dtype::{elem_name, packed_bytes};
use quench_onnx::proto::{GraphProto, TensorProto};
use serde::Serialize;

#[derive(Serialize, Debug)]
pub struct Summary {
    pub file: String,
    pub file_bytes: u64,
    pub ir_version: i64,
    pub opsets: BTreeMap<String, i64>,
    pub producer: String,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    /// Top-level nodes by op type (custom domains as `domain.Op`).
    pub ops: BTreeMap<String, usize>,
    pub nodes: usize,
    /// Nodes inside If/Loop/Scan bodies (recursively).
    pub subgraph_nodes: usize,
    /// Constant tensors (initializers and `Constant` nodes) by element type.
    pub parameters: BTreeMap<String, ParamStats>,
    pub parameter_count: u64,
    pub parameter_bytes: u64,
    pub external_data: ExternalStats,
    /// Nodes `quench compile` quantizes by default (after the graph passes),
    /// by op type.
    pub quantizable: BTreeMap<String, usize>,
    /// Set when the model already holds quantization nodes: the form (QDQ,
    /// QOperator) and counts, as one line (`quench compile` refuses it).
    pub already_quantized: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Debug)]
pub struct Io {
    pub name: String,
    pub r#type: String,
}

#[derive(Serialize, Debug, Default)]
pub struct ParamStats {
    pub tensors: usize,
    pub elements: u64,
    pub bytes: u64,
}

#[derive(Serialize, Debug)]
pub struct ExternalStats {
    pub files: Vec<String>,
    pub tensors: usize,
    pub bytes: u64,
}

fn count_subgraph_nodes(g: &GraphProto) -> usize {
    g.node
        .iter()
        .map(|n| {
            1 + n
                .attribute
                .iter()
                .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
                .map(count_subgraph_nodes)
                .sum::<usize>()
        })
        .sum()
}

/// The parameters held inside a subgraph body (its initializers and
/// Constant node values, nested bodies included).
fn add_subgraph_params(params: &mut BTreeMap<String, ParamStats>, g: &GraphProto) {
    for t in &g.initializer {
        add_param(params, t);
    }
    for n in &g.node {
        if n.op_type() == "Constant" && n.domain().is_empty() {
            if let Some(t) = n
                .attribute
                .iter()
                .find(|a| a.name() == "value")
                .and_then(|a| a.t.as_ref())
            {
                add_param(params, t);
            }
        }
        for b in n
            .attribute
            .iter()
            .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
        {
            add_subgraph_params(params, b);
        }
    }
}

fn add_param(params: &mut BTreeMap<String, ParamStats>, t: &TensorProto) {
    let n: u64 = t.dims.iter().map(|d| (*d).max(0) as u64).product();
    let e = params.entry(elem_name(t.data_type())).or_default();
    e.tensors += 1;
    e.elements += n;
    e.bytes += packed_bytes(t.data_type(), n).unwrap_or_else(|| quench_ir::tensor::data_bytes(t));
}

pub fn summarize(path: &Path, loaded: &quench_onnx::LoadedModel, model: &Model) -> Summary {
    let g = &model.graph;
    let h = &model.header;
    let io = |v: &quench_ir::ValueId| Io {
        name: g.value(*v).name.clone(),
        r#type: type_string(g, *v),
    };
    let mut ops = BTreeMap::new();
    let mut subgraph_nodes = 0;
    let mut params = BTreeMap::new();
    let mut quantizable = BTreeMap::new();
    for n in g.node_ids() {
        let node = g.node(n);
        let key = if node.domain().is_empty() {
            node.op_type().to_string()
        } else {
            format!("{}.{}", node.domain(), node.op_type())
        };
        *ops.entry(key).or_insert(0) += 1;
        for a in &node.proto.attribute {
            for sg in a.g.iter().chain(a.graphs.iter()) {
                subgraph_nodes += count_subgraph_nodes(sg);
                add_subgraph_params(&mut params, sg);
            }
        }
        if node.kind() == OpKind::Constant {
            if let Some(t) = node.attr_tensor("value") {
                add_param(&mut params, t);
            }
        }
    }
    // What `quench compile` would quantize (static mode, default settings,
    // after the default passes), from the same rules table.
    let mut after = model.clone();
    let mut cx = quench_passes::PassCx::new(after.default_opset().unwrap_or(0));
    let passes = quench_passes::pipeline::default_pipeline();
    if quench_passes::run_passes(&mut after.graph, &passes, &mut cx, &Default::default()).is_ok() {
        if let Ok(plan) = quench_passes::quantize::plan(&after.graph, &Default::default()) {
            for d in plan.decisions.iter().filter(|d| d.quantized) {
                *quantizable.entry(d.op.clone()).or_insert(0) += 1;
            }
        }
        // Weights inside If/Loop/Scan bodies, as the compile quantizes them.
        let opset = after.default_opset().unwrap_or(0);
        if let Ok(b) = quench_passes::subgraphs::quantize_bodies(
            &mut after.graph,
            &Default::default(),
            opset,
            &mut cx,
        ) {
            for d in b.decisions.iter().filter(|d| d.quantized) {
                *quantizable.entry(d.op.clone()).or_insert(0) += 1;
            }
        }
    }
    for (_, t) in g.initializers() {
        add_param(&mut params, t);
    }
    let opsets = model.opsets().into_iter().collect();
    Summary {
        file: path.display().to_string(),
        file_bytes: loaded.file_bytes,
        ir_version: h.ir_version(),
        opsets,
        producer: format!("{} {}", h.producer_name(), h.producer_version())
            .trim()
            .to_string(),
        inputs: g
            .inputs()
            .iter()
            .filter(|v| g.initializer(**v).is_none())
            .map(io)
            .collect(),
        outputs: g.outputs().iter().map(io).collect(),
        nodes: g.node_count(),
        ops,
        subgraph_nodes,
        parameter_count: params.values().map(|p: &ParamStats| p.elements).sum(),
        parameter_bytes: params.values().map(|p| p.bytes).sum(),
        parameters: params,
        external_data: ExternalStats {
            files: loaded.external.files.clone(),
            tensors: loaded.external.tensors,
            bytes: loaded.external.bytes,
        },
        quantizable,
        already_quantized: loaded
            .model
            .graph
            .as_ref()
            .and_then(crate::prequantized::detect)
            .map(|q| q.to_string()),
        metadata: h
            .metadata_props
            .iter()
            .map(|e| (e.key().to_string(), e.value().to_string()))
            .collect(),
    }
}

fn type_string(g: &quench_ir::Graph, v: quench_ir::ValueId) -> String {
    let val = g.value(v);
    let elem = val.elem_type().map(elem_name).unwrap_or_else(|| "?".into());
    match val.shape() {
        Some(s) => {
            let d: Vec<String> = s
                .iter()
                .map(|d| match d {
                    quench_ir::Dim::Known(x) => x.to_string(),
                    quench_ir::Dim::Sym(p) => p.clone(),
                    quench_ir::Dim::Unknown => "?".into(),
                })
                .collect();
            format!("{elem}[{}]", d.join(","))
        }
        None => format!("{elem}[*]"),
    }
}
