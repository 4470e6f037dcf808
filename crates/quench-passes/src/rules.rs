//! How each known op is quantized: one exhaustive table.
//!
//! Adding a variant to [`OpKind`] fails to compile here until someone
//! decides how the new op is quantized. Unknown ops (`OpKind::Other`,
//! including every custom domain) stay float.

use quench_ir::OpKind;

/// The quantization decision for an op type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpRule {
    /// Compute op with weights or matrix inputs: int8 weights (input
    /// `weight`), int32 bias (input `bias`), quantized activation inputs and
    /// output. Runtimes fuse `DQ → op → Q` into one integer kernel.
    Compute { weight: usize, bias: Option<usize> },
    /// Element-wise or pooling op that runtimes run on integers when its
    /// inputs and output are all quantized activations: residual `Add`,
    /// `Mul` of two activations (SiLU, squeeze-excite), pooling, `Concat`,
    /// and `Sigmoid`/`LeakyRelu` (table lookups in ONNX Runtime's QDQ
    /// fusions: QLinearAdd/Mul/Concat/AveragePool/Sigmoid/LeakyRelu). With
    /// a constant input (a mask, a scale) the op stays float.
    Fused,
    /// Data movement: the output shares its input's scale and zero point,
    /// so no requantization happens around it.
    Shared,
    /// Absorbed into the preceding compute or fused op's output range
    /// (`Relu`, `Clip(0, max)`) when activations are asymmetric.
    Activation,
    /// Recurrent op (LSTM, GRU, RNN): the constant tensors feeding its
    /// weight inputs `weights` (W and R), directly or through data movement
    /// (PyTorch exports slice and concatenate the gates of one `[4H, I]`
    /// table), are stored int8 with a DequantizeLinear; the recurrence
    /// itself runs in float (no runtime has an integer kernel for it).
    Recurrent { weights: &'static [usize] },
    /// Stays float.
    Float(&'static str),
}

/// The rule for an op kind.
pub fn rule(k: OpKind) -> OpRule {
    use OpKind::*;
    match k {
        Conv | ConvTranspose => OpRule::Compute {
            weight: 1,
            bias: Some(2),
        },
        Gemm => OpRule::Compute {
            weight: 1,
            bias: Some(2),
        },
        MatMul => OpRule::Compute {
            weight: 1,
            bias: None,
        },
        Add | Mul | Concat | AveragePool | GlobalAveragePool | Sigmoid | LeakyRelu => OpRule::Fused,
        Reshape | Transpose | Flatten | Squeeze | Unsqueeze | Slice | Gather | MaxPool
        | GlobalMaxPool | Resize | Split | Pad | DepthToSpace | SpaceToDepth | Identity
        | Expand | Tile => OpRule::Shared,
        Relu | Clip => OpRule::Activation,
        Softmax | LogSoftmax => OpRule::Float("softmax is sensitive to quantization"),
        LayerNormalization
        | GroupNormalization
        | InstanceNormalization
        | LpNormalization
        | LRN
        | BatchNormalization => OpRule::Float("normalization stays float"),
        ReduceMean | ReduceSum | ReduceMax | ReduceMin | ReduceProd | ReduceL2 | Pow | Sqrt
        | Div | Sub | Reciprocal => {
            OpRule::Float("arithmetic (often a written-out normalization) stays float")
        }
        Tanh | Erf | Gelu | Exp | Log | Elu | HardSigmoid | HardSwish | Mish | Softplus
        | Softsign | Selu | Celu | ThresholdedRelu | PRelu | Swish | Sin | Cos | Abs | Neg
        | Sign | Floor | Ceil | Round => OpRule::Float("non-linear element-wise op stays float"),
        If | Loop | Scan => {
            OpRule::Float("control flow: runs in float; its bodies are quantized on their own")
        }
        LSTM | GRU | RNN => OpRule::Recurrent { weights: &[1, 2] },
        QuantizeLinear
        | DequantizeLinear
        | DynamicQuantizeLinear
        | QLinearConv
        | QLinearMatMul
        | MatMulInteger => OpRule::Float("already quantized"),
        Constant | ConstantOfShape | Shape | Size | Range | Cast | Equal | Greater | Less | Not
        | And | Or | Xor | Where | Mod | ArgMax | TopK | NonZero | OneHot | CumSum | Trilu
        | Einsum | Dropout | Max | Min | Mean | Sum | ScatterElements | ScatterND
        | GatherElements | GatherND | Upsample => OpRule::Float("not quantized"),
        Other => OpRule::Float("unknown op or custom domain"),
    }
}
