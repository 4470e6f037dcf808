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
//! An f16/bf16 activation pair (opset 19+, its scale of the activation's
//! type) is computed in f32 between `Cast`s, as ONNX Runtime does: x and the
//! scale widened, the dequantized value rounded back to the scale's type.
//! (Measured with ONNX Runtime 1.32 on 200,000 random f16 values: its
//! QuantizeLinear equals the f32 division everywhere. ONNX's Python
//! reference evaluator divides in f16 instead, the opset-25 text's "the type
//! of y_scale determines the precision of the division", and differs from
//! it by one code on 0.9% of those values; DequantizeLinear agrees in all
//! three.) A constant DQ with an f16/bf16 scale folds to a constant of that
//! type.
//!
//! Constant DequantizeLinear nodes are folded (and their then unused
//! inputs removed) for every stored type of
//! [`codes`] (int4/uint4 packed, 8- and 16-bit integers, float8 bit
//! patterns decoded exactly, int32 biases) and every layout: per tensor,
//! per axis, and blocks (`block_size`, opset 21).
//!
//! Declines (left as they are, and listed by [`float_twin_report`]):
//! Q nodes with non-constant or per-axis parameters, Q nodes with consumers
//! other than DequantizeLinear, and **float8 activation Q/DQ pairs**:
//! rounding to a 2- or 3-bit mantissa depends on each value's binary
//! exponent, and the float ops a runtime without float8 offers (`Log`,
//! `Pow`, `Floor`) do not give that exponent exactly at binade edges, so no
//! exact float-op expression of float8 `QuantizeLinear` is emitted.
//! (`Cast` to float8 would be exact, but the runtimes the twin exists for
//! cannot run it.)

use quench_ir::{tensor, Graph, Node, NodeId, OpKind, ValueId};
use quench_onnx::proto::tensor_proto::DataType;

use crate::codes;

/// What [`float_twin_report`] did.
#[derive(Debug, Clone, Default)]
pub struct TwinReport {
    /// Per Q/DQ pair replaced: the quantized tensor's name and the name of
    /// the twin's tensor that replaces the DQ output.
    pub pairs: Vec<(String, String)>,
    /// Constant DequantizeLinear nodes folded into f32 constants.
    pub folded: usize,
    /// QuantizeLinear / DequantizeLinear nodes left in place: node name and
    /// reason.
    pub declined: Vec<(String, String)>,
}

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
    let r = float_twin_report(g, opset);
    (r.pairs, r.folded)
}

/// [`float_twin`] with the list of Q/DQ nodes it declined and why.
pub fn float_twin_report(g: &mut Graph, opset: i64) -> TwinReport {
    let mut r = TwinReport::default();
    // Constant DequantizeLinear → f32 constant.
    for n in g.node_ids() {
        if !g.contains_node(n) || g.node(n).kind() != OpKind::DequantizeLinear {
            continue;
        }
        if fold_const_dq(g, n) {
            r.folded += 1;
        }
    }
    for n in g.node_ids() {
        if !g.contains_node(n) || g.node(n).kind() != OpKind::QuantizeLinear {
            continue;
        }
        match replace_pair(g, n, opset) {
            Ok(p) => r.pairs.push(p),
            Err(why) => r
                .declined
                .push((g.node(n).name().to_string(), why.to_string())),
        }
    }
    r
}

/// The values of a constant tensor as DequantizeLinear reads them: integer
/// codes, decoded float8 values, or any other numeric type.
fn dq_input_values(t: &quench_onnx::proto::TensorProto) -> Option<Vec<f64>> {
    match codes::decode(t) {
        Some((elem, c)) => {
            let kind = match elem {
                quench_calib::ElemType::F8E4M3FN => Some(quench_calib::FloatKind::F8E4M3FN),
                quench_calib::ElemType::F8E5M2 => Some(quench_calib::FloatKind::F8E5M2),
                quench_calib::ElemType::F16 => Some(quench_calib::FloatKind::F16),
                quench_calib::ElemType::BF16 => Some(quench_calib::FloatKind::BF16),
                quench_calib::ElemType::Int4
                | quench_calib::ElemType::Uint4
                | quench_calib::ElemType::Int8
                | quench_calib::ElemType::Uint8
                | quench_calib::ElemType::Int16
                | quench_calib::ElemType::Uint16 => None,
            };
            Some(match kind {
                Some(k) => c.iter().map(|b| f64::from(k.decode(*b as u32))).collect(),
                None => c.iter().map(|v| f64::from(*v)).collect(),
            })
        }
        None => tensor::to_f64(t).ok(),
    }
}

fn fold_const_dq(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n).clone();
    let (Some(q), Some(s), Some(out)) = (node.input(0), node.input(1), node.output(0)) else {
        return false;
    };
    let (Some(qt), Some(st)) = (g.const_tensor(q), g.const_tensor(s)) else {
        return false;
    };
    let dims = qt.dims.clone();
    let out_elem = st.data_type();
    let (Some(qv), Ok(sv)) = (dq_input_values(qt), tensor::to_f64(st)) else {
        return false;
    };
    let zv = match node.input(2) {
        Some(z) => match g.const_tensor(z).and_then(dq_input_values) {
            Some(z) => z,
            None => return false,
        },
        None => vec![0.0],
    };
    let rank = dims.len() as i64;
    let axis = node.attr_int("axis").unwrap_or(1);
    let axis = if axis < 0 { axis + rank } else { axis };
    let block = node.attr_int("block_size").unwrap_or(0);
    let granularity = if block > 0 {
        let (Ok(axis), Ok(size)) = (usize::try_from(axis), usize::try_from(block)) else {
            return false;
        };
        quench_calib::Granularity::Block { axis, size }
    } else if sv.len() > 1 {
        let Ok(axis) = usize::try_from(axis) else {
            return false;
        };
        quench_calib::Granularity::PerAxis { axis }
    } else {
        quench_calib::Granularity::PerTensor
    };
    let Some(layout) = codes::Layout::new(&dims, granularity) else {
        return false;
    };
    // The scale must have the layout's shape (blocks: the blocked shape).
    if sv.len() != layout.groups
        || (block > 0 && st.dims != layout.scale_dims)
        || (zv.len() != 1 && zv.len() != layout.groups)
    {
        return false;
    }
    let out_f: Vec<f32> = qv
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let c = layout.group(i);
            let z = zv[if zv.len() == 1 { 0 } else { c }];
            // ONNX: (x - zero_point) computed exactly, then multiplied in f32.
            ((x - z) as f32) * (sv[c] as f32)
        })
        .collect();
    g.remove_node(n);
    // The output has the scale's type (f16/bf16 from opset 19): the f32
    // product rounded to it, as ONNX's reference computes it.
    g.define_const(out, codes::float_const(out_elem, &dims, &out_f));
    // The stored codes are dropped once unused: runtimes the twin is for
    // may not even load their type (int4, float8).
    for v in node.inputs().iter().flatten() {
        if g.use_count(*v) == 0 && !g.is_graph_output(*v) && g.const_tensor(*v).is_some() {
            g.remove_const(*v);
        }
    }
    true
}

/// Domain and op type of a [`parametric_twin`]'s fused pairs:
/// `FakeQuant(x, scale, low, high) = clip(round(x / scale), low, high) *
/// scale` (round half to even, the division as tract computes it: a
/// product by the reciprocal). quench-verify's `fake_quant` runs it in
/// tract; no other runtime knows it, and no written model contains it.
/// Twins using it import the domain at version 1.
pub const TWIN_DOMAIN: &str = "ai.quench.twin";
pub const TWIN_OP_TYPE: &str = "FakeQuant";

/// The scale fed to a [`parametric_twin`] pair to turn it off: a power of
/// two so small that `clip(round(x / s), low, high) * s` is `x` itself
/// (exactly for |x| >= 2^-17, within 2^-41 below; the division and the
/// product by a power of two are exact), bounded only by the bypass bounds
/// ([`ParamPair::off`]).
pub const OFF_SCALE: f32 = 1.0 / (1u64 << 40) as f32;

/// One activation Q/DQ pair of a [`parametric_twin`]: its scale and code
/// bounds are graph inputs, so one compiled model runs every choice of
/// parameters, on ([`ParamPair::on`]) or off ([`ParamPair::off`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamPair {
    /// The quantized tensor (the QuantizeLinear's input).
    pub tensor: String,
    /// Names of the scalar f32 inputs: `scale`, `low` and `high` (the code
    /// range relative to the zero point, `qmin - zp` and `qmax - zp`).
    pub scale: String,
    pub low: String,
    pub high: String,
    /// The bypass bounds given to [`parametric_twin`] for this tensor (a
    /// Relu or Clip the quantized range had absorbed; infinite when none):
    /// off, the tensor passes through clamped to them.
    pub bypass: (f32, f32),
    /// Integer code range of the pair's type.
    pub qmin: f32,
    pub qmax: f32,
    /// The parameters the quantized model had.
    pub initial_scale: f32,
    pub initial_zero_point: f32,
}

impl ParamPair {
    /// The inputs `(scale, low, high)` that quantize with `scale` and
    /// `zero_point` on the pair's grid (`grid`: another integer code range
    /// to compute instead, such as a 16-bit one on a pair built as 8-bit).
    pub fn on(&self, scale: f32, zero_point: f32, grid: Option<(f32, f32)>) -> [f32; 3] {
        let (qmin, qmax) = grid.unwrap_or((self.qmin, self.qmax));
        [scale, qmin - zero_point, qmax - zero_point]
    }

    /// The inputs `(scale, low, high)` that pass the tensor through,
    /// clamped to the bypass bounds (see [`OFF_SCALE`]).
    pub fn off(&self) -> [f32; 3] {
        let bound = |b: f32| {
            if b.is_finite() {
                b / OFF_SCALE
            } else {
                f32::MAX.copysign(b)
            }
        };
        [OFF_SCALE, bound(self.bypass.0), bound(self.bypass.1)]
    }
}

/// The float twin of `g` (see the module docs), except that every
/// activation Q/DQ pair reads its scale and code bounds from new graph
/// inputs: `clip(round(x / scale), low, high) * scale`, one
/// [`TWIN_OP_TYPE`] node of [`TWIN_DOMAIN`] per pair (the caller imports
/// the domain). Fed [`ParamPair::on`] with the initial parameters, it
/// computes in tract what [`float_twin`] computes, bit for bit; fed
/// [`ParamPair::off`], the
/// tensor itself, clamped to `bypass_clamp(tensor)` (for a Relu or Clip
/// the quantized range had absorbed). One switch fewer than a
/// `Where(on, quantized, tensor)`: about 2 of every 12 element-wise passes
/// of a search run on PP-OCRv4 det.
/// Declined Q/DQ nodes are listed as in [`float_twin_report`].
pub fn parametric_twin(
    g: &mut Graph,
    opset: i64,
    bypass_clamp: &dyn Fn(&str) -> Option<(f32, f32)>,
) -> (Vec<ParamPair>, TwinReport) {
    let mut r = TwinReport::default();
    let mut params = Vec::new();
    for n in g.node_ids() {
        if g.contains_node(n) && g.node(n).kind() == OpKind::DequantizeLinear && fold_const_dq(g, n)
        {
            r.folded += 1;
        }
    }
    for n in g.node_ids() {
        if !g.contains_node(n) || g.node(n).kind() != OpKind::QuantizeLinear {
            continue;
        }
        match replace_pair_with(g, n, opset, Some(bypass_clamp)) {
            Ok((p, pp)) => {
                r.pairs.push(p);
                params.extend(pp);
            }
            Err(why) => r
                .declined
                .push((g.node(n).name().to_string(), why.to_string())),
        }
    }
    (params, r)
}

fn replace_pair(g: &mut Graph, qn: NodeId, opset: i64) -> Result<(String, String), &'static str> {
    replace_pair_with(g, qn, opset, None).map(|(p, _)| p)
}

type PairNames = (String, String);

fn replace_pair_with(
    g: &mut Graph,
    qn: NodeId,
    opset: i64,
    parametric: Option<&dyn Fn(&str) -> Option<(f32, f32)>>,
) -> Result<(PairNames, Option<ParamPair>), &'static str> {
    let node = g.node(qn).clone();
    let (Some(x), Some(qo)) = (node.input(0), node.output(0)) else {
        return Err("missing input or output");
    };
    let scale = scalar_f32(g, node.input(1)).ok_or("scale is not one constant value")?;
    // f16/bf16 input (opset 19+, the scale has its type): the twin computes
    // in f32 between a Cast in and a Cast back, as ONNX Runtime does (x and
    // the scale widened to f32, the dequantized f32 value rounded to the
    // scale's type).
    let x_elem = node
        .input(1)
        .and_then(|s| g.const_tensor(s))
        .map_or(DataType::Float as i32, |t| t.data_type());
    let narrow = x_elem == DataType::Float16 as i32 || x_elem == DataType::Bfloat16 as i32;
    let zp_t = node.input(2).and_then(|z| g.const_tensor(z).cloned());
    let elem = zp_t
        .as_ref()
        .map(|t| t.data_type())
        .or_else(|| node.attr_int("output_dtype").map(|d| d as i32))
        .unwrap_or(DataType::Uint8 as i32);
    if elem == DataType::Float8e4m3fn as i32
        || elem == DataType::Float8e5m2 as i32
        || elem == DataType::Float8e4m3fnuz as i32
        || elem == DataType::Float8e5m2fnuz as i32
    {
        return Err("float8 rounding has no exact float-op form (see the module docs)");
    }
    let zp = match &zp_t {
        Some(t) => match codes::decode(t)
            .map(|(_, c)| c.iter().map(|v| *v as f32).collect::<Vec<_>>())
            .or_else(|| tensor::to_f32(t).ok())
            .filter(|v| v.len() == 1)
        {
            Some(v) => v[0],
            None => return Err("zero point is not one constant value"),
        },
        None => 0.0,
    };
    let (qmin, qmax) = int_range(elem).ok_or("not an integer quantized type")?;
    let consumers = g.consumers(qo);
    if consumers.is_empty()
        || consumers
            .iter()
            .any(|c| g.node(*c).kind() != OpKind::DequantizeLinear)
        || g.is_graph_output(qo)
    {
        return Err("quantized tensor is used by something other than DequantizeLinear");
    }
    // Each DQ must use the same zero point, and the same scale except in
    // the float twin of f32 tensors, where a DQ with a scale of its own
    // (a lowered HardSwish's `x / 6` read from `x`'s codes) multiplies the
    // same codes by it.
    let mut other_scales: Vec<(NodeId, f32)> = Vec::new();
    for c in &consumers {
        let d = g.node(*c);
        let Some(ds) = scalar_f32(g, d.input(1)) else {
            return Err("DequantizeLinear scale is not one constant value");
        };
        let dz = d
            .input(2)
            .and_then(|z| g.const_tensor(z))
            .and_then(dq_input_values)
            .and_then(|v| v.first().copied())
            .unwrap_or(0.0);
        let f32_scale = d
            .input(1)
            .and_then(|v| g.const_tensor(v))
            .is_some_and(|t| t.data_type() == DataType::Float as i32);
        if dz as f32 != zp || (ds != scale && (parametric.is_some() || narrow || !f32_scale)) {
            return Err("DequantizeLinear parameters differ from QuantizeLinear's");
        }
        if ds != scale {
            other_scales.push((*c, ds));
        }
    }
    let base = g.value(x).name.clone();
    let scalar = |elem: DataType| Some(tensor::tensor_type_of(elem as i32, &[]));
    let mk = |g: &mut Graph, op: &str| Node::new(op, &g.unique_name(&format!("{base}_sim_{op}")));
    // f16/bf16: computed in f32 (a Cast in here, a Cast back at the end).
    let x = if narrow {
        let mut c = mk(g, "Cast");
        c.set_attr(quench_ir::attr::int("to", DataType::Float as i64));
        g.add_op(c, &[x], &[&format!("{base}_sim_f32")]).1[0]
    } else {
        x
    };
    // Parametric: scale, code bounds relative to the zero point and the
    // switch are inputs; `(clip(round(x/s) + zp, qmin, qmax) - zp) * s`
    // is computed as `clip(round(x/s), qmin - zp, qmax - zp) * s`, which
    // is the same value for every input (round(x/s) and the bounds are
    // integers, exact in f32 below 2^24, and beyond that both clip): the
    // parametric form in one fused node, the constant one in five ops.
    let mut inputs = None;
    // The codes minus the zero point (float twin only), for DQs with a
    // scale of their own.
    let mut centred = None;
    let mut f = if parametric.is_some() {
        let names: Vec<String> = ["scale", "low", "high"]
            .iter()
            .map(|k| g.unique_name(&format!("{base}__param_{k}")))
            .collect();
        let sv = g.add_input(&names[0], scalar(DataType::Float));
        let lo = g.add_input(&names[1], scalar(DataType::Float));
        let hi = g.add_input(&names[2], scalar(DataType::Float));
        inputs = Some(names);
        // One node of quench's twin domain (run by quench-verify's
        // `fake_quant` op): what `Div`, `Round`, `Clip` and `Mul` compute
        // in tract, bit for bit, in one pass instead of four.
        let mut fq = mk(g, TWIN_OP_TYPE);
        fq.proto.domain = Some(TWIN_DOMAIN.to_string());
        g.add_op(fq, &[x, sv, lo, hi], &[&format!("{base}_sim_out")])
            .1
    } else {
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
        centred = Some(e[0]);
        let mu = mk(g, "Mul");
        g.add_op(mu, &[e[0], sv], &[&format!("{base}_sim_out")]).1
    };
    let mut param = None;
    if let (Some(names), Some(clamp)) = (inputs, parametric) {
        let bypass = clamp(&base).unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let [scale_in, low, high]: [String; 3] = names.try_into().map_err(|_| "parameter names")?;
        param = Some(ParamPair {
            tensor: base.clone(),
            scale: scale_in,
            low,
            high,
            bypass,
            qmin,
            qmax,
            initial_scale: scale,
            initial_zero_point: zp,
        });
    }
    if narrow {
        let mut c = mk(g, "Cast");
        c.set_attr(quench_ir::attr::int("to", i64::from(x_elem)));
        let name = g.unique_name(&format!("{base}_sim_out_cast"));
        f = g.add_op(c, &[f[0]], &[&name]).1;
    }
    for c in consumers {
        let Some(out) = g.node(c).output(0) else {
            continue;
        };
        let own = other_scales.iter().find(|(n, _)| *n == c).map(|(_, s)| *s);
        let value = match (own, centred) {
            (Some(ds), Some(e)) => {
                let sv = g.add_const(
                    &g.unique_name(&format!("{base}_sim_scale")),
                    tensor::from_f32("", &[], &[ds]),
                );
                let mu = mk(g, "Mul");
                let name = g.unique_name(&format!("{base}_sim_out"));
                g.add_op(mu, &[e, sv], &[&name]).1[0]
            }
            _ => f[0],
        };
        g.remove_node(c);
        g.replace_all_uses(out, value);
        // Keep the DQ output's name when it was a graph output.
        if g.is_graph_output(value) {
            let name = g.value(out).name.clone();
            let tmp = g.unique_name(&format!("{name}__replaced"));
            g.rename_value(out, &tmp);
            g.rename_value(value, &name);
        }
    }
    g.remove_node(qn);
    Ok(((base, g.value(f[0]).name.clone()), param))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quench_calib::{ElemType, FloatKind};

    /// `DequantizeLinear(codes, scale, zp)` of constants, as a graph output.
    fn const_dq(
        elem: ElemType,
        dims: &[i64],
        q: &[i32],
        sdims: &[i64],
        scales: &[f32],
        zps: &[i32],
        attrs: &[(&str, i64)],
    ) -> (Graph, ValueId) {
        let mut g = Graph::new("t");
        let qv = g.add_const("q", codes::encode(elem, dims, q));
        let sv = g.add_const("s", tensor::from_f32("", sdims, scales));
        let zv = g.add_const("z", codes::encode(elem, sdims, zps));
        let mut dq = Node::new("DequantizeLinear", "dq");
        for (k, v) in attrs {
            dq.set_attr(quench_ir::attr::int(k, *v));
        }
        let (_, out) = g.add_op(dq, &[qv, sv, zv], &["y"]);
        g.add_output(out[0]);
        (g, out[0])
    }

    fn folded(mut g: Graph, y: ValueId) -> Option<Vec<f32>> {
        let r = float_twin_report(&mut g, 21);
        assert_eq!(r.folded, 1);
        tensor::to_f32(g.const_tensor(y)?).ok()
    }

    #[test]
    fn folds_int4_blocks() {
        // [4, 2] weight, blocks of 2 along axis 0: scales [2, 2].
        let q = [-8, 7, 1, -1, 3, 0, -2, 5];
        let scales = [0.5, 0.25, 2.0, 4.0];
        let (g, y) = const_dq(
            ElemType::Int4,
            &[4, 2],
            &q,
            &[2, 2],
            &scales,
            &[0, 0, 0, 0],
            &[("axis", 0), ("block_size", 2)],
        );
        // Element (r, c) uses scale (r / 2, c).
        let want: Vec<f32> = (0..8)
            .map(|i| q[i] as f32 * scales[(i / 2 / 2) * 2 + i % 2])
            .collect();
        assert_eq!(folded(g, y), Some(want));
        // A ragged last block: 3 rows, block 2 -> 2 blocks.
        let (g, y) = const_dq(
            ElemType::Uint4,
            &[3],
            &[15, 1, 9],
            &[2],
            &[1.0, 0.5],
            &[8, 8],
            &[("axis", 0), ("block_size", 2)],
        );
        assert_eq!(folded(g, y), Some(vec![7.0, -7.0, 0.5]));
    }

    #[test]
    fn folds_16_bit_and_float8() {
        let (g, y) = const_dq(
            ElemType::Uint16,
            &[2],
            &[65535, 0],
            &[],
            &[0.5],
            &[32768],
            &[],
        );
        assert_eq!(folded(g, y), Some(vec![16383.5, -16384.0]));
        let (g, y) = const_dq(ElemType::Int16, &[1], &[-32768], &[], &[2.0], &[0], &[]);
        assert_eq!(folded(g, y), Some(vec![-65536.0]));
        let k = FloatKind::F8E4M3FN;
        let (g, y) = const_dq(
            ElemType::F8E4M3FN,
            &[3],
            &[k.encode(448.0) as i32, k.encode(-0.015625) as i32, 0],
            &[],
            &[0.5],
            &[0],
            &[],
        );
        assert_eq!(folded(g, y), Some(vec![224.0, -0.0078125, 0.0]));
    }

    /// A u16 / int4 activation Q/DQ pair becomes float ops with the type's
    /// range; a float8 pair is declined with its reason.
    #[test]
    fn replaces_int_pairs_and_declines_float8() {
        for (elem, zp, lo, hi, declined) in [
            (ElemType::Uint16, 30000, 0.0, 65535.0, false),
            (ElemType::Int4, 0, -8.0, 7.0, false),
            (ElemType::F8E4M3FN, 0, 0.0, 0.0, true),
        ] {
            let mut g = Graph::new("t");
            let x = g.add_input("x", None);
            let sv = g.add_const("s", tensor::from_f32("", &[], &[0.1]));
            let zv = g.add_const("z", codes::encode(elem, &[], &[zp]));
            let (_, q) = g.add_op(Node::new("QuantizeLinear", "q"), &[x, sv, zv], &["xq"]);
            let (_, d) = g.add_op(
                Node::new("DequantizeLinear", "dq"),
                &[q[0], sv, zv],
                &["xd"],
            );
            let (_, r) = g.add_op(Node::new("Relu", "r"), &[d[0]], &["y"]);
            g.add_output(r[0]);
            let rep = float_twin_report(&mut g, 21);
            if declined {
                assert_eq!(rep.pairs.len(), 0);
                assert_eq!(rep.declined.len(), 1);
                assert!(rep.declined[0].1.contains("float8"), "{:?}", rep.declined);
                continue;
            }
            assert_eq!(rep.pairs.len(), 1, "{elem:?}");
            let clip = g
                .node_ids()
                .into_iter()
                .find(|n| g.node(*n).kind() == OpKind::Clip);
            let bounds: Vec<f32> = clip
                .map(|c| {
                    (1..3)
                        .filter_map(|i| scalar_f32(&g, g.node(c).input(i)))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(bounds, vec![lo, hi], "{elem:?}");
            let z = g
                .value_by_name("x_sim_zero_point")
                .and_then(|v| scalar_f32(&g, Some(v)));
            assert_eq!(z, Some(zp as f32));
        }
    }
}
