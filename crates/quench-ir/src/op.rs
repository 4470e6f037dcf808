//! Classification of known ops. Everything not listed is [`OpKind::Other`]
//! and is carried verbatim.

macro_rules! op_kinds {
    ($($v:ident),* $(,)?) => {
        /// A default-domain ONNX op that some pass or the quantizer knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind {
            $($v,)*
            /// Any other op, including every op of a non-default domain.
            Other,
        }

        impl OpKind {
            /// Classifies `(domain, op_type)`; only the default domain is
            /// recognised.
            pub fn of(domain: &str, op_type: &str) -> OpKind {
                if !domain.is_empty() && domain != "ai.onnx" {
                    return OpKind::Other;
                }
                match op_type {
                    $(stringify!($v) => OpKind::$v,)*
                    _ => OpKind::Other,
                }
            }

            /// The ONNX op type of a known kind (`"Other"` for the rest).
            pub fn name(self) -> &'static str {
                match self {
                    $(OpKind::$v => stringify!($v),)*
                    OpKind::Other => "Other",
                }
            }

            /// Every known kind (not `Other`).
            pub const ALL: &'static [OpKind] = &[$(OpKind::$v,)*];
        }
    };
}

op_kinds!(
    Abs,
    Add,
    ArgMax,
    AveragePool,
    BatchNormalization,
    Cast,
    Ceil,
    Clip,
    Concat,
    Constant,
    ConstantOfShape,
    Conv,
    ConvTranspose,
    DepthToSpace,
    DequantizeLinear,
    Div,
    Dropout,
    DynamicQuantizeLinear,
    Einsum,
    Elu,
    Equal,
    Erf,
    Exp,
    Expand,
    Flatten,
    Floor,
    Gather,
    GatherElements,
    GatherND,
    Gelu,
    Gemm,
    GlobalAveragePool,
    GlobalMaxPool,
    Greater,
    GroupNormalization,
    HardSigmoid,
    HardSwish,
    Identity,
    If,
    InstanceNormalization,
    LayerNormalization,
    LeakyRelu,
    Less,
    Log,
    LogSoftmax,
    Loop,
    LpNormalization,
    LRN,
    LSTM,
    GRU,
    RNN,
    MatMul,
    MatMulInteger,
    Max,
    MaxPool,
    Mean,
    Min,
    Mish,
    Mod,
    Mul,
    Neg,
    Not,
    Pad,
    Pow,
    PRelu,
    QLinearConv,
    QLinearMatMul,
    QuantizeLinear,
    Range,
    Reciprocal,
    ReduceL2,
    ReduceMax,
    ReduceMean,
    ReduceMin,
    ReduceProd,
    ReduceSum,
    Relu,
    Reshape,
    Resize,
    Round,
    Scan,
    ScatterElements,
    ScatterND,
    Selu,
    Shape,
    Sigmoid,
    Sign,
    Sin,
    Cos,
    Size,
    Slice,
    Softmax,
    Softplus,
    Softsign,
    SpaceToDepth,
    Split,
    Sqrt,
    Squeeze,
    Sub,
    Sum,
    Tanh,
    Tile,
    TopK,
    Transpose,
    Unsqueeze,
    Upsample,
    Where,
    And,
    Or,
    Xor,
    CumSum,
    NonZero,
    OneHot,
    Trilu,
    Celu,
    ThresholdedRelu,
    Swish,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_round_trips_names() {
        for k in OpKind::ALL {
            assert_eq!(OpKind::of("", k.name()), *k);
            assert_eq!(OpKind::of("ai.onnx", k.name()), *k);
        }
        assert_eq!(OpKind::of("com.microsoft", "Conv"), OpKind::Other);
        assert_eq!(OpKind::of("", "NotAnOp"), OpKind::Other);
    }
}
