//! The constant evaluator never panics: random nodes of every op it covers,
//! with random element types, shapes (including scalars, empty tensors and
//! huge shape values), axes, perms and attributes. Deterministic (a fixed
//! LCG seed, 12, or `SEED=<n>` in the environment); every result must
//! also keep the size cap and, for ops whose output type is their data
//! input's, that type.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ndarray::{ArrayD, IxDyn};
use quench_ir::Node;
use quench_onnx::proto::attribute_proto::AttributeType;
use quench_onnx::proto::AttributeProto;
use quench_passes::eval::{eval, Tensor, MAX_ELEMENTS};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Small ints mostly, sometimes extremes.
    fn int(&mut self) -> i64 {
        match self.below(10) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => -1,
            3 => 1 << 32,
            4 => 0,
            _ => self.below(7) as i64 - 3,
        }
    }
}

const OPS: &[&str] = &[
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Mod",
    "Pow",
    "Neg",
    "Abs",
    "Relu",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Floor",
    "Ceil",
    "Round",
    "Equal",
    "Less",
    "Greater",
    "And",
    "Or",
    "Xor",
    "Not",
    "Where",
    "Cast",
    "Shape",
    "Size",
    "Reshape",
    "Flatten",
    "Unsqueeze",
    "Squeeze",
    "Transpose",
    "Concat",
    "Gather",
    "Expand",
    "Tile",
    "Slice",
    "Range",
    "ConstantOfShape",
];

fn shape(r: &mut Lcg) -> Vec<usize> {
    let rank = r.below(4) as usize;
    (0..rank).map(|_| r.below(4) as usize).collect()
}

fn tensor(r: &mut Lcg) -> Tensor {
    let s = shape(r);
    let n: usize = s.iter().product();
    let dims = IxDyn(&s);
    match r.below(6) {
        0 => Tensor::F32(ArrayD::from_shape_fn(dims, |_| r.int() as f32)),
        1 => Tensor::I64(
            ArrayD::from_shape_vec(dims, (0..n).map(|_| r.int()).collect()).unwrap_or_default(),
        ),
        2 => Tensor::I32(ArrayD::from_shape_fn(dims, |_| r.int() as i32)),
        3 => Tensor::U8(ArrayD::from_shape_fn(dims, |_| r.int() as u8)),
        4 => Tensor::Bool(ArrayD::from_shape_fn(dims, |_| r.below(2) == 1)),
        _ => Tensor::I8(ArrayD::from_shape_fn(dims, |_| r.int() as i8)),
    }
}

/// A 1-D i64 tensor (shapes, axes, repeats, indices).
fn ints(r: &mut Lcg) -> Tensor {
    let n = r.below(4) as usize;
    let v: Vec<i64> = (0..n).map(|_| r.int()).collect();
    Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[n]), v).unwrap_or_default())
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v,
        ..Default::default()
    }
}

#[test]
fn evaluator_never_panics_on_random_nodes() {
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut r = Lcg(seed);
    let (mut folded, mut declined) = (0usize, 0usize);
    for case in 0..30_000 {
        let op = OPS[r.below(OPS.len() as u64) as usize];
        let mut node = Node::new(op, "n");
        for name in ["axis", "to", "start", "end", "allowzero", "fmod"] {
            if r.below(3) == 0 {
                let v = if name == "to" {
                    r.below(14) as i64
                } else {
                    r.int()
                };
                node.set_attr(attr_int(name, v));
            }
        }
        for name in ["perm", "axes", "starts", "ends"] {
            if r.below(4) == 0 {
                let n = r.below(4) as usize;
                node.set_attr(attr_ints(name, (0..n).map(|_| r.int()).collect()));
            }
        }
        let n_in = r.below(5) as usize;
        let inputs: Vec<Option<Tensor>> = (0..n_in)
            .map(|_| match r.below(5) {
                0 => None,
                1 | 2 => Some(ints(&mut r)),
                _ => Some(tensor(&mut r)),
            })
            .collect();
        let before = format!("{op} {:?} {inputs:?}", node.proto.attribute);
        let out = catch_unwind(AssertUnwindSafe(|| eval(&node, &inputs)))
            .unwrap_or_else(|_| panic!("case {case}: eval panicked on {before}"));
        match out {
            None => declined += 1,
            Some(outs) => {
                folded += 1;
                for o in &outs {
                    let n: usize = o.shape().iter().product();
                    assert!(n <= MAX_ELEMENTS, "case {case}: {n} elements");
                }
                let keeps_type = matches!(
                    op,
                    "Identity"
                        | "Neg"
                        | "Abs"
                        | "Relu"
                        | "Reshape"
                        | "Flatten"
                        | "Transpose"
                        | "Squeeze"
                        | "Unsqueeze"
                        | "Gather"
                        | "Expand"
                        | "Tile"
                        | "Slice"
                );
                if keeps_type {
                    if let Some(Some(x)) = inputs.first() {
                        assert_eq!(outs[0].data_type(), x.data_type(), "case {case}: {before}");
                    }
                }
            }
        }
    }
    eprintln!("{folded} folded, {declined} declined");
    // Both sides are exercised.
    assert!(
        folded > 1000 && declined > 1000,
        "{folded} folded, {declined} declined"
    );
}
