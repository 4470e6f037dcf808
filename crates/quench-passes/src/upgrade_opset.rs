//! `upgrade_opset`: moves a graph's default-domain opset up to 13 (per-channel
//! `DequantizeLinear`) or 21 (16-bit quantization), from opset 7 or later.
//!
//! A few ops changed signature on the way; each is rewritten to the new form
//! with the same meaning:
//! - at 9, `BatchNormalization` loses `spatial` (1, the default, is kept
//!   meaning);
//! - at 10, `Slice`'s `starts`/`ends`/`axes` and `TopK`'s `k` move from
//!   attributes to constant inputs;
//! - at 11, `Clip`'s `min`/`max` and `Pad`'s `pads`/`value` do the same;
//! - at 12, `Dropout` loses `ratio` (inference ignores it; the new optional
//!   `ratio` input is left out);
//! - `Upsample` (deprecated at 10) becomes `Resize` with
//!   `coordinate_transformation_mode = asymmetric` (and `nearest_mode =
//!   floor` for nearest), which is what Upsample computes; at 11, `Resize`
//!   of opset 10 gets asymmetric coordinates, an empty `roi` input and,
//!   for nearest, `floor` when its constant scales enlarge and `ceil` when
//!   they shrink (what onnxruntime's opset-10 kernel does);
//! - at 13, `Split`'s `split`, `Squeeze`'s and `Unsqueeze`'s `axes` and
//!   `ReduceSum`'s `axes` move from attributes to constant inputs; at 18 the
//!   other `Reduce*` ops' `axes` do the same.
//!
//! Everything else changed between 7 and 21 only gained types or optional
//! inputs and attributes with the old defaults.
//!
//! Declines (returns the reason, changes nothing): `Softmax`/`LogSoftmax`/
//! `Hardmax` whose axis is not the last one on an input of unknown rank
//! (opset 13 changed what their axis means), `Resize` with
//! `tf_half_pixel_for_nn` (removed at 13), `Resize` of opset 10 with a
//! mode other than nearest or linear, or nearest with scales that are not
//! constant or both enlarge and shrink, `BatchNormalization` with
//! `spatial = 0`, `Dropout` below 10 with its mask used (the mask became
//! bool), `Scan` below 9 (its inputs changed meaning), `Clip`/`Pad` below 11
//! on an input whose element type is not known to be f32, subgraphs that use
//! any of the rewritten ops, and (to 21) `GroupNormalization`, whose scale
//! and bias changed shape at 21.

use std::collections::BTreeSet;

use quench_ir::{tensor, Graph, NodeId, OpKind};
use quench_onnx::proto::GraphProto;

use crate::util;

/// Whether `op` changes signature or meaning somewhere in `(from, to]`
/// (subgraphs using such ops are declined: they are not rewritten).
fn changes(op: &str, from: i64, to: i64) -> bool {
    let at = |v: i64| from < v && to >= v;
    match op {
        "BatchNormalization" | "Scan" => at(9),
        "Slice" | "TopK" | "Upsample" | "Resize" => at(10) || at(11) || at(13),
        "Clip" | "Pad" => at(11),
        "Dropout" => at(12),
        "Split" | "Squeeze" | "Unsqueeze" | "ReduceSum" | "Softmax" | "LogSoftmax" | "Hardmax" => {
            at(13)
        }
        "GroupNormalization" => at(21),
        "Scatter" => at(11),
        _ => REDUCE_18.contains(&op) && at(18),
    }
}

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
    if from < 7 {
        return Err(format!("opset {from} is older than 7"));
    }
    let types = util::infer_elem_types(g);
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
            if let Some(op) = ops.iter().find(|o| changes(o, from, to)) {
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
            "Resize" if from == 10 => {
                let mode = node.attr_string("mode").unwrap_or_else(|| "nearest".into());
                match mode.as_str() {
                    "linear" => {}
                    "nearest" => {
                        if resize_10_nearest_mode(g, n).is_none() {
                            return Err(format!(
                                "node `{}` (Resize-10, nearest) has scales that are not constant or that both enlarge and shrink",
                                node.name()
                            ));
                        }
                    }
                    other => {
                        return Err(format!(
                            "node `{}` (Resize-10) has mode `{other}`",
                            node.name()
                        ))
                    }
                }
            }
            "Upsample" => {
                let mode = node.attr_string("mode").unwrap_or_else(|| "nearest".into());
                if !matches!(mode.as_str(), "nearest" | "linear" | "bilinear") {
                    return Err(format!(
                        "node `{}` (Upsample) has mode `{mode}`",
                        node.name()
                    ));
                }
            }
            "BatchNormalization" if from < 9 && node.attr_int("spatial").unwrap_or(1) != 1 => {
                return Err(format!(
                    "node `{}` (BatchNormalization) uses spatial=0, removed in opset 9",
                    node.name()
                ));
            }
            "Scan" if from < 9 => {
                return Err(format!(
                    "node `{}` (Scan) changed meaning in opset 9",
                    node.name()
                ));
            }
            "Dropout"
                if from < 10
                    && node
                        .output(1)
                        .is_some_and(|m| g.use_count(m) > 0 || g.is_graph_output(m)) =>
            {
                return Err(format!(
                    "node `{}` (Dropout) uses its mask, whose type changed in opset 10",
                    node.name()
                ));
            }
            "Clip" | "Pad"
                if from < 11
                    && node.input(0).and_then(|x| types.get(&x)).is_none_or(|t| {
                        *t != quench_onnx::proto::tensor_proto::DataType::Float as i32
                    }) =>
            {
                return Err(format!(
                    "node `{}` ({}) has an input whose type is not known to be f32",
                    node.name(),
                    node.op_type()
                ));
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

fn string_attr(name: &str, v: &str) -> quench_onnx::proto::AttributeProto {
    quench_onnx::proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(quench_onnx::proto::attribute_proto::AttributeType::String as i32),
        s: Some(bytes::Bytes::from(v.as_bytes().to_vec())),
        ..Default::default()
    }
}

/// Moves float attribute `attr` to input `slot` as an f32 scalar constant.
fn float_attr_to_input(g: &mut Graph, n: NodeId, attr: &str, slot: usize) {
    let Some(v) = g.node(n).attr_float(attr) else {
        return;
    };
    let name = format!("{}_{attr}", g.node(n).name());
    let c = g.add_const(&name, tensor::from_f32("", &[], &[v]));
    g.node_proto_mut(n).remove_attr(attr);
    g.set_input(n, slot, Some(c));
}

/// `Upsample(x, scales)` (or `scales` as an attribute below opset 9) as the
/// equivalent `Resize(x, , scales)`; at opset 10 exactly, `Resize-10(x,
/// scales)` (two inputs, `mode` only: its nearest floors when enlarging, as
/// Upsample does).
fn upsample_to_resize(g: &mut Graph, n: NodeId, to: i64) {
    let node = g.node(n).clone();
    let mode = node.attr_string("mode").unwrap_or_else(|| "nearest".into());
    let scales = match node.attr("scales") {
        Some(a) => {
            let v = a.floats.clone();
            let name = format!("{}_scales", node.name());
            Some(g.add_const(&name, tensor::from_f32("", &[v.len() as i64], &v)))
        }
        None => node.input(1),
    };
    let outputs: Vec<Option<quench_ir::ValueId>> = node.outputs().to_vec();
    g.remove_node(n);
    let mut r = quench_ir::Node::new("Resize", node.name());
    if to == 10 {
        r.set_attr(string_attr(
            "mode",
            if mode == "nearest" {
                "nearest"
            } else {
                "linear"
            },
        ));
        g.add_node(r, &[node.input(0), scales], &outputs);
        return;
    }
    if mode == "nearest" {
        r.set_attr(string_attr("mode", "nearest"));
        r.set_attr(string_attr("nearest_mode", "floor"));
    } else {
        r.set_attr(string_attr("mode", "linear"));
    }
    r.set_attr(string_attr("coordinate_transformation_mode", "asymmetric"));
    g.add_node(r, &[node.input(0), None, scales], &outputs);
}

/// The opset-11 `nearest_mode` that reproduces a nearest `Resize-10`:
/// onnxruntime's opset-10 kernel floors when enlarging and rounds up when
/// shrinking, so every scale must be constant and all on one side of 1
/// (`None` otherwise).
fn resize_10_nearest_mode(g: &Graph, n: NodeId) -> Option<&'static str> {
    let (_, scales) = util::const_f64(g, g.node(n).input(1)?)?;
    if scales.iter().all(|s| *s >= 1.0) {
        Some("floor")
    } else if scales.iter().all(|s| *s > 0.0 && *s <= 1.0) {
        Some("ceil")
    } else {
        None
    }
}

/// `Resize-10(x, scales)` as `Resize-11(x, , scales)` with the sampling
/// opset 10 used: asymmetric coordinates (and, for nearest, see
/// [`resize_10_nearest_mode`]). Call [`check`] first.
fn resize_10_to_11(g: &mut Graph, n: NodeId) {
    let scales = g.node(n).input(1);
    let nearest = g.node(n).attr_string("mode").as_deref() != Some("linear");
    let nearest_mode = if nearest {
        resize_10_nearest_mode(g, n)
    } else {
        None
    };
    g.set_input(n, 1, None);
    g.set_input(n, 2, scales);
    let p = g.node_proto_mut(n);
    p.set_attr(string_attr("coordinate_transformation_mode", "asymmetric"));
    if let Some(m) = nearest_mode {
        p.set_attr(string_attr("nearest_mode", m));
    }
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
    let at = |v: i64| from < v && to >= v;
    let mut changed = 0;
    for n in g.node_ids() {
        let node = g.node(n);
        if !node.domain().is_empty() {
            continue;
        }
        let op = node.op_type().to_string();
        // Opsets 9 to 12 first: later rules see the rewritten form.
        match op.as_str() {
            "BatchNormalization" if at(9) && node.attr("spatial").is_some() => {
                g.node_proto_mut(n).remove_attr("spatial");
                changed += 1;
            }
            "Slice" if at(10) && node.attr("starts").is_some() => {
                attr_to_input(g, n, "starts", 1);
                attr_to_input(g, n, "ends", 2);
                attr_to_input(g, n, "axes", 3);
                changed += 1;
            }
            "TopK" if at(10) && node.attr("k").is_some() => {
                if let Some(k) = node.attr_int("k") {
                    let name = format!("{}_k", node.name());
                    let c = g.add_const(&name, tensor::from_i64("", &[1], &[k]));
                    g.node_proto_mut(n).remove_attr("k");
                    g.set_input(n, 1, Some(c));
                    changed += 1;
                }
            }
            // Removed at 11: ScatterElements has the same inputs and axis.
            "Scatter" if at(11) => {
                g.node_proto_mut(n).proto.op_type = Some("ScatterElements".into());
                changed += 1;
            }
            "Clip" if at(11) && (node.attr("min").is_some() || node.attr("max").is_some()) => {
                float_attr_to_input(g, n, "min", 1);
                float_attr_to_input(g, n, "max", 2);
                changed += 1;
            }
            "Pad" if at(11) && node.attr("pads").is_some() => {
                attr_to_input(g, n, "pads", 1);
                float_attr_to_input(g, n, "value", 2);
                changed += 1;
            }
            "Dropout" if at(12) && node.attr("ratio").is_some() => {
                g.node_proto_mut(n).remove_attr("ratio");
                changed += 1;
            }
            "Resize" if from == 10 && to >= 11 => {
                resize_10_to_11(g, n);
                changed += 1;
            }
            "Upsample" if to >= 10 => {
                upsample_to_resize(g, n, to);
                changed += 1;
                continue;
            }
            _ => {}
        }
        let node = g.node(n);
        match node.kind() {
            _ if at(18) && REDUCE_18.contains(&node.op_type()) && node.attr("axes").is_some() => {
                attr_to_input(g, n, "axes", 1);
                changed += 1;
            }
            _ if !at(13) => {}
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
