//! `fold_batchnorm`: folds BatchNormalization, and `Mul`/`Add`/`Sub` by a
//! per-channel constant, into the op before it.
//!
//! In inference, `BN(x) = s·x + t` per channel with
//! `s = scale / sqrt(var + eps)` and `t = B − s·mean`. When `x` comes from a
//! Conv, ConvTranspose, Gemm or MatMul with constant weights and nothing else
//! reads `x`, the weights of each output channel are multiplied by `s` and
//! `t` goes into the bias. Arithmetic is done in f64; results are stored as
//! f32.
//!
//! The same per-channel affine comes from `Mul`, `Add` or `Sub(x, c)` by a
//! constant `c` that is a scalar or varies along the channel axis only
//! (Paddle exports scale every conv output this way: PP-LCNet's learnable
//! affine blocks); those fold into Conv, ConvTranspose and Gemm, not MatMul.
//!
//! Requires: constant f32 BN parameters and weights. Guarantees: the BN node
//! is gone and the producer now defines the BN's output value (same name),
//! or, for MatMul, an Add with the shift does. Weights shared with another
//! node are copied, never changed under the other node.
//! Declines: a BN input with other consumers (or that is a graph output),
//! non-constant BN parameters, training mode or used mean/var outputs,
//! `spatial=0` (opset < 9), channel-count mismatches, Gemm biases that are
//! not per-column, and MatMul whose output is not 2-D (BN's channel axis 1
//! would not be the MatMul's output-feature axis).

use quench_ir::{tensor, Graph, Node, NodeId, OpKind, ValueId};
use quench_onnx::proto::tensor_proto::DataType;

use crate::{util, Changed, Pass, PassCx, PassError};

pub struct FoldBatchNorm;

/// The per-channel affine form of an inference BatchNormalization.
pub(crate) struct BnAffine {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

/// Reads a BN node's constant parameters; `None` if it is not an
/// inference-mode BN with constant 1-D f32 parameters.
pub(crate) fn bn_affine(g: &Graph, bn: NodeId) -> Option<BnAffine> {
    let node = g.node(bn);
    if node.attr_int("training_mode").unwrap_or(0) != 0
        || node.attr_int("spatial") == Some(0)
        || node.attr_int("is_test") == Some(0)
    {
        return None;
    }
    if node
        .outputs()
        .iter()
        .skip(1)
        .flatten()
        .any(|o| g.use_count(*o) > 0)
    {
        return None;
    }
    let eps = node.attr_float("epsilon").unwrap_or(1e-5) as f64;
    let mut params = Vec::new();
    for i in 1..=4 {
        let v = node.input(i)?;
        if util::const_elem(g, v)? != DataType::Float as i32 {
            return None;
        }
        let (dims, data) = util::const_f64(g, v)?;
        if dims.len() != 1 {
            return None;
        }
        params.push(data);
    }
    let c = params[0].len();
    if params.iter().any(|p| p.len() != c) {
        return None;
    }
    let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let scale: Vec<f64> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    if scale.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let shift = (0..c).map(|i| beta[i] - scale[i] * mean[i]).collect();
    Some(BnAffine { scale, shift })
}

/// Stores new f32 data for constant `v` as used by input `slot` of `node`:
/// in place if this is its only use, else as a new constant.
pub(crate) fn write_const(
    g: &mut Graph,
    node: NodeId,
    slot: usize,
    v: ValueId,
    dims: &[i64],
    data: &[f64],
) {
    let f: Vec<f32> = data.iter().map(|x| *x as f32).collect();
    let t = tensor::from_f32("", dims, &f);
    if g.uses(v).len() == 1 && !g.is_graph_output(v) && !g.is_captured(v) && !g.is_graph_input(v) {
        g.replace_const(v, t);
    } else {
        let name = format!("{}_folded", g.value(v).name);
        let nv = g.add_const(&name, t);
        g.set_input(node, slot, Some(nv));
    }
}

fn f32_const(g: &Graph, v: ValueId) -> Option<(Vec<i64>, Vec<f64>)> {
    if util::const_elem(g, v)? != DataType::Float as i32 {
        return None;
    }
    util::const_f64(g, v)
}

/// Folds `bn` into its producer; returns whether it did.
fn fold_one(g: &mut Graph, bn: NodeId) -> bool {
    let Some(x) = g.node(bn).input(0) else {
        return false;
    };
    let Some(aff) = bn_affine(g, bn) else {
        return false;
    };
    fold_affine(g, bn, x, aff)
}

/// The per-channel affine form of `Mul`/`Add`/`Sub(x, c)` by a constant
/// `c` that varies along the channel axis (1) of a producer output of rank
/// `rank` at most (scalar, `[C]` for rank 2, `[C,1,1]`, `[1,C,1,1]`…);
/// with the activation input `x`. One value stands for every channel.
fn elementwise_affine(g: &Graph, n: NodeId, rank: usize) -> Option<(ValueId, BnAffine)> {
    let node = g.node(n);
    let (a, b) = (node.input(0)?, node.input(1)?);
    let (x, c) = match (g.const_tensor(a).is_some(), g.const_tensor(b).is_some()) {
        (false, true) => (a, b),
        (true, false) if node.kind() != OpKind::Sub => (b, a),
        _ => return None,
    };
    let (dims, data) = f32_const(g, c)?;
    if dims.len() > rank || data.is_empty() {
        return None;
    }
    let mut padded = vec![1i64; rank - dims.len()];
    padded.extend(&dims);
    let channels = padded.get(1).copied().unwrap_or(1);
    if padded.iter().enumerate().any(|(i, d)| i != 1 && *d != 1) || data.len() as i64 != channels {
        return None;
    }
    let ones = vec![1.0; data.len()];
    let zeros = vec![0.0; data.len()];
    let aff = match node.kind() {
        OpKind::Mul => BnAffine {
            scale: data,
            shift: zeros,
        },
        OpKind::Add => BnAffine {
            scale: ones,
            shift: data,
        },
        OpKind::Sub => BnAffine {
            scale: ones,
            shift: data.iter().map(|v| -v).collect(),
        },
        _ => return None,
    };
    Some((x, aff))
}

/// Output rank of a Conv/ConvTranspose/Gemm with constant weights.
fn producer_rank(g: &Graph, p: NodeId) -> Option<usize> {
    let node = g.node(p);
    match node.kind() {
        OpKind::Conv | OpKind::ConvTranspose => Some(g.const_tensor(node.input(1)?)?.dims.len()),
        OpKind::Gemm => Some(2),
        _ => None,
    }
}

/// Folds the elementwise op `n` (see [`elementwise_affine`]) into the
/// Conv/ConvTranspose/Gemm before it; returns whether it did.
fn fold_elementwise(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n);
    let producer = node
        .inputs()
        .iter()
        .flatten()
        .find_map(|v| g.producer(*v).filter(|p| producer_rank(g, *p).is_some()));
    let Some(p) = producer else {
        return false;
    };
    let Some(rank) = producer_rank(g, p) else {
        return false;
    };
    let Some((x, aff)) = elementwise_affine(g, n, rank) else {
        return false;
    };
    if g.producer(x) != Some(p) {
        return false;
    }
    fold_affine(g, n, x, aff)
}

/// Replaces `op(x)` = `scale·x + shift` per channel by new weights and
/// bias of `x`'s producer; returns whether it did.
fn fold_affine(g: &mut Graph, bn: NodeId, x: ValueId, mut aff: BnAffine) -> bool {
    let Some(y) = g.node(bn).output(0) else {
        return false;
    };
    if util::sole_consumer(g, x) != Some(bn) {
        return false;
    }
    let Some(p) = g.producer(x) else { return false };
    if !util::plain(g, p) || g.node(p).outputs().len() != 1 {
        return false;
    }
    let pnode = g.node(p).clone();
    let Some(wv) = pnode.input(1) else {
        return false;
    };
    let Some((wdims, mut w)) = f32_const(g, wv) else {
        return false;
    };
    // Output channels of the producer: its weight's per-channel axis (times
    // the groups for ConvTranspose, whose weight holds M/group of them). A
    // single affine value stands for all. Weights of other ranks than the
    // ones handled below are declined there.
    let channels = crate::facts::weight_axis(&pnode, wdims.len())
        .filter(|_| crate::facts::is_compute(pnode.kind()))
        .and_then(|a| wdims.get(a))
        .map(|d| {
            let groups = if pnode.kind() == OpKind::ConvTranspose {
                pnode.attr_int("group").unwrap_or(1).max(1) as usize
            } else {
                1
            };
            *d as usize * groups
        });
    if aff.scale.len() == 1 {
        if let Some(ch) = channels {
            aff.scale = vec![aff.scale[0]; ch];
            aff.shift = vec![aff.shift[0]; ch];
        }
    }
    let c = aff.scale.len();
    let bias = match pnode.kind() {
        OpKind::Conv | OpKind::ConvTranspose => pnode.input(2),
        OpKind::Gemm => pnode.input(2),
        _ => None,
    };
    let bias_data = match bias {
        Some(b) => match f32_const(g, b) {
            Some(d) => Some(d),
            None => return false,
        },
        None => None,
    };

    match pnode.kind() {
        OpKind::Conv => {
            if wdims.first().copied() != Some(c as i64) || wdims.len() < 3 {
                return false;
            }
            let per = w.len() / c;
            for (i, x) in w.iter_mut().enumerate() {
                *x *= aff.scale[i / per];
            }
        }
        OpKind::ConvTranspose => {
            let group = pnode.attr_int("group").unwrap_or(1).max(1) as usize;
            if wdims.len() < 3 {
                return false;
            }
            let cin = wdims[0] as usize;
            let m_per_g = wdims[1] as usize;
            if m_per_g * group != c || cin % group != 0 {
                return false;
            }
            let cin_per_g = cin / group;
            let spatial: usize = wdims[2..].iter().map(|d| *d as usize).product();
            for (i, x) in w.iter_mut().enumerate() {
                let ci = i / (m_per_g * spatial);
                let j = (i / spatial) % m_per_g;
                let o = (ci / cin_per_g) * m_per_g + j;
                *x *= aff.scale[o];
            }
        }
        OpKind::Gemm => {
            if wdims.len() != 2 {
                return false;
            }
            let trans_b = pnode.attr_int("transB").unwrap_or(0) != 0;
            let (rows, cols) = (wdims[0] as usize, wdims[1] as usize);
            let m = if trans_b { rows } else { cols };
            if m != c {
                return false;
            }
            for (i, x) in w.iter_mut().enumerate() {
                let o = if trans_b { i / cols } else { i % cols };
                *x *= aff.scale[o];
            }
        }
        OpKind::MatMul => {
            if wdims.len() != 2 || wdims[1] as usize != c {
                return false;
            }
            let Some(a) = pnode.input(0) else {
                return false;
            };
            if util::infer_rank(g, a) != Some(2) {
                return false;
            }
            let cols = c;
            for (i, x) in w.iter_mut().enumerate() {
                *x *= aff.scale[i % cols];
            }
        }
        _ => return false,
    }

    // New bias (per output channel): s·b + t, with Gemm's beta folded in.
    let new_bias: Vec<f64> = match (&pnode.kind(), &bias_data) {
        (OpKind::Gemm, Some((bdims, b))) => {
            let beta = pnode.attr_float("beta").unwrap_or(1.0) as f64;
            let per_column = match bdims.as_slice() {
                [] => true,
                [n] => *n == 1 || *n as usize == c,
                [1, n] => *n == 1 || *n as usize == c,
                _ => false,
            };
            if !per_column {
                return false;
            }
            (0..c)
                .map(|o| beta * b[if b.len() == 1 { 0 } else { o }] * aff.scale[o] + aff.shift[o])
                .collect()
        }
        (_, Some((bdims, b))) => {
            if bdims.as_slice() != [c as i64] {
                return false;
            }
            (0..c).map(|o| b[o] * aff.scale[o] + aff.shift[o]).collect()
        }
        (_, None) => aff.shift.clone(),
    };

    write_const(g, p, 1, wv, &wdims, &w);
    let bn_node = g.remove_node(bn);
    match pnode.kind() {
        OpKind::MatMul => {
            let t = g.add_const(
                &format!("{}_shift", bn_node.name()),
                tensor::from_f32(
                    "",
                    &[c as i64],
                    &new_bias.iter().map(|v| *v as f32).collect::<Vec<_>>(),
                ),
            );
            let add = Node::new("Add", &g.unique_name(bn_node.name()));
            g.add_node(add, &[Some(x), Some(t)], &[Some(y)]);
        }
        _ => {
            match bias {
                Some(b) => write_const(g, p, 2, b, &[c as i64], &new_bias),
                None => {
                    let name = format!("{}_bias", pnode.name());
                    let b = g.add_const(
                        &name,
                        tensor::from_f32(
                            "",
                            &[c as i64],
                            &new_bias.iter().map(|v| *v as f32).collect::<Vec<_>>(),
                        ),
                    );
                    g.set_input(p, 2, Some(b));
                }
            }
            if pnode.kind() == OpKind::Gemm {
                g.node_proto_mut(p)
                    .set_attr(quench_ir::attr::float("beta", 1.0));
            }
            g.set_node_output(p, 0, y);
        }
    }
    true
}

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold_batchnorm"
    }
    fn description(&self) -> &'static str {
        "fold BatchNormalization, and Mul/Add/Sub by a per-channel constant, into the Conv/ConvTranspose/Gemm(/MatMul for BN) before it"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut folded = 0;
        let mut elementwise = 0;
        // In topological order, so Conv → Mul → Add folds both in one run.
        let order = g.topo_order().map_err(|e| PassError::Failed {
            pass: self.name().into(),
            msg: e.to_string(),
        })?;
        for n in order {
            if !g.contains_node(n) || !util::plain(g, n) {
                continue;
            }
            let kind = g.node(n).kind();
            let name = g.node(n).name().to_string();
            if kind == OpKind::BatchNormalization {
                if fold_one(g, n) {
                    folded += 1;
                    cx.note(self.name(), format!("folded `{name}`"));
                }
            } else if matches!(kind, OpKind::Mul | OpKind::Add | OpKind::Sub)
                && fold_elementwise(g, n)
            {
                elementwise += 1;
                cx.note(
                    self.name(),
                    format!("folded {kind:?} `{name}` by a constant"),
                );
            }
        }
        cx.count(self.name(), "folded", folded);
        cx.count(self.name(), "elementwise", elementwise);
        Ok(folded + elementwise > 0)
    }
}
