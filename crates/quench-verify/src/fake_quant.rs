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
//! product by `scale`; a NaN is clipped to `low` as tract's `Max` does.
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

/// Adds [`OP_TYPE`] to `reg`. A node of that type in another domain (a
/// user model's own `FakeQuant`) is what tract makes of any op it does not
/// know, an unimplemented op, reported as such.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert(OP_TYPE, build);
}

fn build(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node.domain != DOMAIN {
        let op = tract_onnx::tract_hir::ops::unimpl::UnimplementedOp::new(
            node.output.len(),
            &*node.op_type,
            format!("{node:?}"),
        );
        return Ok((op.into(), vec![]));
    }
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
        // The scalars stay scalars (rank 0): the axes of `x` are the
        // output's, and axis changes pass through `x` and the output alone
        // (see `axes_mapping`, `change_axes`). Broadcast to `x`'s rank, as
        // tract wires ONNX's Div, Clip and Mul, they cost one AddAxis per
        // axis per scalar on every run: 12 nodes per pair, a tenth of a
        // nudenet search run.
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

/// `clip(round(x * (1 / scale)), low, high) * scale` in place, in the
/// widest vectors the CPU has (checked at run time: the binary is built
/// for baseline x86-64, whose 4-lane SSE loop ran at 12 GB/s against 28
/// with AVX2 and 44 with AVX-512 on the machine this was measured on, and
/// it was a seventh of a PP-OCRv4 det compile). Every variant runs the
/// same IEEE operations per element in the same order (Rust never fuses a
/// product and a sum), so all give the same bits
/// ([`every_variant_gives_the_same_bits`](tests)).
pub fn fake_quant_in_place(xs: &mut [f32], scale: f32, low: f32, high: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, the only feature the function
            // is compiled for beyond the baseline (checked just above).
            #[allow(unsafe_code)]
            unsafe {
                fake_quant_avx512(xs, scale, low, high)
            };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            #[allow(unsafe_code)]
            unsafe {
                fake_quant_avx2(xs, scale, low, high)
            };
            return;
        }
    }
    fake_quant_loop(xs, scale, low, high);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fake_quant_avx512(xs: &mut [f32], scale: f32, low: f32, high: f32) {
    fake_quant_loop(xs, scale, low, high);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fake_quant_avx2(xs: &mut [f32], scale: f32, low: f32, high: f32) {
    fake_quant_loop(xs, scale, low, high);
}

/// The loop every variant compiles (inlined, so that it vectorizes for the
/// caller's features).
#[inline(always)]
fn fake_quant_loop(xs: &mut [f32], scale: f32, low: f32, high: f32) {
    let inv = 1.0 / scale;
    for x in xs.iter_mut() {
        let q = round_even(*x * inv);
        // Clip as tract's Max then Min (lower bound first). Its Max takes
        // the bound for a NaN (Rust's `max`): a NaN activation (or a NaN
        // product) becomes `low * scale`, as it did with the four nodes.
        let q = if q >= low { q } else { low };
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

    /// Element-wise: every axis of `x` is the output's at the same
    /// position; the scalar parameters have none.
    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        let rank = inputs[0].rank();
        let axes = (0..rank)
            .zip('a'..)
            .map(|(ax, repr)| {
                Axis::new(repr, inputs.len(), outputs.len())
                    .input(0, ax)
                    .output(0, ax)
            })
            .collect::<TVec<_>>();
        AxesMapping::new(inputs.len(), outputs.len(), axes)
    }

    /// Axis changes pass through, as through tract's binary ops (the
    /// `Div`, `Max`, `Min` and `Mul` the op stands for): without this, a
    /// Transpose before a pair stayed where it was and what followed was
    /// computed in another layout (PP-OCRv4 rec: other rounding in a
    /// LayerNorm after a Transpose, the min/max score 10.044992 dB against
    /// 10.044964 with the four nodes).
    /// (The change applies to `x` and the output; the scalars keep rank
    /// 0, and a change arriving at one of them is refused.)
    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        if matches!(io, InOut::In(i) if i != 0) {
            return Ok(None);
        }
        if let AxisOp::Rm(rm) = change {
            let (inputs, outputs) = model.node_facts(node.id)?;
            for f in [inputs[0], outputs[0]] {
                if f.rank() > *rm && !f.shape[*rm].is_one() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(AxisChangeConsequence {
            substitute_op: None,
            wire_changes: tvec![
                (InOut::In(0), change.clone()),
                (InOut::Out(0), change.clone())
            ],
        }))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that probe every step: ties of both parities and signs,
    /// signed zeros, codes past the clip bounds, values at and past 2^23,
    /// infinities, NaN, and pseudo-random bit patterns.
    fn probes() -> Vec<f32> {
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
            6.35,
            -6.4,
            -6.45,
            8_388_607.5,
            16_777_215.0,
            4_194_304.5,
            -4_194_304.5,
            1e10,
            -1e10,
            3.4e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        let mut k: u32 = 777;
        for _ in 0..20_000 {
            k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            xs.push(f32::from_bits(k));
            // And values near the grid, where rounding decides.
            xs.push((k % 4001) as f32 * 0.025 - 50.0);
        }
        xs
    }

    /// The dispatched loop, the baseline loop and each variant the CPU
    /// has give the same bits, on every length (vector bodies and tails).
    #[test]
    fn every_variant_gives_the_same_bits() {
        let xs = probes();
        let settings = [
            (0.05f32, -128.0f32, 127.0f32),
            (0.1, 0.0, 255.0),
            (1e-3, -32768.0, 32767.0),
            (3.0, -8.0, 7.0),
            (2f32.powi(-40), -128.0, 127.0),
        ];
        let same = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
        };
        #[allow(unused_mut, unused_variables)]
        let mut variants = 0;
        for &(scale, low, high) in &settings {
            for len in [0usize, 1, 3, 7, 8, 15, 16, 17, 31, 33, 63, xs.len()] {
                let mut want = xs[..len].to_vec();
                fake_quant_loop(&mut want, scale, low, high);
                // Not a tautology: the baseline's bits against the
                // definition, element by element.
                for (x, w) in xs[..len].iter().zip(&want) {
                    let q = round_even(x * (1.0 / scale));
                    let q = if q >= low { q } else { low };
                    let q = if q > high { high } else { q };
                    let d = q * scale;
                    assert!(
                        d.to_bits() == w.to_bits() || (d.is_nan() && w.is_nan()),
                        "{x}"
                    );
                }
                let mut got = xs[..len].to_vec();
                fake_quant_in_place(&mut got, scale, low, high);
                assert!(same(&want, &got), "dispatched, len {len}, scale {scale}");
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx2") {
                        let mut got = xs[..len].to_vec();
                        // SAFETY: AVX2 checked just above.
                        #[allow(unsafe_code)]
                        unsafe {
                            fake_quant_avx2(&mut got, scale, low, high)
                        };
                        assert!(same(&want, &got), "avx2, len {len}, scale {scale}");
                        variants += 1;
                    }
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        let mut got = xs[..len].to_vec();
                        // SAFETY: AVX-512F checked just above.
                        #[allow(unsafe_code)]
                        unsafe {
                            fake_quant_avx512(&mut got, scale, low, high)
                        };
                        assert!(same(&want, &got), "avx512, len {len}, scale {scale}");
                        variants += 1;
                    }
                }
            }
        }
        // On x86-64 CI machines at least AVX2 is there: the variants ran.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            assert!(variants > 0);
        }
    }

    /// The same values as tract's scalar rounding, for ties, signed zeros,
    /// large values and NaN.
    #[test]
    fn rounds_as_tract_does() {
        for x in probes() {
            let (a, b) = (round_even(x), tract_onnx::prelude::round_ties_to_even(x));
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{x}: {a} vs {b}"
            );
        }
    }
}

/// The op against the four ONNX nodes it replaces, both run in tract.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod against_tract {
    use crate::data::ArrayData;
    use crate::runner::tests::value_info;
    use crate::runner::{Runner, RunnerConfig};
    use ndarray::{ArrayD, IxDyn};
    use quench_onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("{op}_{}", outputs[0])),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// `y = fq(x)`, also `z = Neg(x)` (so that `x` is shared) and `w =
    /// Neg(y)` (so that `y` is read by a node and is an output), as
    /// `Div/Round/Clip/Mul` (`opset` >= 11), `Div/Round/Max/Min/Mul`
    /// (below) or the fused op.
    fn model(n: i64, opset: i64, fused: bool) -> ModelProto {
        let mut nodes = if fused {
            let mut fq = node(super::OP_TYPE, &["x", "s", "lo", "hi"], &["y"]);
            fq.domain = Some(super::DOMAIN.into());
            vec![fq]
        } else {
            let mut v = vec![
                node("Div", &["x", "s"], &["a"]),
                node("Round", &["a"], &["b"]),
            ];
            if opset >= 11 {
                v.push(node("Clip", &["b", "lo", "hi"], &["c"]));
            } else {
                v.push(node("Max", &["b", "lo"], &["m"]));
                v.push(node("Min", &["m", "hi"], &["c"]));
            }
            v.push(node("Mul", &["c", "s"], &["y"]));
            v
        };
        nodes.push(node("Neg", &["x"], &["z"]));
        nodes.push(node("Neg", &["y"], &["w"]));
        let mut opsets = vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }];
        if fused {
            opsets.push(OperatorSetIdProto {
                domain: Some(super::DOMAIN.into()),
                version: Some(1),
            });
        }
        ModelProto {
            ir_version: Some(8),
            opset_import: opsets,
            graph: Some(GraphProto {
                name: Some("g".into()),
                node: nodes,
                input: vec![
                    value_info("x", &[n]),
                    value_info("s", &[]),
                    value_info("lo", &[]),
                    value_info("hi", &[]),
                ],
                output: vec![
                    value_info("y", &[n]),
                    value_info("z", &[n]),
                    value_info("w", &[n]),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn xs() -> Vec<f32> {
        let mut xs: Vec<f32> = vec![
            0.0,
            -0.0,
            0.5,
            1.5,
            -2.5,
            1e-45,
            -1e-45,
            1e-38,
            3.0e38,
            -3.0e38,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            8_388_607.5,
            16_777_215.0,
            16_777_217.0,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fc0_1234),
        ];
        // Values where a true division and the product by the reciprocal
        // round to different codes (x / s a tie one way, not the other).
        for &(s, _, _) in SETTINGS {
            let inv = 1.0 / s;
            let mut found = 0;
            for code in -300i32..300 {
                for ulps in -3i32..=3 {
                    let mid = (code as f32 + 0.5) * s;
                    let x = f32::from_bits((mid.to_bits() as i32 + ulps) as u32);
                    if super::round_even(x / s) != super::round_even(x * inv) && found < 64 {
                        xs.push(x);
                        found += 1;
                    }
                }
            }
        }
        let mut k: u32 = 987_654_321;
        for i in 0..4000 {
            k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = if i % 2 == 0 {
                f32::from_bits(k)
            } else {
                // Values near the grids below, ties included.
                ((k >> 8) as f32 / 65536.0 - 128.0) * 0.25
            };
            if v.is_finite() {
                xs.push(v);
            }
        }
        xs
    }

    fn scalar(v: f32) -> ArrayData {
        ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[]), vec![v]).unwrap())
    }

    /// (scale, low, high) as pairs are fed: 8- and 16-bit grids, odd
    /// scales, a subnormal one, and `off` (2^-40 with huge bounds).
    const SETTINGS: &[(f32, f32, f32)] = &[
        (0.0123, -128.0, 127.0),
        (1.0 / 255.0, -3.0, 252.0),
        (0.1, 0.0, 255.0),
        (3.0517578e-5, -32768.0, 32767.0),
        (0.00731, -12345.0, 53190.0),
        (0.25, -128.0, 127.0),
        (1e-39, -128.0, 127.0),
        (7.5e37, -128.0, 127.0),
        (1.0 / 1_099_511_627_776.0, f32::MIN, f32::MAX),
        (1.0 / 1_099_511_627_776.0, 0.0, 6.0 * 1_099_511_627_776.0),
    ];

    fn run(m: &ModelProto, x: &[f32], set: (f32, f32, f32)) -> Vec<Vec<f32>> {
        let runner = Runner::new(m, &RunnerConfig::default()).unwrap();
        let xa = ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[x.len()]), x.to_vec()).unwrap());
        runner
            .run(&[xa, scalar(set.0), scalar(set.1), scalar(set.2)])
            .unwrap()
            .iter()
            .map(|a| a.to_f32().iter().copied().collect())
            .collect()
    }

    fn f32_init(name: &str, dims: &[usize], seed: u32) -> quench_onnx::proto::TensorProto {
        let n: usize = dims.iter().product();
        let mut k = seed;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (k >> 8) as f32 / 16_777_216.0 - 0.5
            })
            .collect();
        ArrayData::F32(ArrayD::from_shape_vec(IxDyn(dims), v).unwrap()).to_tensor_proto(name)
    }

    /// The pair between two MatMuls (with a bias Add before it), as
    /// compiled models have it: what tract fuses around the nodes.
    fn in_context(n: i64, m: i64, fused: bool) -> ModelProto {
        let mut inner = model(m, 17, fused);
        let g = inner.graph.as_mut().unwrap();
        // x is now computed: input -> MatMul(w1) -> Add(b1) -> x
        g.input[0] = value_info("input", &[1, n]);
        let mut pre = vec![
            node("MatMul", &["input", "w1"], &["h"]),
            node("Add", &["h", "b1"], &["x"]),
        ];
        pre.append(&mut g.node);
        pre.push(node("MatMul", &["y", "w2"], &["out"]));
        g.node = pre;
        g.initializer = vec![
            f32_init("w1", &[n as usize, m as usize], 1),
            f32_init("b1", &[m as usize], 2),
            f32_init("w2", &[m as usize, 16], 3),
        ];
        g.output = vec![value_info("out", &[1, 16]), value_info("y", &[1, m])];
        inner
    }

    /// Between a MatMul + bias Add and a MatMul (what tract may fuse into
    /// its kernels around the four nodes), on inputs of 4 magnitudes and
    /// every setting: the same bits, the pair's output and the model's.
    #[test]
    fn fused_op_in_context() {
        let (n, m) = (64i64, 4096i64);
        let mut k: u32 = 5;
        let mut bad = Vec::new();
        for trial in 0..4 {
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((k >> 8) as f32 / 16_777_216.0 - 0.5) * (1 + trial) as f32
                })
                .collect();
            for &set in SETTINGS {
                let run = |fused: bool| -> Vec<Vec<f32>> {
                    let runner =
                        Runner::new(&in_context(n, m, fused), &RunnerConfig::default()).unwrap();
                    let xa = ArrayData::F32(
                        ArrayD::from_shape_vec(IxDyn(&[1, n as usize]), x.clone()).unwrap(),
                    );
                    runner
                        .run(&[xa, scalar(set.0), scalar(set.1), scalar(set.2)])
                        .unwrap()
                        .iter()
                        .map(|a| a.to_f32().iter().copied().collect())
                        .collect()
                };
                let (a, b) = (run(false), run(true));
                for (o, (ya, yb)) in a.iter().zip(&b).enumerate() {
                    let d = ya
                        .iter()
                        .zip(yb)
                        .filter(|(u, v)| u.to_bits() != v.to_bits())
                        .count();
                    if d > 0 {
                        bad.push(format!("trial {trial} {set:?} output {o}: {d} differ"));
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "{} differ: {:#?}",
            bad.len(),
            &bad[..bad.len().min(12)]
        );
    }

    /// The pair after a Transpose, read by a decomposed LayerNorm's
    /// ReduceMean and Sub (PP-OCRv4 rec's SVTR blocks): tract moves the
    /// Transpose through the nodes and reduces in that layout; the fused op
    /// must let it do the same.
    fn after_transpose(fused: bool) -> ModelProto {
        let mut inner = model(1, 17, fused);
        let g = inner.graph.as_mut().unwrap();
        g.input[0] = value_info("input", &[1, 64, 96]);
        let mut t = node("Transpose", &["input"], &["x"]);
        t.attribute.push(quench_onnx::proto::AttributeProto {
            name: Some("perm".into()),
            r#type: Some(quench_onnx::proto::attribute_proto::AttributeType::Ints as i32),
            ints: vec![0, 2, 1],
            ..Default::default()
        });
        let mut rm = node("ReduceMean", &["y"], &["mean"]);
        rm.attribute.push(quench_onnx::proto::AttributeProto {
            name: Some("axes".into()),
            r#type: Some(quench_onnx::proto::attribute_proto::AttributeType::Ints as i32),
            ints: vec![-1],
            ..Default::default()
        });
        let mut nodes = vec![t];
        nodes.extend(g.node.drain(..).filter(|n| n.op_type() != "Neg"));
        nodes.push(rm);
        let mut rm2 = node("ReduceMean", &["sq"], &["var"]);
        rm2.attribute = nodes.last().unwrap().attribute.clone();
        nodes.push(node("Sub", &["y", "mean"], &["centred"]));
        nodes.push(node("Mul", &["centred", "centred"], &["sq"]));
        nodes.push(rm2);
        nodes.push(node("Add", &["var", "eps"], &["ve"]));
        nodes.push(node("Sqrt", &["ve"], &["sd"]));
        nodes.push(node("Div", &["centred", "sd"], &["normed"]));
        nodes.push(node("Mul", &["normed", "gamma"], &["scaled"]));
        nodes.push(node("Add", &["scaled", "y"], &["res"]));
        nodes.push(node("MatMul", &["res", "w"], &["out"]));
        g.node = nodes;
        g.initializer = vec![
            f32_init("w", &[64, 8], 7),
            f32_init("gamma", &[64], 8),
            ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[]), vec![1e-5]).unwrap())
                .to_tensor_proto("eps"),
        ];
        g.output = vec![value_info("out", &[1, 96, 8])];
        inner
    }

    #[test]
    fn fused_op_after_a_transpose() {
        let mut k: u32 = 11;
        let mut bad = Vec::new();
        for trial in 0..8 {
            let x: Vec<f32> = (0..64 * 96)
                .map(|_| {
                    k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((k >> 8) as f32 / 16_777_216.0 - 0.3) * (1 + trial) as f32
                })
                .collect();
            for &set in SETTINGS {
                let run = |fused: bool| -> Vec<f32> {
                    let runner =
                        Runner::new(&after_transpose(fused), &RunnerConfig::default()).unwrap();
                    let xa = ArrayData::F32(
                        ArrayD::from_shape_vec(IxDyn(&[1, 64, 96]), x.clone()).unwrap(),
                    );
                    runner
                        .run(&[xa, scalar(set.0), scalar(set.1), scalar(set.2)])
                        .unwrap()[0]
                        .to_f32()
                        .iter()
                        .copied()
                        .collect()
                };
                let (a, b) = (run(false), run(true));
                let d = a
                    .iter()
                    .zip(&b)
                    .filter(|(u, v)| u.to_bits() != v.to_bits())
                    .count();
                if d > 0 {
                    bad.push(format!("trial {trial} {set:?}: {d} of {} differ", a.len()));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "{} differ: {:#?}",
            bad.len(),
            &bad[..bad.len().min(12)]
        );
    }

    /// Bit for bit what tract computes for the four nodes (three with
    /// `Clip` as `Max`/`Min` below opset 11), for finite and infinite
    /// inputs, on every kind of setting; the shared input is left as it
    /// was.
    #[test]
    fn fused_op_is_what_the_four_nodes_compute() {
        let x = xs();
        let n = x.len() as i64;
        let mut bad = Vec::new();
        for opset in [10, 17] {
            let (nodes, fused) = (model(n, opset, false), model(n, opset, true));
            for &set in SETTINGS {
                let (a, b) = (run(&nodes, &x, set), run(&fused, &x, set));
                for (o, (ya, yb)) in a.iter().zip(&b).enumerate() {
                    for (i, (u, v)) in ya.iter().zip(yb).enumerate() {
                        if u.to_bits() != v.to_bits() {
                            bad.push(format!(
                                "opset {opset} {set:?} output {o}: x = {:e}: {u:e} (nodes) vs {v:e} (fused)",
                                x[i]
                            ));
                        }
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "{} differ: {:#?}",
            bad.len(),
            &bad[..bad.len().min(12)]
        );
    }

    /// A user model's own `FakeQuant` (another domain) is an op tract does
    /// not know, reported as one, like any other unknown op: registering
    /// quench's twin op changes nothing for it.
    #[test]
    fn a_fake_quant_of_another_domain_is_an_unknown_op() {
        let unknown = |op: &str| {
            let mut m = model(4, 17, true);
            let g = m.graph.as_mut().unwrap();
            g.node[0].op_type = Some(op.into());
            g.node[0].domain = Some("com.example".into());
            m.opset_import[1].domain = Some("com.example".into());
            match Runner::new(&m, &RunnerConfig::default()) {
                Err(crate::runner::RunError::Unsupported { ops, .. }) => ops
                    .iter()
                    .map(|o| (o.op.clone(), o.domain.clone()))
                    .collect::<Vec<_>>(),
                Err(e) => panic!("{op}: not reported as unsupported: {e}"),
                Ok(_) => panic!("{op}: ran"),
            }
        };
        assert_eq!(
            unknown(super::OP_TYPE),
            vec![(super::OP_TYPE.to_string(), "com.example".to_string())]
        );
        assert_eq!(
            unknown("NoSuchOp"),
            vec![("NoSuchOp".to_string(), "com.example".to_string())]
        );
    }
}
