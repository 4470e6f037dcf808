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
        | OpKind::AveragePool
        | OpKind::Transpose => infer_rank_depth(g, node.input(0)?, depth + 1),
        // A constant target shape.
        OpKind::Reshape => {
            let t = g.const_tensor(node.input(1)?)?;
            (t.dims.len() == 1).then(|| t.dims[0] as usize)
        }
        // The axes given (attribute before opset 13, a constant input
        // from it); keepdims (default 1) keeps a reduction's rank.
        OpKind::Unsqueeze
        | OpKind::Squeeze
        | OpKind::ReduceMean
        | OpKind::ReduceMax
        | OpKind::ReduceMin
        | OpKind::ReduceSum
        | OpKind::ReduceL2 => {
            let r = infer_rank_depth(g, node.input(0)?, depth + 1)?;
            let reduce = !matches!(node.kind(), OpKind::Unsqueeze | OpKind::Squeeze);
            if reduce && node.attr_int("keepdims").unwrap_or(1) != 0 {
                return Some(r);
            }
            let axes = match node.attr_ints("axes") {
                Some(a) => a.len(),
                None => {
                    let t = g.const_tensor(node.input(1)?)?;
                    (t.dims.len() == 1).then_some(t.dims[0] as usize)?
                }
            };
            if node.kind() == OpKind::Unsqueeze {
                Some(r + axes)
            } else {
                r.checked_sub(axes)
            }
        }
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
        | OpKind::Abs
        | OpKind::Log
        | OpKind::Exp
        | OpKind::Sqrt
        | OpKind::Erf => infer_rank_depth(g, node.input(0)?, depth + 1),
        OpKind::Add
        | OpKind::Sub
        | OpKind::Mul
        | OpKind::Div
        | OpKind::Concat
        | OpKind::Sum
        | OpKind::Max
        | OpKind::Min
        | OpKind::PRelu
        | OpKind::Pow => {
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
            // A 1-D operand loses its dimension in the product.
            Some(match (a, b) {
                (1, 1) => 0,
                (1, b) => b - 1,
                (a, 1) => a - 1,
                (a, b) => a.max(b),
            })
        }
        _ => None,
    }
}

/// Whether a node is in the default domain and has no subgraphs.
pub fn plain(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    node.domain().is_empty() && !node.has_subgraphs()
}

/// Element types of every value, as far as they can be told: declared types
/// first, then propagated forward through the ops whose output type follows
/// from their inputs or attributes. Values missing from the map have an
/// unknown type.
pub fn infer_elem_types(g: &Graph) -> std::collections::HashMap<ValueId, i32> {
    use quench_onnx::proto::tensor_proto::DataType;
    let mut t: std::collections::HashMap<ValueId, i32> = std::collections::HashMap::new();
    for v in g.value_ids() {
        if let Some(e) = g.value(v).elem_type() {
            t.insert(v, e);
        }
    }
    let Ok(order) = g.topo_order() else { return t };
    let f32_ = DataType::Float as i32;
    let i64_ = DataType::Int64 as i32;
    let bool_ = DataType::Bool as i32;
    for n in order {
        let node = g.node(n);
        let input_t = |i: usize| node.input(i).and_then(|v| t.get(&v).copied());
        let out: Option<i32> = match node.kind() {
            OpKind::Shape | OpKind::Size | OpKind::NonZero | OpKind::ArgMax => Some(i64_),
            OpKind::Equal
            | OpKind::Greater
            | OpKind::Less
            | OpKind::Not
            | OpKind::And
            | OpKind::Or
            | OpKind::Xor => Some(bool_),
            OpKind::Cast => node.attr_int("to").map(|v| v as i32),
            OpKind::Constant => node
                .attr_tensor("value")
                .map(|x| x.data_type())
                .or_else(|| {
                    if node.attr("value_float").is_some() || node.attr("value_floats").is_some() {
                        Some(f32_)
                    } else if node.attr("value_int").is_some() || node.attr("value_ints").is_some()
                    {
                        Some(i64_)
                    } else {
                        None
                    }
                }),
            OpKind::ConstantOfShape => Some(
                node.attr_tensor("value")
                    .map(|x| x.data_type())
                    .unwrap_or(f32_),
            ),
            OpKind::DequantizeLinear => Some(f32_),
            OpKind::QuantizeLinear => node
                .input(2)
                .and_then(|z| t.get(&z).copied())
                .or(Some(DataType::Uint8 as i32)),
            OpKind::Conv
            | OpKind::ConvTranspose
            | OpKind::Gemm
            | OpKind::Softmax
            | OpKind::LayerNormalization
            | OpKind::BatchNormalization
            | OpKind::Sigmoid
            | OpKind::Tanh
            | OpKind::Erf
            | OpKind::Sqrt
            | OpKind::Exp
            | OpKind::Log
            | OpKind::AveragePool
            | OpKind::GlobalAveragePool
            | OpKind::HardSigmoid
            | OpKind::HardSwish => input_t(0).or(Some(f32_)),
            OpKind::Where => input_t(1).or(input_t(2)),
            OpKind::If | OpKind::Loop | OpKind::Scan | OpKind::Other => None,
            OpKind::TopK => None,
            // Everything else keeps the type of its first input whose type we know
            // (element-wise ops, data movement, MatMul, Concat, Gather data, ...).
            _ => node
                .inputs()
                .iter()
                .flatten()
                .find_map(|v| t.get(v).copied()),
        };
        // If/Loop/Scan: each output has the element type its body declares
        // for it (If: either branch; Loop: the body output after the
        // condition; Scan: the body output in the same place).
        if matches!(node.kind(), OpKind::If | OpKind::Loop | OpKind::Scan) {
            let (attr, skip) = match node.kind() {
                OpKind::Loop => ("body", 1),
                OpKind::Scan => ("body", 0),
                _ => ("then_branch", 0),
            };
            let declared: Vec<Option<i32>> = node
                .attr(attr)
                .and_then(|a| a.g.as_ref())
                .map(|b| {
                    b.output
                        .iter()
                        .skip(skip)
                        .map(|o| match o.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                            Some(quench_onnx::proto::type_proto::Value::TensorType(tt)) => {
                                tt.elem_type.filter(|e| *e != 0)
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            for (o, e) in node.outputs().iter().zip(declared) {
                if let (Some(o), Some(e)) = (o, e) {
                    t.entry(*o).or_insert(e);
                }
            }
            continue;
        }
        // Ops whose every output has the type of output 0 (recurrent ops'
        // sequences and final states, Split's parts); others type output 0.
        let all = matches!(
            node.kind(),
            OpKind::LSTM | OpKind::GRU | OpKind::RNN | OpKind::Split
        );
        if let Some(e) = out {
            let n = if all { node.outputs().len() } else { 1 };
            for o in node.outputs().iter().take(n).flatten() {
                t.entry(*o).or_insert(e);
            }
        }
    }
    t
}
