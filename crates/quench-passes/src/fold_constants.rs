//! `fold_constants`: evaluates nodes whose inputs are all constants.
//!
//! Requires: nothing. Guarantees: each folded node is replaced by an
//! initializer of its output's name, computed by [`crate::eval`]; repeated
//! until nothing changes, so chains of constant nodes fold. Declines: ops or
//! types the evaluator does not cover, nodes in other domains or with
//! subgraphs, nodes with several outputs, and outputs that are graph
//! outputs (their producer stays visible), and results whose element type
//! or static shape differs from the type declared for the output (the
//! evaluator keeps ONNX types exactly, so a mismatch means the model's
//! annotation and the op disagree; the node is left for the runtime).

use quench_ir::Graph;

use crate::eval::{eval, Tensor};
use crate::{util, Changed, Pass, PassCx, PassError};

pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold_constants"
    }
    fn description(&self) -> &'static str {
        "evaluate nodes whose inputs are all constants"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut folded = 0;
        loop {
            let mut progress = false;
            let order = g.topo_order().map_err(|e| PassError::Failed {
                pass: self.name().into(),
                msg: e.to_string(),
            })?;
            for n in order {
                if !util::plain(g, n) {
                    continue;
                }
                let node = g.node(n);
                if node.outputs().len() != 1 || node.inputs().iter().flatten().next().is_none() {
                    continue;
                }
                let Some(out) = node.output(0) else { continue };
                if g.is_graph_output(out) {
                    continue;
                }
                let mut ins = Vec::new();
                let mut all_const = true;
                for i in node.inputs() {
                    match i {
                        None => ins.push(None),
                        Some(v) => match g.const_tensor(*v).and_then(Tensor::from_proto) {
                            Some(t) => ins.push(Some(t)),
                            None => {
                                all_const = false;
                                break;
                            }
                        },
                    }
                }
                if !all_const {
                    continue;
                }
                let Some(mut outs) = eval(node, &ins) else {
                    continue;
                };
                let Some(t) = outs.pop() else { continue };
                let declared = g.value(out);
                if declared
                    .elem_type()
                    .is_some_and(|e| e != 0 && e != t.data_type() as i32)
                {
                    continue;
                }
                if declared.static_shape().is_some_and(|s| {
                    s.len() != t.shape().len()
                        || s.iter().zip(t.shape()).any(|(d, n)| *d != *n as i64)
                }) {
                    continue;
                }
                g.remove_node(n);
                g.define_const(out, t.to_proto(""));
                folded += 1;
                progress = true;
            }
            if !progress {
                break;
            }
        }
        if folded > 0 {
            cx.count(self.name(), "folded", folded);
            cx.note(self.name(), format!("folded {folded} constant nodes"));
        }
        Ok(folded > 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use quench_ir::{tensor, Graph, Node};
    use quench_onnx::proto::attribute_proto::AttributeType;
    use quench_onnx::proto::tensor_proto::DataType;
    use quench_onnx::proto::AttributeProto;

    use super::*;

    /// The attention-mask pattern of torch.onnx BERT exports:
    /// `And(ConstantOfShape(shape, value=bool[1]), mask)`. The folded
    /// constant was a float tensor, which made the written model invalid
    /// ("And: tensor(float) unsupported"); it must stay bool.
    #[test]
    fn bool_constant_of_shape_stays_bool() {
        let mut g = Graph::new("g");
        let mask = g.add_input(
            "mask",
            Some(tensor::tensor_type_of(DataType::Bool as i32, &[2, 3])),
        );
        let shape = g.add_const("shape", tensor::from_i64("shape", &[2], &[2, 3]));
        let mut cos = Node::new("ConstantOfShape", "cos");
        cos.set_attr(AttributeProto {
            name: Some("value".into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(tensor::from_raw("value", DataType::Bool, &[1], vec![1])),
            ..Default::default()
        });
        let (_, c) = g.add_op(cos, &[shape], &["ones"]);
        let (_, y) = g.add_op(Node::new("And", "and"), &[c[0], mask], &["y"]);
        g.add_output(y[0]);
        let mut cx = PassCx::new(17);
        assert!(FoldConstants.run(&mut g, &mut cx).unwrap());
        let folded = g.const_tensor(c[0]).expect("folded");
        assert_eq!(folded.data_type(), DataType::Bool as i32);
        assert_eq!(folded.dims, vec![2, 3]);
        assert_eq!(g.value(c[0]).elem_type(), Some(DataType::Bool as i32));
        g.verify().unwrap();
    }

    /// A result whose type disagrees with the output's declared type is not
    /// written over it.
    #[test]
    fn declared_type_mismatch_declines() {
        let mut g = Graph::new("g");
        let a = g.add_const("a", tensor::from_i64("a", &[1], &[3]));
        let out = g.add_value(
            "y",
            Some(tensor::tensor_type_of(DataType::Float as i32, &[1])),
        );
        g.add_node(Node::new("Identity", "id"), &[Some(a)], &[Some(out)]);
        let (_, z) = g.add_op(Node::new("Neg", "neg"), &[out], &["z"]);
        g.add_output(z[0]);
        let mut cx = PassCx::new(17);
        assert!(!FoldConstants.run(&mut g, &mut cx).unwrap());
    }
}
