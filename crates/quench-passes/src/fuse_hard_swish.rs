//! `fuse_hard_swish`: a hard-swish written out as four float ops,
//! `x · Clip(x + 3, 0, 6) / 6` (or `x · (Clip(x + 3, 0, 6) / 6)`, a Mul by
//! 1/6 in place of the Div), becomes one `HardSwish(x)` from opset 14, or
//! `x · HardSigmoid(x; α = 1/6, β = 0.5)` below it.
//!
//! PaddlePaddle exports (PP-OCR, PicoDet) write every hard-swish out this
//! way, up to a hundred per model. The compile runs this pass after
//! quantization: there the four ops run in float between a
//! DequantizeLinear and a QuantizeLinear, each a pass over a full
//! activation tensor, which made a quantized PicoDet slower than its FP32
//! model in ONNX Runtime. Running it after quantization leaves the plan and
//! the ranges as they were.
//!
//! Requires: nothing. Guarantees: the same function up to float rounding
//! (`x/6 + 1/2` in place of `(x + 3)/6`: within a few ulps); the chain's
//! output value keeps its id and name. Declines: constants other than 3,
//! 0, 6 (and 1/6 within one f32 ulp), intermediate values used elsewhere,
//! captured by a subgraph or graph outputs, non-float inputs.

use quench_ir::{attr, Graph, Node, NodeId, OpKind, ValueId};
use quench_onnx::proto::tensor_proto::DataType;

use crate::{Changed, Pass, PassCx, PassError};

pub struct FuseHardSwish;

/// The scalar value of constant `v`, if it is a one-element float tensor
/// of rank 0 or 1 (a higher rank would broadcast the chain's output to it,
/// which the fused op does not).
fn scalar(g: &Graph, v: ValueId) -> Option<f32> {
    let t = g.const_tensor(v)?;
    if t.dims.len() > 1 {
        return None;
    }
    let d = quench_ir::tensor::to_f32(t).ok()?;
    (d.len() == 1).then(|| d[0])
}

/// `v` is read by exactly one node input, and is neither a graph output
/// nor captured by a subgraph: returns that node.
fn only_use(g: &Graph, v: ValueId) -> Option<NodeId> {
    if g.is_graph_output(v) || g.is_captured(v) {
        return None;
    }
    match g.uses(v) {
        [u] => Some(u.node),
        _ => None,
    }
}

/// Node `n`'s inputs 0 and 1 as (the other, the constant `c`), in either
/// order; `None` if neither is the constant `c` (within `tol`).
fn with_const(g: &Graph, n: NodeId, c: f32, tol: f32) -> Option<ValueId> {
    let node = g.node(n);
    let (a, b) = (node.input(0)?, node.input(1)?);
    let is = |v: ValueId| scalar(g, v).is_some_and(|s| (s - c).abs() <= tol);
    match (is(a), is(b)) {
        (false, true) => Some(a),
        (true, false) => Some(b),
        _ => None,
    }
}

/// One hard-swish found: its input, the four nodes, the output value.
struct Found {
    x: ValueId,
    nodes: [NodeId; 4],
    y: ValueId,
}

/// The written-out hard-swish whose `Add(x, 3)` is node `add`, if it is one.
fn match_at(g: &Graph, add: NodeId) -> Option<Found> {
    let node = g.node(add);
    if node.kind() != OpKind::Add || node.inputs().len() != 2 {
        return None;
    }
    let x = with_const(g, add, 3.0, 0.0)?;
    // f32 (HardSigmoid and HardSwish take float types; the constants 3
    // and 6 were checked as f32 values). Unknown types are checked by the
    // constants' own type.
    let f32_ = Some(DataType::Float as i32);
    let three = if node.input(0) == Some(x) {
        node.input(1)?
    } else {
        node.input(0)?
    };
    let x_elem = g.value(x).elem_type();
    if g.const_tensor(three).map(|t| t.data_type()) != f32_ || (x_elem.is_some() && x_elem != f32_)
    {
        return None;
    }
    let sixth_tol = f32::EPSILON / 6.0;
    let clip = only_use(g, node.output(0)?)?;
    if g.node(clip).kind() != OpKind::Clip || crate::facts::clip_bounds(g, clip) != Some((0.0, 6.0))
    {
        return None;
    }
    let c_out = g.node(clip).output(0)?;
    let next = only_use(g, c_out)?;
    let n2 = g.node(next);
    // The scaling by 1/6: a Div by 6 or a Mul by 1/6 of `v`.
    let scales = |n: NodeId, v: ValueId| -> bool {
        let nd = g.node(n);
        match nd.kind() {
            OpKind::Div => {
                nd.input(0) == Some(v) && nd.input(1).and_then(|c| scalar(g, c)) == Some(6.0)
            }
            OpKind::Mul => with_const(g, n, 1.0 / 6.0, sixth_tol) == Some(v),
            _ => false,
        }
    };
    // x · Clip(...), then / 6.
    if n2.kind() == OpKind::Mul && n2.inputs().len() == 2 {
        let (a, b) = (n2.input(0)?, n2.input(1)?);
        if (a == x && b == c_out) || (a == c_out && b == x) {
            let last = only_use(g, n2.output(0)?)?;
            if scales(last, n2.output(0)?) {
                return Some(Found {
                    x,
                    nodes: [add, clip, next, last],
                    y: g.node(last).output(0)?,
                });
            }
            return None;
        }
    }
    // Clip(...) / 6, then x · that.
    if scales(next, c_out) {
        let s_out = n2.output(0)?;
        let last = only_use(g, s_out)?;
        let l = g.node(last);
        if l.kind() == OpKind::Mul && l.inputs().len() == 2 {
            let (a, b) = (l.input(0)?, l.input(1)?);
            if (a == x && b == s_out) || (a == s_out && b == x) {
                return Some(Found {
                    x,
                    nodes: [add, clip, next, last],
                    y: l.output(0)?,
                });
            }
        }
    }
    None
}

/// How many written-out hard-swishes `g` has (the compile asks for opset
/// 14, where one op replaces each, when there are any).
pub fn count(g: &Graph) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&n| match_at(g, n).is_some())
        .count()
}

impl Pass for FuseHardSwish {
    fn name(&self) -> &'static str {
        "fuse_hard_swish"
    }
    fn description(&self) -> &'static str {
        "x * Clip(x + 3, 0, 6) / 6 written out becomes HardSwish (opset 14+) or x * HardSigmoid(x) (run after quantization by the compile)"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut fused = 0;
        for n in g.node_ids() {
            if !g.contains_node(n) {
                continue;
            }
            let Some(f) = match_at(g, n) else { continue };
            let base = g.node(f.nodes[3]).name().to_string();
            for id in f.nodes {
                g.remove_node(id);
            }
            if cx.opset >= 14 {
                let hs = Node::new("HardSwish", &g.unique_name(&format!("{base}_hard_swish")));
                g.add_node(hs, &[Some(f.x)], &[Some(f.y)]);
            } else {
                let ty = g.value(f.y).ty.clone();
                let h = g.add_value(&g.unique_name(&format!("{base}_hard_sigmoid_out")), ty);
                let mut hsig = Node::new(
                    "HardSigmoid",
                    &g.unique_name(&format!("{base}_hard_sigmoid")),
                );
                hsig.set_attr(attr::float("alpha", 1.0 / 6.0));
                hsig.set_attr(attr::float("beta", 0.5));
                g.add_node(hsig, &[Some(f.x)], &[Some(h)]);
                let mul = Node::new("Mul", &g.unique_name(&format!("{base}_hard_swish_mul")));
                g.add_node(mul, &[Some(f.x), Some(h)], &[Some(f.y)]);
            }
            fused += 1;
        }
        if fused > 0 {
            let form = if cx.opset >= 14 {
                "HardSwish"
            } else {
                "x * HardSigmoid(x)"
            };
            cx.note(
                "fuse_hard_swish",
                format!("{fused} written-out hard-swish(es) -> {form}"),
            );
            cx.count("fuse_hard_swish", "fused", fused);
        }
        Ok(fused > 0)
    }
}
