//! Long graphs run as consecutive segments.
//!
//! Building a tract model is quadratic in its node count (`wire_node`,
//! `ModelPatch::apply` and `check_consistency` rescan the graph): a
//! 1,000-node chain took seconds per compiled model, 4,000 nodes minutes,
//! and every measurement compiles several. A main graph of more than
//! `max_nodes` nodes is therefore cut, in its node order, into segments of
//! at most `max_nodes` nodes; each becomes its own ONNX model, compiled with
//! the facts tract inferred for the values it receives, and a run feeds each
//! segment the values it needs from the graph inputs and earlier segments.
//! Cost is linear in the node count for a fixed segment size.
//!
//! Cuts: a segment ends where the values still needed later (the *carried*
//! set: tensors made so far that a later node reads) are fewest, at most
//! [`MAX_CARRIED`], searched in the second half of the window (past it
//! when the window has no cut), so a chain is cut at a single tensor and a
//! residual network between blocks. Nodes that compute from constants only
//! (weight DequantizeLinear, Constant, shape arithmetic on initializers)
//! are not cut across: each segment recomputes those it reads.
//! Initializers are constants, not carried: each segment holds the ones its
//! nodes read.
//!
//! Exactness: every node runs in a segment with the same input values,
//! facts and attributes as in the whole graph; what could differ is a
//! tract optimisation that fuses nodes across a cut (it folds a
//! BatchNormalization into the Conv before it, a bias Add or a Relu into a
//! matrix product's epilogue, ...), even when the tensor between them is
//! exposed as an output (it then computes the exposed tensor apart). So a
//! cut only crosses tensors no such fusion reaches across: tensors read
//! only as the data input of Conv, ConvTranspose, MatMul or Gemm. The tests
//! compare segmented and whole runs bit for bit on every fixture, exposed
//! tensors or not, and on quantized models and their float twins.
//!
//! Not segmented (run whole): graphs of at most `max_nodes` nodes, graphs
//! whose nodes hold subgraphs (If/Loop/Scan bodies may read any outer
//! tensor), graphs not in topological order, inputs without a concrete
//! fact, values whose inferred fact is not concrete (symbolic shapes) or
//! whose type has no ONNX input form, and graphs with no cut of at most
//! [`MAX_CARRIED`] tensors in reach.

use std::collections::{HashMap, HashSet};

use prost::Message;
use quench_onnx::proto::attribute_proto::AttributeType;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use quench_onnx::proto::type_proto::{Tensor as TensorTypeProto, Value as TypeValue};
use quench_onnx::proto::{GraphProto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto};
use tract_onnx::prelude::*;

use crate::runner::{datum_type, InputFact, RunError, Runner, RunnerConfig};

/// Default segment size of [`Runner::new`]: large enough that ordinary
/// models run whole, small enough that a segment compiles in well under a
/// second in a debug build.
pub const SEGMENT_NODES: usize = 256;

/// Most tensors a cut may carry forward.
pub const MAX_CARRIED: usize = 8;

/// The segments: ranges of positions in `dynamic`, in order.
pub(crate) struct Plan {
    /// Indices of the nodes that read a run-time value, in graph order.
    dynamic: Vec<usize>,
    /// Per node: whether it computes from constants only (initializers
    /// and other such nodes). Those are not cut across: each segment
    /// recomputes the ones it reads, so tract folds them as it would whole.
    constant: Vec<bool>,
    ranges: Vec<std::ops::Range<usize>>,
}

/// Which nodes compute from constants only, and the values they make
/// (initializers included). Random ops are never constant (two
/// segments would draw different numbers).
fn constants(g: &GraphProto) -> (Vec<bool>, HashSet<&str>) {
    let mut konst: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let mut is_const = vec![false; g.node.len()];
    for (i, node) in g.node.iter().enumerate() {
        let op = node.op_type();
        let random = op.starts_with("Random") || op == "Bernoulli" || op == "Multinomial";
        if !random
            && node.domain().is_empty()
            && node
                .input
                .iter()
                .filter(|x| !x.is_empty())
                .all(|x| konst.contains(x.as_str()))
        {
            is_const[i] = true;
            konst.extend(
                node.output
                    .iter()
                    .filter(|y| !y.is_empty())
                    .map(String::as_str),
            );
        }
    }
    (is_const, konst)
}

/// One compiled segment: its runner and the names of its inputs in the
/// runner's order.
#[derive(Debug)]
struct Segment {
    runner: Runner,
    inputs: Vec<String>,
}

/// The compiled segments of a graph, run in order.
#[derive(Debug)]
pub(crate) struct Segments {
    segments: Vec<Segment>,
    /// Per segment: the values that may be dropped after it ran (no later
    /// segment reads them and they are not asked for).
    drop_after: Vec<Vec<String>>,
}

impl Segments {
    pub(crate) fn len(&self) -> usize {
        self.segments.len()
    }

    /// Runs every segment; `inputs` are the graph inputs `names` (checked
    /// by the caller), `outputs` the names to return in order.
    pub(crate) fn run(
        &self,
        names: &[&str],
        inputs: TVec<TValue>,
        outputs: &[String],
    ) -> Result<TVec<TValue>, RunError> {
        let mut values: HashMap<&str, TValue> = names.iter().copied().zip(inputs).collect();
        for (seg, dead) in self.segments.iter().zip(&self.drop_after) {
            let ins: TVec<TValue> = seg
                .inputs
                .iter()
                .map(|n| {
                    values
                        .get(n.as_str())
                        .cloned()
                        .ok_or_else(|| RunError::Tract {
                            stage: "running the model",
                            detail: format!("segment input `{n}` was not computed"),
                        })
                })
                .collect::<Result<_, _>>()?;
            let outs = seg.runner.run_values(ins)?;
            for (name, v) in seg.runner.output_names().iter().zip(outs) {
                values.insert(name.as_str(), v);
            }
            for d in dead {
                values.remove(d.as_str());
            }
        }
        outputs
            .iter()
            .map(|n| {
                values
                    .get(n.as_str())
                    .cloned()
                    .ok_or_else(|| RunError::Tract {
                        stage: "running the model",
                        detail: format!("output `{n}` was not computed"),
                    })
            })
            .collect()
    }
}

/// Whether a node holds a subgraph.
fn has_subgraph(n: &quench_onnx::proto::NodeProto) -> bool {
    n.attribute.iter().any(|a| {
        a.g.is_some()
            || !a.graphs.is_empty()
            || a.r#type == Some(AttributeType::Graph as i32)
            || a.r#type == Some(AttributeType::Graphs as i32)
    })
}

/// Where to cut `model`'s main graph into segments of at most `max_nodes`
/// nodes; `None` when it runs whole (see the module docs).
pub(crate) fn plan(model: &ModelProto, config: &RunnerConfig, max_nodes: usize) -> Option<Plan> {
    let g = model.graph.as_ref()?;
    if max_nodes == 0 || g.node.len() <= max_nodes || g.node.iter().any(has_subgraph) {
        return None;
    }
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    // Every graph input needs a concrete fact (segments after the first
    // are given facts, never declarations).
    for vi in &g.input {
        if !inits.contains(vi.name()) && !config.input_facts.iter().any(|f| f.name == vi.name()) {
            return None;
        }
    }
    let (constant, konst) = constants(g);
    let dynamic: Vec<usize> = (0..g.node.len()).filter(|i| !constant[*i]).collect();
    let n = dynamic.len();
    // An asked-for constant is made by no segment's run-time part.
    let wants_const = g
        .output
        .iter()
        .map(|o| o.name())
        .chain(config.extra_outputs.iter().map(String::as_str))
        .any(|w| konst.contains(w));
    if n <= max_nodes || wants_const {
        return None;
    }
    // Definition position of every run-time value (graph inputs: 0, node
    // `dynamic[k]`: k + 1) and its last reader.
    let mut def: HashMap<&str, usize> = HashMap::new();
    for vi in &g.input {
        if !inits.contains(vi.name()) {
            def.insert(vi.name(), 0);
        }
    }
    let mut last_use: HashMap<&str, usize> = HashMap::new();
    for (k, &i) in dynamic.iter().enumerate() {
        let node = &g.node[i];
        for x in node.input.iter().filter(|x| !x.is_empty()) {
            if konst.contains(x.as_str()) {
                continue;
            }
            // Not topologically sorted (or an undefined name): run whole.
            def.get(x.as_str())?;
            last_use.insert(x.as_str(), k + 1);
        }
        for y in node.output.iter().filter(|y| !y.is_empty()) {
            def.insert(y.as_str(), k + 1);
        }
    }
    // A value may be cut only where no tract optimisation can reach across
    // it: one read only as the data input of Conv, ConvTranspose, MatMul or
    // Gemm (nothing of the producer fuses into those inputs). Exposing a
    // tensor is not enough: tract still folds a BatchNormalization into
    // the Conv before it and computes the exposed Conv output apart.
    let mut barrier_reads: HashMap<&str, bool> = HashMap::new();
    for &i in &dynamic {
        let node = &g.node[i];
        let barrier = matches!(node.op_type(), "Conv" | "ConvTranspose" | "MatMul" | "Gemm")
            && node.domain().is_empty();
        for (k, x) in node.input.iter().enumerate() {
            let ok = barrier && k == 0;
            barrier_reads
                .entry(x.as_str())
                .and_modify(|b| *b &= ok)
                .or_insert(ok);
        }
    }
    let cuttable = |name: &str| barrier_reads.get(name).copied().unwrap_or(false);
    // carried[p] = values defined at position <= p and read after node p
    // (position p + 1 or later), for a cut after p nodes; blocked[p] = how
    // many of them may not be cut.
    let mut delta = vec![0i64; n + 2];
    let mut delta_blocked = vec![0i64; n + 2];
    for (name, &d) in &def {
        if let Some(&u) = last_use.get(name) {
            if u > d {
                // Carried across cuts after p for d <= p < u.
                delta[d] += 1;
                delta[u] -= 1;
                if !cuttable(name) {
                    delta_blocked[d] += 1;
                    delta_blocked[u] -= 1;
                }
            }
        }
    }
    let mut carried = vec![0usize; n + 1];
    let mut blocked = vec![0usize; n + 1];
    let (mut acc, mut acc_b) = (0i64, 0i64);
    for p in 0..=n {
        acc += delta[p];
        acc_b += delta_blocked[p];
        carried[p] = acc.max(0) as usize;
        blocked[p] = acc_b.max(0) as usize;
    }
    let mut ranges = Vec::new();
    let mut start = 0;
    let ok = |p: usize| carried[p] <= MAX_CARRIED && blocked[p] == 0;
    while n - start > max_nodes {
        // A cut after p nodes, p in [start + max/2, start + max]: the
        // fewest carried values, the latest on ties; if that window has no
        // cut, the first one after it (a longer segment).
        let lo = start + max_nodes.div_ceil(2);
        let hi = start + max_nodes;
        let best = (lo..=hi)
            .filter(|p| ok(*p))
            .min_by_key(|p| (carried[*p], std::cmp::Reverse(*p)))
            .or_else(|| (hi + 1..n).find(|p| ok(*p)));
        let Some(best) = best else { break };
        ranges.push(start..best);
        start = best;
    }
    if ranges.is_empty() {
        return None;
    }
    ranges.push(start..n);
    Some(Plan {
        dynamic,
        constant,
        ranges,
    })
}

/// The ONNX element type code of a tract datum type, for the inputs of a
/// segment.
fn onnx_code(dt: DatumType) -> Option<i32> {
    let d = match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Float16,
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        _ => return None,
    };
    Some(d as i32)
}

fn value_info(name: &str, elem: i32, shape: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorTypeProto {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|d| Dimension {
                            value: Some(dimension::Value::DimValue(*d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Compiles the segments of `plan` in order, each with the facts the
/// previous ones inferred for its inputs.
pub(crate) fn build(
    model: &ModelProto,
    config: &RunnerConfig,
    plan: Plan,
) -> Result<Runner, RunError> {
    let empty = GraphProto::default();
    let g = model.graph.as_ref().unwrap_or(&empty);
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let graph_outputs: Vec<&str> = g.output.iter().map(|o| o.name()).collect();
    // Graph inputs (not initializers) in order, with their facts.
    let mut facts: HashMap<String, InputFact> = HashMap::new();
    let mut inputs: Vec<(String, TypedFact)> = Vec::new();
    for vi in g.input.iter().filter(|vi| !inits.contains(vi.name())) {
        let f = config
            .input_facts
            .iter()
            .find(|f| f.name == vi.name())
            .ok_or_else(|| RunError::Input {
                name: vi.name().to_string(),
                reason: "no input fact".into(),
            })?;
        let dt = datum_type(f.elem_type).ok_or_else(|| RunError::Input {
            name: f.name.clone(),
            reason: format!(
                "element type {} is not supported",
                quench_onnx::dtype::elem_name(f.elem_type)
            ),
        })?;
        inputs.push((f.name.clone(), dt.fact(&f.shape)));
        facts.insert(f.name.clone(), f.clone());
    }
    let wanted: Vec<&str> = graph_outputs
        .iter()
        .copied()
        .chain(config.extra_outputs.iter().map(String::as_str))
        .collect();
    // Reads of every value by segment, to know what each segment must
    // hand on.
    let mut last_reader: HashMap<&str, usize> = HashMap::new();
    for (s, range) in plan.ranges.iter().enumerate() {
        for &i in &plan.dynamic[range.clone()] {
            for x in g.node[i].input.iter().filter(|x| !x.is_empty()) {
                last_reader.insert(x.as_str(), s);
            }
        }
    }
    // The constant node making each constant value.
    let mut const_producer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in g.node.iter().enumerate() {
        if plan.constant[i] {
            for y in node.output.iter().filter(|y| !y.is_empty()) {
                const_producer.insert(y.as_str(), i);
            }
        }
    }
    let mut out_facts: HashMap<String, TypedFact> = inputs.iter().cloned().collect();
    let mut segments = Vec::with_capacity(plan.ranges.len());
    let mut drop_after = Vec::with_capacity(plan.ranges.len());
    for (s, range) in plan.ranges.iter().enumerate() {
        let run_time = &plan.dynamic[range.clone()];
        // The constant nodes the segment reads, transitively, in graph
        // order, before its run-time nodes.
        let mut need: Vec<usize> = Vec::new();
        let mut stack: Vec<&str> = run_time
            .iter()
            .flat_map(|i| g.node[*i].input.iter())
            .map(String::as_str)
            .collect();
        let mut seen_const: HashSet<usize> = HashSet::new();
        while let Some(x) = stack.pop() {
            if let Some(&i) = const_producer.get(x) {
                if seen_const.insert(i) {
                    need.push(i);
                    stack.extend(g.node[i].input.iter().map(String::as_str));
                }
            }
        }
        need.sort_unstable();
        let order: Vec<usize> = need.iter().chain(run_time).copied().collect();
        let nodes: Vec<&quench_onnx::proto::NodeProto> =
            order.iter().map(|i| &g.node[*i]).collect();
        let made: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.output.iter())
            .filter(|y| !y.is_empty())
            .map(String::as_str)
            .collect();
        let mut seg_inputs: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut used_inits: HashSet<&str> = HashSet::new();
        for x in nodes
            .iter()
            .flat_map(|n| n.input.iter())
            .filter(|x| !x.is_empty())
        {
            if inits.contains(x.as_str()) {
                used_inits.insert(x.as_str());
            } else if !made.contains(x.as_str()) && seen.insert(x.as_str()) {
                seg_inputs.push(x.clone());
            }
        }
        // What this segment hands on: values it makes that a later
        // segment reads, graph outputs and asked-for tensors.
        let mut seg_outputs: Vec<String> = Vec::new();
        for node in run_time.iter().map(|i| &g.node[*i]) {
            for y in node.output.iter().filter(|y| !y.is_empty()) {
                let later = last_reader.get(y.as_str()).is_some_and(|r| *r > s);
                if later || wanted.contains(&y.as_str()) {
                    seg_outputs.push(y.clone());
                }
            }
        }
        let mut seg_input_facts = Vec::with_capacity(seg_inputs.len());
        let mut graph_inputs = Vec::with_capacity(seg_inputs.len());
        for name in &seg_inputs {
            let fact = match facts.get(name) {
                Some(f) => f.clone(),
                None => {
                    let t = out_facts.get(name).ok_or_else(|| RunError::Tract {
                        stage: "analysing and optimizing the model",
                        detail: format!("segment input `{name}` has no inferred fact"),
                    })?;
                    let shape = t.shape.as_concrete().map(<[usize]>::to_vec);
                    let code = onnx_code(t.datum_type.unquantized());
                    let (Some(shape), Some(code)) = (shape, code) else {
                        // Not expressible as an input: this graph runs whole.
                        return Runner::from_bytes(&model.encode_to_vec(), config);
                    };
                    InputFact {
                        name: name.clone(),
                        elem_type: code,
                        shape,
                    }
                }
            };
            graph_inputs.push(value_info(name, fact.elem_type, &fact.shape));
            seg_input_facts.push(fact);
        }
        let seg_graph = GraphProto {
            name: Some(format!("{}_segment{s}", g.name())),
            node: nodes.iter().map(|n| (*n).clone()).collect(),
            initializer: g
                .initializer
                .iter()
                .filter(|t| used_inits.contains(t.name()))
                .cloned()
                .collect(),
            input: graph_inputs,
            // Segment outputs are asked for as extra outputs: no declared
            // types needed.
            output: Vec::new(),
            value_info: g
                .value_info
                .iter()
                .filter(|v| made.contains(v.name()))
                .cloned()
                .collect(),
            ..Default::default()
        };
        let seg_model = ModelProto {
            graph: Some(seg_graph),
            ..header_of(model)
        };
        let runner = Runner::from_bytes(
            &seg_model.encode_to_vec(),
            &RunnerConfig {
                input_facts: seg_input_facts,
                extra_outputs: seg_outputs,
            },
        )?;
        for (name, fact) in runner.output_names().iter().zip(runner.output_facts()) {
            out_facts.insert(name.clone(), fact.clone());
        }
        // Values no later segment reads and nobody asked for.
        let dead: Vec<String> = seg_inputs
            .iter()
            .chain(runner.output_names())
            .filter(|v| {
                !wanted.contains(&v.as_str()) && last_reader.get(v.as_str()).is_none_or(|r| *r <= s)
            })
            .cloned()
            .collect();
        drop_after.push(dead);
        segments.push(Segment {
            runner,
            inputs: seg_inputs,
        });
    }
    let outputs: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    let output_facts = outputs
        .iter()
        .map(|n| {
            out_facts
                .get(n)
                .cloned()
                .ok_or_else(|| RunError::UnknownTensor { name: n.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Runner::segmented(
        Segments {
            segments,
            drop_after,
        },
        inputs,
        outputs,
        output_facts,
    ))
}

/// A copy of a model's header: everything a segment needs but the graph
/// (cloning the model would copy every initializer once per segment).
fn header_of(m: &ModelProto) -> ModelProto {
    ModelProto {
        ir_version: m.ir_version,
        opset_import: m.opset_import.clone(),
        producer_name: m.producer_name.clone(),
        producer_version: m.producer_version.clone(),
        domain: m.domain.clone(),
        model_version: m.model_version,
        functions: m.functions.clone(),
        ..Default::default()
    }
}
