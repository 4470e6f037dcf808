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

use quench_ir::{Graph, Node, OpKind};
use quench_onnx::proto::TensorProto;

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
                let folded_tensor = match eval(node, &ins) {
                    Some(mut outs) => match outs.pop() {
                        Some(t) => t.to_proto(""),
                        None => continue,
                    },
                    None => match constant_of_shape_bytes(node, &ins) {
                        Some(t) => t,
                        None => continue,
                    },
                };
                let declared = g.value(out);
                if declared
                    .elem_type()
                    .is_some_and(|e| e != 0 && e != folded_tensor.data_type())
                {
                    continue;
                }
                if declared
                    .static_shape()
                    .is_some_and(|s| s != folded_tensor.dims)
                {
                    continue;
                }
                g.remove_node(n);
                g.define_const(out, folded_tensor);
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

/// `ConstantOfShape` whose `value` has a fixed-width element type the
/// evaluator does not hold (f16, bf16, float8, ...): the value's bytes
/// repeated, so the folded constant keeps `value`'s type. Sizes are capped
/// like the evaluator's, before allocating.
fn constant_of_shape_bytes(node: &Node, inputs: &[Option<Tensor>]) -> Option<TensorProto> {
    if node.kind() != OpKind::ConstantOfShape {
        return None;
    }
    let value = node.attr_tensor("value")?;
    let Some(Tensor::I64(shape)) = inputs.first()?.as_ref() else {
        return None;
    };
    let dims: Vec<usize> = shape
        .iter()
        .map(|d| usize::try_from(*d).ok())
        .collect::<Option<_>>()?;
    let n = crate::eval::capped_count(&dims)?;
    let bits = quench_onnx::dtype::elem_bits(value.data_type())?;
    // Whole bytes only, one element, stored as raw data (as exporters write
    // f16 and bf16 values).
    let raw = value.raw_data.as_ref()?;
    if bits % 8 != 0 || raw.len() as u64 != bits / 8 || quench_ir::tensor::numel(&value.dims)? != 1
    {
        return None;
    }
    let elem = quench_onnx::proto::tensor_proto::DataType::try_from(value.data_type()).ok()?;
    Some(quench_ir::tensor::from_raw(
        "",
        elem,
        &shape.iter().copied().collect::<Vec<_>>(),
        raw.repeat(n),
    ))
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

    /// An f16 `value` (a type the evaluator does not hold) is repeated
    /// byte for byte and stays f16.
    #[test]
    fn f16_constant_of_shape_stays_f16() {
        let mut g = Graph::new("g");
        let shape = g.add_const("shape", tensor::from_i64("shape", &[2], &[2, 2]));
        let mut cos = Node::new("ConstantOfShape", "cos");
        cos.set_attr(AttributeProto {
            name: Some("value".into()),
            r#type: Some(AttributeType::Tensor as i32),
            // 1.5 in IEEE half precision.
            t: Some(tensor::from_raw(
                "value",
                DataType::Float16,
                &[1],
                vec![0x00, 0x3e],
            )),
            ..Default::default()
        });
        let (_, c) = g.add_op(cos, &[shape], &["halves"]);
        let x = g.add_input(
            "x",
            Some(tensor::tensor_type_of(DataType::Float16 as i32, &[2, 2])),
        );
        let (_, y) = g.add_op(Node::new("Add", "add"), &[c[0], x], &["y"]);
        g.add_output(y[0]);
        let mut cx = PassCx::new(17);
        assert!(FoldConstants.run(&mut g, &mut cx).unwrap());
        let t = g.const_tensor(c[0]).unwrap();
        assert_eq!(t.data_type(), DataType::Float16 as i32);
        assert_eq!(t.dims, vec![2, 2]);
        assert_eq!(t.raw_data.as_deref(), Some(&[0x00, 0x3e].repeat(4)[..]));
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
