//! `batchnorm_to_muladd`: a BatchNormalization that could not be folded
//! becomes `Mul` + `Add` with constant per-channel tensors.
//!
//! Requires: inference-mode BN with constant f32 parameters and an input of
//! known rank ≥ 2. Guarantees: `y = x · s + t` with `s`, `t` shaped
//! `[C, 1, ..., 1]` (broadcast over the channel axis 1); the Add defines the
//! BN's output value (same name), so the element-wise pair can be quantized
//! and fused by runtimes. Declines: everything `fold_batchnorm` declines on
//! parameters, and inputs of unknown rank.

use quench_ir::{tensor, Graph, Node, OpKind};

use crate::fold_batchnorm::bn_affine;
use crate::{util, Changed, Pass, PassCx, PassError};

pub struct BatchNormToMulAdd;

impl Pass for BatchNormToMulAdd {
    fn name(&self) -> &'static str {
        "batchnorm_to_muladd"
    }
    fn description(&self) -> &'static str {
        "rewrite BatchNormalization that cannot be folded as Mul + Add"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut done = 0;
        for n in g.node_ids() {
            if !g.contains_node(n) || g.node(n).kind() != OpKind::BatchNormalization {
                continue;
            }
            let (Some(x), Some(y)) = (g.node(n).input(0), g.node(n).output(0)) else {
                continue;
            };
            let Some(aff) = bn_affine(g, n) else { continue };
            let Some(rank) = util::infer_rank(g, x) else {
                continue;
            };
            if rank < 2 {
                continue;
            }
            let c = aff.scale.len() as i64;
            let mut dims = vec![c];
            dims.extend(std::iter::repeat_n(1, rank - 2));
            let name = g.node(n).name().to_string();
            let to32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<_>>();
            let s = g.add_const(
                &format!("{name}_scale_folded"),
                tensor::from_f32("", &dims, &to32(&aff.scale)),
            );
            let t = g.add_const(
                &format!("{name}_shift_folded"),
                tensor::from_f32("", &dims, &to32(&aff.shift)),
            );
            g.remove_node(n);
            let mid = g.add_value(&format!("{}_scaled", g.value(y).name), None);
            let mul = Node::new("Mul", &g.unique_name(&format!("{name}_mul")));
            g.add_node(mul, &[Some(x), Some(s)], &[Some(mid)]);
            let add = Node::new("Add", &g.unique_name(&format!("{name}_add")));
            g.add_node(add, &[Some(mid), Some(t)], &[Some(y)]);
            done += 1;
            cx.note(self.name(), format!("`{name}` became Mul + Add"));
        }
        cx.count(self.name(), "rewritten", done);
        Ok(done > 0)
    }
}
