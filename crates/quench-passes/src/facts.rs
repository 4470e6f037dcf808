//! Per-op facts, each in one exhaustive table (next to the quantization
//! rules in [`crate::rules`]).
//!
//! Every function here matches on [`OpKind`] without a `_ =>` arm, so adding
//! an op kind fails to compile until someone states each fact for it. The
//! facts are mathematical properties of the ONNX op definitions; the policy
//! that uses them (which tensors keep a min/max range, what is pruned, how a
//! range is clamped) lives with its caller.
//!
//! - [`is_compute`]: the matrix/convolution ops with a weight input.
//! - [`weight_axis`]: the output-channel axis of a weight, for per-channel
//!   quantization.
//! - [`clip_bounds`]: the one reader of Clip's bounds (attributes before
//!   opset 11, inputs from 11 on).
//! - [`bounded_output`] / [`output_bounds`]: the interval every output
//!   element lies in.
//! - [`saturation`]: where an op's output stops depending on its input, so a
//!   producer's range can be clamped to what its consumer can tell apart.

use quench_ir::{tensor, Graph, Node, NodeId, OpKind};

/// Whether the op is a compute op: a convolution or matrix product with a
/// weight as input 1 (what pruning and weight quantization act on).
pub fn is_compute(k: OpKind) -> bool {
    use OpKind::*;
    match k {
        Conv | ConvTranspose | Gemm | MatMul => true,
        Abs
        | Add
        | ArgMax
        | AveragePool
        | BatchNormalization
        | Cast
        | Ceil
        | Clip
        | Concat
        | Constant
        | ConstantOfShape
        | DepthToSpace
        | DequantizeLinear
        | Div
        | Dropout
        | DynamicQuantizeLinear
        | Einsum
        | Elu
        | Equal
        | Erf
        | Exp
        | Expand
        | Flatten
        | Floor
        | Gather
        | GatherElements
        | GatherND
        | Gelu
        | GlobalAveragePool
        | GlobalMaxPool
        | Greater
        | GroupNormalization
        | HardSigmoid
        | HardSwish
        | Identity
        | If
        | InstanceNormalization
        | LayerNormalization
        | LeakyRelu
        | Less
        | Log
        | LogSoftmax
        | Loop
        | LpNormalization
        | LRN
        | LSTM
        | GRU
        | RNN
        | MatMulInteger
        | Max
        | MaxPool
        | Mean
        | Min
        | Mish
        | Mod
        | Mul
        | Neg
        | Not
        | Pad
        | Pow
        | PRelu
        | QLinearConv
        | QLinearMatMul
        | QuantizeLinear
        | Range
        | Reciprocal
        | ReduceL2
        | ReduceMax
        | ReduceMean
        | ReduceMin
        | ReduceProd
        | ReduceSum
        | Relu
        | Reshape
        | Resize
        | Round
        | Scan
        | ScatterElements
        | ScatterND
        | Selu
        | Shape
        | Sigmoid
        | Sign
        | Sin
        | Cos
        | Size
        | Slice
        | Softmax
        | Softplus
        | Softsign
        | SpaceToDepth
        | Split
        | Sqrt
        | Squeeze
        | Sub
        | Sum
        | Tanh
        | Tile
        | TopK
        | Transpose
        | Unsqueeze
        | Upsample
        | Where
        | And
        | Or
        | Xor
        | CumSum
        | NonZero
        | OneHot
        | Trilu
        | Celu
        | ThresholdedRelu
        | Swish
        | Other => false,
    }
}

/// Whether the op only moves its first input's values (selects, reorders,
/// repeats them, or takes a maximum of some of them): such an op commutes
/// with an element-wise monotone clamp, `op(clamp(x)) == clamp(op(x))`, so
/// consumer-aware range clamping may look through it. Resize (which may
/// interpolate) and Pad (which adds a value) do not count.
pub fn moves_data(k: OpKind) -> bool {
    use OpKind::*;
    match k {
        Reshape | Transpose | Flatten | Squeeze | Unsqueeze | Slice | Gather | MaxPool
        | GlobalMaxPool | Split | DepthToSpace | SpaceToDepth | Identity | Expand | Tile => true,
        Abs
        | Add
        | ArgMax
        | AveragePool
        | BatchNormalization
        | Cast
        | Ceil
        | Clip
        | Concat
        | Constant
        | ConstantOfShape
        | DequantizeLinear
        | Div
        | Dropout
        | DynamicQuantizeLinear
        | Einsum
        | Elu
        | Equal
        | Erf
        | Exp
        | Floor
        | GatherElements
        | GatherND
        | Gelu
        | GlobalAveragePool
        | Greater
        | GroupNormalization
        | HardSigmoid
        | HardSwish
        | If
        | InstanceNormalization
        | LayerNormalization
        | LeakyRelu
        | Less
        | Log
        | LogSoftmax
        | Loop
        | LpNormalization
        | LRN
        | LSTM
        | GRU
        | RNN
        | MatMulInteger
        | Max
        | Mean
        | Min
        | Mish
        | Mod
        | Mul
        | Neg
        | Not
        | Pad
        | Pow
        | PRelu
        | QLinearConv
        | QLinearMatMul
        | QuantizeLinear
        | Range
        | Reciprocal
        | ReduceL2
        | ReduceMax
        | ReduceMean
        | ReduceMin
        | ReduceProd
        | ReduceSum
        | Relu
        | Resize
        | Round
        | Scan
        | ScatterElements
        | ScatterND
        | Selu
        | Shape
        | Sigmoid
        | Sign
        | Sin
        | Cos
        | Size
        | Softmax
        | Softplus
        | Softsign
        | Sqrt
        | Sub
        | Sum
        | Tanh
        | TopK
        | Upsample
        | Where
        | And
        | Or
        | Xor
        | CumSum
        | NonZero
        | OneHot
        | Trilu
        | Celu
        | ThresholdedRelu
        | Swish
        | Conv
        | ConvTranspose
        | Gemm
        | MatMul
        | Other => false,
    }
}

/// The axis of `node`'s weight (input 1, or the table of a `Gather`) that
/// indexes output channels, for per-channel quantization; `weight_rank` is
/// the weight's rank. Conv: 0 (`[M, C/g, k...]`); ConvTranspose: 1
/// (`[C, M/g, k...]`); Gemm: 0 with `transB=1` (`[N, K]`), else 1
/// (`[K, N]`); MatMul: the last axis (1 of a 2-D `[K, N]` weight); Gather:
/// 0 (one embedding row per index). `None` for every other op, and when the
/// axis would not exist at this rank.
pub fn weight_axis(node: &Node, weight_rank: usize) -> Option<usize> {
    use OpKind::*;
    let axis = match node.kind() {
        Conv => 0,
        ConvTranspose => 1,
        Gemm => {
            if node.attr_int("transB").unwrap_or(0) != 0 {
                0
            } else {
                1
            }
        }
        MatMul => weight_rank.checked_sub(1)?,
        Gather => 0,
        Abs
        | Add
        | ArgMax
        | AveragePool
        | BatchNormalization
        | Cast
        | Ceil
        | Clip
        | Concat
        | Constant
        | ConstantOfShape
        | DepthToSpace
        | DequantizeLinear
        | Div
        | Dropout
        | DynamicQuantizeLinear
        | Einsum
        | Elu
        | Equal
        | Erf
        | Exp
        | Expand
        | Flatten
        | Floor
        | GatherElements
        | GatherND
        | Gelu
        | GlobalAveragePool
        | GlobalMaxPool
        | Greater
        | GroupNormalization
        | HardSigmoid
        | HardSwish
        | Identity
        | If
        | InstanceNormalization
        | LayerNormalization
        | LeakyRelu
        | Less
        | Log
        | LogSoftmax
        | Loop
        | LpNormalization
        | LRN
        | LSTM
        | GRU
        | RNN
        | MatMulInteger
        | Max
        | MaxPool
        | Mean
        | Min
        | Mish
        | Mod
        | Mul
        | Neg
        | Not
        | Pad
        | Pow
        | PRelu
        | QLinearConv
        | QLinearMatMul
        | QuantizeLinear
        | Range
        | Reciprocal
        | ReduceL2
        | ReduceMax
        | ReduceMean
        | ReduceMin
        | ReduceProd
        | ReduceSum
        | Relu
        | Reshape
        | Resize
        | Round
        | Scan
        | ScatterElements
        | ScatterND
        | Selu
        | Shape
        | Sigmoid
        | Sign
        | Sin
        | Cos
        | Size
        | Slice
        | Softmax
        | Softplus
        | Softsign
        | SpaceToDepth
        | Split
        | Sqrt
        | Squeeze
        | Sub
        | Sum
        | Tanh
        | Tile
        | TopK
        | Transpose
        | Unsqueeze
        | Upsample
        | Where
        | And
        | Or
        | Xor
        | CumSum
        | NonZero
        | OneHot
        | Trilu
        | Celu
        | ThresholdedRelu
        | Swish
        | Other => return None,
    };
    (axis < weight_rank).then_some(axis)
}

/// The bounds `(min, max)` of a Clip node: the `min`/`max` attributes
/// (opset < 11) or the constant scalar inputs 1 and 2 (opset ≥ 11). A
/// missing bound is infinite. `None` when a bound is given by a
/// non-constant tensor, or `n` is not a Clip.
pub fn clip_bounds(g: &Graph, n: NodeId) -> Option<(f32, f32)> {
    let node = g.node(n);
    if node.kind() != OpKind::Clip {
        return None;
    }
    let read = |attr: &str, input: usize, missing: f32| -> Option<f32> {
        if let Some(v) = node.attr_float(attr) {
            return Some(v);
        }
        match node.input(input) {
            None => Some(missing),
            Some(v) => {
                let t = g.const_tensor(v)?;
                tensor::to_f32(t).ok()?.first().copied()
            }
        }
    };
    Some((
        read("min", 1, f32::NEG_INFINITY)?,
        read("max", 2, f32::INFINITY)?,
    ))
}

/// Finite bounds every output element of an op of this kind lies in,
/// whatever its inputs and attributes: Sigmoid (0, 1), HardSigmoid [0, 1],
/// Softmax [0, 1], Tanh, Erf and Softsign (−1, 1). Open ends are returned as
/// their closure. `None` for ops whose output is unbounded on some side or
/// whose bounds depend on attributes or inputs (use [`output_bounds`]).
///
/// A range computed from data of such a tensor is already tight; the CLI
/// keeps min/max calibration for tensors these ops produce.
pub fn bounded_output(k: OpKind) -> Option<(f32, f32)> {
    use OpKind::*;
    match k {
        Sigmoid | HardSigmoid | Softmax => Some((0.0, 1.0)),
        Tanh | Erf | Softsign => Some((-1.0, 1.0)),
        Abs
        | Add
        | ArgMax
        | AveragePool
        | BatchNormalization
        | Cast
        | Ceil
        | Clip
        | Concat
        | Constant
        | ConstantOfShape
        | Conv
        | ConvTranspose
        | DepthToSpace
        | DequantizeLinear
        | Div
        | Dropout
        | DynamicQuantizeLinear
        | Einsum
        | Elu
        | Equal
        | Exp
        | Expand
        | Flatten
        | Floor
        | Gather
        | GatherElements
        | GatherND
        | Gelu
        | Gemm
        | GlobalAveragePool
        | GlobalMaxPool
        | Greater
        | GroupNormalization
        | HardSwish
        | Identity
        | If
        | InstanceNormalization
        | LayerNormalization
        | LeakyRelu
        | Less
        | Log
        | LogSoftmax
        | Loop
        | LpNormalization
        | LRN
        | LSTM
        | GRU
        | RNN
        | MatMul
        | MatMulInteger
        | Max
        | MaxPool
        | Mean
        | Min
        | Mish
        | Mod
        | Mul
        | Neg
        | Not
        | Pad
        | Pow
        | PRelu
        | QLinearConv
        | QLinearMatMul
        | QuantizeLinear
        | Range
        | Reciprocal
        | ReduceL2
        | ReduceMax
        | ReduceMean
        | ReduceMin
        | ReduceProd
        | ReduceSum
        | Relu
        | Reshape
        | Resize
        | Round
        | Scan
        | ScatterElements
        | ScatterND
        | Selu
        | Shape
        | Sign
        | Sin
        | Cos
        | Size
        | Slice
        | Softplus
        | SpaceToDepth
        | Split
        | Sqrt
        | Squeeze
        | Sub
        | Sum
        | Tile
        | TopK
        | Transpose
        | Unsqueeze
        | Upsample
        | Where
        | And
        | Or
        | Xor
        | CumSum
        | NonZero
        | OneHot
        | Trilu
        | Celu
        | ThresholdedRelu
        | Swish
        | Other => None,
    }
}

/// The minimum of HardSwish, `x · relu6(x + 3) / 6`: on (−3, 3) it is
/// `x (x + 3) / 6`, smallest at `x = −1.5`, where it is `−0.375`.
pub const HARD_SWISH_MIN: f32 = -0.375;

/// Bounds `(lo, hi)` (possibly infinite; open ends returned as their
/// closure) that every element of output 0 of node `n` lies in: those of
/// [`bounded_output`], plus Relu, Abs, Sqrt [0, ∞), Exp, Softplus (0, ∞),
/// HardSwish [−0.375, ∞), Clip [min, max] (see [`clip_bounds`]) and Sin,
/// Cos [−1, 1]. `None` when nothing is known.
pub fn output_bounds(g: &Graph, n: NodeId) -> Option<(f32, f32)> {
    use OpKind::*;
    let k = g.node(n).kind();
    let inf = f32::INFINITY;
    match k {
        Relu | Abs | Sqrt | Exp | Softplus => Some((0.0, inf)),
        HardSwish => Some((HARD_SWISH_MIN, inf)),
        Clip => clip_bounds(g, n),
        Sin | Cos => Some((-1.0, 1.0)),
        Sigmoid | HardSigmoid | Softmax | Tanh | Erf | Softsign => bounded_output(k),
        Add
        | ArgMax
        | AveragePool
        | BatchNormalization
        | Cast
        | Ceil
        | Concat
        | Constant
        | ConstantOfShape
        | Conv
        | ConvTranspose
        | DepthToSpace
        | DequantizeLinear
        | Div
        | Dropout
        | DynamicQuantizeLinear
        | Einsum
        | Elu
        | Equal
        | Expand
        | Flatten
        | Floor
        | Gather
        | GatherElements
        | GatherND
        | Gelu
        | Gemm
        | GlobalAveragePool
        | GlobalMaxPool
        | Greater
        | GroupNormalization
        | Identity
        | If
        | InstanceNormalization
        | LayerNormalization
        | LeakyRelu
        | Less
        | Log
        | LogSoftmax
        | Loop
        | LpNormalization
        | LRN
        | LSTM
        | GRU
        | RNN
        | MatMul
        | MatMulInteger
        | Max
        | MaxPool
        | Mean
        | Min
        | Mish
        | Mod
        | Mul
        | Neg
        | Not
        | Pad
        | Pow
        | PRelu
        | QLinearConv
        | QLinearMatMul
        | QuantizeLinear
        | Range
        | Reciprocal
        | ReduceL2
        | ReduceMax
        | ReduceMean
        | ReduceMin
        | ReduceProd
        | ReduceSum
        | Reshape
        | Resize
        | Round
        | Scan
        | ScatterElements
        | ScatterND
        | Selu
        | Shape
        | Sign
        | Size
        | Slice
        | SpaceToDepth
        | Split
        | Squeeze
        | Sub
        | Sum
        | Tile
        | TopK
        | Transpose
        | Unsqueeze
        | Upsample
        | Where
        | And
        | Or
        | Xor
        | CumSum
        | NonZero
        | OneHot
        | Trilu
        | Celu
        | ThresholdedRelu
        | Swish
        | Other => None,
    }
}

/// Where an element-wise op's output stops telling its inputs apart.
///
/// For inputs `x ≤ flat_below` the output is one constant, and likewise for
/// `x ≥ flat_above`; for `x ≥ linear_above` the output is `x` itself. A
/// quantization range of the op's input need not extend past the flat
/// points (the consumer maps everything beyond them to the same value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Saturation {
    pub flat_below: Option<f32>,
    pub flat_above: Option<f32>,
    pub linear_above: Option<f32>,
}

/// The saturation points of node `n` as a function of its input 0: Relu is
/// flat below 0; Clip flat below its min and above its max (finite ones);
/// HardSwish flat (= 0) below −3 and the identity above 3; HardSigmoid,
/// `max(0, min(1, αx + β))`, flat outside `[−β/α, (1−β)/α]` (α = 0.2,
/// β = 0.5 by default: [−2.5, 2.5]; PyTorch's hardsigmoid exports α = 1/6:
/// [−3, 3]). `None` for ops without flat regions (Sigmoid and Tanh only
/// approach theirs) and for Clip or HardSigmoid whose parameters are not
/// known constants (or α = 0).
pub fn saturation(g: &Graph, n: NodeId) -> Option<Saturation> {
    use OpKind::*;
    let node = g.node(n);
    let none = Saturation {
        flat_below: None,
        flat_above: None,
        linear_above: None,
    };
    match node.kind() {
        Relu => Some(Saturation {
            flat_below: Some(0.0),
            ..none
        }),
        Clip => {
            let (lo, hi) = clip_bounds(g, n)?;
            Some(Saturation {
                flat_below: lo.is_finite().then_some(lo),
                flat_above: hi.is_finite().then_some(hi),
                ..none
            })
        }
        HardSwish => Some(Saturation {
            flat_below: Some(-3.0),
            linear_above: Some(3.0),
            ..none
        }),
        // tanh(10) and sigmoid(20) round to 1.0 in f32 (checked by a test),
        // and both are monotone: flat beyond those points in f32.
        Tanh => Some(Saturation {
            flat_below: Some(-10.0),
            flat_above: Some(10.0),
            ..none
        }),
        Sigmoid => Some(Saturation {
            flat_above: Some(20.0),
            ..none
        }),
        HardSigmoid => {
            let alpha = node.attr_float("alpha").unwrap_or(0.2) as f64;
            let beta = node.attr_float("beta").unwrap_or(0.5) as f64;
            if alpha == 0.0 || !alpha.is_finite() || !beta.is_finite() {
                return None;
            }
            let (p0, p1) = (-beta / alpha, (1.0 - beta) / alpha);
            Some(Saturation {
                flat_below: Some(p0.min(p1) as f32),
                flat_above: Some(p0.max(p1) as f32),
                ..none
            })
        }
        Abs
        | Add
        | ArgMax
        | AveragePool
        | BatchNormalization
        | Cast
        | Ceil
        | Concat
        | Constant
        | ConstantOfShape
        | Conv
        | ConvTranspose
        | DepthToSpace
        | DequantizeLinear
        | Div
        | Dropout
        | DynamicQuantizeLinear
        | Einsum
        | Elu
        | Equal
        | Erf
        | Exp
        | Expand
        | Flatten
        | Floor
        | Gather
        | GatherElements
        | GatherND
        | Gelu
        | Gemm
        | GlobalAveragePool
        | GlobalMaxPool
        | Greater
        | GroupNormalization
        | Identity
        | If
        | InstanceNormalization
        | LayerNormalization
        | LeakyRelu
        | Less
        | Log
        | LogSoftmax
        | Loop
        | LpNormalization
        | LRN
        | LSTM
        | GRU
        | RNN
        | MatMul
        | MatMulInteger
        | Max
        | MaxPool
        | Mean
        | Min
        | Mish
        | Mod
        | Mul
        | Neg
        | Not
        | Pad
        | Pow
        | PRelu
        | QLinearConv
        | QLinearMatMul
        | QuantizeLinear
        | Range
        | Reciprocal
        | ReduceL2
        | ReduceMax
        | ReduceMean
        | ReduceMin
        | ReduceProd
        | ReduceSum
        | Reshape
        | Resize
        | Round
        | Scan
        | ScatterElements
        | ScatterND
        | Selu
        | Shape
        | Sign
        | Sin
        | Cos
        | Size
        | Slice
        | Softmax
        | Softplus
        | Softsign
        | SpaceToDepth
        | Split
        | Sqrt
        | Squeeze
        | Sub
        | Sum
        | Tile
        | TopK
        | Transpose
        | Unsqueeze
        | Upsample
        | Where
        | And
        | Or
        | Xor
        | CumSum
        | NonZero
        | OneHot
        | Trilu
        | Celu
        | ThresholdedRelu
        | Swish
        | Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quench_ir::{attr, parse_graph};

    fn hard_swish(x: f64) -> f64 {
        x * (x + 3.0).clamp(0.0, 6.0) / 6.0
    }

    fn hard_sigmoid(x: f64, alpha: f64, beta: f64) -> f64 {
        (alpha * x + beta).clamp(0.0, 1.0)
    }

    /// A graph with one node `op` on input `%x`, plus the node's id.
    fn one(text: &str) -> (Graph, NodeId) {
        let g = parse_graph(text).unwrap();
        let n = g.node_ids()[0];
        (g, n)
    }

    #[test]
    fn compute_ops_and_weight_axes() {
        for k in OpKind::ALL.iter().chain([&OpKind::Other]) {
            assert_eq!(
                is_compute(*k),
                matches!(
                    k,
                    OpKind::Conv | OpKind::ConvTranspose | OpKind::Gemm | OpKind::MatMul
                ),
                "{k:?}"
            );
        }
        let axis = |op: &str, rank: usize, trans_b: Option<i64>| {
            let mut n = Node::new(op, "n");
            if let Some(t) = trans_b {
                n.set_attr(attr::int("transB", t));
            }
            weight_axis(&n, rank)
        };
        assert_eq!(axis("Conv", 4, None), Some(0));
        assert_eq!(axis("ConvTranspose", 4, None), Some(1));
        assert_eq!(axis("MatMul", 2, None), Some(1));
        assert_eq!(axis("MatMul", 3, None), Some(2));
        assert_eq!(axis("Gemm", 2, None), Some(1));
        assert_eq!(axis("Gemm", 2, Some(0)), Some(1));
        assert_eq!(axis("Gemm", 2, Some(1)), Some(0));
        assert_eq!(axis("Gather", 2, None), Some(0));
        assert_eq!(axis("Relu", 2, None), None);
        assert_eq!(axis("ConvTranspose", 1, None), None);
        assert_eq!(axis("MatMul", 0, None), None);
    }

    #[test]
    fn clip_reader_reads_attributes_and_inputs() {
        // Opset < 11: attributes.
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = Clip(%x) {max=6.0, min=0.0} : ?\n");
        assert_eq!(clip_bounds(&g, n), Some((0.0, 6.0)));
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = Clip(%x) {min=-1.5} : ?\n");
        assert_eq!(clip_bounds(&g, n), Some((-1.5, f32::INFINITY)));
        // Opset ≥ 11: constant inputs, either may be omitted.
        let (g, n) = one(
            "graph g(%x: f32[4]) -> (%0)\n  %w0 = const f32[] [-2.0]\n  %w1 = const f32[] [3.5]\n  %0 = Clip(%x, %w0, %w1) : ?\n",
        );
        assert_eq!(clip_bounds(&g, n), Some((-2.0, 3.5)));
        let (g, n) = one(
            "graph g(%x: f32[4]) -> (%0)\n  %w0 = const f32[] [6.0]\n  %0 = Clip(%x, _, %w0) : ?\n",
        );
        assert_eq!(clip_bounds(&g, n), Some((f32::NEG_INFINITY, 6.0)));
        assert_eq!(output_bounds(&g, n), Some((f32::NEG_INFINITY, 6.0)));
        // A bound computed at run time is not known.
        let (g, n) = one("graph g(%x: f32[4], %m: f32[]) -> (%0)\n  %0 = Clip(%x, %m) : ?\n");
        assert_eq!(clip_bounds(&g, n), None);
        assert_eq!(saturation(&g, n), None);
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = Relu(%x) : ?\n");
        assert_eq!(clip_bounds(&g, n), None);
    }

    #[test]
    fn hard_swish_minimum_and_flat_region() {
        // Sample the formula finely: the minimum is -0.375 at x = -1.5.
        let (mut lo, mut at) = (f64::INFINITY, 0.0);
        for i in -100_000..=100_000 {
            let x = i as f64 * 1e-4;
            let y = hard_swish(x);
            if y < lo {
                (lo, at) = (y, x);
            }
        }
        assert!((lo - HARD_SWISH_MIN as f64).abs() < 1e-9, "min {lo}");
        assert!((at + 1.5).abs() < 1e-3, "at {at}");
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = HardSwish(%x) : ?\n");
        assert_eq!(output_bounds(&g, n), Some((-0.375, f32::INFINITY)));
        let s = saturation(&g, n).unwrap();
        let (below, above) = (s.flat_below.unwrap() as f64, s.linear_above.unwrap() as f64);
        for x in [below - 5.0, below - 0.5, below] {
            assert_eq!(hard_swish(x), 0.0, "x={x}");
        }
        assert!(hard_swish(below + 0.01) < 0.0);
        for x in [above, above + 0.5, above + 10.0] {
            assert_eq!(hard_swish(x), x);
        }
        assert!(hard_swish(above - 0.01) < above - 0.01);
        assert_eq!(s.flat_above, None);
    }

    #[test]
    fn hard_sigmoid_flat_points_follow_alpha_and_beta() {
        for (attrs, alpha, beta, want) in [
            ("", 0.2, 0.5, (-2.5, 2.5)),
            (" {alpha=0.166667, beta=0.5}", 0.166667, 0.5, (-3.0, 3.0)),
            (" {alpha=0.5, beta=0.25}", 0.5, 0.25, (-0.5, 1.5)),
        ] {
            let (g, n) = one(&format!(
                "graph g(%x: f32[4]) -> (%0)\n  %0 = HardSigmoid(%x){attrs} : ?\n"
            ));
            let s = saturation(&g, n).unwrap();
            let (lo, hi) = (s.flat_below.unwrap(), s.flat_above.unwrap());
            assert!(
                (lo - want.0).abs() < 1e-4 && (hi - want.1).abs() < 1e-4,
                "{lo} {hi}"
            );
            // Flat outside, strictly inside the bounds just within.
            let f = |x: f32| hard_sigmoid(x as f64, alpha, beta);
            assert_eq!(f(lo - 1.0), f(lo));
            assert_eq!(f(hi + 1.0), f(hi));
            assert!(f(lo + 0.01) > f(lo) && f(hi - 0.01) < f(hi));
            assert_eq!(output_bounds(&g, n), Some((0.0, 1.0)));
        }
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = HardSigmoid(%x) {alpha=0.0} : ?\n");
        assert_eq!(saturation(&g, n), None);
    }

    #[test]
    fn bounds_of_activations() {
        let bounds = |op: &str| {
            let (g, n) = one(&format!(
                "graph g(%x: f32[4]) -> (%0)\n  %0 = {op}(%x) : ?\n"
            ));
            output_bounds(&g, n)
        };
        let inf = f32::INFINITY;
        assert_eq!(bounds("Relu"), Some((0.0, inf)));
        assert_eq!(bounds("Sigmoid"), Some((0.0, 1.0)));
        assert_eq!(bounds("HardSigmoid"), Some((0.0, 1.0)));
        assert_eq!(bounds("Tanh"), Some((-1.0, 1.0)));
        assert_eq!(bounds("Softmax"), Some((0.0, 1.0)));
        assert_eq!(bounds("Exp"), Some((0.0, inf)));
        assert_eq!(bounds("Conv"), None);
        assert_eq!(bounds("LeakyRelu"), None);
        // Sampled: every function stays within its stated bounds.
        let xs: Vec<f64> = (-2000..=2000).map(|i| i as f64 * 0.01).collect();
        for (k, f) in [
            (
                OpKind::Sigmoid,
                (|x: f64| 1.0 / (1.0 + (-x).exp())) as fn(f64) -> f64,
            ),
            (OpKind::Tanh, f64::tanh),
            (OpKind::Softsign, |x: f64| x / (1.0 + x.abs())),
            (OpKind::HardSigmoid, |x: f64| hard_sigmoid(x, 0.2, 0.5)),
        ] {
            let (lo, hi) = bounded_output(k).unwrap();
            assert!(
                xs.iter().all(|x| (lo as f64..=hi as f64).contains(&f(*x))),
                "{k:?}"
            );
        }
        assert_eq!(bounded_output(OpKind::Relu), None);
        assert_eq!(bounded_output(OpKind::Clip), None);
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = Relu(%x) : ?\n");
        assert_eq!(
            saturation(&g, n),
            Some(Saturation {
                flat_below: Some(0.0),
                flat_above: None,
                linear_above: None
            })
        );
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = Clip(%x) {max=6.0, min=0.0} : ?\n");
        let s = saturation(&g, n).unwrap();
        assert_eq!((s.flat_below, s.flat_above), (Some(0.0), Some(6.0)));
        // Sigmoid is 1.0 in f32 from 20 on, Tanh ±1.0 beyond ±10.
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = Sigmoid(%x) : ?\n");
        let s = saturation(&g, n).unwrap();
        assert_eq!((s.flat_below, s.flat_above), (None, Some(20.0)));
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = Tanh(%x) : ?\n");
        let s = saturation(&g, n).unwrap();
        assert_eq!((s.flat_below, s.flat_above), (Some(-10.0), Some(10.0)));
        let (g, n) = one("graph g(%x: f32[4]) -> (%0)\n  %0 = Erf(%x) : ?\n");
        assert_eq!(saturation(&g, n), None);
    }
}
