//! `typecheck`: the ONNX element-type constraints that matter for what the
//! passes create or change, checked before a model is written.
//!
//! The constraints are one exhaustive table ([`constraints`], a `match` over
//! [`OpKind`] with no wildcard), so a new known op forces a decision. Each
//! entry says which inputs must have which element types and which inputs
//! must agree with each other, per opset where the schema changed
//! (`QuantizeLinear`/`DequantizeLinear` at 10, 19 and 21). Ops of other
//! domains ([`OpKind::Other`]) and inputs whose type cannot be told (from
//! constants, declarations, or what the producing op makes by
//! [`output_rule`]) are not checked: the check refuses only what is
//! certainly invalid.
//!
//! Outputs are checked too: where the op fixes the element type of output 0
//! (bool for comparisons, i64 for `Shape`, `to` for `Cast`, the zero
//! point's type for `QuantizeLinear`, the input's type for element-wise and
//! layout ops, ...; a second exhaustive table, [`output_rule`]), a declared
//! type (graph output or `value_info`) that differs is an error: runtimes
//! refuse such a model at load.
//!
//! Invariant: [`check`] never changes the graph; it reports every violation
//! it finds (not just the first), each naming the node, the input or output
//! and both types.

use std::collections::HashMap;

use quench_ir::{Graph, OpKind, ValueId};
use quench_onnx::dtype::elem_name;
use quench_onnx::proto::tensor_proto::DataType;

/// Which side of a node a [`TypeError`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Input,
    /// An output whose declared type (graph output or `value_info`) is not
    /// what the op produces from its inputs.
    Output,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Port::Input => "input",
            Port::Output => "output",
        })
    }
}

/// A node input whose element type breaks its op's schema, or an output
/// declared with another type than the op produces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node `{node}` ({op}): {port} {index} `{value}` is {found}, expected {expected}")]
pub struct TypeError {
    pub node: String,
    pub op: String,
    pub port: Port,
    pub index: usize,
    /// The value's name.
    pub value: String,
    /// The element type found (short name, e.g. `f32`).
    pub found: String,
    /// What the schema allows, in words.
    pub expected: String,
}

/// A set of element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Types {
    /// f16, bf16, f32, f64.
    Float,
    /// f32 only.
    F32,
    Bool,
    /// Integers of every width.
    Int,
    /// Every numeric type (no bool, no string).
    Numeric,
    /// i32 or i64.
    Index,
    /// QuantizeLinear's output / DequantizeLinear's input at an opset.
    Quantized(i64),
    /// QuantizeLinear's scale / DequantizeLinear's scale at an opset.
    QuantScale(i64),
    /// QuantizeLinear's input at an opset: a scale type or int32.
    QuantInput(i64),
    Any,
}

impl Types {
    fn allows(self, code: i32) -> bool {
        use DataType as D;
        let Ok(t) = D::try_from(code) else {
            return false;
        };
        let float = matches!(t, D::Float | D::Float16 | D::Bfloat16 | D::Double);
        let int = matches!(
            t,
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::Uint8 | D::Uint16 | D::Uint32 | D::Uint64
        );
        match self {
            Types::Float => float,
            Types::F32 => t == D::Float,
            Types::Bool => t == D::Bool,
            Types::Int => int,
            Types::Numeric => float || int,
            Types::Index => matches!(t, D::Int32 | D::Int64),
            Types::Quantized(opset) => {
                matches!(t, D::Int8 | D::Uint8)
                    || (opset < 19 && t == D::Int32)
                    || (opset >= 19
                        && matches!(
                            t,
                            D::Int32
                                | D::Float8e4m3fn
                                | D::Float8e4m3fnuz
                                | D::Float8e5m2
                                | D::Float8e5m2fnuz
                        ))
                    || (opset >= 21 && matches!(t, D::Int16 | D::Uint16 | D::Int4 | D::Uint4))
                    || (opset >= 23 && t == D::Float4e2m1)
                    || (opset >= 24 && t == D::Float8e8m0)
                    || (opset >= 25 && matches!(t, D::Int2 | D::Uint2))
            }
            Types::QuantScale(opset) => {
                if opset < 19 {
                    t == D::Float
                } else {
                    matches!(t, D::Float | D::Float16 | D::Bfloat16)
                }
            }
            Types::QuantInput(opset) => t == D::Int32 || Types::QuantScale(opset).allows(code),
            Types::Any => true,
        }
    }

    fn describe(self) -> String {
        match self {
            Types::Float => "a float type (f16, bf16, f32, f64)".into(),
            Types::F32 => "f32".into(),
            Types::Bool => "bool".into(),
            Types::Int => "an integer type".into(),
            Types::Numeric => "a numeric type (not bool or string)".into(),
            Types::Index => "i32 or i64".into(),
            Types::Quantized(o) => format!("a quantized type of opset {o} (i8, u8, ...)"),
            Types::QuantScale(o) if o < 19 => "f32 (before opset 19)".into(),
            Types::QuantScale(_) => "f32, f16 or bf16".into(),
            Types::QuantInput(o) if o < 19 => "f32 or i32 (before opset 19)".into(),
            Types::QuantInput(_) => "f32, f16, bf16 or i32".into(),
            Types::Any => "any type".into(),
        }
    }
}

/// Which inputs a constraint covers.
#[derive(Debug, Clone, Copy)]
enum Inputs {
    These(&'static [usize]),
    /// Every input from this index on.
    From(usize),
}

impl Inputs {
    fn covers(self, i: usize) -> bool {
        match self {
            Inputs::These(list) => list.contains(&i),
            Inputs::From(k) => i >= k,
        }
    }
}

/// The covered inputs have types in `types`; with `same`, they also have
/// one type between them.
#[derive(Debug, Clone, Copy)]
struct Constraint {
    inputs: Inputs,
    types: Types,
    same: bool,
}

const fn c(inputs: &'static [usize], types: Types, same: bool) -> Constraint {
    Constraint {
        inputs: Inputs::These(inputs),
        types,
        same,
    }
}

/// The type constraints of `kind` at default-domain `opset`.
fn constraints(kind: OpKind, opset: i64) -> Vec<Constraint> {
    use Types::*;
    match kind {
        // Float-only math whose operands must agree.
        OpKind::Conv | OpKind::ConvTranspose => vec![c(&[0, 1, 2], Float, true)],
        // BatchNormalization-15 lets scale/bias and mean/var have their own
        // float types.
        OpKind::BatchNormalization => vec![c(&[0, 1, 2, 3, 4], Float, false)],
        OpKind::InstanceNormalization | OpKind::LayerNormalization | OpKind::GroupNormalization => {
            vec![c(&[0, 1, 2], Float, true)]
        }
        OpKind::Gemm | OpKind::MatMul => vec![c(&[0, 1, 2], Numeric, true)],
        OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div | OpKind::Mod => {
            vec![c(&[0, 1], Numeric, true)]
        }
        OpKind::PRelu => vec![c(&[0, 1], Numeric, true)],
        // Pow's exponent may have another numeric type.
        OpKind::Pow => vec![c(&[0], Numeric, false), c(&[1], Numeric, false)],
        OpKind::Max | OpKind::Min | OpKind::Sum | OpKind::Mean => vec![Constraint {
            inputs: Inputs::From(0),
            types: Numeric,
            same: true,
        }],
        OpKind::Equal => vec![c(&[0, 1], Any, true)],
        OpKind::Less | OpKind::Greater => vec![c(&[0, 1], Numeric, true)],
        OpKind::And | OpKind::Or | OpKind::Xor => vec![c(&[0, 1], Bool, true)],
        OpKind::Not => vec![c(&[0], Bool, false)],
        OpKind::Where => vec![c(&[0], Bool, false), c(&[1, 2], Any, true)],
        OpKind::Concat => vec![Constraint {
            inputs: Inputs::From(0),
            types: Any,
            same: true,
        }],
        OpKind::QuantizeLinear => vec![
            // x: the scale's float types, or int32 (every opset).
            c(&[0], QuantInput(opset), false),
            c(&[1], QuantScale(opset), false),
            c(&[2], Quantized(opset), false),
            // Opsets 19 and 20: x and the scale share one type (T1).
            c(
                if (19..21).contains(&opset) {
                    &[0, 1]
                } else {
                    &[]
                },
                Any,
                true,
            ),
        ],
        OpKind::DequantizeLinear => vec![
            c(&[0, 2], Quantized(opset), true),
            c(&[1], QuantScale(opset), false),
        ],
        OpKind::DynamicQuantizeLinear => vec![c(&[0], F32, false)],
        OpKind::QLinearConv => vec![
            c(&[0, 2], Quantized(opset), true),
            c(&[3, 5], Quantized(opset), true),
            c(&[1, 4, 6], F32, false),
            c(&[8], Int, false),
        ],
        // QLinearMatMul-21 also takes f16/bf16 scales.
        OpKind::QLinearMatMul => vec![
            c(&[0, 2], Quantized(opset), true),
            c(&[3, 5], Quantized(opset), true),
            c(&[1, 4, 6], if opset >= 21 { Float } else { F32 }, false),
        ],
        OpKind::MatMulInteger => vec![c(&[0, 2], Int, true), c(&[1, 3], Int, true)],
        // Shapes, indices and counts.
        OpKind::Reshape | OpKind::Expand | OpKind::Tile | OpKind::ConstantOfShape => {
            vec![c(&[1], Int, false)]
        }
        OpKind::Gather | OpKind::GatherElements | OpKind::GatherND => vec![c(&[1], Index, false)],
        OpKind::Slice => vec![c(&[1, 2, 3, 4], Index, true)],
        OpKind::Range => vec![c(&[0, 1, 2], Numeric, true)],
        OpKind::Clip => vec![c(&[0, 1, 2], Numeric, true)],
        // Float-only element-wise and pooling ops.
        OpKind::Sqrt
        | OpKind::Exp
        | OpKind::Log
        | OpKind::Reciprocal
        | OpKind::Erf
        | OpKind::Sigmoid
        | OpKind::Tanh
        | OpKind::Softmax
        | OpKind::LogSoftmax
        | OpKind::Gelu
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::Elu
        | OpKind::Selu
        | OpKind::Celu
        | OpKind::Mish
        | OpKind::Softplus
        | OpKind::Softsign
        | OpKind::ThresholdedRelu
        | OpKind::LeakyRelu
        | OpKind::Sin
        | OpKind::Cos
        | OpKind::Floor
        | OpKind::Ceil
        | OpKind::Round
        | OpKind::AveragePool
        | OpKind::GlobalAveragePool
        | OpKind::LpNormalization
        | OpKind::LRN
        | OpKind::Swish => vec![c(&[0], Float, false)],
        OpKind::Neg | OpKind::Abs | OpKind::Relu | OpKind::Sign => vec![c(&[0], Numeric, false)],
        // Not checked: any element type, or constraints that passes never
        // create or change (recurrent ops, control flow, the rest).
        OpKind::ArgMax
        | OpKind::Cast
        | OpKind::Constant
        | OpKind::DepthToSpace
        | OpKind::Dropout
        | OpKind::Einsum
        | OpKind::Flatten
        | OpKind::GlobalMaxPool
        | OpKind::Identity
        | OpKind::If
        | OpKind::Loop
        | OpKind::LSTM
        | OpKind::GRU
        | OpKind::RNN
        | OpKind::MaxPool
        | OpKind::Pad
        | OpKind::ReduceL2
        | OpKind::ReduceMax
        | OpKind::ReduceMean
        | OpKind::ReduceMin
        | OpKind::ReduceProd
        | OpKind::ReduceSum
        | OpKind::Resize
        | OpKind::Scan
        | OpKind::ScatterElements
        | OpKind::ScatterND
        | OpKind::Shape
        | OpKind::Size
        | OpKind::SpaceToDepth
        | OpKind::Split
        | OpKind::Squeeze
        | OpKind::TopK
        | OpKind::Transpose
        | OpKind::Unsqueeze
        | OpKind::Upsample
        | OpKind::CumSum
        | OpKind::NonZero
        | OpKind::OneHot
        | OpKind::Trilu
        | OpKind::Other => vec![],
    }
}

/// Checks every node of `g` (main graph) against the table for the
/// default-domain `opset`. Returns all violations.
pub fn check(g: &Graph, opset: i64) -> Result<(), Vec<TypeError>> {
    // Element types: constants and declarations first, then what each op
    // produces (by `output_rule`), in topological order.
    let mut types: HashMap<ValueId, i32> = HashMap::new();
    for v in g.value_ids() {
        let t = g
            .const_tensor(v)
            .map(|t| t.data_type())
            .or_else(|| g.value(v).elem_type())
            .filter(|e| *e != 0);
        if let Some(t) = t {
            types.insert(v, t);
        }
    }
    let mut errors = Vec::new();
    let Ok(order) = g.topo_order() else {
        // Structure errors are `Graph::verify`'s to report.
        return Ok(());
    };
    for n in order {
        let node = g.node(n);
        let elem = |i: usize| -> Option<i32> { types.get(&node.input(i)?).copied() };
        let mut err = |i: usize, found: i32, expected: String| {
            let input = node
                .input(i)
                .map(|v| g.value(v).name.clone())
                .unwrap_or_default();
            errors.push(TypeError {
                node: node.name().to_string(),
                op: node.op_type().to_string(),
                port: Port::Input,
                index: i,
                value: input,
                found: elem_name(found),
                expected,
            });
        };
        for con in constraints(node.kind(), opset) {
            let mut first: Option<(usize, i32)> = None;
            for i in (0..node.inputs().len()).filter(|i| con.inputs.covers(*i)) {
                let Some(e) = elem(i) else { continue };
                if !con.types.allows(e) {
                    err(i, e, con.types.describe());
                    continue;
                }
                match first {
                    None => first = Some((i, e)),
                    Some((j, f)) if con.same && f != e => {
                        err(i, e, format!("{} like input {j}", elem_name(f)))
                    }
                    Some(_) => {}
                }
            }
        }
        // Output 0 as declared (graph output or value_info) against what the
        // op makes of its inputs; then the output's type for what follows
        // (the declaration wins, so one error is not repeated downstream).
        let want = expected_output(node, opset, &elem);
        let outs: Vec<ValueId> = if node.kind() == OpKind::Split {
            node.outputs().iter().flatten().copied().collect()
        } else {
            node.output(0).into_iter().collect()
        };
        for out in &outs {
            if let Some(w) = want {
                types.entry(*out).or_insert(w);
            }
        }
        if let Some(out) = node.output(0) {
            let declared = g.value(out).elem_type().filter(|e| *e != 0);
            if let (Some(d), Some(want)) = (declared, want) {
                if d != want {
                    errors.push(TypeError {
                        node: node.name().to_string(),
                        op: node.op_type().to_string(),
                        port: Port::Output,
                        index: 0,
                        value: g.value(out).name.clone(),
                        found: elem_name(d),
                        expected: elem_name(want),
                    });
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What the element type of output 0 is, by op.
#[derive(Debug, Clone, Copy)]
enum Out {
    /// The type of this input.
    Same(usize),
    Fixed(DataType),
    /// Cast's `to`.
    CastTo,
    /// QuantizeLinear: the zero point's type, else `output_dtype`, else u8.
    ZeroPoint,
    /// DequantizeLinear: the scale's type from opset 19, f32 before.
    Dequantized,
    /// ConstantOfShape: the type of `value`, f32 without one.
    ValueAttr,
    Unchecked,
}

fn output_rule(kind: OpKind) -> Out {
    use Out::*;
    match kind {
        OpKind::Equal
        | OpKind::Less
        | OpKind::Greater
        | OpKind::And
        | OpKind::Or
        | OpKind::Xor
        | OpKind::Not => Fixed(DataType::Bool),
        OpKind::Shape | OpKind::Size | OpKind::NonZero | OpKind::ArgMax => Fixed(DataType::Int64),
        OpKind::MatMulInteger => Fixed(DataType::Int32),
        OpKind::DynamicQuantizeLinear => Fixed(DataType::Uint8),
        OpKind::Cast => CastTo,
        OpKind::QuantizeLinear => ZeroPoint,
        OpKind::DequantizeLinear => Dequantized,
        OpKind::ConstantOfShape => ValueAttr,
        OpKind::Where => Same(1),
        OpKind::OneHot => Same(2),
        OpKind::QLinearConv | OpKind::QLinearMatMul => Same(7),
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
        | OpKind::Div
        | OpKind::Dropout
        | OpKind::Elu
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
        | OpKind::GroupNormalization
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::Identity
        | OpKind::InstanceNormalization
        | OpKind::LayerNormalization
        | OpKind::LeakyRelu
        | OpKind::Log
        | OpKind::LogSoftmax
        | OpKind::LpNormalization
        | OpKind::LRN
        | OpKind::MatMul
        | OpKind::Max
        | OpKind::MaxPool
        | OpKind::Mean
        | OpKind::Min
        | OpKind::Mish
        | OpKind::Mod
        | OpKind::Mul
        | OpKind::Neg
        | OpKind::Pad
        | OpKind::Pow
        | OpKind::PRelu
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
        | OpKind::CumSum
        | OpKind::Trilu
        | OpKind::Celu
        | OpKind::ThresholdedRelu
        | OpKind::Swish => Same(0),
        OpKind::Constant
        | OpKind::Einsum
        | OpKind::If
        | OpKind::Loop
        | OpKind::Scan
        | OpKind::LSTM
        | OpKind::GRU
        | OpKind::RNN
        | OpKind::Other => Unchecked,
    }
}

/// The element type output 0 of `node` has, when it follows from the op
/// and its input types (`elem(i)`, `None` when unknown).
fn expected_output(
    node: &quench_ir::Node,
    opset: i64,
    elem: &dyn Fn(usize) -> Option<i32>,
) -> Option<i32> {
    match output_rule(node.kind()) {
        Out::Same(i) => elem(i),
        Out::Fixed(t) => Some(t as i32),
        Out::CastTo => node.attr_int("to").and_then(|t| i32::try_from(t).ok()),
        Out::ZeroPoint => elem(2)
            .or_else(|| {
                node.attr_int("output_dtype")
                    .filter(|t| *t != 0)
                    .and_then(|t| i32::try_from(t).ok())
            })
            .or(if node.input(2).is_none() {
                Some(DataType::Uint8 as i32)
            } else {
                None
            }),
        Out::Dequantized => {
            if opset >= 19 {
                elem(1)
            } else {
                Some(DataType::Float as i32)
            }
        }
        Out::ValueAttr => Some(
            node.attr_tensor("value")
                .map_or(DataType::Float as i32, |t| t.data_type()),
        ),
        Out::Unchecked => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quench_ir::{tensor, Node};

    #[test]
    fn and_with_a_float_input_is_refused() {
        // What fold_constants produced from a bool ConstantOfShape before it
        // kept types: And(float, bool).
        let mut g = Graph::new("g");
        let mask = g.add_input(
            "mask",
            Some(tensor::tensor_type_of(DataType::Bool as i32, &[2])),
        );
        let ones = g.add_const("ones", tensor::from_f32("ones", &[2], &[1.0, 1.0]));
        let (_, y) = g.add_op(Node::new("And", "attn_mask_and"), &[ones, mask], &["y"]);
        g.add_output(y[0]);
        let errs = check(&g, 17).unwrap_err();
        assert_eq!(
            errs.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            vec!["node `attn_mask_and` (And): input 0 `ones` is f32, expected bool"]
        );
    }

    #[test]
    fn declared_output_types_must_match_the_op() {
        let mut g = Graph::new("g");
        let x = g.add_input(
            "x",
            Some(tensor::tensor_type_of(DataType::Int8 as i32, &[4])),
        );
        let s = g.add_const("s", tensor::from_f32("s", &[], &[0.1]));
        let z = g.add_const("z", tensor::from_i8("z", &[], &[0]));
        // DequantizeLinear's output declared i8 (a stale annotation).
        let y = g.add_value(
            "y",
            Some(tensor::tensor_type_of(DataType::Int8 as i32, &[4])),
        );
        g.add_node(
            Node::new("DequantizeLinear", "dq"),
            &[Some(x), Some(s), Some(z)],
            &[Some(y)],
        );
        g.add_output(y);
        let errs = check(&g, 13).unwrap_err();
        assert_eq!(
            errs.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            vec!["node `dq` (DequantizeLinear): output 0 `y` is i8, expected f32"]
        );
        g.value_mut(y).ty = Some(tensor::tensor_type_of(DataType::Float as i32, &[4]));
        assert_eq!(check(&g, 13), Ok(()));
    }

    #[test]
    fn qdq_types_follow_the_opset() {
        let mut g = Graph::new("g");
        let x = g.add_input(
            "x",
            Some(tensor::tensor_type_of(DataType::Float as i32, &[4])),
        );
        let s = g.add_const("s", tensor::from_f32("s", &[], &[0.1]));
        // A u16 zero point needs opset 21.
        let z = g.add_const(
            "z",
            tensor::from_raw("z", DataType::Uint16, &[], vec![0, 0]),
        );
        let (_, q) = g.add_op(Node::new("QuantizeLinear", "q"), &[x, s, z], &["q"]);
        let (_, d) = g.add_op(Node::new("DequantizeLinear", "dq"), &[q[0], s, z], &["d"]);
        g.add_output(d[0]);
        assert!(check(&g, 21).is_ok());
        let errs = check(&g, 13).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0]
            .to_string()
            .starts_with("node `q` (QuantizeLinear): input 2 `z` is u16"));
    }
}
