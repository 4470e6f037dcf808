//! A faster f32 Softmax over an axis that is not the last one, computing
//! what tract's own computes, bit for bit.
//!
//! tract runs a Softmax over a trailing axis with its row kernels; over
//! any other axis it walks every lane through a dynamic-rank ndarray view
//! (several allocations and a generic iterator per lane). A YOLOv8-style
//! detector's distribution head (a Softmax over 16 bins on axis 1 of
//! `[1, 16, 4, 2100]`, 8,400 lanes of 16 values) spent about 14% of a
//! nudenet compile there, in every tract run: calibration, the search's
//! twins, verification. A segmentation head's Softmax over channels
//! (axis 1 of NCHW) has one lane per pixel.
//!
//! [`install`] swaps such nodes of an optimized tract model (after every
//! optimization, so no layout decision changes) for [`LaneSoftmax`], which
//! visits the lanes with plain index arithmetic, `inner` lanes at a time,
//! and performs, per lane, tract's operations in tract's order: the
//! maximum as `Iterator::max_by` with `partial_cmp` (a NaN compares as
//! less), `x - max`, `exp` (f32's), the sum in lane order from `-0.0`,
//! then each `exp` divided by the sum (`exp` is computed once and kept,
//! which gives the same value as computing it again). Anything else (a
//! trailing axis, a lane that is contiguous, other types, LogSoftmax,
//! several axes, an empty tensor) is handed to tract's op.

use std::cmp::Ordering;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};
use tract_onnx::tract_hir::internal::*;

/// tract's Softmax over one axis, with the strided-lane case computed
/// here (see the module docs).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct LaneSoftmax {
    /// The op it stands for (used as is for every other case).
    pub inner: Softmax,
}

impl LaneSoftmax {
    /// The axis, when this op computes the case itself: an f32 Softmax
    /// over one axis.
    fn axis(&self) -> Option<usize> {
        match (
            self.inner.kind,
            self.inner.quant_output_dt,
            &*self.inner.axes,
        ) {
            (SoftmaxKind::Softmax, None, [a]) => Some(*a),
            _ => None,
        }
    }
}

impl Op for LaneSoftmax {
    fn name(&self) -> StaticName {
        "LaneSoftmax".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.inner.info()
    }

    op_as_typed_op!();
}

impl EvalOp for LaneSoftmax {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(axis) = self.axis() else {
            return self.inner.eval(ctx, inputs);
        };
        let x = &inputs[0];
        let shape = x.shape().to_vec();
        let strided = x.datum_type() == f32::datum_type()
            && axis + 1 < shape.len()
            && x.len() > 0
            && x.strides() == &*Tensor::natural_strides(&shape);
        let inner: usize = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
        if !strided || inner <= 1 {
            return self.inner.eval(ctx, inputs);
        }
        let n = shape[axis];
        let mut inputs = inputs;
        let mut t = inputs.remove(0).into_tensor();
        {
            let mut view = t.try_as_plain_ram_mut()?;
            softmax_lanes(view.as_slice_mut::<f32>()?, n, inner);
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

/// Softmax over the middle axis of `data` laid out `[outer, n, inner]`,
/// lane by lane as tract's strided path computes it (module docs).
pub fn softmax_lanes(data: &mut [f32], n: usize, inner: usize) {
    if n == 0 || inner == 0 {
        return;
    }
    let mut max = vec![0f32; inner];
    let mut sum = vec![0f32; inner];
    for block in data.chunks_exact_mut(n * inner) {
        max.copy_from_slice(&block[..inner]);
        for row in block.chunks_exact(inner).skip(1) {
            for (m, &x) in max.iter_mut().zip(row) {
                // `max_by(|a, b| a.partial_cmp(b).unwrap_or(Less))`: keeps
                // the maximum so far only when it compares greater.
                if (*m).partial_cmp(&x).unwrap_or(Ordering::Less) != Ordering::Greater {
                    *m = x;
                }
            }
        }
        sum.fill(-0.0);
        for row in block.chunks_exact_mut(inner) {
            for ((x, m), s) in row.iter_mut().zip(&max).zip(sum.iter_mut()) {
                let e = (*x - *m).exp();
                *x = e;
                *s += e;
            }
        }
        for row in block.chunks_exact_mut(inner) {
            for (x, s) in row.iter_mut().zip(&sum) {
                *x /= *s;
            }
        }
    }
}

impl TypedOp for LaneSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.inner.output_facts(inputs)
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        self.inner.axes_mapping(inputs, outputs)
    }

    as_op!();
}

/// Replaces, in an optimized model, every f32 Softmax over one axis that
/// is not its input's last by a [`LaneSoftmax`]; returns how many.
pub fn install(model: &mut TypedModel) -> TractResult<usize> {
    let mut swapped = 0;
    for id in 0..model.nodes().len() {
        let Some(sm) = model.node(id).op_as::<Softmax>() else {
            continue;
        };
        let sm = sm.clone();
        let fact = model.outlet_fact(model.node(id).inputs[0])?;
        let last = fact.rank().checked_sub(1);
        let candidate = LaneSoftmax { inner: sm };
        match candidate.axis() {
            Some(a) if fact.datum_type == f32::datum_type() && Some(a) != last => {
                model.node_mut(id).op = Box::new(candidate);
                swapped += 1;
            }
            _ => {}
        }
    }
    Ok(swapped)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Deterministic values with ties, large magnitudes and non-finite
    /// ones.
    fn values(len: usize, seed: u64, specials: bool) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|i| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = ((s >> 40) as f32) / (1u64 << 24) as f32;
                match (specials, i % 97) {
                    (true, 3) => f32::NEG_INFINITY,
                    (true, 11) => f32::INFINITY,
                    (true, 29) => f32::NAN,
                    (_, 5) | (_, 6) => 1.5, // ties
                    (_, 40) => 90.0 * u,    // exp overflows without the max
                    _ => (u - 0.5) * 20.0,
                }
            })
            .collect()
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// Against tract's own op on every axis of several shapes: the same
    /// bits (NaN for NaN), whether this op computes the case or hands it
    /// on.
    #[test]
    fn computes_what_tracts_softmax_computes() {
        let shapes: &[&[usize]] = &[
            &[2, 5, 3, 4],
            &[1, 16, 4, 37],
            &[3, 7],
            &[4, 1, 1],
            &[2, 3, 1],
            &[1, 1, 8, 1, 5],
        ];
        let mut cases = 0;
        for (si, shape) in shapes.iter().enumerate() {
            let len: usize = shape.iter().product();
            for specials in [false, true] {
                let x = Tensor::from_shape(shape, &values(len, si as u64 + 1, specials)).unwrap();
                for axis in 0..shape.len() {
                    let sm = Softmax {
                        axes: tvec![axis],
                        ..Softmax::default()
                    };
                    let want = sm
                        .eval(&EvalContext::out_of_plan(), tvec![x.clone().into_tvalue()])
                        .unwrap();
                    let ours = LaneSoftmax { inner: sm };
                    let got = ours
                        .eval(&EvalContext::out_of_plan(), tvec![x.clone().into_tvalue()])
                        .unwrap();
                    let (wv, gv) = (
                        want[0].try_as_plain_ram().unwrap(),
                        got[0].try_as_plain_ram().unwrap(),
                    );
                    let (w, g) = (wv.as_slice::<f32>().unwrap(), gv.as_slice::<f32>().unwrap());
                    assert_eq!(w.len(), g.len());
                    for (i, (a, b)) in w.iter().zip(g).enumerate() {
                        assert!(
                            same(*a, *b),
                            "{shape:?} axis {axis} [{i}]: tract {a}, ours {b}"
                        );
                    }
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 2 * (4 + 4 + 2 + 3 + 3 + 5));
    }

    /// A model with a Softmax over axis 1 gets the op; over the last axis,
    /// not.
    #[test]
    fn installs_only_where_the_axis_is_not_last() {
        for (axis, want) in [(1usize, 1usize), (2, 0)] {
            let mut m = TypedModel::default();
            let x = m.add_source("x", f32::fact([2, 3, 4])).unwrap();
            let y = m
                .wire_node(
                    "sm",
                    Softmax {
                        axes: tvec![axis],
                        ..Softmax::default()
                    },
                    &[x],
                )
                .unwrap();
            m.select_output_outlets(&y).unwrap();
            assert_eq!(install(&mut m).unwrap(), want, "axis {axis}");
        }
    }
}
