//! Helpers shared by passes.

use quench_ir::{Graph, NodeId, OpKind, ValueId};

/// The one node consuming `v`, if `v` has exactly one use, is not a graph
/// output and is not captured by a subgraph.
pub fn sole_consumer(g: &Graph, v: ValueId) -> Option<NodeId> {
    if g.is_graph_output(v) || g.is_captured(v) {
        return None;
    }
    match g.uses(v) {
        [u] => Some(u.node),
        _ => None,
    }
}

/// Values of a constant as f64, with its dims.
pub fn const_f64(g: &Graph, v: ValueId) -> Option<(Vec<i64>, Vec<f64>)> {
    let t = g.const_tensor(v)?;
    let data = quench_ir::tensor::to_f64(t).ok()?;
    Some((t.dims.clone(), data))
}

/// Element type code of a constant.
pub fn const_elem(g: &Graph, v: ValueId) -> Option<i32> {
    g.const_tensor(v).map(|t| t.data_type())
}

/// The rank of a value: from its type, or from what produced it.
pub fn infer_rank(g: &Graph, v: ValueId) -> Option<usize> {
    infer_rank_depth(g, v, 0)
}

fn infer_rank_depth(g: &Graph, v: ValueId, depth: usize) -> Option<usize> {
    if let Some(s) = g.value(v).shape() {
        return Some(s.len());
    }
    if depth > 64 {
        return None;
    }
    let n = g.producer(v)?;
    let node = g.node(n);
    match node.kind() {
        OpKind::Conv | OpKind::ConvTranspose => {
            let w = node.input(1)?;
            if let Some(t) = g.const_tensor(w) {
                return Some(t.dims.len());
            }
            node.attr_ints("kernel_shape")
                .map(|k| k.len() + 2)
                .or_else(|| infer_rank_depth(g, node.input(0)?, depth + 1))
        }
        OpKind::Gemm => Some(2),
        OpKind::Flatten => Some(2),
        OpKind::GlobalAveragePool
        | OpKind::GlobalMaxPool
        | OpKind::MaxPool
        | OpKind::AveragePool => infer_rank_depth(g, node.input(0)?, depth + 1),
        OpKind::Relu
        | OpKind::Clip
        | OpKind::Sigmoid
        | OpKind::Tanh
        | OpKind::LeakyRelu
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::BatchNormalization
        | OpKind::Identity
        | OpKind::Dropout
        | OpKind::Elu
        | OpKind::Softmax
        | OpKind::Neg
        | OpKind::Abs => infer_rank_depth(g, node.input(0)?, depth + 1),
        OpKind::Add
        | OpKind::Sub
        | OpKind::Mul
        | OpKind::Div
        | OpKind::Concat
        | OpKind::Sum
        | OpKind::Max
        | OpKind::Min => {
            // Broadcasting: the largest rank among inputs whose ranks we know,
            // provided all are known.
            let mut r = 0;
            for i in node.inputs().iter().flatten() {
                let ri = match g.const_tensor(*i) {
                    Some(t) => t.dims.len(),
                    None => infer_rank_depth(g, *i, depth + 1)?,
                };
                r = r.max(ri);
            }
            Some(r)
        }
        OpKind::MatMul => {
            let a = infer_rank_depth(g, node.input(0)?, depth + 1)?;
            let b = match g.const_tensor(node.input(1)?) {
                Some(t) => t.dims.len(),
                None => infer_rank_depth(g, node.input(1)?, depth + 1)?,
            };
            Some(a.max(b))
        }
        _ => None,
    }
}

/// Whether a node is in the default domain and has no subgraphs.
pub fn plain(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    node.domain().is_empty() && !node.has_subgraphs()
}
