//! The default pass pipeline, in order.

use crate::{Pass, PassError};

/// The passes run before quantization, in order:
///
/// 1. `constants_to_initializers`: `Constant` nodes become initializers, so
///    weights stored that way (Paddle exports) are seen as weights.
/// 2. `remove_identity`: drop Identity and inference-mode Dropout.
/// 3. `fold_constants`: evaluate nodes whose inputs are all constants.
/// 4. `fold_batchnorm`: fold BatchNormalization into Conv/ConvTranspose/Gemm/MatMul.
/// 5. `batchnorm_to_muladd`: the BatchNormalizations left become Mul + Add.
/// 6. `dead_code`: remove nodes and initializers nothing uses.
/// 7. `dedup_initializers`: share identical initializers.
pub fn default_pipeline() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(crate::constants_to_initializers::ConstantsToInitializers),
        Box::new(crate::remove_identity::RemoveIdentity),
        Box::new(crate::fold_constants::FoldConstants),
        Box::new(crate::fold_batchnorm::FoldBatchNorm),
        Box::new(crate::batchnorm_to_muladd::BatchNormToMulAdd),
        Box::new(crate::dead_code::DeadCode),
        Box::new(crate::dedup_initializers::DedupInitializers),
    ]
}

/// Passes that run only when asked for (`--passes` by name, or their own
/// switch in the driver), after the default pipeline:
///
/// - `equalize`: cross-layer equalization of Conv -> (Relu) -> Conv weight
///   ranges (`--equalize`);
/// - `fuse_hard_swish`: a written-out hard-swish becomes one op (the
///   compile runs it after quantization, [`post_quantize_passes`]);
/// - `matmul_add_to_gemm`: a rank-2 MatMul + constant bias Add becomes a
///   Gemm (the compile runs it in static mode after the default pipeline).
pub fn optional_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(crate::equalize::Equalize),
        Box::new(crate::fuse_hard_swish::FuseHardSwish),
        Box::new(crate::matmul_add_to_gemm::MatMulAddToGemm::default()),
    ]
}

/// The passes the compile runs on the quantized graph, in order: float
/// clean-ups between DequantizeLinear and QuantizeLinear that change no
/// quantization parameter.
pub fn post_quantize_passes() -> Vec<Box<dyn Pass>> {
    vec![Box::new(crate::fuse_hard_swish::FuseHardSwish)]
}

/// Looks passes up by name (default and optional ones), in the order given.
pub fn by_names(names: &[String]) -> Result<Vec<Box<dyn Pass>>, PassError> {
    let all = || {
        let mut v = default_pipeline();
        v.extend(optional_passes());
        v
    };
    let known = all();
    let mut out: Vec<Box<dyn Pass>> = Vec::new();
    for n in names {
        let Some(i) = known.iter().position(|p| p.name() == n) else {
            return Err(PassError::Unknown(n.clone()));
        };
        // Fresh instances: passes are stateless unit structs.
        out.push(all().swap_remove(i));
    }
    Ok(out)
}
