//! `constants_to_initializers`: `Constant` nodes become initializers.
//!
//! Requires: nothing. Guarantees: every `Constant` node whose value is a
//! dense numeric tensor (`value`, `value_float(s)`, `value_int(s)`) is
//! replaced by an initializer of the same name, so later passes and the
//! quantizer see weights stored this way (as Paddle exports do) like any
//! other weight. Declines: sparse and string constants (kept as nodes).

use quench_ir::{tensor, Graph, Node, OpKind};
use quench_onnx::proto::TensorProto;

use crate::{Changed, Pass, PassCx, PassError};

/// A `Constant` node's value from `value`, `value_float(s)` or
/// `value_int(s)` (`None` for sparse or string-list forms).
pub fn constant_node_value(node: &Node) -> Option<TensorProto> {
    Some(if let Some(t) = node.attr_tensor("value") {
        t.clone()
    } else if let Some(f) = node.attr_float("value_float") {
        tensor::from_f32("", &[], &[f])
    } else if let Some(a) = node.attr("value_floats") {
        tensor::from_f32("", &[a.floats.len() as i64], &a.floats)
    } else if let Some(i) = node.attr_int("value_int") {
        tensor::from_i64("", &[], &[i])
    } else if let Some(a) = node.attr("value_ints") {
        tensor::from_i64("", &[a.ints.len() as i64], &a.ints)
    } else {
        return None;
    })
}

pub struct ConstantsToInitializers;

impl Pass for ConstantsToInitializers {
    fn name(&self) -> &'static str {
        "constants_to_initializers"
    }
    fn description(&self) -> &'static str {
        "turn Constant nodes into initializers"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut n_done = 0;
        for n in g.node_ids() {
            let node = g.node(n);
            if node.kind() != OpKind::Constant || node.outputs().len() != 1 {
                continue;
            }
            let Some(out) = node.output(0) else { continue };
            let Some(t) = constant_node_value(node) else {
                continue;
            };
            if t.data_type() == quench_onnx::proto::tensor_proto::DataType::String as i32 {
                continue;
            }
            g.remove_node(n);
            g.define_const(out, t);
            n_done += 1;
        }
        if n_done > 0 {
            cx.count(self.name(), "converted", n_done);
            cx.note(
                self.name(),
                format!("{n_done} Constant nodes became initializers"),
            );
        }
        Ok(n_done > 0)
    }
}
