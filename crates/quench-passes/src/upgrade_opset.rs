//! `upgrade_opset`: moves a graph's default-domain opset up to 13 (per-channel
//! `DequantizeLinear`) or 21 (16-bit quantization), from opset 11 or later.
//!
//! A few ops changed signature on the way; each is rewritten to the new form
//! with the same meaning: at 13, `Split`'s `split`, `Squeeze`'s and
//! `Unsqueeze`'s `axes` and `ReduceSum`'s `axes` move from attributes to
//! constant inputs; at 18 the other `Reduce*` ops' `axes` do the same.
//! Everything else changed between 11 and 21 only gained types or optional
//! inputs and attributes with the old defaults.
//!
//! Declines (returns the reason, changes nothing): `Softmax`/`LogSoftmax`/
//! `Hardmax` whose axis is not the last one (opset 13 changed what their
//! axis means), `Resize` with `tf_half_pixel_for_nn` (removed at 13), and
//! subgraphs that use any of the rewritten ops, and (to 21)
//! `GroupNormalization`, whose scale and bias changed shape at 21.

use std::collections::BTreeSet;

use quench_ir::{tensor, Graph, NodeId, OpKind};
use quench_onnx::proto::GraphProto;

use crate::util;

const CHANGED: &[&str] = &[
    "Split",
    "Squeeze",
    "Unsqueeze",
    "ReduceSum",
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    "Resize",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "GroupNormalization",
];

const REDUCE_18: &[&str] = &[
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

fn subgraph_ops(g: &GraphProto, out: &mut BTreeSet<String>) {
    for n in &g.node {
        out.insert(n.op_type().to_string());
        for a in &n.attribute {
            for sg in a.g.iter().chain(a.graphs.iter()) {
                subgraph_ops(sg, out);
            }
        }
    }
}

/// Checks whether moving from opset `from` to `to` is safe; `Err` names
/// the node that prevents it.
pub fn check(g: &Graph, from: i64, to: i64) -> Result<(), String> {
    if from < 11 {
        return Err(format!("opset {from} is older than 11"));
    }
    for n in g.node_ids() {
        let node = g.node(n);
        if !node.domain().is_empty() {
            continue;
        }
        for a in &node.proto.attribute {
            let mut ops = BTreeSet::new();
            for sg in a.g.iter().chain(a.graphs.iter()) {
                subgraph_ops(sg, &mut ops);
            }
            if let Some(op) = ops.iter().find(|o| CHANGED.contains(&o.as_str())) {
                return Err(format!("a subgraph of node `{}` uses {op}", node.name()));
            }
        }
        match node.op_type() {
            "GroupNormalization" if to >= 21 && from < 21 => {
                return Err(format!(
                    "node `{}` (GroupNormalization) changed meaning in opset 21",
                    node.name()
                ));
            }
            "Softmax" | "LogSoftmax" | "Hardmax"
                if from < 13 && node.attr_int("axis").unwrap_or(1) < 0 =>
            {
                // A negative axis on an input of unknown rank cannot be
                // flattened without knowing the rank.
                let rank = node.input(0).and_then(|x| util::infer_rank(g, x));
                if rank.is_none() && node.attr_int("axis") != Some(-1) {
                    return Err(format!(
                        "node `{}` ({}) has a negative axis on an input of unknown rank",
                        node.name(),
                        node.op_type()
                    ));
                }
            }
            "Resize"
                if node
                    .attr_string("coordinate_transformation_mode")
                    .as_deref()
                    == Some("tf_half_pixel_for_nn") =>
            {
                return Err(format!(
                    "node `{}` uses Resize mode tf_half_pixel_for_nn, removed in opset 13",
                    node.name()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Opset < 13 Softmax-like ops work on the input flattened to 2-D at
/// `axis`. When `axis` is not the last axis, the opset-13 equivalent is
/// `Reshape(op13(Flatten(x, axis), axis=-1), Shape(x))`; when it is the last
/// axis (or -1) the op means the same in both opsets.
fn softmax_to_13(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n).clone();
    let axis = node.attr_int("axis").unwrap_or(1);
    let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
        return false;
    };
    let rank = util::infer_rank(g, x);
    if axis == -1 || rank.is_some_and(|r| axis == r as i64 - 1) {
        return false;
    }
    let axis = match (axis < 0, rank) {
        (true, Some(r)) => axis + r as i64,
        _ => axis,
    };
    let base = node.name().to_string();
    let mut flat = quench_ir::Node::new("Flatten", &g.unique_name(&format!("{base}_flatten")));
    flat.set_attr(quench_ir::attr::int("axis", axis));
    let (_, f) = g.add_op(flat, &[x], &[&format!("{base}_2d")]);
    let shape = quench_ir::Node::new("Shape", &g.unique_name(&format!("{base}_shape")));
    let (_, sh) = g.add_op(shape, &[x], &[&format!("{base}_in_shape")]);
    let s2d = g.add_value(&format!("{base}_out_2d"), None);
    g.remove_node(n);
    let mut op = node.clone();
    op.set_attr(quench_ir::attr::int("axis", -1));
    g.add_node(op, &[Some(f[0])], &[Some(s2d)]);
    let reshape = quench_ir::Node::new("Reshape", &g.unique_name(&format!("{base}_restore")));
    g.add_node(reshape, &[Some(s2d), Some(sh[0])], &[Some(y)]);
    true
}

fn attr_to_input(g: &mut Graph, n: NodeId, attr: &str, slot: usize) {
    let Some(vals) = g.node(n).attr_ints(attr).map(|v| v.to_vec()) else {
        return;
    };
    let name = format!("{}_{attr}", g.node(n).name());
    let c = g.add_const(&name, tensor::from_i64("", &[vals.len() as i64], &vals));
    g.node_proto_mut(n).remove_attr(attr);
    g.set_input(n, slot, Some(c));
}

/// Rewrites the ops whose signature changed between `from` and `to`; call
/// [`check`] first. Returns how many nodes were rewritten.
pub fn apply(g: &mut Graph, from: i64, to: i64) -> usize {
    let mut changed = 0;
    for n in g.node_ids() {
        let node = g.node(n);
        if !node.domain().is_empty() {
            continue;
        }
        match node.kind() {
            _ if from < 18
                && to >= 18
                && REDUCE_18.contains(&node.op_type())
                && node.attr("axes").is_some() =>
            {
                attr_to_input(g, n, "axes", 1);
                changed += 1;
            }
            _ if from >= 13 => {}
            OpKind::Softmax | OpKind::LogSoftmax | OpKind::Other
                if matches!(node.op_type(), "Softmax" | "LogSoftmax" | "Hardmax") =>
            {
                if softmax_to_13(g, n) {
                    changed += 1;
                }
            }
            OpKind::Split if node.attr("split").is_some() => {
                attr_to_input(g, n, "split", 1);
                changed += 1;
            }
            OpKind::Squeeze | OpKind::Unsqueeze | OpKind::ReduceSum
                if node.attr("axes").is_some() =>
            {
                attr_to_input(g, n, "axes", 1);
                changed += 1;
            }
            _ => {}
        }
    }
    changed
}
