//! Types of node outputs the model does not annotate, worked out for the
//! text form.
//!
//! Exported models often declare types only for graph inputs and outputs.
//! The printer shows the rest as far as the graph tells them: forward, in
//! topological order, from declared types (inputs, `value_info`,
//! initializers) through the ops whose output type follows simply from
//! their inputs: element-wise and normalization ops keep input 0's type and
//! shape, broadcasting ops broadcast their inputs' shapes, ops such as Conv
//! or Reshape keep the element type with an unknown shape (`f32[*]`),
//! comparisons give bool, Shape gives i64, Cast gives its `to`.
//!
//! Display only: the graph is not changed and nothing here is exported, so
//! no pass or runtime sees a guessed type. Declared types are never
//! replaced.

use std::collections::HashMap;

use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::tensor_shape_proto::{dimension::Value as DimValue, Dimension};
use quench_onnx::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use quench_onnx::proto::{TensorShapeProto, TypeProto};

use crate::graph::{Graph, Node, ValueId};
use crate::op::OpKind;

/// What an op's output 0 is, in terms of its inputs.
enum Rule {
    /// Same element type and shape as input 0.
    SameAsInput,
    /// Inputs broadcast together; element type of `elem_from` (or bool).
    Broadcast { bool_out: bool, elem_from: usize },
    /// Element type of input `i`, shape unknown.
    ElemOf(usize),
    /// Fixed element type and input 0's shape.
    ElemWithInputShape(DataType),
    /// Worked out by [`special`].
    Special,
    /// Nothing known.
    Unknown,
}

fn rule(k: OpKind) -> Rule {
    use OpKind::*;
    match k {
        Abs
        | Ceil
        | Clip
        | Cos
        | CumSum
        | Dropout
        | Elu
        | Erf
        | Exp
        | Floor
        | Gelu
        | HardSigmoid
        | HardSwish
        | Identity
        | LeakyRelu
        | Log
        | LogSoftmax
        | LRN
        | Mish
        | Neg
        | Not
        | PRelu
        | Reciprocal
        | Relu
        | Round
        | Selu
        | Sigmoid
        | Sign
        | Sin
        | Softmax
        | Softplus
        | Softsign
        | Sqrt
        | Tanh
        | Celu
        | ThresholdedRelu
        | Swish
        | Trilu
        | BatchNormalization
        | InstanceNormalization
        | LayerNormalization
        | GroupNormalization
        | LpNormalization
        | ScatterElements
        | ScatterND => Rule::SameAsInput,
        Add | Sub | Mul | Div | Pow | Mod | Max | Min | Sum | Mean => Rule::Broadcast {
            bool_out: false,
            elem_from: 0,
        },
        Equal | Greater | Less | And | Or | Xor => Rule::Broadcast {
            bool_out: true,
            elem_from: 0,
        },
        Where => Rule::Broadcast {
            bool_out: false,
            elem_from: 1,
        },
        Conv | ConvTranspose | Gemm | MatMul | AveragePool | MaxPool | GlobalAveragePool
        | GlobalMaxPool | Reshape | Transpose | Flatten | Squeeze | Unsqueeze | Slice | Gather
        | GatherElements | GatherND | Concat | Pad | Resize | Upsample | DepthToSpace
        | SpaceToDepth | Expand | Tile | ReduceL2 | ReduceMax | ReduceMean | ReduceMin
        | ReduceProd | ReduceSum | Split | Einsum | TopK | Range => Rule::ElemOf(0),
        OneHot => Rule::ElemOf(2),
        QLinearConv | QLinearMatMul => Rule::ElemOf(7),
        DequantizeLinear => Rule::ElemWithInputShape(DataType::Float),
        DynamicQuantizeLinear => Rule::ElemWithInputShape(DataType::Uint8),
        Cast | QuantizeLinear | Shape | Size | ArgMax | NonZero | MatMulInteger | Constant
        | ConstantOfShape => Rule::Special,
        If | Loop | Scan | LSTM | GRU | RNN | Other => Rule::Unknown,
    }
}

fn tensor_ty(elem: Option<i32>, shape: Option<TensorShapeProto>) -> TypeProto {
    TypeProto {
        denotation: None,
        value: Some(TypeValue::TensorType(TensorType {
            elem_type: elem,
            shape,
        })),
    }
}

fn parts(t: &TypeProto) -> Option<(Option<i32>, Option<&TensorShapeProto>)> {
    match t.value.as_ref()? {
        TypeValue::TensorType(tt) => Some((tt.elem_type, tt.shape.as_ref())),
        _ => None,
    }
}

fn dims(values: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: values
            .iter()
            .map(|v| Dimension {
                value: Some(DimValue::DimValue(*v)),
                denotation: None,
            })
            .collect(),
    }
}

/// Numpy-style broadcast of known shapes; a dimension that cannot be told
/// is unknown (`?`).
fn broadcast(shapes: &[&TensorShapeProto]) -> TensorShapeProto {
    let rank = shapes.iter().map(|s| s.dim.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut cand: Vec<&Option<DimValue>> = Vec::new();
        for s in shapes {
            let r = s.dim.len();
            if i + r >= rank {
                let d = &s.dim[i + r - rank].value;
                if *d != Some(DimValue::DimValue(1)) {
                    cand.push(d);
                }
            }
        }
        let value = match cand.first() {
            None => Some(DimValue::DimValue(1)),
            Some(first) if first.is_some() && cand.iter().all(|c| c == first) => (*first).clone(),
            Some(_) => None,
        };
        out.push(Dimension {
            value,
            denotation: None,
        });
    }
    TensorShapeProto { dim: out }
}

fn special(
    g: &Graph,
    node: &Node,
    input: &dyn Fn(usize) -> Option<TypeProto>,
) -> Option<TypeProto> {
    let shape0 = || input(0).and_then(|t| parts(&t).and_then(|(_, s)| s.cloned()));
    let elem_of = |i: usize| input(i).and_then(|t| parts(&t).and_then(|(e, _)| e));
    let i64_ = Some(DataType::Int64 as i32);
    Some(match node.kind() {
        OpKind::Cast => tensor_ty(node.attr_int("to").map(|v| v as i32), shape0()),
        OpKind::QuantizeLinear => {
            let elem = elem_of(2)
                .or_else(|| node.attr_int("output_dtype").map(|v| v as i32))
                .or(Some(DataType::Uint8 as i32));
            tensor_ty(elem, shape0())
        }
        OpKind::Shape => {
            let rank = shape0().map(|s| s.dim.len() as i64);
            let r = rank.map(|r| {
                let clamp = |v: i64| {
                    if v < 0 {
                        (v + r).clamp(0, r)
                    } else {
                        v.clamp(0, r)
                    }
                };
                let start = clamp(node.attr_int("start").unwrap_or(0));
                let end = clamp(node.attr_int("end").unwrap_or(r));
                (end - start).max(0)
            });
            tensor_ty(i64_, r.map(|r| dims(&[r])))
        }
        OpKind::Size => tensor_ty(i64_, Some(dims(&[]))),
        OpKind::ArgMax | OpKind::NonZero => tensor_ty(i64_, None),
        OpKind::MatMulInteger => tensor_ty(Some(DataType::Int32 as i32), None),
        OpKind::Constant => match node.attr_tensor("value") {
            Some(t) => crate::tensor::tensor_type(t),
            None if node.attr("value_float").is_some() => {
                tensor_ty(Some(DataType::Float as i32), Some(dims(&[])))
            }
            None if node.attr("value_int").is_some() => tensor_ty(i64_, Some(dims(&[]))),
            None => return None,
        },
        OpKind::ConstantOfShape => {
            let elem = node
                .attr_tensor("value")
                .map(|t| t.data_type())
                .unwrap_or(DataType::Float as i32);
            let shape = node
                .input(0)
                .and_then(|v| g.const_tensor(v))
                .and_then(|t| crate::tensor::to_i64(t).ok())
                .map(|d| dims(&d));
            tensor_ty(Some(elem), shape)
        }
        _ => return None,
    })
}

/// Types for node outputs without a declared type, where they can be told.
pub(crate) fn display_types(g: &Graph) -> HashMap<ValueId, TypeProto> {
    let mut out: HashMap<ValueId, TypeProto> = HashMap::new();
    let Ok(order) = g.topo_order() else {
        return out;
    };
    for n in order {
        let node = g.node(n);
        let Some(o) = node.output(0) else { continue };
        if g.value(o).ty.is_some() {
            continue;
        }
        let input = |i: usize| -> Option<TypeProto> {
            let v = node.input(i)?;
            g.value(v).ty.clone().or_else(|| out.get(&v).cloned())
        };
        let ty = match rule(node.kind()) {
            Rule::SameAsInput => input(0).filter(|t| parts(t).is_some()),
            Rule::Broadcast {
                bool_out,
                elem_from,
            } => {
                let elem = if bool_out {
                    Some(DataType::Bool as i32)
                } else {
                    input(elem_from).and_then(|t| parts(&t).and_then(|(e, _)| e))
                };
                let tys: Vec<Option<TypeProto>> = (0..node.inputs().len()).map(input).collect();
                let shapes: Option<Vec<TensorShapeProto>> = tys
                    .iter()
                    .map(|t| t.as_ref().and_then(|t| parts(t)?.1.cloned()))
                    .collect();
                let shape = shapes.map(|s| broadcast(&s.iter().collect::<Vec<_>>()));
                elem.map(|e| tensor_ty(Some(e), shape))
            }
            Rule::ElemOf(i) => input(i)
                .and_then(|t| parts(&t).and_then(|(e, _)| e))
                .map(|e| tensor_ty(Some(e), None)),
            Rule::ElemWithInputShape(e) => {
                let shape = input(0).and_then(|t| parts(&t).and_then(|(_, s)| s.cloned()));
                Some(tensor_ty(Some(e as i32), shape))
            }
            Rule::Special => special(g, node, &input),
            Rule::Unknown => None,
        };
        if let Some(t) = ty {
            out.insert(o, t);
        }
    }
    out
}
