//! `simulate`: the float twin of a QDQ model.
//!
//! Replaces every activation `QuantizeLinear → DequantizeLinear` pair by the
//! float arithmetic ONNX defines for it —
//! `Mul(Sub(Clip(Add(Round(Div(x, s)), zp), qmin, qmax), zp), s)`, where
//! `Round` rounds half to even like `QuantizeLinear` — and every
//! `DequantizeLinear` of a constant by its dequantized f32 values. The twin
//! computes exactly what the quantized model means, using only float ops, so
//! runtimes that lack (or mis-implement) an integer type still give the
//! reference answer. This is how int4/int16 models are verified too.
//!
//! Declines: Q nodes with non-constant or per-axis parameters, and Q nodes
//! with consumers other than DequantizeLinear (left as they are).

use quench_ir::{tensor, Graph, Node, NodeId, OpKind, ValueId};
use quench_onnx::proto::tensor_proto::DataType;

fn scalar_f32(g: &Graph, v: Option<ValueId>) -> Option<f32> {
    let t = g.const_tensor(v?)?;
    let d = tensor::to_f32(t).ok()?;
    (d.len() == 1).then(|| d[0])
}

fn int_range(elem: i32) -> Option<(f32, f32)> {
    Some(match DataType::try_from(elem).ok()? {
        DataType::Uint8 => (0.0, 255.0),
        DataType::Int8 => (-128.0, 127.0),
        DataType::Uint16 => (0.0, 65535.0),
        DataType::Int16 => (-32768.0, 32767.0),
        DataType::Uint4 => (0.0, 15.0),
        DataType::Int4 => (-8.0, 7.0),
        DataType::Int32 => (i32::MIN as f32, i32::MAX as f32),
        _ => return None,
    })
}

/// Rewrites `g` into its float twin; returns (Q/DQ pairs replaced, constant
/// DQs folded).
pub fn float_twin(g: &mut Graph, opset: i64) -> (usize, usize) {
    let (pairs, folded) = float_twin_pairs(g, opset);
    (pairs.len(), folded)
}

/// [`float_twin`], returning for every Q/DQ pair replaced the names of the
/// quantized tensor and of the twin's tensor that replaces the DQ output
/// (the tensor after quantization), and the number of constant DQs folded.
pub fn float_twin_pairs(g: &mut Graph, opset: i64) -> (Vec<(String, String)>, usize) {
    let mut pairs = Vec::new();
    let mut folded = 0;
    // Constant DequantizeLinear → f32 constant.
    for n in g.node_ids() {
        if !g.contains_node(n) || g.node(n).kind() != OpKind::DequantizeLinear {
            continue;
        }
        if fold_const_dq(g, n) {
            folded += 1;
        }
    }
    for n in g.node_ids() {
        if !g.contains_node(n) || g.node(n).kind() != OpKind::QuantizeLinear {
            continue;
        }
        if let Some(p) = replace_pair(g, n, opset) {
            pairs.push(p);
        }
    }
    (pairs, folded)
}

fn fold_const_dq(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n).clone();
    let (Some(q), Some(s), Some(out)) = (node.input(0), node.input(1), node.output(0)) else {
        return false;
    };
    let (Some(qt), Some(st)) = (g.const_tensor(q), g.const_tensor(s)) else {
        return false;
    };
    if node.attr_int("block_size").unwrap_or(0) != 0 {
        return false;
    }
    let dims = qt.dims.clone();
    let (Ok(qv), Ok(sv)) = (tensor::to_f64(qt), tensor::to_f64(st)) else {
        return false;
    };
    let zv = match node.input(2) {
        Some(z) => match g.const_tensor(z).and_then(|t| tensor::to_f64(t).ok()) {
            Some(z) => z,
            None => return false,
        },
        None => vec![0.0],
    };
    let rank = dims.len() as i64;
    let axis = node.attr_int("axis").unwrap_or(1);
    let axis = if axis < 0 { axis + rank } else { axis };
    let (channels, inner) = if sv.len() > 1 {
        let Some(a) = usize::try_from(axis).ok().filter(|a| *a < dims.len()) else {
            return false;
        };
        (
            dims[a] as usize,
            dims[a + 1..].iter().map(|d| *d as usize).product::<usize>(),
        )
    } else {
        (1, 1)
    };
    if sv.len() != channels || (zv.len() != 1 && zv.len() != channels) {
        return false;
    }
    let out_f: Vec<f32> = qv
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let c = if channels > 1 {
                (i / inner) % channels
            } else {
                0
            };
            let z = zv[if zv.len() == 1 { 0 } else { c }];
            // ONNX: (x - zero_point) computed exactly, then multiplied in f32.
            ((x - z) as f32) * (sv[c] as f32)
        })
        .collect();
    g.remove_node(n);
    g.define_const(out, tensor::from_f32("", &dims, &out_f));
    true
}

fn replace_pair(g: &mut Graph, qn: NodeId, opset: i64) -> Option<(String, String)> {
    let node = g.node(qn).clone();
    let (Some(x), Some(qo)) = (node.input(0), node.output(0)) else {
        return None;
    };
    let scale = scalar_f32(g, node.input(1))?;
    let zp_t = node.input(2).and_then(|z| g.const_tensor(z).cloned());
    let zp = match &zp_t {
        Some(t) => match tensor::to_f32(t).ok().filter(|v| v.len() == 1) {
            Some(v) => v[0],
            None => return None,
        },
        None => 0.0,
    };
    let elem = zp_t
        .as_ref()
        .map(|t| t.data_type())
        .or_else(|| node.attr_int("output_dtype").map(|d| d as i32))
        .unwrap_or(DataType::Uint8 as i32);
    let (qmin, qmax) = int_range(elem)?;
    let consumers = g.consumers(qo);
    if consumers.is_empty()
        || consumers
            .iter()
            .any(|c| g.node(*c).kind() != OpKind::DequantizeLinear)
        || g.is_graph_output(qo)
    {
        return None;
    }
    // Each DQ must use the same parameters.
    for c in &consumers {
        let d = g.node(*c);
        let same_scale = scalar_f32(g, d.input(1)) == Some(scale);
        let dz = d
            .input(2)
            .and_then(|z| g.const_tensor(z))
            .and_then(|t| tensor::to_f32(t).ok())
            .and_then(|v| v.first().copied())
            .unwrap_or(0.0);
        if !same_scale || dz != zp {
            return None;
        }
    }
    let base = g.value(x).name.clone();
    let sv = g.add_const(
        &format!("{base}_sim_scale"),
        tensor::from_f32("", &[], &[scale]),
    );
    let zv = g.add_const(
        &format!("{base}_sim_zero_point"),
        tensor::from_f32("", &[], &[zp]),
    );
    let lo = g.add_const(
        &format!("{base}_sim_qmin"),
        tensor::from_f32("", &[], &[qmin]),
    );
    let hi = g.add_const(
        &format!("{base}_sim_qmax"),
        tensor::from_f32("", &[], &[qmax]),
    );
    let mk = |g: &mut Graph, op: &str| Node::new(op, &g.unique_name(&format!("{base}_sim_{op}")));
    let d = mk(g, "Div");
    let (_, a) = g.add_op(d, &[x, sv], &[&format!("{base}_sim_div")]);
    let r = mk(g, "Round");
    let (_, b) = g.add_op(r, &[a[0]], &[&format!("{base}_sim_round")]);
    let ad = mk(g, "Add");
    let (_, c) = g.add_op(ad, &[b[0], zv], &[&format!("{base}_sim_add")]);
    let clipped = if opset >= 11 {
        let cl = mk(g, "Clip");
        g.add_op(cl, &[c[0], lo, hi], &[&format!("{base}_sim_clip")])
            .1
    } else {
        let mut cl = mk(g, "Clip");
        cl.set_attr(quench_ir::attr::float("min", qmin));
        cl.set_attr(quench_ir::attr::float("max", qmax));
        g.add_op(cl, &[c[0]], &[&format!("{base}_sim_clip")]).1
    };
    let su = mk(g, "Sub");
    let (_, e) = g.add_op(su, &[clipped[0], zv], &[&format!("{base}_sim_sub")]);
    let mu = mk(g, "Mul");
    let (_, f) = g.add_op(mu, &[e[0], sv], &[&format!("{base}_sim_out")]);
    for c in consumers {
        let Some(out) = g.node(c).output(0) else {
            continue;
        };
        g.remove_node(c);
        g.replace_all_uses(out, f[0]);
        // Keep the DQ output's name when it was a graph output.
        if g.is_graph_output(f[0]) {
            let name = g.value(out).name.clone();
            let tmp = g.unique_name(&format!("{name}__replaced"));
            g.rename_value(out, &tmp);
            g.rename_value(f[0], &name);
        }
    }
    g.remove_node(qn);
    Some((base, g.value(f[0]).name.clone()))
}
