//! `ai.quench.twin::FakeQuant`: one element-wise pass for what a
//! parametric twin's activation pair computes,
//! `clip(round(x / scale), low, high) * scale` with `scale`, `low` and
//! `high` fed as scalar inputs (see `quench_passes::simulate`).
//!
//! As four ONNX nodes (`Div`, `Round`, `Clip`, `Mul`) tract runs four
//! passes per activation, its `Round` one value at a time, and its
//! optimizer orders four nodes per pair: on nudenet (220 pairs) compiling
//! the twin took 5.5 s and a run 1.7x FP32's. The op computes the same
//! value bit for bit, the way tract computes those four nodes: the
//! division as a product by the reciprocal (tract's `Div` declutters to
//! `Mul(x, Recip(s))`), rounding half to even, `max` then `min`, the
//! product by `scale`.
//!
//! Only the twins built for `--method auto`, `--explain` and mixed
//! precision use it; no written model contains it. [`register`] adds it
//! to a tract ONNX framework.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// The op's domain and type in a twin.
pub const DOMAIN: &str = "ai.quench.twin";
pub const OP_TYPE: &str = "FakeQuant";

/// Adds [`OP_TYPE`] to `reg` (nodes of that type in another domain are
/// refused with an error naming the domain).
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert(OP_TYPE, build);
}

fn build(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    ensure!(
        node.domain == DOMAIN,
        "{OP_TYPE} of domain `{}` is not quench's twin op (domain `{DOMAIN}`)",
        node.domain
    );
    Ok((
        tract_onnx::tract_hir::ops::expandable::expand(FakeQuantExpansion),
        vec![],
    ))
}

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct FakeQuantExpansion;

impl Expansion for FakeQuantExpansion {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, 4)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        target: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        target.wire_node(prefix, FakeQuant, inputs)
    }
}

/// The typed op: inputs `x` (f32), `scale`, `low`, `high` (f32 scalars).
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct FakeQuant;

/// Round half to even as tract's `round_ties_to_even` (`x ± 2^23 ∓ 2^23`
/// below 2^23, a signed zero kept), written without branches on the
/// value's bits so that the loop vectorizes.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const TOINT: f32 = 8_388_608.0; // 2^23
    let a = x.abs();
    let r = if a < TOINT { (a + TOINT) - TOINT } else { a };
    r.copysign(x)
}

/// `clip(round(x * (1 / scale)), low, high) * scale` in place.
pub fn fake_quant_in_place(xs: &mut [f32], scale: f32, low: f32, high: f32) {
    let inv = 1.0 / scale;
    for x in xs.iter_mut() {
        let q = round_even(*x * inv);
        // Clip as tract's Max then Min (lower bound first).
        let q = if q < low { low } else { q };
        let q = if q > high { high } else { q };
        *x = q * scale;
    }
}

impl Op for FakeQuant {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    op_as_typed_op!();
}

impl EvalOp for FakeQuant {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, scale, low, high) = args_4!(inputs);
        let scale = scale.cast_to_scalar::<f32>()?;
        let low = low.cast_to_scalar::<f32>()?;
        let high = high.cast_to_scalar::<f32>()?;
        let mut t = x.into_tensor();
        {
            let mut view = t.try_as_plain_ram_mut()?;
            fake_quant_in_place(view.as_slice_mut::<f32>()?, scale, low, high);
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for FakeQuant {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].datum_type.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same values as tract's scalar rounding, for ties, signed zeros,
    /// large values and NaN.
    #[test]
    fn rounds_as_tract_does() {
        let mut xs: Vec<f32> = vec![
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            -0.3,
            0.3,
            0.0,
            -0.0,
            8_388_607.5,
            4_194_304.5,
            -4_194_304.5,
            1e10,
            -1e10,
            16_777_215.0,
            3.4e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut k: u32 = 12345;
        for _ in 0..10_000 {
            k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            xs.push(f32::from_bits(k));
        }
        for x in xs {
            let (a, b) = (round_even(x), tract_onnx::prelude::round_ties_to_even(x));
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{x}: {a} vs {b}"
            );
        }
    }
}
