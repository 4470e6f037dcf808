//! `subgraphs`: weight quantization inside `If`/`Loop`/`Scan` bodies.
//!
//! Bodies are ONNX graphs kept inside node attributes. Each one is imported
//! ([`quench_ir::import_subgraph`]), gets the main graph's weight treatment
//! (`constants_to_initializers`, then [`quantize::plan`] and
//! [`quantize::apply`] in weight-only mode: the same rule table, the same
//! per-channel axes), loses the float weights nothing uses any more
//! (`dead_code`) and is written back in place of the original; nested
//! bodies first. A constant that bodies capture from an enclosing graph
//! (the graph itself, or a body holding further bodies) and use only as
//! weights is quantized where it is defined, behind a DequantizeLinear
//! whose output keeps its name, so the bodies that read it by name need no
//! edit ([`quantize::quantize_in_place`]).
//!
//! Requires: the enclosing graph's own weights are already planned and
//! applied (by the compile's plan). Guarantees: names a body can see keep
//! their meaning (only weights change, to their dequantized values); graph
//! inputs and outputs of every body are unchanged; a captured constant is
//! quantized only when every use of it, in every scope, is a weight input.
//! Declines: dynamic mode (bodies stay float), bodies that do not import
//! (reported, left as they are, and their captures left float).

use std::collections::HashMap;

use quench_ir::{import_subgraph, Graph, NodeId, ValueDef, ValueId};
use quench_onnx::proto::type_proto::{Tensor as TensorTypeProto, Value as TypeValue};
use quench_onnx::proto::TypeProto;

use crate::quantize::{self, Mode, NodeDecision, QuantizeConfig, WeightHint};
use crate::{util, Pass, PassCx, PassError};

/// What [`quantize_bodies`] did.
#[derive(Debug, Clone, Default)]
pub struct BodySummary {
    /// Bodies imported, rewritten and written back.
    pub bodies: usize,
    /// Weight tensors quantized: inside bodies, and captured ones where
    /// they are defined.
    pub weights_quantized: usize,
    /// Decisions for the nodes inside bodies (names as in the bodies).
    pub decisions: Vec<NodeDecision>,
    pub notes: Vec<String>,
}

/// Uses inside the bodies of one node, per captured name: their weight
/// hints, or `None` when some use is not a weight.
type Captures = HashMap<String, Option<Vec<WeightHint>>>;

/// Quantizes the weights inside every subgraph body of `g` (recursively)
/// and the constants of `g` that bodies capture only as weights, with the
/// weight scheme of `cfg` (activations in bodies stay float). Dynamic mode
/// leaves bodies float, with a note. See the module docs.
pub fn quantize_bodies(
    g: &mut Graph,
    cfg: &QuantizeConfig,
    opset: i64,
    cx: &mut PassCx,
) -> Result<BodySummary, PassError> {
    let mut s = BodySummary::default();
    let has_bodies = g.node_ids().iter().any(|n| g.node(*n).has_subgraphs());
    if !has_bodies {
        return Ok(s);
    }
    if cfg.mode == Mode::Dynamic {
        s.notes
            .push("dynamic mode quantizes MatMul only: If/Loop/Scan bodies stay float".to_string());
        return Ok(s);
    }
    if opset < 10 {
        return Ok(s);
    }
    let static_mode = cfg.mode == Mode::Static;
    let cfg = QuantizeConfig {
        mode: Mode::WeightOnly,
        ..cfg.clone()
    };
    process(g, &cfg, opset, &HashMap::new(), 0, &mut s, cx)?;
    if static_mode && s.bodies > 0 {
        s.notes.push(format!(
            "{} If/Loop/Scan bodies: weights int8 ({} tensors, captured ones included), activations inside them float (calibration does not observe tensors inside bodies)",
            s.bodies, s.weights_quantized
        ));
    }
    cx.count("subgraphs", "bodies", s.bodies);
    cx.count("subgraphs", "weights", s.weights_quantized);
    Ok(s)
}

fn fail(msg: String) -> PassError {
    PassError::Failed {
        pass: "subgraphs".into(),
        msg,
    }
}

/// Rewrites the bodies of `g`'s nodes, `g`'s own weights when `g` is a body
/// (`depth > 0`), and `g`'s constants captured as weights; returns, for
/// every name `g` captures from outside, how `g` (and its bodies) use it.
/// `scope` holds the element types of the names visible from outside.
fn process(
    g: &mut Graph,
    cfg: &QuantizeConfig,
    opset: i64,
    scope: &HashMap<String, i32>,
    depth: usize,
    s: &mut BodySummary,
    cx: &mut PassCx,
) -> Result<Captures, PassError> {
    // Outer names get the enclosing scope's element types, so that the
    // rules see float activations where they are.
    for v in g.value_ids().collect::<Vec<_>>() {
        if g.value(v).def != ValueDef::Outer || g.value(v).ty.is_some() {
            continue;
        }
        if let Some(e) = scope.get(&g.value(v).name) {
            g.value_mut(v).ty = Some(TypeProto {
                value: Some(TypeValue::TensorType(TensorTypeProto {
                    elem_type: Some(*e),
                    shape: None,
                })),
                ..Default::default()
            });
        }
    }

    // 1. This graph's own weights (the main graph's went through the
    //    compile's plan).
    if depth > 0 {
        let plan = quantize::plan(g, cfg)?;
        let sum = quantize::apply(g, &plan, &quantize::Ranges::new(), cfg, opset, cx)?;
        s.weights_quantized += sum.weights_quantized;
        s.notes.extend(sum.notes);
        s.decisions.extend(sum.nodes);
    }

    // 2. Nested bodies, with this graph's names in scope.
    let types = util::infer_elem_types(g);
    let mut inner_scope = scope.clone();
    for (v, e) in &types {
        inner_scope.insert(g.value(*v).name.clone(), *e);
    }
    // Per node with bodies: how they use what they capture; `None` when a
    // body could not be imported (its captures stay as they are).
    let mut nested: HashMap<NodeId, Option<Captures>> = HashMap::new();
    for n in g.node_ids() {
        if !g.node(n).has_subgraphs() {
            continue;
        }
        let mut attrs = g.node(n).proto.attribute.clone();
        let mut caps: Option<Captures> = Some(HashMap::new());
        // What this node's bodies did; counted only if they are written back.
        let mut local = BodySummary::default();
        for a in &mut attrs {
            let attr_name = a.name().to_string();
            for gp in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                // An invalid body (a cycle, a name defined twice) is
                // refused as an invalid main graph is, never passed on.
                let mut b = import_subgraph(gp.clone()).map_err(|e| {
                    fail(format!(
                        "body `{}` of node `{}` ({}) is not a valid graph: {e}",
                        attr_name,
                        g.node(n).name(),
                        g.node(n).op_type()
                    ))
                })?;
                crate::constants_to_initializers::ConstantsToInitializers.run(&mut b, cx)?;
                let inner = process(&mut b, cfg, opset, &inner_scope, depth + 1, &mut local, cx)?;
                crate::dead_code::DeadCode.run(&mut b, cx)?;
                b.verify().map_err(|e| {
                    fail(format!(
                        "body `{}` of node `{}` is invalid after quantization (a quench bug): {e}",
                        attr_name,
                        g.node(n).name()
                    ))
                })?;
                *gp = quench_ir::export_graph(&b);
                local.bodies += 1;
                if let Some(c) = caps.as_mut() {
                    for (name, h) in inner {
                        let e = c.entry(name).or_insert_with(|| Some(Vec::new()));
                        match (e.as_mut(), h) {
                            (Some(all), Some(h)) => all.extend(h),
                            _ => *e = None,
                        }
                    }
                }
            }
        }
        if caps.is_some() {
            g.node_proto_mut(n).proto.attribute = attrs;
            s.bodies += local.bodies;
            s.weights_quantized += local.weights_quantized;
            s.decisions.extend(local.decisions);
        }
        s.notes.extend(local.notes);
        nested.insert(n, caps);
    }
    let names: Vec<String> = g.value_ids().map(|v| g.value(v).name.clone()).collect();
    let captured = |n: NodeId, v: ValueId| -> Option<Vec<WeightHint>> {
        nested
            .get(&n)?
            .as_ref()?
            .get(&names[v.index()])
            .cloned()
            .unwrap_or_else(|| Some(Vec::new()))
    };

    // 3. Constants of this graph that bodies capture, used only as weights
    //    there: quantized here under their own name.
    let mut candidates: Vec<ValueId> = Vec::new();
    for n in nested.keys() {
        for v in g.node(*n).implicit_inputs() {
            if quantize::is_float_const(g, *v) && !candidates.contains(v) {
                candidates.push(*v);
            }
        }
    }
    candidates.sort();
    for c in candidates {
        let only_captured = g
            .uses(c)
            .iter()
            .all(|u| u.index >= g.node(u.node).inputs().len());
        if !only_captured {
            continue;
        }
        let Some(hints) = quantize::weight_hints(g, c, cfg, &captured) else {
            continue;
        };
        if hints.is_empty() {
            continue;
        }
        let Some(t) = g.const_tensor(c) else { continue };
        let (rank, elem) = (t.dims.len(), t.data_type());
        let Some(mut f) = quantize::stored_format(cfg, g, c, &hints, rank) else {
            continue;
        };
        if opset < 13 {
            f = f.per_tensor();
        }
        if f.min_opset().is_none_or(|m| m > opset) || opset < quantize::scale_min_opset(elem) {
            continue;
        }
        if quantize::quantize_in_place(g, c, f) {
            s.weights_quantized += 1;
        }
    }

    // 4. What this graph captures from outside, and how it uses it.
    let mut out = Captures::new();
    if depth > 0 {
        for v in g.value_ids().collect::<Vec<_>>() {
            if g.value(v).def == ValueDef::Outer {
                let h = quantize::weight_hints(g, v, cfg, &captured);
                out.insert(g.value(v).name.clone(), h);
            }
        }
    }
    Ok(out)
}

/// Replaces `If` node `n` by the nodes of its `branch` (`"then_branch"` or
/// `"else_branch"`), for a copy of the model that a runtime runs when the
/// condition's value is known (the written model keeps its Ifs). The
/// branch's initializers become constants of `g` and its values and nodes
/// keep their names where `g` has them free (a suffix otherwise); the Ifs
/// outputs become Identity outputs of the branch's outputs, so every name
/// the rest of the graph reads stays. Nested subgraphs come along as they
/// are (their captures resolve to the inlined values by name, which are
/// kept for every name a nested body can capture unless `g` already has
/// it). Errors when `n` is not an If with that branch, or the branch does
/// not import.
pub fn inline_if(g: &mut Graph, n: NodeId, branch: &str) -> Result<(), PassError> {
    use quench_ir::{Node, OpKind};
    let node = g.node(n).clone();
    if node.kind() != OpKind::If {
        return Err(fail(format!("node `{}` is not an If", node.name())));
    }
    let Some(gp) = node.attr(branch).and_then(|a| a.g.clone()) else {
        return Err(fail(format!(
            "If `{}` has no `{branch}` graph",
            node.name()
        )));
    };
    let b = import_subgraph(gp).map_err(|e| {
        fail(format!(
            "If `{}`: `{branch}` does not import: {e}",
            node.name()
        ))
    })?;
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for v in b.value_ids() {
        let val = b.value(v);
        let mapped = match val.def {
            ValueDef::Outer => g.value_by_name(&val.name).ok_or_else(|| {
                fail(format!(
                    "If `{}`: `{branch}` reads `{}`, which the enclosing graph does not define",
                    node.name(),
                    val.name
                ))
            })?,
            ValueDef::Const => match b.const_tensor(v) {
                Some(t) => g.add_const(&val.name, t.clone()),
                None => continue,
            },
            ValueDef::Node { .. } => g.add_value(&val.name, val.ty.clone()),
            ValueDef::Input | ValueDef::Undefined => continue,
        };
        map.insert(v, mapped);
    }
    let m = |v: &Option<ValueId>| v.and_then(|v| map.get(&v).copied());
    let order = b.topo_order().map_err(|e| fail(e.to_string()))?;
    for bn in order {
        let bnode = b.node(bn);
        let mut copy = Node::new(bnode.op_type(), &g.unique_name(bnode.name()));
        let name = copy.proto.name.clone();
        copy.proto = bnode.proto.clone();
        copy.proto.name = name;
        let ins: Vec<Option<ValueId>> = bnode.inputs().iter().map(m).collect();
        let outs: Vec<Option<ValueId>> = bnode.outputs().iter().map(m).collect();
        let implicit: Vec<ValueId> = bnode
            .implicit_inputs()
            .iter()
            .filter_map(|v| map.get(v).copied())
            .collect();
        let id = g.add_node(copy, &ins, &outs);
        g.set_implicit_inputs(id, implicit);
    }
    let outs: Vec<Option<ValueId>> = b.outputs().iter().map(|v| map.get(v).copied()).collect();
    g.remove_node(n);
    for (slot, o) in node.outputs().iter().enumerate() {
        let (Some(o), Some(Some(src))) = (o, outs.get(slot)) else {
            continue;
        };
        let id = Node::new(
            "Identity",
            &g.unique_name(&format!("{}_{branch}_out", node.name())),
        );
        g.add_node(id, &[Some(*src)], &[Some(*o)]);
    }
    Ok(())
}

/// Names of the nodes inside the subgraph bodies of `g`'s nodes, nested
/// bodies included (what `--exclude-nodes` may name besides `g`'s own).
pub fn body_node_names(g: &Graph) -> Vec<String> {
    fn walk(gp: &quench_onnx::proto::GraphProto, out: &mut Vec<String>) {
        for n in &gp.node {
            out.push(n.name().to_string());
            for a in &n.attribute {
                for b in a.g.iter().chain(a.graphs.iter()) {
                    walk(b, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    for n in g.node_ids() {
        for a in &g.node(n).proto.attribute {
            for b in a.g.iter().chain(a.graphs.iter()) {
                walk(b, &mut out);
            }
        }
    }
    out
}
