//! Types of node outputs the model does not annotate, worked out for the
//! text form.
//!
//! Exported models often declare types only for graph inputs and outputs.
//! The printer shows the rest as far as the graph tells them: forward, in
//! topological order, from declared types (inputs, `value_info`,
//! initializers) through the ops whose output type follows simply from
//! their inputs: element-wise and normalization ops keep input 0's type and
//! shape, broadcasting ops broadcast their inputs' shapes, comparisons give
//! bool, Shape gives i64, Cast gives its `to`. Conv, pooling, Gemm, MatMul,
//! Flatten, Reshape (constant shape), Transpose, Concat, Squeeze and
//! Unsqueeze (constant axes) work out their output shapes where the input
//! shapes allow; other ops keep the element type with an unknown shape
//! (`f32[*]`).
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
        // Not a `Rule::Special` op.
        OpKind::Abs
        | OpKind::Add
        | OpKind::AveragePool
        | OpKind::BatchNormalization
        | OpKind::Ceil
        | OpKind::Clip
        | OpKind::Concat
        | OpKind::Conv
        | OpKind::ConvTranspose
        | OpKind::DepthToSpace
        | OpKind::DequantizeLinear
        | OpKind::Div
        | OpKind::Dropout
        | OpKind::DynamicQuantizeLinear
        | OpKind::Einsum
        | OpKind::Elu
        | OpKind::Equal
        | OpKind::Erf
        | OpKind::Exp
        | OpKind::Expand
        | OpKind::Flatten
        | OpKind::Floor
        | OpKind::Gather
        | OpKind::GatherElements
        | OpKind::GatherND
        | OpKind::Gelu
        | OpKind::Gemm
        | OpKind::GlobalAveragePool
        | OpKind::GlobalMaxPool
        | OpKind::Greater
        | OpKind::GroupNormalization
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::Identity
        | OpKind::If
        | OpKind::InstanceNormalization
        | OpKind::LayerNormalization
        | OpKind::LeakyRelu
        | OpKind::Less
        | OpKind::Log
        | OpKind::LogSoftmax
        | OpKind::Loop
        | OpKind::LpNormalization
        | OpKind::LRN
        | OpKind::LSTM
        | OpKind::GRU
        | OpKind::RNN
        | OpKind::MatMul
        | OpKind::Max
        | OpKind::MaxPool
        | OpKind::Mean
        | OpKind::Min
        | OpKind::Mish
        | OpKind::Mod
        | OpKind::Mul
        | OpKind::Neg
        | OpKind::Not
        | OpKind::Pad
        | OpKind::Pow
        | OpKind::PRelu
        | OpKind::QLinearConv
        | OpKind::QLinearMatMul
        | OpKind::Range
        | OpKind::Reciprocal
        | OpKind::ReduceL2
        | OpKind::ReduceMax
        | OpKind::ReduceMean
        | OpKind::ReduceMin
        | OpKind::ReduceProd
        | OpKind::ReduceSum
        | OpKind::Relu
        | OpKind::Reshape
        | OpKind::Resize
        | OpKind::Round
        | OpKind::Scan
        | OpKind::ScatterElements
        | OpKind::ScatterND
        | OpKind::Selu
        | OpKind::Sigmoid
        | OpKind::Sign
        | OpKind::Sin
        | OpKind::Cos
        | OpKind::Slice
        | OpKind::Softmax
        | OpKind::Softplus
        | OpKind::Softsign
        | OpKind::SpaceToDepth
        | OpKind::Split
        | OpKind::Sqrt
        | OpKind::Squeeze
        | OpKind::Sub
        | OpKind::Sum
        | OpKind::Tanh
        | OpKind::Tile
        | OpKind::TopK
        | OpKind::Transpose
        | OpKind::Unsqueeze
        | OpKind::Upsample
        | OpKind::Where
        | OpKind::And
        | OpKind::Or
        | OpKind::Xor
        | OpKind::CumSum
        | OpKind::OneHot
        | OpKind::Trilu
        | OpKind::Celu
        | OpKind::ThresholdedRelu
        | OpKind::Swish
        | OpKind::Other => return None,
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
                .map(|e| tensor_ty(Some(e), shape_rule(g, node, &input))),
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

fn dim_val(d: &Dimension) -> Option<i64> {
    match d.value {
        Some(DimValue::DimValue(v)) => Some(v),
        _ => None,
    }
}

fn known(v: Option<i64>) -> Dimension {
    Dimension {
        value: v.map(DimValue::DimValue),
        denotation: None,
    }
}

fn shape_of(input: &dyn Fn(usize) -> Option<TypeProto>, i: usize) -> Option<TensorShapeProto> {
    input(i).and_then(|t| parts(&t).and_then(|(_, s)| s.cloned()))
}

/// Integers of a constant input (shapes, axes).
fn const_ints(g: &Graph, node: &Node, i: usize) -> Option<Vec<i64>> {
    let t = g.const_tensor(node.input(i)?)?;
    crate::tensor::to_i64(t).ok()
}

fn norm_axis(a: i64, rank: usize) -> Option<usize> {
    let a = if a < 0 { a + rank as i64 } else { a };
    usize::try_from(a).ok().filter(|a| *a < rank)
}

/// Output shape of ops whose shape follows from input shapes and
/// attributes; `None` when it cannot be told.
fn shape_rule(
    g: &Graph,
    node: &Node,
    input: &dyn Fn(usize) -> Option<TypeProto>,
) -> Option<TensorShapeProto> {
    let x = shape_of(input, 0)?;
    let xd = &x.dim;
    let dim = |v: Vec<Dimension>| Some(TensorShapeProto { dim: v });
    match node.kind() {
        OpKind::Conv | OpKind::MaxPool | OpKind::AveragePool => {
            if xd.len() < 3 {
                return None;
            }
            let sp = xd.len() - 2;
            let (channels, kernel) = if node.kind() == OpKind::Conv {
                let w = shape_of(input, 1)?;
                if w.dim.len() != xd.len() {
                    return None;
                }
                let k: Option<Vec<i64>> = w.dim[2..].iter().map(dim_val).collect();
                (w.dim[0].clone(), k?)
            } else {
                (xd[1].clone(), node.attr_ints("kernel_shape")?.to_vec())
            };
            if kernel.len() != sp {
                return None;
            }
            let auto = node.attr_string("auto_pad").unwrap_or_default();
            let pads = node
                .attr_ints("pads")
                .map(|p| p.to_vec())
                .unwrap_or(vec![0; 2 * sp]);
            let strides = node
                .attr_ints("strides")
                .map(|p| p.to_vec())
                .unwrap_or(vec![1; sp]);
            let dil = node
                .attr_ints("dilations")
                .map(|p| p.to_vec())
                .unwrap_or(vec![1; sp]);
            let ceil = node.attr_int("ceil_mode").unwrap_or(0) != 0;
            if pads.len() != 2 * sp || strides.len() != sp || dil.len() != sp {
                return None;
            }
            let mut out = vec![xd[0].clone(), channels];
            for i in 0..sp {
                let v = dim_val(&xd[2 + i]).and_then(|n| {
                    let (s, k) = (strides[i], dil[i] * (kernel[i] - 1) + 1);
                    if s <= 0 {
                        return None;
                    }
                    let o = match auto.as_str() {
                        "" | "NOTSET" => {
                            let span = n + pads[i] + pads[sp + i] - k;
                            if ceil {
                                (span + s - 1).div_euclid(s) + 1
                            } else {
                                span.div_euclid(s) + 1
                            }
                        }
                        "VALID" => (n - k).div_euclid(s) + 1,
                        "SAME_UPPER" | "SAME_LOWER" => (n + s - 1).div_euclid(s),
                        _ => return None,
                    };
                    (o > 0).then_some(o)
                });
                out.push(known(v));
            }
            dim(out)
        }
        OpKind::GlobalAveragePool | OpKind::GlobalMaxPool => {
            if xd.len() < 3 {
                return None;
            }
            let mut out = xd[..2].to_vec();
            out.extend((2..xd.len()).map(|_| known(Some(1))));
            dim(out)
        }
        OpKind::Flatten => {
            let axis = node.attr_int("axis").unwrap_or(1);
            let r = xd.len() as i64;
            let a = if axis < 0 { axis + r } else { axis };
            let a = usize::try_from(a).ok().filter(|a| *a as i64 <= r)?;
            let prod = |d: &[Dimension]| -> Option<i64> { d.iter().map(dim_val).product() };
            dim(vec![known(prod(&xd[..a])), known(prod(&xd[a..]))])
        }
        OpKind::Gemm => {
            let b = shape_of(input, 1)?;
            if xd.len() != 2 || b.dim.len() != 2 {
                return None;
            }
            let ta = node.attr_int("transA").unwrap_or(0) != 0;
            let tb = node.attr_int("transB").unwrap_or(0) != 0;
            let m = xd[usize::from(ta)].clone();
            let n = b.dim[usize::from(!tb)].clone();
            dim(vec![m, n])
        }
        OpKind::MatMul => {
            let b = shape_of(input, 1)?;
            let (ra, rb) = (xd.len(), b.dim.len());
            if ra < 2 || rb < 2 {
                return None;
            }
            let batch = broadcast(&[
                &TensorShapeProto {
                    dim: xd[..ra - 2].to_vec(),
                },
                &TensorShapeProto {
                    dim: b.dim[..rb - 2].to_vec(),
                },
            ]);
            let mut out = batch.dim;
            out.push(xd[ra - 2].clone());
            out.push(b.dim[rb - 1].clone());
            dim(out)
        }
        OpKind::Reshape => {
            let spec = const_ints(g, node, 1)?;
            let allowzero = node.attr_int("allowzero").unwrap_or(0) != 0;
            let mut out: Vec<Option<i64>> = Vec::with_capacity(spec.len());
            let mut copied: Vec<Option<Dimension>> = Vec::with_capacity(spec.len());
            for (i, d) in spec.iter().enumerate() {
                if *d == 0 && !allowzero {
                    let src = xd.get(i)?;
                    out.push(dim_val(src));
                    copied.push(Some(src.clone()));
                } else {
                    out.push(Some(*d));
                    copied.push(None);
                }
            }
            if let Some(pos) = spec.iter().position(|d| *d == -1) {
                let total: Option<i64> = xd.iter().map(dim_val).product();
                let rest: Option<i64> = out
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != pos)
                    .map(|(_, d)| *d)
                    .product();
                out[pos] = match (total, rest) {
                    (Some(t), Some(r)) if r > 0 && t % r == 0 => Some(t / r),
                    _ => None,
                };
            }
            dim(out
                .into_iter()
                .zip(copied)
                .map(|(v, c)| c.unwrap_or_else(|| known(v)))
                .collect())
        }
        OpKind::Transpose => {
            let r = xd.len();
            let perm: Vec<usize> = match node.attr_ints("perm") {
                Some(p) => p.iter().map(|a| norm_axis(*a, r)).collect::<Option<_>>()?,
                None => (0..r).rev().collect(),
            };
            if perm.len() != r {
                return None;
            }
            dim(perm.iter().map(|p| xd[*p].clone()).collect())
        }
        OpKind::Concat => {
            let axis = norm_axis(node.attr_int("axis")?, xd.len())?;
            let mut total = Some(0i64);
            for i in 0..node.inputs().len() {
                let s = shape_of(input, i)?;
                if s.dim.len() != xd.len() {
                    return None;
                }
                total = total.zip(dim_val(&s.dim[axis])).map(|(a, b)| a + b);
            }
            let mut out = xd.clone();
            out[axis] = known(total);
            dim(out)
        }
        OpKind::Unsqueeze | OpKind::Squeeze => {
            let axes = match node.attr_ints("axes") {
                Some(a) => Some(a.to_vec()),
                None => const_ints(g, node, 1),
            };
            let mut out = xd.clone();
            if node.kind() == OpKind::Unsqueeze {
                let r = xd.len() + axes.as_ref()?.len();
                let mut ax: Vec<usize> = axes?
                    .iter()
                    .map(|a| norm_axis(*a, r))
                    .collect::<Option<_>>()?;
                ax.sort();
                for a in ax {
                    if a > out.len() {
                        return None;
                    }
                    out.insert(a, known(Some(1)));
                }
            } else {
                let mut ax: Vec<usize> = axes?
                    .iter()
                    .map(|a| norm_axis(*a, xd.len()))
                    .collect::<Option<_>>()?;
                ax.sort();
                for a in ax.into_iter().rev() {
                    out.remove(a);
                }
            }
            dim(out)
        }
        // No shape rule: the element type alone is shown.
        OpKind::Abs
        | OpKind::Add
        | OpKind::ArgMax
        | OpKind::BatchNormalization
        | OpKind::Cast
        | OpKind::Ceil
        | OpKind::Clip
        | OpKind::Constant
        | OpKind::ConstantOfShape
        | OpKind::ConvTranspose
        | OpKind::DepthToSpace
        | OpKind::DequantizeLinear
        | OpKind::Div
        | OpKind::Dropout
        | OpKind::DynamicQuantizeLinear
        | OpKind::Einsum
        | OpKind::Elu
        | OpKind::Equal
        | OpKind::Erf
        | OpKind::Exp
        | OpKind::Expand
        | OpKind::Floor
        | OpKind::Gather
        | OpKind::GatherElements
        | OpKind::GatherND
        | OpKind::Gelu
        | OpKind::Greater
        | OpKind::GroupNormalization
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::Identity
        | OpKind::If
        | OpKind::InstanceNormalization
        | OpKind::LayerNormalization
        | OpKind::LeakyRelu
        | OpKind::Less
        | OpKind::Log
        | OpKind::LogSoftmax
        | OpKind::Loop
        | OpKind::LpNormalization
        | OpKind::LRN
        | OpKind::LSTM
        | OpKind::GRU
        | OpKind::RNN
        | OpKind::MatMulInteger
        | OpKind::Max
        | OpKind::Mean
        | OpKind::Min
        | OpKind::Mish
        | OpKind::Mod
        | OpKind::Mul
        | OpKind::Neg
        | OpKind::Not
        | OpKind::Pad
        | OpKind::Pow
        | OpKind::PRelu
        | OpKind::QLinearConv
        | OpKind::QLinearMatMul
        | OpKind::QuantizeLinear
        | OpKind::Range
        | OpKind::Reciprocal
        | OpKind::ReduceL2
        | OpKind::ReduceMax
        | OpKind::ReduceMean
        | OpKind::ReduceMin
        | OpKind::ReduceProd
        | OpKind::ReduceSum
        | OpKind::Relu
        | OpKind::Resize
        | OpKind::Round
        | OpKind::Scan
        | OpKind::ScatterElements
        | OpKind::ScatterND
        | OpKind::Selu
        | OpKind::Shape
        | OpKind::Sigmoid
        | OpKind::Sign
        | OpKind::Sin
        | OpKind::Cos
        | OpKind::Size
        | OpKind::Slice
        | OpKind::Softmax
        | OpKind::Softplus
        | OpKind::Softsign
        | OpKind::SpaceToDepth
        | OpKind::Split
        | OpKind::Sqrt
        | OpKind::Sub
        | OpKind::Sum
        | OpKind::Tanh
        | OpKind::Tile
        | OpKind::TopK
        | OpKind::Upsample
        | OpKind::Where
        | OpKind::And
        | OpKind::Or
        | OpKind::Xor
        | OpKind::CumSum
        | OpKind::NonZero
        | OpKind::OneHot
        | OpKind::Trilu
        | OpKind::Celu
        | OpKind::ThresholdedRelu
        | OpKind::Swish
        | OpKind::Other => None,
    }
}
